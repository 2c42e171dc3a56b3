// blendfuse — the MLP encoder of the deformation fusion module: the "without geometric map"
// ablation (paper Table 5) — flatten the (V, 3) deformation, linear → ReLU → linear.
//
// Module pattern (as every nn/ module): forward(input, Context*) returns the output and, when a
// context is given, saves what backward needs; backward(context, dL/dout) accumulates parameter
// gradients. Templated on the element type and a host backend B; parameters are host
// Parameter<T> viewed as Tensor<T, B>.
#pragma once

#include <string>

#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/linear.hpp"

namespace blendfuse::nn {

struct MlpEncoderConfig {
  Index in_features = 0;  // V·3
  Index hidden = 256;
  Index out_features = 128;
};

template <class T, class B = Cpu>
class MlpEncoder {
 public:
  using TensorB = Tensor<T, B>;
  struct Context {
    TensorB x, h;
  };

  MlpEncoder() = default;
  MlpEncoder(const MlpEncoderConfig& cfg, const std::string& prefix)
      : cfg_(cfg),
        w1_(prefix + "fc1.weight", Shape{cfg.hidden, cfg.in_features}),
        b1_(prefix + "fc1.bias", Shape{cfg.hidden}),
        w2_(prefix + "fc2.weight", Shape{cfg.out_features, cfg.hidden}),
        b2_(prefix + "fc2.bias", Shape{cfg.out_features}) {}

  void init(Rng& rng) {
    init_uniform_fan_in(w1_, cfg_.in_features, rng);
    init_uniform_fan_in(b1_, cfg_.in_features, rng);
    init_uniform_fan_in(w2_, cfg_.hidden, rng);
    init_uniform_fan_in(b2_, cfg_.hidden, rng);
  }
  ParamList<T> parameters() { return {&w1_, &b1_, &w2_, &b2_}; }

  /// Multiply-adds of one forward per sample.
  double macs_per_sample() const {
    return static_cast<double>(cfg_.in_features) * cfg_.hidden + static_cast<double>(cfg_.hidden) * cfg_.out_features;
  }

  /// x (B, in_features) → (B, out_features).
  TensorB forward(const TensorB& x, Context* ctx = nullptr) const {
    check_shape(x, {-1, cfg_.in_features}, "MlpEncoder input");
    TensorB h = ops::linear(x, pv(w1_), pv(b1_));
    ops::relu_(h);
    if (ctx) *ctx = Context{x, h};
    return ops::linear(h, pv(w2_), pv(b2_));
  }

  void backward(const Context& ctx, const TensorB& dout) {
    auto g2 = ops::linear_backward(ctx.h, pv(w2_), dout);
    w2_.accumulate(hv(g2.dw));
    b2_.accumulate(hv(g2.db));
    TensorB dh = ops::relu_backward(ctx.h, g2.dx);
    auto g1 = ops::linear_backward(ctx.x, pv(w1_), dh);
    w1_.accumulate(hv(g1.dw));
    b1_.accumulate(hv(g1.db));
  }

 private:
  static TensorB pv(const Parameter<T>& p) { return detail::host_view<B>(p.value); }
  static Tensor<T> hv(const TensorB& t) { return detail::host_view<Cpu>(t); }

  MlpEncoderConfig cfg_;
  Parameter<T> w1_, b1_, w2_, b2_;
};

}  // namespace blendfuse::nn
