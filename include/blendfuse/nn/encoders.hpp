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
//
// Backends. Every module is templated on the element type and a host backend (`Cpu`, the
// reference, or `OneDnn`): inputs, outputs and contexts are `Tensor<T, B>`, so ops dispatch to the
// backend's specialisations. Parameters stay host `Tensor<T>` (Parameter<T>: one ParamList type
// for optimisers and checkpoints); the modules view them as `Tensor<T, B>` (same memory, no copy)
// and view the backend's gradients as host tensors when accumulating.
// Each conv block goes through conv_in_relu(): on oneDNN conv2d + onednn::instance_norm_relu (the
// normalisation, affine and ReLU in one pass over the data after oneDNN's layer norm), on any other
// backend the plain composition conv2d → instance_norm → in-place ReLU.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/conv.hpp"
#include "blendfuse/ops/linear.hpp"
#include "blendfuse/ops/norm.hpp"

#if defined(BLENDFUSE_WITH_ONEDNN) && __has_include("onednn/onednn.hpp")
#include "onednn/onednn.hpp"
#define BLENDFUSE_NN_HAVE_ONEDNN 1
#endif


namespace blendfuse::nn {

#ifdef BLENDFUSE_NN_HAVE_ONEDNN
namespace detail::blocked {

// Inference of the conv encoder on oneDNN with *blocked* activations. The op-level oneDNN
// convolution keeps plain nchw/oihw at its edges (backends/onednn/conv.hpp), where oneDNN 2.6
// runs its im2col + GEMM kernel (`gemm:jit`); inside one encoder forward nothing needs the plain
// layout, so here each conv is created with format_tag::any (oneDNN picks the direct JIT kernel
// with nChw8c activations and blocked weights on AVX2, nChw16c on AVX-512), the instance norm +
// ReLU runs in place on the blocked tensor (statistics per (n, c) lane, 8/16 channels per vector),
// and only the last block's output is reordered back to nchw for the linear layer. Weights are
// reordered into the blocked layout on every call (they are host Parameters that optimisers
// change in place; ≈ 6 MB at paper scale). Primitives are cached in onednn's primitive cache.

struct ConvEntry {
  dnnl::convolution_forward conv;
  dnnl::memory::desc src, wei, dst;
  dnnl::reorder wei_reorder;
  bool src_needs_reorder = false;
  dnnl::reorder src_reorder;  // plain → src (first block only)
  int block = 0;              // channel block of dst (8 or 16), 0 = unsupported layout
};

inline int channel_block(const dnnl::memory::desc& md, const dnnl::memory::dims& d) {
  using tag = dnnl::memory::format_tag;
  if (md == dnnl::memory::desc(d, dnnl::memory::data_type::f32, tag::nChw8c)) return 8;
  if (md == dnnl::memory::desc(d, dnnl::memory::data_type::f32, tag::nChw16c)) return 16;
  return 0;
}

inline std::shared_ptr<const ConvEntry> conv_entry(Index n, Index cin, Index h, Index w, Index cout, Index k,
                                                   Index stride, Index pad, bool first) {
  namespace od = onednn::detail;
  return od::PrimitiveCache::instance().get<ConvEntry>(
      od::make_key("nn_blocked_conv", n, cin, h, w, cout, k, stride, pad, Index(first)), [&] {
        using namespace dnnl;
        using tag = memory::format_tag;
        const Index ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
        const memory::dims sd{n, cin, h, w}, wd{cout, cin, k, k}, dd{n, cout, ho, wo};
        // first block: plain nchw input (4 channels; with `any` oneDNN pads them to a blocked 8
        // and runs 2.4× slower than the nchw → nChw8c kernel LibTorch uses)
        const memory::desc src_any(sd, memory::data_type::f32, first ? tag::nchw : tag::any),
            wei_any(wd, memory::data_type::f32, tag::any),
            dst_any(dd, memory::data_type::f32, tag::any);
        const convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src_any,
                                          wei_any, dst_any, {stride, stride}, {pad, pad}, {pad, pad});
        const convolution_forward::primitive_desc pd(d, od::scratch_attr(), onednn::engine());
        auto e = std::make_shared<ConvEntry>();
        e->conv = convolution_forward(pd);
        e->src = pd.src_desc();
        e->wei = pd.weights_desc();
        e->dst = pd.dst_desc();
        e->block = channel_block(e->dst, dd);
        const memory::desc wplain = od::plain_md(wd);
        e->wei_reorder = reorder(reorder::primitive_desc(onednn::engine(), wplain, onednn::engine(), e->wei, od::scratch_attr()));
        if (first) {
          const memory::desc splain = od::plain_md(sd);
          e->src_needs_reorder = !(e->src == splain);
          if (e->src_needs_reorder)
            e->src_reorder = reorder(reorder::primitive_desc(onednn::engine(), splain, onednn::engine(), e->src, od::scratch_attr()));
        }
        return std::shared_ptr<const ConvEntry>(e);
      });
}

/// In place: y = relu(gamma_c (y − mean_nc) rstd_nc + beta_c) on a blocked (N, C/BS, HW, BS) buffer.
template <int BS>
void instance_norm_relu_blocked(float* y, Index N, Index C, Index HW, const float* gamma, const float* beta,
                                double eps) {
  const Index CB = (C + BS - 1) / BS;
  const float inv_hw = 1.0f / static_cast<float>(HW);
#pragma omp parallel for schedule(static)
  for (Index nb = 0; nb < N * CB; ++nb) {
    const Index cb = nb % CB;
    float* p = y + nb * HW * BS;
    float mean[BS] = {}, var[BS] = {}, scale[BS], shift[BS];
    for (Index i = 0; i < HW; ++i)
      for (int c = 0; c < BS; ++c) mean[c] += p[i * BS + c];
    for (int c = 0; c < BS; ++c) mean[c] *= inv_hw;
    for (Index i = 0; i < HW; ++i)
      for (int c = 0; c < BS; ++c) {
        const float d = p[i * BS + c] - mean[c];
        var[c] += d * d;
      }
    for (int c = 0; c < BS; ++c) {
      const Index ch = cb * BS + c;
      const float g = ch < C ? gamma[ch] : 0.f, b = ch < C ? beta[ch] : 0.f;
      const float rs = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[c] * inv_hw) + eps));
      scale[c] = g * rs;
      shift[c] = b - mean[c] * g * rs;
    }
    for (Index i = 0; i < HW; ++i)
      for (int c = 0; c < BS; ++c) {
        const float v = p[i * BS + c] * scale[c] + shift[c];
        p[i * BS + c] = v > 0.f ? v : 0.f;
      }
  }
}

