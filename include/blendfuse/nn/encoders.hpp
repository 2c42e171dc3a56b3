// blendfuse — the encoders of the deformation fusion module (paper §3.3.2), built only from ops.
//
// ConvInReluEncoder: N × (conv k×k stride 2 → instance norm (affine) → ReLU), flatten, linear to
// K blendshape weights. The conv has no bias: the instance norm right after it subtracts the
// per-channel mean, which cancels any bias exactly.
// MlpEncoder: the "without geometric map" ablation — flatten the (V, 3) deformation, linear →
// ReLU → linear.
//
// Modules follow one pattern: forward(input, Context*) returns the output and, when a context is
// given, saves what backward needs; backward(context, dL/dout) accumulates parameter gradients.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/conv.hpp"
#include "blendfuse/ops/linear.hpp"
#include "blendfuse/ops/norm.hpp"

namespace blendfuse::nn {

struct ConvEncoderConfig {
  Index in_channels = 4;  // x, y, z displacement + the map's validity mask (see dfm.hpp)
  std::vector<Index> channels{16, 32, 64, 128, 128, 128};
  Index kernel = 3;
  Index map_size = 128;
  Index out_features = 128;
  double eps = 1e-5;

  /// Spatial size after the stride-2 blocks.
  Index final_size() const {
    Index s = map_size;
    for (std::size_t i = 0; i < channels.size(); ++i) s = (s + 2 * (kernel / 2) - kernel) / 2 + 1;
    return s;
  }
  Index flat_features() const { return channels.back() * final_size() * final_size(); }
};

template <class T>
class ConvInReluEncoder {
 public:
  struct Context {
    std::vector<Tensor<T>> inputs;   // input of each conv
    std::vector<Tensor<T>> convs;    // conv outputs (instance-norm inputs)
    std::vector<Tensor<T>> relus;    // block outputs
    std::vector<Tensor<T>> mean, rstd;
    Tensor<T> flat;                  // (B, flat_features)
  };

  ConvInReluEncoder() = default;
  ConvInReluEncoder(const ConvEncoderConfig& cfg, const std::string& prefix) : cfg_(cfg) {
    BF_CHECK(!cfg.channels.empty() && cfg.final_size() >= 1, ArgumentError,
             "ConvInReluEncoder: map size ", cfg.map_size, " too small for ", cfg.channels.size(),
             " stride-2 blocks");
    Index cin = cfg.in_channels;
    for (std::size_t i = 0; i < cfg.channels.size(); ++i) {
      const std::string b = prefix + "blocks." + std::to_string(i) + ".";
      const Index cout = cfg.channels[i];
      conv_w_.emplace_back(b + "conv.weight", Shape{cout, cin, cfg.kernel, cfg.kernel});
      norm_w_.emplace_back(b + "norm.weight", Shape{cout});
      norm_b_.emplace_back(b + "norm.bias", Shape{cout});
      cin = cout;
    }
    fc_w_ = Parameter<T>(prefix + "fc.weight", Shape{cfg.out_features, cfg.flat_features()});
    fc_b_ = Parameter<T>(prefix + "fc.bias", Shape{cfg.out_features});
  }

  void init(Rng& rng) {
    for (std::size_t i = 0; i < conv_w_.size(); ++i) {
      const auto& s = conv_w_[i].value.shape();
      init_uniform_fan_in(conv_w_[i], s[1] * s[2] * s[3], rng);
      norm_w_[i].value.fill(T(1));
      norm_b_[i].value.zero();
    }
    init_uniform_fan_in(fc_w_, cfg_.flat_features(), rng);
    init_uniform_fan_in(fc_b_, cfg_.flat_features(), rng);
  }

  ParamList<T> parameters() {
    ParamList<T> ps;
    for (std::size_t i = 0; i < conv_w_.size(); ++i) {
      ps.push_back(&conv_w_[i]);
      ps.push_back(&norm_w_[i]);
      ps.push_back(&norm_b_[i]);
    }
    ps.push_back(&fc_w_);
    ps.push_back(&fc_b_);
    return ps;
  }

  const ConvEncoderConfig& config() const { return cfg_; }

