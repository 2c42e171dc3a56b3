#include "test_util.hpp"

#include <string>

#include "blendfuse/ops/activation.hpp"

#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"  // before the first OneDnn use (ODR)
#endif

using namespace blendfuse;
using TD = Tensor<double>;

namespace {

// Unary gradcheck: forward f(x), backward g(x, y, dy).
template <class F, class G>
void check_unary(TD x, F f, G g) {
  bft::gradcheck(
      {std::move(x)}, [&](const std::vector<TD>& in) { return f(in[0]); },
      [&](const std::vector<TD>& in, const TD& dy) { return std::vector<TD>{g(in[0], f(in[0]), dy)}; });
}

// Random values pushed at least 0.05 away from 0 (the ReLU kink).
TD away_from_zero(Shape s, Rng& rng) {
  TD x = bft::random_tensor(std::move(s), rng, 2.0);
  for (Index i = 0; i < x.numel(); ++i) x[i] += x[i] >= 0 ? 0.05 : -0.05;
  return x;
}

struct Tol {
  double rtol, atol;
};

// Runs the op named by `prefix` (relu, gelu, gelut, softmax) in T and compares with PyTorch.
template <class T>
int compare_family(const std::string& prefix, Tol tol) {
  const auto f = bft::vectors("activation");
  int n = 0;
  for (; f.contains(prefix + std::to_string(n) + ".x"); ++n) {
    const std::string name = prefix + std::to_string(n);
    CAPTURE(name);
    const auto x = f.get<T>(name + ".x");
    const auto dy = f.get<T>(name + ".dy");
    Tensor<T> y, dx;
    if (prefix == "relu") {
      y = ops::relu(x);
      dx = ops::relu_backward(y, dy);
    } else if (prefix == "gelu" || prefix == "gelut") {
      const ops::GeluApprox a = prefix == "gelu" ? ops::GeluApprox::None : ops::GeluApprox::Tanh;
      y = ops::gelu(x, a);
      dx = ops::gelu_backward(x, dy, a);
    } else {
      y = ops::softmax(x);
      dx = ops::softmax_backward(y, dy);
    }
    BFT_CHECK_CLOSE(y, f.get<double>(name + ".y"), tol.rtol, tol.atol);
    BFT_CHECK_CLOSE(dx, f.get<double>(name + ".dx"), tol.rtol, tol.atol);
  }
  return n;
}

int compare_both(const std::string& prefix) {
  const int n = compare_family<double>(prefix, {1e-12, 1e-14});
  CHECK(compare_family<float>(prefix, {2e-5, 2e-6}) == n);
  return n;
}

}  // namespace

TEST_CASE("activation: gradcheck relu, gelu (erf and tanh), softmax") {
  Rng rng(5);
  check_unary(
      away_from_zero({3, 4, 5}, rng), [](const TD& x) { return ops::relu(x); },
      [](const TD&, const TD& y, const TD& dy) { return ops::relu_backward(y, dy); });
  for (ops::GeluApprox a : {ops::GeluApprox::None, ops::GeluApprox::Tanh}) {
    CAPTURE(static_cast<int>(a));
    check_unary(
        bft::random_tensor({4, 30}, rng, 2.5), [a](const TD& x) { return ops::gelu(x, a); },
        [a](const TD& x, const TD&, const TD& dy) { return ops::gelu_backward(x, dy, a); });
  }
  check_unary(
      bft::random_tensor({3, 4, 9}, rng, 2.0), [](const TD& x) { return ops::softmax(x); },
      [](const TD&, const TD& y, const TD& dy) { return ops::softmax_backward(y, dy); });
  check_unary(
      bft::random_tensor({1, 17}, rng, 10.0), [](const TD& x) { return ops::softmax(x); },
      [](const TD&, const TD& y, const TD& dy) { return ops::softmax_backward(y, dy); });
}

TEST_CASE("activation: gradcheck dropout with a fixed mask (backward reuses the forward mask)") {
  Rng rng(6);
  const double p = 0.4;
  check_unary(
      bft::random_tensor({6, 10}, rng),
      [p](const TD& x) {
        Rng r(77);  // same seed on every call: the same mask
        return ops::dropout(x, p, true, r).y;
      },
      [p](const TD& x, const TD&, const TD& dy) {
        Rng r(77);
        return ops::dropout_backward(dy, ops::dropout(x, p, true, r).mask, p);
      });
}

