#include "test_util.hpp"

#include <string>

#include "blendfuse/ops/norm.hpp"

#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"  // before the first OneDnn use (ODR)
#endif

using namespace blendfuse;
using TD = Tensor<double>;

namespace {

enum class Kind { Instance, Group, Layer };

ops::NormResult<double> run_forward(Kind k, const TD& x, Index groups, const TD& g, const TD& b,
                               double eps) {
  switch (k) {
    case Kind::Instance: return ops::instance_norm(x, g, b, eps);
    case Kind::Group: return ops::group_norm(x, groups, g, b, eps);
    default: return ops::layer_norm(x, g, b, eps);
  }
}

// Gradient check of x, gamma and beta (recomputing the saved statistics in the backward lambda,
// so the statistics the forward returns are exercised as well).
void check_grads(Kind k, Shape xs, Index groups, bool affine, double eps = 1e-5,
                 std::uint64_t seed = 3) {
  Rng rng(seed);
  const Index C = k == Kind::Layer ? xs.back() : xs[1];
  TD x = bft::random_tensor(xs, rng, 1.5);
  std::vector<TD> inputs{x};
  if (affine) {
    TD g = bft::random_tensor({C}, rng, 0.5);
    for (Index i = 0; i < C; ++i) g[i] += 1.0;
    inputs.push_back(g);
    inputs.push_back(bft::random_tensor({C}, rng, 0.5));
  }
  auto gamma_of = [&](const std::vector<TD>& in) { return affine ? in[1] : TD(); };
  auto beta_of = [&](const std::vector<TD>& in) { return affine ? in[2] : TD(); };
  bft::gradcheck(
      inputs,
      [&](const std::vector<TD>& in) {
        return run_forward(k, in[0], groups, gamma_of(in), beta_of(in), eps).y;
      },
      [&](const std::vector<TD>& in, const TD& dy) {
        const auto f = run_forward(k, in[0], groups, gamma_of(in), beta_of(in), eps);
        ops::NormGrads<double> g;
        if (k == Kind::Instance)
          g = ops::instance_norm_backward(in[0], gamma_of(in), f.mean, f.rstd, dy);
        else if (k == Kind::Group)
          g = ops::group_norm_backward(in[0], groups, gamma_of(in), f.mean, f.rstd, dy);
        else
          g = ops::layer_norm_backward(in[0], gamma_of(in), f.mean, f.rstd, dy);
        std::vector<TD> out{g.dx};
        if (affine) {
          out.push_back(g.dgamma);
          out.push_back(g.dbeta);
        }
        return out;
      });
}

// Tolerances for the PyTorch comparison: {rtol, atol} in double and in float.
struct Tol {
  double rtol, atol;
};
constexpr Tol kDouble{1e-12, 1e-13};
constexpr Tol kFloat{1e-5, 1e-6};

template <class T>
void compare_case(const io::SafeTensorsFile& f, const std::string& name, Kind k, Tol tol) {
  CAPTURE(name);
  const double eps = std::stod(f.meta(name + ".eps"));
  const bool affine = f.meta(name + ".affine") == "1";
  const Index groups = k == Kind::Group ? std::stoll(f.meta(name + ".groups")) : 0;
  const auto x = f.get<T>(name + ".x");
  const auto dy = f.get<T>(name + ".dy");
  const auto g = affine ? f.get<T>(name + ".gamma") : Tensor<T>();
  const auto b = affine ? f.get<T>(name + ".beta") : Tensor<T>();
  ops::NormResult<T> r;
  ops::NormGrads<T> d;
  if (k == Kind::Instance) {
    r = ops::instance_norm(x, g, b, eps);
    d = ops::instance_norm_backward(x, g, r.mean, r.rstd, dy);
  } else if (k == Kind::Group) {
    r = ops::group_norm(x, groups, g, b, eps);
    d = ops::group_norm_backward(x, groups, g, r.mean, r.rstd, dy);
  } else {
    r = ops::layer_norm(x, g, b, eps);
    d = ops::layer_norm_backward(x, g, r.mean, r.rstd, dy);
  }
  BFT_CHECK_CLOSE(r.y, f.get<double>(name + ".y"), tol.rtol, tol.atol);
  BFT_CHECK_CLOSE(r.mean, f.get<double>(name + ".mean"), tol.rtol, tol.atol);
  BFT_CHECK_CLOSE(r.rstd, f.get<double>(name + ".rstd"), tol.rtol, tol.atol);
  BFT_CHECK_CLOSE(d.dx, f.get<double>(name + ".dx"), tol.rtol, tol.atol);
  if (affine) {
    // parameter gradients sum over N·spatial terms: scale atol by that count
    const double n = static_cast<double>(x.numel() / x.dim(k == Kind::Layer ? -1 : 1));
    BFT_CHECK_CLOSE(d.dgamma, f.get<double>(name + ".dgamma"), tol.rtol, tol.atol * n);
    BFT_CHECK_CLOSE(d.dbeta, f.get<double>(name + ".dbeta"), tol.rtol, tol.atol * n);
  }
}

int compare_family(const std::string& prefix, Kind k) {
  const auto f = bft::vectors("norm");
  int n = 0;
  for (; f.contains(prefix + std::to_string(n) + ".x"); ++n) {
    const std::string name = prefix + std::to_string(n);
    compare_case<double>(f, name, k, kDouble);
    compare_case<float>(f, name, k, kFloat);
  }
  return n;
}

}  // namespace