  /// x (B, in_channels, S, S) → (B, out_features).
  Tensor<T> forward(const Tensor<T>& x, Context* ctx = nullptr) const {
    check_shape(x, {-1, cfg_.in_channels, cfg_.map_size, cfg_.map_size}, "ConvInReluEncoder input");
    const ops::Conv2dParams p = conv_params();
    Tensor<T> h = x;
    if (ctx) *ctx = Context{};
    for (std::size_t i = 0; i < conv_w_.size(); ++i) {
      Tensor<T> c = ops::conv2d(h, conv_w_[i].value, nullptr, p);
      auto nr = ops::instance_norm(c, norm_w_[i].value, norm_b_[i].value, cfg_.eps);
      Tensor<T> r = ops::relu(nr.y);
      if (ctx) {
        ctx->inputs.push_back(h);
        ctx->convs.push_back(std::move(c));
        ctx->mean.push_back(std::move(nr.mean));
        ctx->rstd.push_back(std::move(nr.rstd));
        ctx->relus.push_back(r);
      }
      h = std::move(r);
    }
    Tensor<T> flat = h.reshape({h.dim(0), -1});
    if (ctx) ctx->flat = flat;
    return ops::linear(flat, fc_w_.value, fc_b_.value);
  }

  /// Accumulates parameter gradients for dout = ∂L/∂out (B, out_features).
  void backward(const Context& ctx, const Tensor<T>& dout) {
    auto lg = ops::linear_backward(ctx.flat, fc_w_.value, dout);
    fc_w_.accumulate(lg.dw);
    fc_b_.accumulate(lg.db);
    Tensor<T> d = lg.dx.reshape(ctx.relus.back().shape());
    const ops::Conv2dParams p = conv_params();
    for (std::size_t k = conv_w_.size(); k-- > 0;) {
      Tensor<T> dn = ops::relu_backward(ctx.relus[k], d);
      auto ng = ops::instance_norm_backward(ctx.convs[k], norm_w_[k].value, ctx.mean[k], ctx.rstd[k], dn);
      norm_w_[k].accumulate(ng.dgamma);
      norm_b_[k].accumulate(ng.dbeta);
      auto cg = ops::conv2d_backward(ctx.inputs[k], conv_w_[k].value, ng.dx, p, false);
      conv_w_[k].accumulate(cg.dw);
      d = std::move(cg.dx);
    }
  }

 private:
  ops::Conv2dParams conv_params() const {
    ops::Conv2dParams p;
    p.stride = {2, 2};
    p.padding = {cfg_.kernel / 2, cfg_.kernel / 2};
    return p;
  }

  ConvEncoderConfig cfg_;
  std::vector<Parameter<T>> conv_w_, norm_w_, norm_b_;
  Parameter<T> fc_w_, fc_b_;
};

struct MlpEncoderConfig {
  Index in_features = 0;  // V·3
  Index hidden = 256;
  Index out_features = 128;
};

template <class T>
class MlpEncoder {
 public:
  struct Context {
    Tensor<T> x, h;
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

  /// x (B, in_features) → (B, out_features).
  Tensor<T> forward(const Tensor<T>& x, Context* ctx = nullptr) const {
    check_shape(x, {-1, cfg_.in_features}, "MlpEncoder input");
    Tensor<T> h = ops::relu(ops::linear(x, w1_.value, b1_.value));
    if (ctx) *ctx = Context{x, h};
    return ops::linear(h, w2_.value, b2_.value);
  }

  void backward(const Context& ctx, const Tensor<T>& dout) {
    auto g2 = ops::linear_backward(ctx.h, w2_.value, dout);
    w2_.accumulate(g2.dw);
    b2_.accumulate(g2.db);
    Tensor<T> dh = ops::relu_backward(ctx.h, g2.dx);
    auto g1 = ops::linear_backward(ctx.x, w1_.value, dh);
    w1_.accumulate(g1.dw);
    b1_.accumulate(g1.db);
  }

 private:
  MlpEncoderConfig cfg_;
  Parameter<T> w1_, b1_, w2_, b2_;
};

}  // namespace blendfuse::nn
