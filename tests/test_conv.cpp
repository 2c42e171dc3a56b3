#include "test_util.hpp"

#include <nlohmann/json.hpp>

#include "blendfuse/ops/conv.hpp"

using namespace blendfuse;
using bft::random_tensor;

namespace {

using Grads = std::vector<Tensor<double>>;

// Gradient check of conv2d in double for inputs {x, w[, b]}.
void gradcheck_conv2d(const Shape& xs, const Shape& ws, const ops::Conv2dParams& p, bool bias,
                      std::uint64_t seed) {
  Rng rng(seed);
  std::vector<Tensor<double>> in{random_tensor(xs, rng), random_tensor(ws, rng)};
  if (bias) in.push_back(random_tensor({ws[0]}, rng));
  bft::gradcheck(
      in,
      [&](const std::vector<Tensor<double>>& v) {
        return ops::conv2d(v[0], v[1], v.size() > 2 ? &v[2] : nullptr, p);
      },
      [&](const std::vector<Tensor<double>>& v, const Tensor<double>& dy) {
        auto g = ops::conv2d_backward(v[0], v[1], dy, p, bias);
        CHECK(g.db.empty() == !bias);
        return bias ? Grads{g.dx, g.dw, g.db} : Grads{g.dx, g.dw};
      });
}

void gradcheck_conv1d(const Shape& xs, const Shape& ws, const ops::Conv1dParams& p, bool bias,
                      std::uint64_t seed) {
  Rng rng(seed);
  std::vector<Tensor<double>> in{random_tensor(xs, rng), random_tensor(ws, rng)};
  if (bias) in.push_back(random_tensor({ws[0]}, rng));
  bft::gradcheck(
      in,
      [&](const std::vector<Tensor<double>>& v) {
        return ops::conv1d(v[0], v[1], v.size() > 2 ? &v[2] : nullptr, p);
      },
      [&](const std::vector<Tensor<double>>& v, const Tensor<double>& dy) {
        auto g = ops::conv1d_backward(v[0], v[1], dy, p, bias);
        CHECK(g.db.empty() == !bias);
        return bias ? Grads{g.dx, g.dw, g.db} : Grads{g.dx, g.dw};
      });
}

// Direct six-loop convolution (no im2col, no GEMM) used as an independent reference.
Tensor<double> naive_conv2d(const Tensor<double>& x, const Tensor<double>& w,
                            const ops::Conv2dParams& p) {
  const Index n = x.dim(0), ci = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const Index co = w.dim(0), cig = w.dim(1), kh = w.dim(2), kw = w.dim(3);
  const Index cog = co / p.groups;
  const Index ho = ops::conv_output_size(h, kh, p.stride[0], p.padding[0], p.dilation[0]);
  const Index wo = ops::conv_output_size(wd, kw, p.stride[1], p.padding[1], p.dilation[1]);
  REQUIRE(ci == cig * p.groups);
  Tensor<double> y({n, co, ho, wo});
  for (Index b = 0; b < n; ++b)
    for (Index o = 0; o < co; ++o)
      for (Index i = 0; i < ho; ++i)
        for (Index j = 0; j < wo; ++j) {
          double s = 0;
          for (Index c = 0; c < cig; ++c)
            for (Index a = 0; a < kh; ++a)
              for (Index e = 0; e < kw; ++e) {
                const Index ih = i * p.stride[0] - p.padding[0] + a * p.dilation[0];
                const Index iw = j * p.stride[1] - p.padding[1] + e * p.dilation[1];
                if (ih >= 0 && ih < h && iw >= 0 && iw < wd)
                  s += x(b, (o / cog) * cig + c, ih, iw) * w(o, c, a, e);
              }
          y(b, o, i, j) = s;
        }
  return y;
}

double dot(const Tensor<double>& a, const Tensor<double>& b) {
  REQUIRE(a.shape() == b.shape());
  const auto ca = a.contiguous(), cb = b.contiguous();
  double s = 0;
  for (Index i = 0; i < ca.numel(); ++i) s += ca[i] * cb[i];
  return s;
}

// Forward and backward of every case in tests/vectors/conv.safetensors, computed in T and compared
// with the float64 PyTorch results.
template <class T>
void check_against_torch(double rtol, double atol) {
  const auto f = bft::vectors("conv");
  const nlohmann::json cases = nlohmann::json::parse(f.meta("cases"));
  REQUIRE(cases.size() == 8);
  int n1 = 0, n2 = 0;
  for (auto it = cases.begin(); it != cases.end(); ++it) {
    const std::string name = it.key();
    const nlohmann::json& c = it.value();
    INFO("case ", name);
    const auto x = f.get<T>(name + ".x");
    const auto w = f.get<T>(name + ".w");
    const auto r = f.get<T>(name + ".r");
    const bool bias = c.at("bias").get<bool>();
    REQUIRE(f.contains(name + ".b") == bias);
    Tensor<T> b;
    if (bias) b = f.get<T>(name + ".b");
    const auto stride = c.at("stride").get<std::vector<Index>>();
    const auto padding = c.at("padding").get<std::vector<Index>>();
    const auto dilation = c.at("dilation").get<std::vector<Index>>();
    const Index groups = c.at("groups").get<Index>();
    ops::ConvGrads<T> g;
    Tensor<T> y;
    if (c.at("dim").get<int>() == 2) {
      ++n2;
      const ops::Conv2dParams p{{stride[0], stride[1]}, {padding[0], padding[1]},
                                {dilation[0], dilation[1]}, groups};
      y = ops::conv2d(x, w, bias ? &b : nullptr, p);
      g = ops::conv2d_backward(x, w, r, p, bias);
    } else {
      ++n1;
      const ops::Conv1dParams p{stride[0], padding[0], dilation[0], groups};
      y = ops::conv1d(x, w, bias ? &b : nullptr, p);
      g = ops::conv1d_backward(x, w, r, p, bias);
    }
    BFT_CHECK_CLOSE(y, f.get<double>(name + ".y"), rtol, atol);
    BFT_CHECK_CLOSE(g.dx, f.get<double>(name + ".dx"), rtol, atol);
    BFT_CHECK_CLOSE(g.dw, f.get<double>(name + ".dw"), rtol, atol);
    if (bias) BFT_CHECK_CLOSE(g.db, f.get<double>(name + ".db"), rtol, atol);
    else CHECK(g.db.empty());
  }
  CHECK(n1 == 4);
  CHECK(n2 == 4);
}

}  // namespace