TEST_CASE("activation: relu, gelu, softmax match PyTorch (double and float)") {
  CHECK(compare_both("relu") == 2);
  CHECK(compare_both("gelu") == 2);
  CHECK(compare_both("gelut") == 2);
  CHECK(compare_both("softmax") == 3);
}

TEST_CASE("activation: relu_ in place, relu gradient at 0, softmax rows sum to 1") {
  auto x = TD::from({2, 3}, {-1, 0, 2, 3, -4, 0.5});
  TD col = x.slice(1, 1, 3);  // strided view of columns 1..2
  ops::relu_(col);
  CHECK(std::vector<double>(x.begin(), x.end()) == std::vector<double>{-1, 0, 2, 3, 0, 0.5});
  const auto dx = ops::relu_backward(TD::from({3}, {-1, 0, 1}), TD::from({3}, {5, 6, 7}));
  CHECK(std::vector<double>(dx.begin(), dx.end()) == std::vector<double>{0, 0, 7});

  Rng rng(8);
  const TD s = ops::softmax(bft::random_tensor({4, 6}, rng, 50.0));
  for (Index r = 0; r < 4; ++r) {
    double sum = 0;
    for (Index i = 0; i < 6; ++i) {
      CHECK(s(r, i) >= 0);
      sum += s(r, i);
    }
    CHECK(std::abs(sum - 1.0) < 1e-14);
  }
  // huge logits stay finite (max subtraction)
  const auto big = ops::softmax(Tensor<float>::from({1, 3}, {1000.f, 1001.f, -1000.f}));
  CHECK(std::isfinite(big[0]));
  CHECK(big[1] == doctest::Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
  CHECK(big[2] == 0.0f);
}

TEST_CASE("activation: dropout mask statistics, scaling, eval identity") {
  Rng xr(9);
  const TD x = bft::random_tensor({200, 500}, xr);
  const TD dy = bft::random_tensor({200, 500}, xr);
  for (double p : {0.1, 0.5, 0.8}) {
    CAPTURE(p);
    Rng rng(10);
    const auto r = ops::dropout(x, p, true, rng);
    REQUIRE(r.mask.shape() == x.shape());
    const auto dx = ops::dropout_backward(dy, r.mask, p);
    const double scale = 1.0 / (1.0 - p);
    Index kept = 0;
    bool exact = true;
    for (Index i = 0; i < x.numel(); ++i) {
      if (r.mask[i]) {
        ++kept;
        exact = exact && r.y[i] == x[i] * scale && dx[i] == dy[i] * scale;
      } else {
        exact = exact && r.mask[i] == 0 && r.y[i] == 0 && dx[i] == 0;
      }
    }
    CHECK(exact);
    const double n = static_cast<double>(x.numel());
    const double frac = static_cast<double>(kept) / n;
    // 5 standard deviations of a binomial proportion
    CHECK(std::abs(frac - (1 - p)) < 5 * std::sqrt(p * (1 - p) / n));

    // same seed → same mask; another seed → a different mask
    Rng same(10), other(11);
    const auto r2 = ops::dropout(x, p, true, same);
    const auto r3 = ops::dropout(x, p, true, other);
    Index diff_same = 0, diff_other = 0;
    for (Index i = 0; i < x.numel(); ++i) {
      diff_same += r2.mask[i] != r.mask[i];
      diff_other += r3.mask[i] != r.mask[i];
    }
    CHECK(diff_same == 0);
    CHECK(diff_other > 0);
  }

  // consecutive calls on one Rng draw fresh masks
  Rng rng(12);
  const auto a = ops::dropout(x, 0.5, true, rng), b = ops::dropout(x, 0.5, true, rng);
  Index differ = 0;
  for (Index i = 0; i < x.numel(); ++i) differ += a.mask[i] != b.mask[i];
  CHECK(differ > x.numel() / 4);

  // eval: identity forward and backward, empty mask, Rng untouched
  Rng ev(13), ref(13);
  const auto e = ops::dropout(x, 0.5, false, ev);
  CHECK(e.mask.empty());
  BFT_CHECK_CLOSE(e.y, x, 0, 1e-300);
  CHECK(e.y.data() != x.data());
  BFT_CHECK_CLOSE(ops::dropout_backward(dy, e.mask, 0.5), dy, 0, 1e-300);
  CHECK(ev.next_u64() == ref.next_u64());

  // p = 0 keeps everything unscaled, p = 1 drops everything
  Rng r0(14);
  const auto z = ops::dropout(x, 0.0, true, r0);
  BFT_CHECK_CLOSE(z.y, x, 0, 1e-300);
  const auto o = ops::dropout(x, 1.0, true, r0);
  BFT_CHECK_CLOSE(o.y, TD(x.shape()), 0, 1e-300);
  BFT_CHECK_CLOSE(ops::dropout_backward(dy, o.mask, 1.0), TD(x.shape()), 0, 1e-300);

  // float works too
  Rng rf(15);
  const auto ff = ops::dropout(x.cast<float>(), 0.25, true, rf);
  for (Index i = 0; i < 100; ++i)
    CHECK(ff.y[i] == (ff.mask[i] ? static_cast<float>(x[i]) * (1.0f / 0.75f) : 0.0f));
}

TEST_CASE("activation: shape and argument errors") {
  using doctest::Contains;
  const TD x({3, 4});
  CHECK_THROWS_WITH_AS(ops::relu_backward(x, TD({4, 3})), Contains("relu_backward: dy has shape (4, 3) but y has shape (3, 4)"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::gelu_backward(x, TD({12})), Contains("gelu_backward: dy has shape (12,) but x has shape (3, 4)"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::softmax(TD(Shape{})), Contains("softmax: expected x of shape (..., D)"), ShapeError);
  CHECK_THROWS_AS(ops::softmax_backward(x, TD({3, 5})), ShapeError);
  Rng rng(1);
  CHECK_THROWS_WITH_AS(ops::dropout(x, 1.5, true, rng), Contains("dropout: drop probability p must be in [0, 1], got 1.5"), ArgumentError);
  CHECK_THROWS_AS(ops::dropout(x, -0.1, false, rng), ArgumentError);
  CHECK_THROWS_AS(ops::dropout(x, std::nan(""), true, rng), ArgumentError);
  const auto r = ops::dropout(x, 0.5, true, rng);
  CHECK_THROWS_WITH_AS(ops::dropout_backward(TD({4, 3}), r.mask, 0.5), Contains("dropout_backward: dy has shape (4, 3) but mask has shape (3, 4)"), ShapeError);
}

TEST_CASE("activation: gelu_ in place gives exactly gelu's values (contiguous and strided, erf and tanh)") {
  Rng rng(71);
  for (ops::GeluApprox ap : {ops::GeluApprox::None, ops::GeluApprox::Tanh}) {
    const TD x = bft::random_tensor({3, 4, 5}, rng, 2.0);
    TD y = x.clone();
    ops::gelu_(y, ap);
    CHECK(bft_into::same(y, ops::gelu(x, ap)));
    // The old formula of wav2vec2's extractor loop: x·Φ(x) element by element.
    for (Index i = 0; i < x.numel(); ++i) CHECK(y[i] == ops::GeluOp<Cpu>::value(x[i], ap));
    TD z = x.clone();
    TD zt = z.transpose(0, 2);  // a strided view of z: every element once, in another order
    ops::gelu_(zt, ap);
    CHECK(bft_into::same(z, ops::gelu(x, ap)));
    Tensor<float> f = bft_into::to_float(x);
    const Tensor<float> ff = ops::gelu(f, ap);
    ops::gelu_(f, ap);
    CHECK(bft_into::same(f, ff));
  }
}

#ifdef BLENDFUSE_WITH_ONEDNN
TEST_CASE("activation: gelu_ on oneDNN (in place, float) matches the reference") {
  Rng rng(72);
  for (ops::GeluApprox ap : {ops::GeluApprox::None, ops::GeluApprox::Tanh}) {
    const Tensor<float> x = bft_into::to_float(bft::random_tensor({2, 16, 33}, rng, 2.0));
    Tensor<float, OneDnn> y = onednn::to_onednn(x);
    float* before = y.data();
    ops::gelu_(y, ap);
    CHECK(y.data() == before);  // in place
    BFT_CHECK_CLOSE(bft_into::to_double(onednn::to_cpu(y)), bft_into::to_double(ops::gelu(x, ap)), 1e-5, 1e-6);
    // Strided views and double run the reference on the same memory.
    Tensor<float, OneDnn> s = onednn::to_onednn(x);
    Tensor<float, OneDnn> st = s.transpose(1, 2);
    ops::gelu_(st, ap);
    CHECK(bft_into::same(onednn::to_cpu(s), ops::gelu(x, ap)));
    Tensor<double, OneDnn> d = onednn::to_onednn(bft_into::to_double(x));
    ops::gelu_(d, ap);
    CHECK(bft_into::same(onednn::to_cpu(d), ops::gelu(bft_into::to_double(x), ap)));
  }
}
#endif
