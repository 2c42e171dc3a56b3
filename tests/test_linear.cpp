#include "test_util.hpp"

#include <nlohmann/json.hpp>

#include "blendfuse/ops/linear.hpp"

#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"  // before the first OneDnn use (ODR)
#endif

using namespace blendfuse;
using bft::random_tensor;

namespace {

using Grads = std::vector<Tensor<double>>;

void gradcheck_linear(const Shape& xs, Index out, bool bias, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<Tensor<double>> in{random_tensor(xs, rng), random_tensor({out, xs.back()}, rng)};
  if (bias) in.push_back(random_tensor({out}, rng));
  bft::gradcheck(
      in,
      [&](const std::vector<Tensor<double>>& v) {
        return ops::linear(v[0], v[1], v.size() > 2 ? v[2] : Tensor<double>());
      },
      [&](const std::vector<Tensor<double>>& v, const Tensor<double>& dy) {
        auto g = ops::linear_backward(v[0], v[1], dy, bias);
        CHECK(g.db.empty() == !bias);
        return bias ? Grads{g.dx, g.dw, g.db} : Grads{g.dx, g.dw};
      });
}

void gradcheck_matmul(const Shape& as, const Shape& bs, ops::MatmulParams p, std::uint64_t seed) {
  Rng rng(seed);
  bft::gradcheck(
      {random_tensor(as, rng), random_tensor(bs, rng)},
      [&](const std::vector<Tensor<double>>& v) { return ops::matmul(v[0], v[1], p); },
      [&](const std::vector<Tensor<double>>& v, const Tensor<double>& dy) {
        auto g = ops::matmul_backward(v[0], v[1], dy, p);
        return Grads{g.da, g.db};
      });
}

// Triple-loop reference of C = op(A) op(B) for 2-d operands.
Tensor<double> naive_mm(const Tensor<double>& a, const Tensor<double>& b, bool ta, bool tb) {
  const Index m = ta ? a.dim(1) : a.dim(0), k = ta ? a.dim(0) : a.dim(1);
  const Index n = tb ? b.dim(0) : b.dim(1);
  Tensor<double> c({m, n});
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      double s = 0;
      for (Index q = 0; q < k; ++q) s += (ta ? a(q, i) : a(i, q)) * (tb ? b(j, q) : b(q, j));
      c(i, j) = s;
    }
  return c;
}

template <class T>
void compare_with_torch(double rtol, double atol) {
  const auto f = bft::vectors("linear");
  const auto cases = nlohmann::json::parse(f.meta("cases"));
  REQUIRE(cases.size() >= 9);
  for (const auto& [name, c] : cases.items()) {
    CAPTURE(name);
    auto get = [&](const char* t) { return f.get<T>(name + "." + t); };
    if (c["kind"] == "linear") {
      const bool bias = c["bias"].template get<bool>();
      const Tensor<T> x = get("x"), w = get("w"), r = get("r");
      const Tensor<T> b = bias ? get("b") : Tensor<T>();
      BFT_CHECK_CLOSE(ops::linear(x, w, b), get("y"), rtol, atol);
      const auto g = ops::linear_backward(x, w, r, bias);
      BFT_CHECK_CLOSE(g.dx, get("dx"), rtol, atol);
      BFT_CHECK_CLOSE(g.dw, get("dw"), rtol, atol);
      if (bias) BFT_CHECK_CLOSE(g.db, get("db"), rtol, atol);
    } else {
      const ops::MatmulParams p{c["trans_a"].template get<bool>(), c["trans_b"].template get<bool>()};
      const Tensor<T> a = get("a"), b = get("b"), r = get("r");
      BFT_CHECK_CLOSE(ops::matmul(a, b, p), get("y"), rtol, atol);
      const auto g = ops::matmul_backward(a, b, r, p);
      BFT_CHECK_CLOSE(g.da, get("da"), rtol, atol);
      BFT_CHECK_CLOSE(g.db, get("db"), rtol, atol);
    }
  }
}

}  // namespace

TEST_CASE("linear: gradient check (double)") {
  gradcheck_linear({2, 3, 5}, 4, true, 1);
  gradcheck_linear({6, 7}, 3, false, 2);
  gradcheck_linear({5}, 2, true, 3);
  gradcheck_linear({2, 1, 2, 3}, 3, true, 4);
}