/// Buffer of `bytes` for oneDNN (not zero-filled: every element is written by the primitive).
struct Buf {
  std::unique_ptr<float[]> p;
  explicit Buf(std::size_t bytes) : p(new float[(bytes + sizeof(float) - 1) / sizeof(float)]) {}
  float* get() const { return p.get(); }
};

}  // namespace detail::blocked
#endif

/// Saved state of one conv → instance norm → ReLU block: the block input `x`, the conv output
/// `conv` (the norm's input), the block output `y` = relu(norm(conv)), the norm statistics and,
/// on backends whose fused norm keeps one, the ReLU workspace.
template <class T, class B>
struct ConvInReluState {
  Tensor<T, B> x, conv, y, mean, rstd;
  Tensor<std::uint8_t, B> workspace;
};

/// y = relu(instance_norm(conv2d(x, w), gamma, beta, eps)) (no conv bias). Fused where the
/// backend offers it (oneDNN: onednn::instance_norm_relu), else the plain three ops with an
/// in-place ReLU. `state` (optional) receives what conv_in_relu_backward needs.
template <class T, class B>
Tensor<T, B> conv_in_relu(const Tensor<T, B>& x, const Tensor<T, B>& w, const Tensor<T, B>& gamma,
                          const Tensor<T, B>& beta, double eps, const ops::Conv2dParams& p,
                          ConvInReluState<T, B>* state = nullptr) {
  Tensor<T, B> c = ops::conv2d(x, w, nullptr, p);
  Tensor<T, B> y, mean, rstd;
  Tensor<std::uint8_t, B> ws;
#ifdef BLENDFUSE_NN_HAVE_ONEDNN
  if constexpr (std::is_same_v<B, OneDnn>) {
    auto r = onednn::instance_norm_relu(c, gamma, beta, eps);
    y = std::move(r.y), mean = std::move(r.mean), rstd = std::move(r.rstd), ws = std::move(r.workspace);
  } else
#endif
  {
    auto r = ops::instance_norm(c, gamma, beta, eps);
    ops::relu_(r.y);
    y = std::move(r.y), mean = std::move(r.mean), rstd = std::move(r.rstd);
  }
  if (state) *state = ConvInReluState<T, B>{x, std::move(c), y, std::move(mean), std::move(rstd), std::move(ws)};
  return y;
}