TEST_CASE("norm: gradcheck instance_norm (x, gamma, beta)") {
  check_grads(Kind::Instance, {2, 3, 4, 5}, 0, true);
  check_grads(Kind::Instance, {2, 3, 7}, 0, false, 1e-5, 4);
  check_grads(Kind::Instance, {1, 2, 6}, 0, true, 1e-2, 5);
}

TEST_CASE("norm: gradcheck group_norm (x, gamma, beta)") {
  check_grads(Kind::Group, {2, 6, 5}, 3, true);
  check_grads(Kind::Group, {2, 4, 3, 2}, 2, true, 1e-5, 6);
  check_grads(Kind::Group, {2, 4, 6}, 4, true, 1e-5, 7);  // groups == C (wav2vec 2.0)
  check_grads(Kind::Group, {3, 4, 5}, 1, false, 1e-5, 8);
  check_grads(Kind::Group, {2, 4}, 2, true, 1e-3, 9);     // no spatial dims
}

TEST_CASE("norm: gradcheck layer_norm (x, gamma, beta)") {
  check_grads(Kind::Layer, {3, 4, 6}, 0, true);
  check_grads(Kind::Layer, {5, 8}, 0, false, 1e-5, 10);
  check_grads(Kind::Layer, {7}, 0, true, 1e-5, 11);
}

TEST_CASE("norm: instance_norm matches PyTorch (double and float)") {
  CHECK(compare_family("in", Kind::Instance) == 3);
}

TEST_CASE("norm: group_norm matches PyTorch (double and float)") {
  CHECK(compare_family("gn", Kind::Group) == 4);
}

TEST_CASE("norm: layer_norm matches PyTorch (double and float)") {
  CHECK(compare_family("ln", Kind::Layer) == 3);
}

TEST_CASE("norm: normalised rows have zero mean and unit variance; stats shapes") {
  Rng rng(21);
  TD x = bft::random_tensor({2, 6, 3, 4}, rng, 3.0);
  for (Index i = 0; i < x.numel(); ++i) x[i] += 5.0;
  const auto r = ops::group_norm(x, 3, TD(), TD(), 0.0);
  CHECK(r.mean.shape() == Shape{2, 3});
  CHECK(r.rstd.shape() == Shape{2, 3});
  for (Index row = 0; row < 6; ++row) {
    double s = 0, s2 = 0;
    for (Index i = row * 24; i < (row + 1) * 24; ++i) {
      s += r.y[i];
      s2 += r.y[i] * r.y[i];
    }
    CHECK(std::abs(s / 24) < 1e-12);
    CHECK(std::abs(s2 / 24 - 1.0) < 1e-12);
  }
  CHECK(ops::instance_norm(x).mean.shape() == Shape{2, 6});
  CHECK(ops::layer_norm(x).mean.shape() == Shape{2, 6, 3});
  CHECK(ops::layer_norm(TD({5})).mean.shape() == Shape{});
}

TEST_CASE("norm: instance_norm equals group_norm with groups == C; strided input") {
  Rng rng(22);
  const TD x = bft::random_tensor({2, 4, 5}, rng);
  const TD g = bft::random_tensor({4}, rng), b = bft::random_tensor({4}, rng);
  const TD dy = bft::random_tensor({2, 4, 5}, rng);
  const auto a = ops::instance_norm(x, g, b);
  const auto c = ops::group_norm(x, 4, g, b);
  BFT_CHECK_CLOSE(a.y, c.y, 0, 1e-14);
  const auto da = ops::instance_norm_backward(x, g, a.mean, a.rstd, dy);
  const auto dc = ops::group_norm_backward(x, 4, g, c.mean, c.rstd, dy);
  BFT_CHECK_CLOSE(da.dx, dc.dx, 0, 1e-14);
  BFT_CHECK_CLOSE(da.dgamma, dc.dgamma, 0, 1e-14);
  BFT_CHECK_CLOSE(da.dbeta, dc.dbeta, 0, 1e-14);

  // layer norm of a transposed (non-contiguous) view equals that of its contiguous copy
  const TD xt = x.transpose(1, 2);  // (2, 5, 4)
  REQUIRE_FALSE(xt.is_contiguous());
  const auto lt = ops::layer_norm(xt, g, b);
  const auto lc = ops::layer_norm(xt.clone(), g, b);
  BFT_CHECK_CLOSE(lt.y, lc.y, 0, 1e-15);
  const TD dyt = dy.transpose(1, 2);
  const auto dlt = ops::layer_norm_backward(xt, g, lt.mean, lt.rstd, dyt);
  const auto dlc = ops::layer_norm_backward(xt.clone(), g, lc.mean, lc.rstd, dyt.clone());
  BFT_CHECK_CLOSE(dlt.dx, dlc.dx, 0, 1e-15);
  BFT_CHECK_CLOSE(dlt.dgamma, dlc.dgamma, 0, 1e-15);
}