TEST_CASE("matmul: gradient check (double) for all transposes and broadcasting") {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      CAPTURE(ta);
      CAPTURE(tb);
      const ops::MatmulParams p{ta != 0, tb != 0};
      const Shape a2 = ta ? Shape{4, 3} : Shape{3, 4};
      const Shape b2 = tb ? Shape{5, 4} : Shape{4, 5};
      gradcheck_matmul(a2, b2, p, 10);
      Shape ab{2, 3}, bb{2, 3};
      ab.insert(ab.end(), a2.begin(), a2.end());
      bb.insert(bb.end(), b2.begin(), b2.end());
      gradcheck_matmul(ab, bb, p, 11);
      // A broadcast over B's batch and B broadcast over a size-1 batch dimension of A.
      Shape a1{2, 1};
      a1.insert(a1.end(), a2.begin(), a2.end());
      Shape b1{3};
      b1.insert(b1.end(), b2.begin(), b2.end());
      gradcheck_matmul(a1, b1, p, 12);
      gradcheck_matmul(a2, bb, p, 13);
    }
}

TEST_CASE("matmul: matches a naive triple loop per batch entry") {
  Rng rng(5);
  const auto a = random_tensor({2, 3, 4}, rng), b = random_tensor({2, 4, 6}, rng);
  const auto c = ops::matmul(a, b);
  REQUIRE(c.shape() == Shape{2, 3, 6});
  for (Index i = 0; i < 2; ++i)
    BFT_CHECK_CLOSE(c.select(i), naive_mm(a.select(i).clone(), b.select(i).clone(), false, false),
                    1e-12, 1e-12);
  const auto ct = ops::matmul(b, a, {true, true});  // (2, 6, 3) = bᵀ aᵀ = (a b)ᵀ
  BFT_CHECK_CLOSE(ct, c.transpose(1, 2).clone(), 1e-12, 1e-12);
}

TEST_CASE("linear and matmul: non-contiguous inputs give the same result") {
  Rng rng(6);
  const auto x = random_tensor({4, 3, 5}, rng);  // used as a (3, 4, 5) transposed view
  const auto w = random_tensor({2, 5}, rng), b = random_tensor({2}, rng);
  const auto xv = x.transpose(0, 1);
  REQUIRE_FALSE(xv.is_contiguous());
  BFT_CHECK_CLOSE(ops::linear(xv, w, b), ops::linear(xv.clone(), w, b), 1e-14, 1e-14);
  const auto dy = random_tensor({3, 4, 2}, rng);
  const auto g1 = ops::linear_backward(xv, w, dy), g2 = ops::linear_backward(xv.clone(), w, dy);
  BFT_CHECK_CLOSE(g1.dw, g2.dw, 1e-14, 1e-14);
  BFT_CHECK_CLOSE(g1.dx, g2.dx, 1e-14, 1e-14);
  const auto m = random_tensor({5, 3}, rng);
  BFT_CHECK_CLOSE(ops::matmul(xv, m), ops::matmul(xv.clone(), m), 1e-14, 1e-14);
}

TEST_CASE("linear: matches PyTorch (double)") { compare_with_torch<double>(1e-11, 1e-12); }
TEST_CASE("linear: matches PyTorch (float)") { compare_with_torch<float>(1e-4, 1e-5); }