/// Gradients of conv_in_relu: returns {dx, dw, –} of the conv and writes the norm's dgamma/dbeta.
template <class T, class B>
ops::ConvGrads<T, B> conv_in_relu_backward(const ConvInReluState<T, B>& s, const Tensor<T, B>& w,
                                           const Tensor<T, B>& gamma, const Tensor<T, B>& dy,
                                           const ops::Conv2dParams& p, NormGrads<T, B>& norm_grads) {
#ifdef BLENDFUSE_NN_HAVE_ONEDNN
  if constexpr (std::is_same_v<B, OneDnn>) {
    const onednn::NormReluResult<T, OneDnn> fwd{s.y, s.mean, s.rstd, s.workspace};
    norm_grads = onednn::instance_norm_relu_backward(s.conv, gamma, fwd, dy);
  } else
#endif
  {
    norm_grads = ops::instance_norm_backward(s.conv, gamma, s.mean, s.rstd, ops::relu_backward(s.y, dy));
  }
  return ops::conv2d_backward(s.x, w, norm_grads.dx, p, false);
}

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
    std::vector<ConvInReluState<T, B>> blocks;  // one per conv block
    TensorB flat;                               // (B, flat_features)
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

  /// x (B, in_channels, S, S) → (B, out_features).
  TensorB forward(const TensorB& x, Context* ctx = nullptr) const {
    check_shape(x, {-1, cfg_.in_channels, cfg_.map_size, cfg_.map_size}, "ConvInReluEncoder input");
#ifdef BLENDFUSE_NN_HAVE_ONEDNN
    if constexpr (std::is_same_v<B, OneDnn> && std::is_same_v<T, float>) {
      // batch >= 4 only: below, the per-call reorder of the weights into the blocked layout
      // (≈ 6 MB) costs about what the blocked kernels save (measured at batch 1, paper scale)
      if (!ctx && x.dim(0) >= 4) {
        TensorB flat = blocked_features(x);
        if (!flat.empty()) return ops::linear(flat, pv(fc_w_), pv(fc_b_));
      }
    }
#endif
    const ops::Conv2dParams p = conv_params();
    TensorB h = x;
    if (ctx) *ctx = Context{std::vector<ConvInReluState<T, B>>(conv_w_.size()), {}};
    for (std::size_t i = 0; i < conv_w_.size(); ++i)
      h = conv_in_relu(h, pv(conv_w_[i]), pv(norm_w_[i]), pv(norm_b_[i]), cfg_.eps, p,
                       ctx ? &ctx->blocks[i] : nullptr);
    TensorB flat = h.reshape({h.dim(0), -1});
    if (ctx) ctx->flat = flat;
    return ops::linear(flat, pv(fc_w_), pv(fc_b_));
  }

  /// Accumulates parameter gradients for dout = ∂L/∂out (B, out_features).
  void backward(const Context& ctx, const TensorB& dout) {
    auto lg = ops::linear_backward(ctx.flat, pv(fc_w_), dout);
    fc_w_.accumulate(hv(lg.dw));
    fc_b_.accumulate(hv(lg.db));
    TensorB d = lg.dx.reshape(ctx.blocks.back().y.shape());
    const ops::Conv2dParams p = conv_params();
    for (std::size_t k = conv_w_.size(); k-- > 0;) {
      NormGrads<T, B> ng;
      auto cg = conv_in_relu_backward(ctx.blocks[k], pv(conv_w_[k]), pv(norm_w_[k]), d, p, ng);
      norm_w_[k].accumulate(hv(ng.dgamma));
      norm_b_[k].accumulate(hv(ng.dbeta));
      conv_w_[k].accumulate(hv(cg.dw));
      d = std::move(cg.dx);
    }
  }

 private:
  static TensorB pv(const Parameter<T>& p) { return detail::host_view<B>(p.value); }
  static Tensor<T> hv(const TensorB& t) { return detail::host_view<Cpu>(t); }