TEST_CASE("norm: shape and argument errors") {
  const TD x({2, 6, 5});
  const TD g6({6}), g4({4}), g5({5});
  using doctest::Contains;
  CHECK_THROWS_WITH_AS(ops::instance_norm(TD({2, 6})), Contains("instance_norm: expected x of shape (N, C, L)"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::instance_norm(x, g4, g6), Contains("gamma must have shape (6,) for x of shape (2, 6, 5), got (4,)"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::instance_norm(x, g6, g4), Contains("beta must have shape (6,)"), ShapeError);
  CHECK_THROWS_AS(ops::instance_norm(x, g6, g6, -1.0), ArgumentError);
  CHECK_THROWS_AS(ops::instance_norm(TD({2, 3, 0})), ShapeError);

  CHECK_THROWS_WITH_AS(ops::group_norm(x, 4), Contains("6 channels of x with shape (2, 6, 5) are not divisible into 4 groups"), ShapeError);
  CHECK_THROWS_AS(ops::group_norm(x, 0), ArgumentError);
  CHECK_THROWS_AS(ops::group_norm(TD({6}), 3), ShapeError);
  CHECK_THROWS_AS(ops::group_norm(x, 3, g5, g6), ShapeError);
  CHECK_THROWS_AS(ops::group_norm(x, 3, g6, g6, std::nan("")), ArgumentError);

  CHECK_THROWS_WITH_AS(ops::layer_norm(x, g6, g5), Contains("layer_norm: gamma must have shape (5,)"), ShapeError);
  CHECK_THROWS_AS(ops::layer_norm(TD(Shape{})), ShapeError);
  CHECK_THROWS_AS(ops::layer_norm(TD({3, 0})), ShapeError);

  // backward: dy and saved statistics must fit x
  const auto r = ops::group_norm(x, 3, g6, g6);
  CHECK_THROWS_WITH_AS(ops::group_norm_backward(x, 3, g6, r.mean, r.rstd, TD({2, 6, 4})), Contains("group_norm_backward: dy has shape (2, 6, 4) but x has shape (2, 6, 5)"), ShapeError);
  CHECK_THROWS_WITH_AS(ops::group_norm_backward(x, 2, g6, r.mean, r.rstd, x), Contains("saved mean/rstd must have shape (2, 2)"), ShapeError);
  CHECK_THROWS_AS(ops::instance_norm_backward(x, g6, r.mean, r.rstd, x), ShapeError);
  const auto l = ops::layer_norm(x);
  CHECK_THROWS_AS(ops::layer_norm_backward(x, g6, l.mean, l.rstd, x), ShapeError);
  CHECK_THROWS_AS(ops::layer_norm_backward(x, TD(), l.rstd.reshape({12}), l.rstd, x), ShapeError);
}

TEST_CASE("norm: group_norm_ in place gives exactly group_norm's y (any groups, with and without affine)") {
  Rng rng(81);
  const TD x = bft::random_tensor({2, 6, 7}, rng, 3.0);
  const TD g = bft::random_tensor({6}, rng), b = bft::random_tensor({6}, rng);
  for (Index groups : {Index(1), Index(2), Index(6)}) {
    TD y = x.clone();
    ops::group_norm_(y, groups, g, b, 1e-5);
    CHECK(bft_into::same(y, ops::group_norm(x, groups, g, b, 1e-5).y));
    TD n = x.clone();
    ops::group_norm_(n, groups);
    CHECK(bft_into::same(n, ops::group_norm(x, groups).y));
    Tensor<float> f = bft_into::to_float(x);
    const Tensor<float> fg = bft_into::to_float(g), fb = bft_into::to_float(b);
    const Tensor<float> fy = ops::group_norm(f, groups, fg, fb, 1e-5).y;
    ops::group_norm_(f, groups, fg, fb, 1e-5);
    CHECK(bft_into::same(f, fy));
  }
  TD strided = x.transpose(1, 2);
  CHECK_THROWS_AS(ops::group_norm_(strided, 7), ShapeError);
  TD y = x.clone();
  CHECK_THROWS_AS(ops::group_norm_(y, 4), ShapeError);
  CHECK_THROWS_AS(ops::group_norm_(y, 6, bft::random_tensor({5}, rng)), ShapeError);
  CHECK_THROWS_AS(ops::group_norm_(y, 6, TD(), TD(), -1.0), ArgumentError);
}

TEST_CASE("norm: layer_norm_into gives exactly layer_norm's y, also in place and from strided input") {
  Rng rng(82);
  const TD x = bft::random_tensor({3, 4, 9}, rng, 2.0);
  const TD g = bft::random_tensor({9}, rng), b = bft::random_tensor({9}, rng);
  const TD ref = ops::layer_norm(x, g, b, 1e-5).y;
  TD y(x.shape());
  ops::layer_norm_into(y, x, g, b, 1e-5);
  CHECK(bft_into::same(y, ref));
  TD inplace = x.clone();
  ops::layer_norm_into(inplace, inplace, g, b, 1e-5);
  CHECK(bft_into::same(inplace, ref));
  const TD xt = x.transpose(0, 1).clone().transpose(0, 1);  // same values, strided
  REQUIRE(!xt.is_contiguous());
  TD ys(x.shape());
  ops::layer_norm_into(ys, xt, g, b, 1e-5);
  CHECK(bft_into::same(ys, ref));
  TD bad({3, 4, 8});
  CHECK_THROWS_AS(ops::layer_norm_into(bad, x, g, b, 1e-5), ShapeError);
  TD bad_strided = TD({4, 3, 9}).transpose(0, 1);
  CHECK_THROWS_AS(ops::layer_norm_into(bad_strided, x, g, b, 1e-5), ShapeError);
  CHECK_THROWS_AS(ops::layer_norm_into(y, x, bft::random_tensor({8}, rng), b, 1e-5), ShapeError);
}

#ifdef BLENDFUSE_WITH_ONEDNN
TEST_CASE("norm: group_norm_ and layer_norm_into on oneDNN match the reference") {
  Rng rng(83);
  const Tensor<float> x = bft_into::to_float(bft::random_tensor({2, 8, 50}, rng, 3.0));
  const Tensor<float> g = bft_into::to_float(bft::random_tensor({8}, rng)), b = bft_into::to_float(bft::random_tensor({8}, rng));
  for (Index groups : {Index(8), Index(2)}) {  // per-channel route (groups == C) and the reference fallback
    Tensor<float, OneDnn> y = onednn::to_onednn(x);
    ops::group_norm_(y, groups, onednn::to_onednn(g), onednn::to_onednn(b), 1e-5);
    const Tensor<float> ref = ops::group_norm(x, groups, g, b, 1e-5).y;
    BFT_CHECK_CLOSE(bft_into::to_double(onednn::to_cpu(y)), bft_into::to_double(ref), 1e-5, 1e-5);
    if (groups != 8) CHECK(bft_into::same(onednn::to_cpu(y), ref));
  }
  Tensor<float, OneDnn> strided = onednn::to_onednn(x).transpose(1, 2);
  CHECK_THROWS_AS(ops::group_norm_(strided, 50), ShapeError);
  // group_norm forward / backward on OneDnn tensors: the reference on the same memory.
  const auto fo = ops::group_norm(onednn::to_onednn(x), 2, onednn::to_onednn(g), onednn::to_onednn(b), 1e-5);
  CHECK(bft_into::same(onednn::to_cpu(fo.y), ops::group_norm(x, 2, g, b, 1e-5).y));

  const Tensor<float> xl = bft_into::to_float(bft::random_tensor({3, 5, 16}, rng, 2.0));
  const Tensor<float> gl = bft_into::to_float(bft::random_tensor({16}, rng)), bl = bft_into::to_float(bft::random_tensor({16}, rng));
  Tensor<float, OneDnn> yl({3, 5, 16});
  ops::layer_norm_into(yl, onednn::to_onednn(xl), onednn::to_onednn(gl), onednn::to_onednn(bl), 1e-5);
  BFT_CHECK_CLOSE(bft_into::to_double(onednn::to_cpu(yl)), bft_into::to_double(ops::layer_norm(xl, gl, bl, 1e-5).y), 1e-5, 1e-5);
  Tensor<float, OneDnn> bad({3, 5, 15});
  CHECK_THROWS_AS(ops::layer_norm_into(bad, onednn::to_onednn(xl), onednn::to_onednn(gl), onednn::to_onednn(bl), 1e-5), ShapeError);
}
#endif