TEST_CASE("conv2d: gradient check (stride, padding, dilation, groups, bias)") {
  SUBCASE("3x3, padding 1, bias") {
    gradcheck_conv2d({2, 3, 5, 6}, {4, 3, 3, 3}, {{1, 1}, {1, 1}, {1, 1}, 1}, true, 1);
  }
  SUBCASE("stride (2, 1), padding (1, 2), dilation (1, 2), groups 2, bias") {
    gradcheck_conv2d({1, 4, 7, 6}, {6, 2, 3, 2}, {{2, 1}, {1, 2}, {1, 2}, 2}, true, 2);
  }
  SUBCASE("depthwise, stride 2, no bias") {
    gradcheck_conv2d({2, 3, 6, 5}, {6, 1, 2, 3}, {{2, 2}, {0, 1}, {1, 1}, 3}, false, 3);
  }
  SUBCASE("1x1 (no im2col), groups 2, bias") {
    gradcheck_conv2d({2, 4, 3, 4}, {6, 2, 1, 1}, {{1, 1}, {0, 0}, {1, 1}, 2}, true, 4);
  }
  SUBCASE("kernel larger than the input, covered by padding") {
    gradcheck_conv2d({1, 2, 2, 3}, {3, 2, 4, 4}, {{1, 2}, {2, 1}, {1, 1}, 1}, true, 5);
  }
}

TEST_CASE("conv1d: gradient check (stride, padding, dilation, groups, bias)") {
  SUBCASE("wav2vec feature extractor layer 0: kernel 10, stride 5, no bias") {
    gradcheck_conv1d({2, 1, 37}, {4, 1, 10}, {5, 0, 1, 1}, false, 11);
  }
  SUBCASE("positional conv: even kernel, padding kernel/2, groups, bias") {
    gradcheck_conv1d({1, 8, 11}, {8, 2, 6}, {1, 3, 1, 4}, true, 12);
  }
  SUBCASE("stride 2, dilation 3, padding 2, groups 2, bias") {
    gradcheck_conv1d({2, 4, 17}, {6, 2, 3}, {2, 2, 3, 2}, true, 13);
  }
  SUBCASE("kernel 1 (no im2col), no bias") {
    gradcheck_conv1d({2, 3, 9}, {5, 3, 1}, {1, 0, 1, 1}, false, 14);
  }
}

TEST_CASE("conv: forward and backward match PyTorch in double") {
  check_against_torch<double>(1e-10, 1e-10);
}

TEST_CASE("conv: forward and backward match PyTorch in float") {
  check_against_torch<float>(1e-5, 1e-5);
}

