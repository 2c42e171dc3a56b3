// blendfuse — the conv encoder of the deformation fusion module (paper §3.3.2), built only from
// ops: N × (conv k×k stride 2 → instance norm (affine) → ReLU), flatten, linear to K blendshape
// weights. The conv has no bias: the instance norm right after it subtracts the per-channel mean,
// which cancels any bias exactly.
//
// Module pattern (as every nn/ module): forward(input, Context*) returns the output and, when a
// context is given, saves what backward needs; backward(context, dL/dout) accumulates parameter
// gradients.
//
// Backends. Templated on the element type and a host backend (`Cpu`, the reference, or `OneDnn`):
// inputs, outputs and contexts are `Tensor<T, B>`, so ops dispatch to the backend's
// specialisations. Parameters stay host `Tensor<T>` (Parameter<T>: one ParamList type for
// optimisers and checkpoints); the module views them as `Tensor<T, B>` (same memory, no copy).
// The conv blocks are one op, ops::conv_in_relu_stack (ops/conv_in_relu.hpp): the reference is
// the loop conv2d → instance_norm → in-place ReLU per block; a backend may run the whole stack in
// its own layouts (oneDNN: blocked nChw8c/16c across the blocks). The module passes its conv
// weights with their Parameter::version and owns the opaque handle (ops::BackendWeightCache) in
// which a backend may keep copies of them across calls when cache_derived_weights() is on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/ops/conv_in_relu.hpp"
#include "blendfuse/ops/linear.hpp"

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

template <class T, class B = Cpu>
class ConvInReluEncoder {
 public:
  using TensorB = Tensor<T, B>;
  struct Context {
    ops::ConvInReluStackState<T, B> convs;  // the conv blocks (per block, or the backend's own state)
    TensorB flat;                           // (B, flat_features)
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

  /// Multiply-adds of one forward per sample (convs + fc; norms and ReLUs not counted).
  double macs_per_sample() const {
    double m = 0;
    Index s = cfg_.map_size, cin = cfg_.in_channels;
    for (Index cout : cfg_.channels) {
      s = (s + 2 * (cfg_.kernel / 2) - cfg_.kernel) / 2 + 1;
      m += static_cast<double>(s) * s * cout * cin * cfg_.kernel * cfg_.kernel;
      cin = cout;
    }
    return m + static_cast<double>(cfg_.flat_features()) * cfg_.out_features;
  }

  /// Cached derived weights (inference deployments): a backend may keep its own copies of the
  /// conv weights across calls (oneDNN: the blocked layouts, and then the blocked kernels run at
  /// every batch size). Each copy is checked on every call against the parameter's data pointer,
  /// Parameter::version and sampled elements (ops::WeightStamp); the caller promises not to write
  /// the parameters in place without Parameter::touch() while this is on (optimiser steps and
  /// loads touch them; a stale copy is also caught by the sampled-element check, but not always).
  /// Off by default; results are the same either way. A copied encoder starts with an empty cache.
  void cache_derived_weights(bool on = true) {
    cache_on_ = on;
    if (!on) cache_.clear();
  }
  bool derived_weights_cached() const noexcept { return cache_on_; }

  /// x (B, in_channels, S, S) → (B, out_features).
  TensorB forward(const TensorB& x, Context* ctx = nullptr) const {
    check_shape(x, {-1, cfg_.in_channels, cfg_.map_size, cfg_.map_size}, "ConvInReluEncoder input");
    const TensorB h = ops::conv_in_relu_stack(x, conv_weights(), stack_params(), ctx ? &ctx->convs : nullptr, &cache_);
    TensorB flat = h.reshape({h.dim(0), -1});
    if (ctx) ctx->flat = flat;
    return ops::linear(flat, pv(fc_w_), pv(fc_b_));
  }

  /// Accumulates parameter gradients for dout = ∂L/∂out (B, out_features).
  void backward(const Context& ctx, const TensorB& dout) {
    auto lg = ops::linear_backward(ctx.flat, pv(fc_w_), dout);
    fc_w_.accumulate(hv(lg.dw));
    fc_b_.accumulate(hv(lg.db));
    ops::ConvInReluStackGrads<T, B> acc;  // views of the parameters' gradients: the op adds into them
    for (std::size_t i = 0; i < conv_w_.size(); ++i) {
      acc.dw.push_back(pv_grad(conv_w_[i]));
      acc.dgamma.push_back(pv_grad(norm_w_[i]));
      acc.dbeta.push_back(pv_grad(norm_b_[i]));
    }
    ops::conv_in_relu_stack_backward_into(ctx.convs, conv_weights(), stack_params(),
                                          lg.dx.reshape(ctx.convs.y.shape()), acc);
  }

 private:
  static TensorB pv(const Parameter<T>& p) { return detail::host_view<B>(p.value); }
  static TensorB pv_grad(Parameter<T>& p) { return detail::host_view<B>(p.grad); }
  static Tensor<T> hv(const TensorB& t) { return detail::host_view<Cpu>(t); }

  /// The conv blocks' weights as the op takes them (views, with the parameters' versions).
  ops::ConvInReluStackWeights<T, B> conv_weights() const {
    ops::ConvInReluStackWeights<T, B> w;
    for (std::size_t i = 0; i < conv_w_.size(); ++i) {
      w.conv.emplace_back(pv(conv_w_[i]), conv_w_[i].version);
      w.gamma.push_back(pv(norm_w_[i]));
      w.beta.push_back(pv(norm_b_[i]));
    }
    return w;
  }

  /// Stride 2, padding k/2; training needs no gradient of the encoder input.
  ops::ConvInReluStackParams stack_params() const {
    ops::ConvInReluStackParams p;
    p.conv.stride = {2, 2};
    p.conv.padding = {cfg_.kernel / 2, cfg_.kernel / 2};
    p.eps = cfg_.eps;
    p.input_grad = false;
    p.cache_weights = cache_on_;
    return p;
  }

  ConvEncoderConfig cfg_;
  std::vector<Parameter<T>> conv_w_, norm_w_, norm_b_;
  bool cache_on_ = false;
  mutable ops::BackendWeightCache cache_;  // the backend's copies of the conv weights (opaque)
  Parameter<T> fc_w_, fc_b_;
};

}  // namespace blendfuse::nn