#ifdef BLENDFUSE_NN_HAVE_ONEDNN
  /// The conv blocks on blocked oneDNN layouts (see detail::blocked): x (N, C, S, S) → the flat
  /// features (N, flat_features), or an empty tensor where oneDNN chose a layout the in-place
  /// norm does not handle (the caller then runs the plain path).
  TensorB blocked_features(const TensorB& x_in) const {
    namespace bl = detail::blocked;
    namespace od = onednn::detail;
    const TensorB x = x_in.contiguous();
    const Index n = x.dim(0), k = cfg_.kernel, pad = k / 2;
    Index cin = cfg_.in_channels, h = cfg_.map_size;
    std::vector<std::shared_ptr<const bl::ConvEntry>> es;
    for (std::size_t i = 0; i < conv_w_.size(); ++i) {
      es.push_back(bl::conv_entry(n, cin, h, h, cfg_.channels[i], k, 2, pad, i == 0));
      if (es.back()->block == 0 || (i > 0 && !(es[i]->src == es[i - 1]->dst))) return {};
      cin = cfg_.channels[i];
      h = (h + 2 * pad - k) / 2 + 1;
    }
    const auto& eng = onednn::engine();
    std::unique_ptr<bl::Buf> cur;  // current activation (blocked)
    const float* src = x.data();
    if (es[0]->src_needs_reorder) {
      cur = std::make_unique<bl::Buf>(es[0]->src.get_size());
      od::run(es[0]->src_reorder, {{DNNL_ARG_FROM, od::wrap(od::plain_md({n, cfg_.in_channels, cfg_.map_size, cfg_.map_size}), x.data())},
                                   {DNNL_ARG_TO, dnnl::memory(es[0]->src, eng, cur->get())}});
      src = cur->get();
    }
    h = cfg_.map_size;
    cin = cfg_.in_channels;
    for (std::size_t i = 0; i < es.size(); ++i) {
      const auto& e = *es[i];
      const Index cout = cfg_.channels[i];
      bl::Buf wbuf(e.wei.get_size());
      od::run(e.wei_reorder, {{DNNL_ARG_FROM, od::wrap(od::plain_md({cout, cin, k, k}), conv_w_[i].value.data())},
                              {DNNL_ARG_TO, dnnl::memory(e.wei, eng, wbuf.get())}});
      auto dst = std::make_unique<bl::Buf>(e.dst.get_size());
      od::run(e.conv, {{DNNL_ARG_SRC, dnnl::memory(e.src, eng, const_cast<float*>(src))},
                       {DNNL_ARG_WEIGHTS, dnnl::memory(e.wei, eng, wbuf.get())},
                       {DNNL_ARG_DST, dnnl::memory(e.dst, eng, dst->get())}});
      h = (h + 2 * pad - k) / 2 + 1;
      if (e.block == 8)
        bl::instance_norm_relu_blocked<8>(dst->get(), n, cout, h * h, norm_w_[i].value.data(), norm_b_[i].value.data(), cfg_.eps);
      else
        bl::instance_norm_relu_blocked<16>(dst->get(), n, cout, h * h, norm_w_[i].value.data(), norm_b_[i].value.data(), cfg_.eps);
      cur = std::move(dst);
      src = cur->get();
      cin = cout;
    }
    TensorB out({n, cin, h, h});
    const auto r = od::PrimitiveCache::instance().get<dnnl::reorder>(
        od::make_key("nn_blocked_to_plain", n, cin, h, Index(es.back()->block)), [&] {
          return std::make_shared<dnnl::reorder>(dnnl::reorder::primitive_desc(
              eng, es.back()->dst, eng, od::plain_md({n, cin, h, h}), od::scratch_attr()));
        });
    od::run(*r, {{DNNL_ARG_FROM, dnnl::memory(es.back()->dst, eng, const_cast<float*>(src))},
                 {DNNL_ARG_TO, od::wrap(od::plain_md({n, cin, h, h}), out.data())}});
    return out.reshape({n, -1});
  }
#endif

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