TEST_CASE("conv: chunked im2col path matches the direct loops; adjoint identities") {
  // Column matrices of 4096 rows are split into chunks of 512 output positions; the 2-d chunk
  // boundaries fall inside output rows (512 is not a multiple of W_out = 29).
  Rng rng(21);
  SUBCASE("conv2d") {
    const ops::Conv2dParams p{{1, 1}, {1, 1}, {1, 1}, 1};
    const auto x = random_tensor({1, 256, 30, 30}, rng), w = random_tensor({2, 256, 4, 4}, rng);
    const auto y = ops::conv2d(x, w, nullptr, p);
    REQUIRE(y.shape() == Shape{1, 2, 29, 29});
    BFT_CHECK_CLOSE(y, naive_conv2d(x, w, p), 1e-10, 1e-10);
    const auto dy = random_tensor(y.shape(), rng);
    const auto g = ops::conv2d_backward(x, w, dy, p, false);
    // y is bilinear in (x, w): <y, dy> = <x, dx> = <w, dw>.
    CHECK(dot(x, g.dx) == doctest::Approx(dot(y, dy)).epsilon(1e-10));
    CHECK(dot(w, g.dw) == doctest::Approx(dot(y, dy)).epsilon(1e-10));
  }
  SUBCASE("conv1d") {
    const ops::Conv1dParams p{2, 3, 1, 1};
    const auto x = random_tensor({2, 512, 2100}, rng), w = random_tensor({3, 512, 8}, rng);
    const auto y = ops::conv1d(x, w, nullptr, p);
    REQUIRE(y.shape() == Shape{2, 3, 1050});
    const auto y2 = naive_conv2d(x.reshape({2, 512, 1, 2100}), w.reshape({3, 512, 1, 8}),
                                 {{1, 2}, {0, 3}, {1, 1}, 1});
    BFT_CHECK_CLOSE(y, y2.reshape({2, 3, 1050}), 1e-10, 1e-10);
    const auto dy = random_tensor(y.shape(), rng);
    const auto g = ops::conv1d_backward(x, w, dy, p, false);
    CHECK(dot(x, g.dx) == doctest::Approx(dot(y, dy)).epsilon(1e-10));
    CHECK(dot(w, g.dw) == doctest::Approx(dot(y, dy)).epsilon(1e-10));
  }
}

TEST_CASE("conv: non-contiguous inputs give the same result as contiguous copies") {
  Rng rng(31);
  const auto xt = random_tensor({2, 3, 6, 5}, rng).transpose(2, 3);  // (2, 3, 5, 6) view
  REQUIRE_FALSE(xt.is_contiguous());
  const auto w = random_tensor({4, 3, 3, 3}, rng), b = random_tensor({4}, rng);
  const ops::Conv2dParams p{{2, 1}, {1, 1}, {1, 1}, 1};
  const auto y = ops::conv2d(xt, w, &b, p);
  BFT_CHECK_CLOSE(y, ops::conv2d(xt.clone(), w, &b, p), 0.0, 0.0);
  const auto dy = random_tensor(y.shape(), rng).transpose(0, 1).clone().transpose(0, 1);
  REQUIRE_FALSE(dy.is_contiguous());
  const auto g1 = ops::conv2d_backward(xt, w, dy, p, true);
  const auto g2 = ops::conv2d_backward(xt.clone(), w, dy.clone(), p, true);
  BFT_CHECK_CLOSE(g1.dx, g2.dx, 0.0, 0.0);
  BFT_CHECK_CLOSE(g1.dw, g2.dw, 0.0, 0.0);
  BFT_CHECK_CLOSE(g1.db, g2.db, 0.0, 0.0);
}

