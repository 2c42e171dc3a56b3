// Fusion-module building blocks: encoders, the blendshape decoder and the losses, checked
// against central finite differences in double.
#include "test_util.hpp"

#include "blendfuse/loss/losses.hpp"
#include "blendfuse/nn/blendshape_decoder.hpp"
#include "blendfuse/nn/encoders.hpp"
#include "blendfuse/train/adam.hpp"

using namespace blendfuse;

namespace {

/// Checks the gradients a module accumulated into its parameters against central differences of
/// L = Σ out·R, where `run(with_backward)` runs forward (and backward with dL/dout = R).
void check_param_grads(const nn::ParamList<double>& ps, const std::function<double(bool)>& run,
                       double rtol = 1e-5, double atol = 1e-8, int probes = 25) {
  nn::zero_grads(ps);
  run(true);
  Rng rng(3);
  for (auto* p : ps) {
    CAPTURE(p->name);
    double worst = 0, wa = 0, wn = 0;
    for (int k = 0; k < probes; ++k) {
      const Index i = static_cast<Index>(rng.below(static_cast<std::uint64_t>(p->value.numel())));
      const double orig = p->value[i], eps = 1e-6;
      p->value[i] = orig + eps;
      const double lp = run(false);
      p->value[i] = orig - eps;
      const double lm = run(false);
      p->value[i] = orig;
      const double num = (lp - lm) / (2 * eps);
      const double err = std::abs(num - p->grad[i]) / (atol + rtol * std::max(std::abs(num), std::abs(p->grad[i])));
      if (err > worst) { worst = err; wa = p->grad[i]; wn = num; }
    }
    CHECK_MESSAGE(worst <= 1.0, "analytic ", wa, " vs numeric ", wn);
  }
}

double dot(const Tensor<double>& a, const Tensor<double>& b) {
  double s = 0;
  for (Index i = 0; i < a.numel(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST_CASE("ConvInReluEncoder: parameter gradients match finite differences") {
  nn::ConvEncoderConfig cfg;
  cfg.in_channels = 4;
  cfg.channels = {3, 4, 5};
  cfg.map_size = 16;
  cfg.out_features = 6;
  nn::ConvInReluEncoder<double> enc(cfg, "enc.");
  Rng rng(11);
  enc.init(rng);
  CHECK(cfg.final_size() == 2);
  auto x = bft::random_tensor({2, 4, 16, 16}, rng);
  auto R = bft::random_tensor({2, 6}, rng);
  check_param_grads(enc.parameters(), [&](bool bwd) {
    nn::ConvInReluEncoder<double>::Context ctx;
    auto y = enc.forward(x, bwd ? &ctx : nullptr);
    if (bwd) enc.backward(ctx, R);
    return dot(y, R);
  });
  CHECK_THROWS_AS(enc.forward(bft::random_tensor({1, 3, 16, 16}, rng)), ShapeError);
}

TEST_CASE("MlpEncoder: parameter gradients match finite differences") {
  nn::MlpEncoder<double> enc({12, 7, 5}, "mlp.");
  Rng rng(12);
  enc.init(rng);
  auto x = bft::random_tensor({3, 12}, rng);
  auto R = bft::random_tensor({3, 5}, rng);
  check_param_grads(enc.parameters(), [&](bool bwd) {
    nn::MlpEncoder<double>::Context ctx;
    auto y = enc.forward(x, bwd ? &ctx : nullptr);
    if (bwd) enc.backward(ctx, R);
    return dot(y, R);
  });
}

TEST_CASE("BlendshapeDecoder: free and fixed-norm columns, weight and input gradients") {
  for (double norm : {0.0, 2.5}) {
    CAPTURE(norm);
    nn::BlendshapeDecoder<double> dec(5, 4, norm);
    Rng rng(13);
    dec.init(rng);
    if (norm > 0) {
      auto b = dec.blendshapes();
      for (Index j = 0; j < 4; ++j) {
        double s = 0;
        for (Index i = 0; i < 15; ++i) s += b[i * 4 + j] * b[i * 4 + j];
        CHECK(std::sqrt(s) == doctest::Approx(norm).epsilon(1e-9));
      }
    }
    auto w = bft::random_tensor({3, 4}, rng);
    auto R = bft::random_tensor({3, 15}, rng);
    check_param_grads(dec.parameters(), [&](bool bwd) {
      nn::BlendshapeDecoder<double>::Context ctx;
      auto y = dec.forward(w, bwd ? &ctx : nullptr);
      if (bwd) dec.backward(ctx, R);
      return dot(y, R);
    });
    bft::gradcheck(
        {w}, [&](const std::vector<Tensor<double>>& in) { return dec.forward(in[0]); },
        [&](const std::vector<Tensor<double>>& in, const Tensor<double>& d) {
          nn::BlendshapeDecoder<double>::Context ctx;
          dec.forward(in[0], &ctx);
          return std::vector<Tensor<double>>{dec.backward(ctx, d)};
        });
  }
}

TEST_CASE("losses: values on hand-computed cases and gradients by finite differences") {
  auto p = Tensor<double>::from({1, 6}, {1, 2, 3, 0, 0, 1});
  auto t = Tensor<double>::from({1, 6}, {0, 2, 3, 0, 0, 0});
  auto w = Tensor<double>::from({2}, {2, 0.5});
  // (1/V) Σ ω‖d‖² = (2·1 + 0.5·1) / 2
  CHECK(loss::weighted_mse(p, t, w).value == doctest::Approx(1.25));
  CHECK(loss::weighted_mse(p, t, Tensor<double>()).value == doctest::Approx(1.0));
  CHECK(loss::l1(Tensor<double>::from({2, 2}, {1, -2, 0, 3})).value == doctest::Approx(3.0));
  CHECK(loss::mean_sq(p).value == doctest::Approx((1 + 4 + 9 + 1) / 2.0));
  // usage: column 0 used (rms 1), column 1 unused → ≈ 1
  CHECK(loss::usage_group_lasso(Tensor<double>::from({2, 2}, {1, 0, -1, 0})).value == doctest::Approx(1.0).epsilon(1e-3));
  CHECK_THROWS_AS(loss::weighted_mse(p, Tensor<double>({1, 3}), w), ShapeError);
  CHECK_THROWS_AS(loss::weighted_mse(p, t, Tensor<double>({3})), ShapeError);

  Rng rng(5);
  auto x = bft::random_tensor({3, 6}, rng);
  auto y = bft::random_tensor({3, 6}, rng);
  auto check = [&](const std::function<loss::LossGrad<double>(const Tensor<double>&)>& f) {
    bft::gradcheck(
        {x}, [&](const std::vector<Tensor<double>>& in) { return Tensor<double>::from({1}, {f(in[0]).value}); },
        [&](const std::vector<Tensor<double>>& in, const Tensor<double>& d) {
          auto g = f(in[0]).grad.clone();
          for (Index i = 0; i < g.numel(); ++i) g[i] *= d[0];
          return std::vector<Tensor<double>>{g};
        });
  };
  check([&](const Tensor<double>& a) { return loss::weighted_mse(a, y, w); });
  check([&](const Tensor<double>& a) { return loss::l1(a); });
  check([&](const Tensor<double>& a) { return loss::mean_sq(a); });
  check([&](const Tensor<double>& a) { return loss::usage_group_lasso(a); });
}

TEST_CASE("cross_domain_overlap: subspace projection value and gradient") {
  // orthogonal subspaces → 0
  Tensor<double> o({6, 4});
  o(0, 0) = 1; o(1, 1) = 2; o(2, 2) = 3; o(3, 3) = 1;
  CHECK(loss::cross_domain_overlap(o, 2).value == doctest::Approx(0.0));
  // an expression column inside the span of two speech columns (but not parallel to either)
  // counts fully (≈ 1 up to δ), which pairwise cosines would underestimate
  Tensor<double> s({6, 3});
  s(0, 0) = 1; s(1, 0) = 1;   // (1, 1, 0)
  s(0, 1) = 1; s(1, 1) = -1;  // (1, -1, 0)
  s(0, 2) = 1;                // (1, 0, 0) = half the sum
  CHECK(loss::cross_domain_overlap(s, 2, 1e-9).value == doctest::Approx(1.0).epsilon(1e-6));
  // half in the span: (1, 0, 1)/√2 → 0.5
  s(2, 2) = 1;
  CHECK(loss::cross_domain_overlap(s, 2, 1e-9).value == doctest::Approx(0.5).epsilon(1e-6));
  CHECK_THROWS_AS(loss::cross_domain_overlap(s, 3), ArgumentError);
  // scale invariance per column
  Rng rng(17);
  auto B = bft::random_tensor({20, 7}, rng);
  const double v0 = loss::cross_domain_overlap(B, 3).value;
  for (Index i = 0; i < 20; ++i) B(i, 4) *= 5.0;
  CHECK(loss::cross_domain_overlap(B, 3).value == doctest::Approx(v0).epsilon(1e-9));
  bft::gradcheck(
      {B}, [&](const std::vector<Tensor<double>>& in) { return Tensor<double>::from({1}, {loss::cross_domain_overlap(in[0], 3).value}); },
      [&](const std::vector<Tensor<double>>& in, const Tensor<double>& d) {
        auto g = loss::cross_domain_overlap(in[0], 3).grad.clone();
        for (Index i = 0; i < g.numel(); ++i) g[i] *= d[0];
        return std::vector<Tensor<double>>{g};
      });
}

TEST_CASE("Adam: first step moves each weight by lr against the gradient sign, and minimises a quadratic") {
  nn::Parameter<double> p("p", {3});
  p.value = Tensor<double>::from({3}, {1, -2, 3});
  train::Adam<double> opt({&p}, {0.1});
  p.grad = Tensor<double>::from({3}, {0.5, -4, 0});
  opt.step();
  CHECK(p.value[0] == doctest::Approx(0.9));
  CHECK(p.value[1] == doctest::Approx(-1.9));
  CHECK(p.value[2] == doctest::Approx(3.0));
  for (int i = 0; i < 500; ++i) {
    for (Index k = 0; k < 3; ++k) p.grad[k] = 2 * (p.value[k] - 0.25);
    opt.step();
  }
  for (Index k = 0; k < 3; ++k) CHECK(p.value[k] == doctest::Approx(0.25).epsilon(0.01));
}

TEST_CASE("Adam<float> (vectorised float update) tracks the double reference and resumes bit-identically") {
  // Sizes: below one 8-lane vector, a vector plus a tail, and more than one 64 Ki chunk.
  const std::vector<Index> sizes{5, 67, (Index(1) << 16) + 13};
  Rng rng(77);
  std::vector<nn::Parameter<float>> pf;
  std::vector<nn::Parameter<double>> pd;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    pf.emplace_back("p" + std::to_string(k), Shape{sizes[k]});
    pd.emplace_back("p" + std::to_string(k), Shape{sizes[k]});
    fill_normal(pf[k].value, rng, 1.0);
    for (Index i = 0; i < sizes[k]; ++i) pd[k].value[i] = pf[k].value[i];
  }
  auto plist = []<class T>(std::vector<nn::Parameter<T>>& v) {
    nn::ParamList<T> ps;
    for (auto& p : v) ps.push_back(&p);
    return ps;
  };
  const train::AdamConfig cfg{1e-2, 0.9, 0.999, 1e-8};
  auto set_grads = [&](int step) {  // deterministic gradients of mixed scale and sign
    for (std::size_t k = 0; k < sizes.size(); ++k)
      for (Index i = 0; i < sizes[k]; ++i) {
        const double g = std::sin(0.37 * static_cast<double>(i) + step) * std::pow(10.0, (i % 7) - 3.0);
        pf[k].grad[i] = static_cast<float>(g);
        pd[k].grad[i] = static_cast<float>(g);  // the same (float) values
      }
  };
  train::Adam<float> of(plist(pf), cfg);
  train::Adam<double> od(plist(pd), cfg);
  for (int s = 0; s < 20; ++s) {
    set_grads(s);
    of.step();
    od.step();
  }
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    CAPTURE(sizes[k]);
    double worst = 0;
    for (Index i = 0; i < sizes[k]; ++i)
      worst = std::max(worst, std::abs(pf[k].value[i] - pd[k].value[i]) / (1.0 + std::abs(pd[k].value[i])));
    CHECK(worst < 1e-5);  // weights O(1) moved by ≈ 0.2 over 20 steps of lr 1e-2
  }

  // Resume: save (w, m, v, t) after 20 steps, run 10 more; a fresh optimiser on the saved state
  // must give the same bits.
  io::SafeTensorsWriter w;
  of.save_state(w);
  std::vector<Tensor<float>> saved;
  for (auto& p : pf) saved.push_back(p.value.clone());
  for (int s = 20; s < 30; ++s) {
    set_grads(s);
    of.step();
  }
  std::vector<nn::Parameter<float>> pr;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    pr.emplace_back("p" + std::to_string(k), Shape{sizes[k]});
    pr[k].value = saved[k].clone();
  }
  train::Adam<float> resumed(plist(pr), cfg);
  resumed.load_state(io::SafeTensorsFile::parse(w.serialize(), "adam-state"));
  CHECK(resumed.step_count() == 20);
  for (int s = 20; s < 30; ++s) {
    set_grads(s);
    for (std::size_t k = 0; k < sizes.size(); ++k) pr[k].grad = pf[k].grad.clone();
    resumed.step();
  }
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    CAPTURE(sizes[k]);
    Index diff = 0;
    for (Index i = 0; i < sizes[k]; ++i) diff += pr[k].value[i] != pf[k].value[i];
    CHECK(diff == 0);
  }
}