TEST_CASE("linear and matmul: shape errors") {
  Tensor<double> x({2, 5}), w({4, 5}), b({4});
  CHECK_THROWS_WITH_AS(ops::linear(x, Tensor<double>({4, 6}), b),
                       doctest::Contains("linear: input (2, 5)"), ShapeError);
  CHECK_THROWS_AS(ops::linear(x, Tensor<double>({20}), b), ShapeError);
  CHECK_THROWS_WITH_AS(ops::linear(x, w, Tensor<double>({3})), doctest::Contains("bias (3,)"),
                       ShapeError);
  CHECK_THROWS_AS(ops::linear(Tensor<double>(Shape{}), w, b), ShapeError);
  CHECK_THROWS_WITH_AS(ops::linear_backward(x, w, Tensor<double>({2, 3})),
                       doctest::Contains("dy (2, 3)"), ShapeError);
  CHECK_NOTHROW(ops::linear(x, w));

  Tensor<double> a({2, 3, 4}), bm({2, 4, 5});
  CHECK_THROWS_WITH_AS(ops::matmul(a, Tensor<double>({2, 5, 5})),
                       doctest::Contains("inner dimensions differ"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::matmul(Tensor<double>({4}), bm), doctest::Contains("at least 2"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(ops::matmul(a, Tensor<double>({3, 4, 5})),
                       doctest::Contains("do not broadcast"), ShapeError);
  CHECK_NOTHROW(ops::matmul(a, Tensor<double>({6, 4}), {false, true}));
  CHECK_THROWS_AS(ops::matmul(a, bm, {true, false}), ShapeError);
  CHECK_THROWS_WITH_AS(ops::matmul_backward(a, bm, Tensor<double>({2, 3, 4})),
                       doctest::Contains("dC (2, 3, 4)"), ShapeError);
}

TEST_CASE("linear_into: exactly linear's values into a preallocated output; errors") {
  Rng rng(91);
  const auto x = random_tensor({2, 3, 7}, rng), w = random_tensor({5, 7}, rng), b = random_tensor({5}, rng);
  Tensor<double> y({2, 3, 5});
  ops::linear_into(y, x, w, b);
  CHECK(bft_into::same(y, ops::linear(x, w, b)));
  ops::linear_into(y, x, w);
  CHECK(bft_into::same(y, ops::linear(x, w)));
  const auto xs = x.transpose(0, 1).clone().transpose(0, 1);  // strided input, same values
  REQUIRE(!xs.is_contiguous());
  ops::linear_into(y, xs, w, b);
  CHECK(bft_into::same(y, ops::linear(x, w, b)));
  Tensor<float> yf({2, 3, 5});
  const Tensor<float> xf = bft_into::to_float(x), wf = bft_into::to_float(w), bf = bft_into::to_float(b);
  ops::linear_into(yf, xf, wf, bf);
  CHECK(bft_into::same(yf, ops::linear(xf, wf, bf)));
  Tensor<double> bad({2, 3, 4});
  CHECK_THROWS_AS(ops::linear_into(bad, x, w, b), ShapeError);
  Tensor<double> bad_lead({3, 2, 5});
  CHECK_THROWS_AS(ops::linear_into(bad_lead, x, w, b), ShapeError);
  Tensor<double> sq = random_tensor({2, 5}, rng);
  CHECK_THROWS_AS(ops::linear_into(sq, sq, random_tensor({5, 5}, rng)), ArgumentError);  // aliasing
}

#ifdef BLENDFUSE_WITH_ONEDNN
TEST_CASE("linear_into on oneDNN matches the reference") {
  Rng rng(92);
  const Tensor<float> x = bft_into::to_float(random_tensor({4, 33}, rng)), w = bft_into::to_float(random_tensor({17, 33}, rng)),
                      b = bft_into::to_float(random_tensor({17}, rng));
  Tensor<float, OneDnn> y({4, 17});
  ops::linear_into(y, onednn::to_onednn(x), onednn::to_onednn(w), onednn::to_onednn(b));
  BFT_CHECK_CLOSE(bft_into::to_double(onednn::to_cpu(y)), bft_into::to_double(ops::linear(x, w, b)), 1e-5, 1e-5);
  Tensor<double, OneDnn> yd({4, 17});
  ops::linear_into(yd, onednn::to_onednn(bft_into::to_double(x)), onednn::to_onednn(bft_into::to_double(w)),
                   onednn::to_onednn(bft_into::to_double(b)));
  CHECK(bft_into::same(onednn::to_cpu(yd), ops::linear(bft_into::to_double(x), bft_into::to_double(w), bft_into::to_double(b))));
  Tensor<float, OneDnn> bad({4, 16});
  CHECK_THROWS_AS(ops::linear_into(bad, onednn::to_onednn(x), onednn::to_onednn(w), onednn::to_onednn(b)), ShapeError);
}
#endif