TEST_CASE("conv: shape and argument errors name the op and the shapes") {
  Tensor<float> x({1, 4, 8, 8}), w({6, 2, 3, 3}), b({6});
  const ops::Conv2dParams g2{{1, 1}, {0, 0}, {1, 1}, 2};
  CHECK_NOTHROW(ops::conv2d(x, w, &b, g2));

  // Wrong ranks.
  CHECK_THROWS_WITH_AS(ops::conv2d(Tensor<float>({4, 8, 8}), w, nullptr, g2),
                       doctest::Contains("conv2d: input must be 4-d (N, C_in, H, W), got shape (4, 8, 8)"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(ops::conv2d(x, Tensor<float>({6, 2, 3}), nullptr, g2),
                       doctest::Contains("conv2d: weight must be 4-d"), ShapeError);
  // Channel / group mismatch.
  CHECK_THROWS_WITH_AS(ops::conv2d(x, w, nullptr, {}),
                       doctest::Contains("conv2d: weight dim 1 must be C_in/groups = 4 (input shape (1, 4, 8, 8), weight shape (6, 2, 3, 3), groups 1)"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(ops::conv2d(x, Tensor<float>({6, 1, 3, 3}), nullptr, {{1, 1}, {0, 0}, {1, 1}, 3}),
                       doctest::Contains("conv2d: groups must divide both C_in and C_out"), ShapeError);
  CHECK_THROWS_AS(ops::conv2d(x, Tensor<float>({5, 2, 3, 3}), nullptr, g2), ShapeError);
  // Bias.
  CHECK_THROWS_WITH_AS(ops::conv2d(x, w, &x, g2),
                       doctest::Contains("conv2d: bias shape (1, 4, 8, 8) does not match C_out = 6"),
                       ShapeError);
  Tensor<float> b5({5});
  CHECK_THROWS_AS(ops::conv2d(x, w, &b5, g2), ShapeError);
  // Input smaller than the dilated kernel.
  CHECK_THROWS_WITH_AS(ops::conv2d(x, w, nullptr, {{1, 1}, {0, 0}, {4, 1}, 2}),
                       doctest::Contains("conv2d: input shape (1, 4, 8, 8) with padding (0, 0) is smaller than the dilated kernel"),
                       ShapeError);
  CHECK_THROWS_AS(ops::conv2d(x, Tensor<float>({6, 2, 0, 3}), nullptr, g2), ShapeError);
  // Bad parameter values.
  CHECK_THROWS_WITH_AS(ops::conv2d(x, w, nullptr, {{1, 0}, {0, 0}, {1, 1}, 2}),
                       doctest::Contains("conv2d: stride must be >= 1, got (1, 0)"), ArgumentError);
  CHECK_THROWS_AS(ops::conv2d(x, w, nullptr, {{1, 1}, {-1, 0}, {1, 1}, 2}), ArgumentError);
  CHECK_THROWS_AS(ops::conv2d(x, w, nullptr, {{1, 1}, {0, 0}, {0, 1}, 2}), ArgumentError);
  CHECK_THROWS_AS(ops::conv2d(x, w, nullptr, {{1, 1}, {0, 0}, {1, 1}, 0}), ArgumentError);
  // Backward: grad_output must have the forward output's shape.
  CHECK_NOTHROW(ops::conv2d_backward(x, w, Tensor<float>({1, 6, 6, 6}), g2, true));
  CHECK_THROWS_WITH_AS(ops::conv2d_backward(x, w, Tensor<float>({1, 6, 6, 7}), g2, true),
                       doctest::Contains("conv2d_backward: grad_output shape (1, 6, 6, 7) does not match the output shape (1, 6, 6, 6) of input shape (1, 4, 8, 8) and weight shape (6, 2, 3, 3)"),
                       ShapeError);

  // conv1d.
  Tensor<double> s({2, 4, 20}), k({8, 1, 10});
  const ops::Conv1dParams dw{5, 0, 1, 4};
  CHECK_NOTHROW(ops::conv1d(s, k, nullptr, dw));
  CHECK_THROWS_WITH_AS(ops::conv1d(Tensor<double>({4, 20}), k, nullptr, dw),
                       doctest::Contains("conv1d: input must be 3-d (N, C_in, L), got shape (4, 20)"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(ops::conv1d(s, k, nullptr, {5, 0, 1, 1}),
                       doctest::Contains("conv1d: weight dim 1 must be C_in/groups = 4 (input shape (2, 4, 20), weight shape (8, 1, 10), groups 1)"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(ops::conv1d(Tensor<double>({2, 4, 9}), k, nullptr, dw),
                       doctest::Contains("conv1d: input shape (2, 4, 9) with padding (0) is smaller than the dilated kernel of weight shape (8, 1, 10)"),
                       ShapeError);
  CHECK_NOTHROW(ops::conv1d(Tensor<double>({2, 4, 9}), k, nullptr, {5, 1, 1, 4}));
  CHECK_THROWS_WITH_AS(ops::conv1d(s, k, nullptr, {0, 0, 1, 4}),
                       doctest::Contains("conv1d: stride must be >= 1, got (0)"), ArgumentError);
  CHECK_THROWS_WITH_AS(ops::conv1d_backward(s, k, Tensor<double>({2, 8, 4}), dw, false),
                       doctest::Contains("conv1d_backward: grad_output shape (2, 8, 4) does not match the output shape (2, 8, 3)"),
                       ShapeError);
}
