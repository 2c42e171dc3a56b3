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
// On oneDNN (float) at batch >= 4, inference and training run the whole conv chain on blocked
// layouts instead (detail::blocked below): forward() without a context, and forward() with a
// context + backward() (the context then holds the blocked state, not `blocks`).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
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
// and only the last block's output is reordered back to nchw for the linear layer. The weights'
// blocked copies are cached across calls (WeightCache: rebuilt when a parameter's pointer,
// version or sampled contents change — optimisers update them in place), so batch 1 runs the
// blocked kernels without reordering ≈ 6 MB of weights per call. Primitives are cached in
// onednn's primitive cache.

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
        convolution_forward::primitive_desc pd(d, od::scratch_attr(), onednn::engine());
        // At small batches `any` can fall back to plain layouts (im2col + GEMM) for the small
        // spatial blocks; with the weights cached (WeightCache) the direct kernel on nChw8c is
        // faster there, so ask for it explicitly (kept only if oneDNN accepts it).
        if (channel_block(pd.dst_desc(), dd) == 0 && cout % 8 == 0 && (first || cin % 8 == 0)) {
          try {
            const memory::desc s8(sd, memory::data_type::f32, first ? tag::nchw : tag::nChw8c),
                d8(dd, memory::data_type::f32, tag::nChw8c);
            const convolution_forward::desc d2(prop_kind::forward_inference, algorithm::convolution_direct, s8,
                                               wei_any, d8, {stride, stride}, {pad, pad}, {pad, pad});
            pd = convolution_forward::primitive_desc(d2, od::scratch_attr(), onednn::engine());
          } catch (const dnnl::error&) {
          }
        }
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

/// Inference weights already reordered into the blocked layout, one per conv block, kept across
/// calls of a *frozen* encoder (ConvInReluEncoder::set_frozen: the caller promises not to write
/// the weights in place behind the library's back). An entry is still checked on every call: it
/// is rebuilt when its parameter's data pointer, version (Parameter::touch, bumped by Adam, the
/// initialisers and loads) or 65 sampled elements changed, or oneDNN asks for another layout. A
/// copied encoder starts with an empty cache. Thread-safe (one mutex; buffers are shared_ptrs, so
/// a caller keeps the one it ran with even if another thread replaces it).
struct WeightCache {
  struct Entry {
    ParameterStamp<float> stamp;
    dnnl::memory::desc md;
    std::shared_ptr<const Buf> buf;
  };
  std::mutex mu;
  std::vector<Entry> entries;

  WeightCache() = default;
  WeightCache(const WeightCache&) {}
  WeightCache& operator=(const WeightCache&) {
    std::lock_guard<std::mutex> lock(mu);
    entries.clear();
    return *this;
  }

  /// The blocked weights of block i for `md`, reordering p's plain value with `reorder` when the
  /// cached copy is stale.
  /// cache` false: reorder into a fresh buffer and keep nothing (the weights may change at any time).
  std::shared_ptr<const Buf> get(std::size_t i, const Parameter<float>& p, const dnnl::memory::desc& md,
                                 const dnnl::reorder& reorder, bool cache) {
    auto fresh = [&] {
      const Tensor<float> w = p.value.contiguous();
      auto b = std::make_shared<Buf>(md.get_size());
      onednn::detail::run(reorder, {{DNNL_ARG_FROM, onednn::detail::wrap(onednn::detail::plain_md(dims_of(w.shape())), w.data())},
                                    {DNNL_ARG_TO, dnnl::memory(md, onednn::engine(), b->get())}});
      return b;
    };
    if (!cache) return fresh();
    std::lock_guard<std::mutex> lock(mu);
    if (entries.size() <= i) entries.resize(i + 1);
    Entry& e = entries[i];
    auto stamp = ParameterStamp<float>::of(p);
    if (e.buf && e.md == md && e.stamp == stamp) return e.buf;
    auto b = fresh();
    e = Entry{std::move(stamp), md, b};
    return b;
  }

  static dnnl::memory::dims dims_of(const Shape& s) { return dnnl::memory::dims(s.begin(), s.end()); }
};

// ---- training on blocked layouts --------------------------------------------------------------
//
// The training step runs the same chain blocked: forward conv (format_tag::any; the first block
// keeps its nchw input), instance norm + ReLU out of place (the conv output and y are both kept),
// and in the backward the norm + ReLU backward on the blocked diff, convolution_backward_weights
// and convolution_backward_data on the forward's blocked activations (JIT kernels; with plain
// layouts oneDNN 2.6 runs im2col + GEMM, 1.35× slower over the encoder at batch 16). The first
// block's weight gradient uses its input reordered to nChw8c/16c (the JIT backward-weights kernel
// has no nchw-source variant; oneDNN falls back to `ref:any` there) and has no data gradient.
// Weights are reordered plain → blocked for the forward and the backward-data primitive, and the
// blocked weight gradient is reordered back *into* the parameter's gradient with a sum post-op
// (grad += dW, no temporary). Padded channel lanes (C not a multiple of the block) are kept
// zero: gamma/beta/coefficients 0 there.

/// Training primitives of one conv block.
struct TrainEntry {
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_weights bwd_w;
  dnnl::convolution_backward_data bwd_d;  // not built for the first block (dx not needed)
  dnnl::memory::desc src, src_w, dst, wei_fwd, wei_bwd_d, wei_bwd_w;  // src_w: bwd_w's source
  dnnl::reorder to_fwd, to_bwd_d, grad_back;  // plain → fwd / bwd_d weights; dW → grad (+=)
  dnnl::reorder src_to_w;                     // first block: plain input → src_w
  int block = 0;                              // channel block of dst (8 or 16), 0 = unsupported
};

inline std::shared_ptr<const TrainEntry> train_entry(Index n, Index cin, Index h, Index w, Index cout,
                                                     Index k, Index stride, Index pad, bool first) {
  namespace od = onednn::detail;
  return od::PrimitiveCache::instance().get<TrainEntry>(
      od::make_key("nn_blocked_train_conv", n, cin, h, w, cout, k, stride, pad, Index(first)),
      [&]() -> std::shared_ptr<const TrainEntry> {
        using namespace dnnl;
        using tag = memory::format_tag;
        const auto f32 = memory::data_type::f32;
        const auto& eng = onednn::engine();
        const Index ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
        const memory::dims sd{n, cin, h, w}, wd{cout, cin, k, k}, dd{n, cout, ho, wo};
        const memory::dims st{stride, stride}, pd_l{pad, pad};
        const memory::desc wei_any(wd, f32, tag::any);
        auto e = std::make_shared<TrainEntry>();
        try {
          const convolution_forward::primitive_desc fpd(
              convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                        memory::desc(sd, f32, first ? tag::nchw : tag::any), wei_any,
                                        memory::desc(dd, f32, tag::any), st, pd_l, pd_l),
              od::scratch_attr(), eng);
          e->src = fpd.src_desc();
          e->dst = fpd.dst_desc();
          e->wei_fwd = fpd.weights_desc();
          e->block = channel_block(e->dst, dd);
          if (e->block == 0) return e;
          e->src_w = first ? memory::desc(sd, f32, e->block == 16 ? tag::nChw16c : tag::nChw8c) : e->src;
          const convolution_backward_weights::primitive_desc wpd(
              convolution_backward_weights::desc(algorithm::convolution_direct, e->src_w, wei_any, e->dst,
                                                 st, pd_l, pd_l),
              od::scratch_attr(), eng, fpd);
          e->wei_bwd_w = wpd.diff_weights_desc();
          if (!od::is_jit(fpd.impl_info_str()) || !od::is_jit(wpd.impl_info_str())) {
            e->block = 0;  // no JIT kernel for this layout (e.g. `ref:any`): the plain path runs
            return e;
          }
          e->fwd = convolution_forward(fpd);
          e->bwd_w = convolution_backward_weights(wpd);
          if (!first) {
            const convolution_backward_data::primitive_desc dpd(
                convolution_backward_data::desc(algorithm::convolution_direct, e->src, wei_any, e->dst,
                                                st, pd_l, pd_l),
                od::scratch_attr(), eng, fpd);
            if (!od::is_jit(dpd.impl_info_str()) || !(dpd.diff_src_desc() == e->src)) {
              e->block = 0;
              return e;
            }
            e->wei_bwd_d = dpd.weights_desc();
            e->bwd_d = convolution_backward_data(dpd);
            e->to_bwd_d = reorder(reorder::primitive_desc(eng, od::plain_md(wd), eng, e->wei_bwd_d,
                                                          od::scratch_attr()));
          } else {
            e->src_to_w = reorder(reorder::primitive_desc(eng, od::plain_md(sd), eng, e->src_w,
                                                          od::scratch_attr()));
          }
          e->to_fwd = reorder(reorder::primitive_desc(eng, od::plain_md(wd), eng, e->wei_fwd,
                                                      od::scratch_attr()));
          primitive_attr sum_attr = od::scratch_attr();
          post_ops po;
          po.append_sum(1.f);
          sum_attr.set_post_ops(po);
          e->grad_back = reorder(reorder::primitive_desc(eng, e->wei_bwd_w, eng, od::plain_md(wd), sum_attr));
        } catch (const dnnl::error&) {
          e->block = 0;
        }
        return e;
      });
}

/// Training forward of instance norm + ReLU on a blocked (N, C/BS, HW, BS) buffer `c`: y (same
/// layout) = relu(gamma_c (c − mean) rstd + beta_c); mean/rstd (N·CB·BS) saved. Padded lanes
/// (channel ≥ C) get y = 0. Sums: float partial sums over chunks of 256 pixels (8-float vectors,
/// onednn::detail::F8), accumulated in double; two passes (mean, then the centred variance).
template <int BS>
void in_relu_fwd_blocked(const float* c, float* y, float* mean, float* rstd, Index N, Index C, Index HW,
                         const float* gamma, const float* beta, double eps) {
  namespace od = onednn::detail;
  constexpr int NV = BS / 8;
  constexpr Index kChunk = 256;
  const Index CB = (C + BS - 1) / BS;
#pragma omp parallel for schedule(static)
  for (Index nb = 0; nb < N * CB; ++nb) {
    const Index cb = nb % CB;
    const float* p = c + nb * HW * BS;
    float* q = y + nb * HW * BS;
    double sm[BS] = {}, sv[BS] = {};
    for (Index i0 = 0; i0 < HW; i0 += kChunk) {
      const Index i1 = std::min(HW, i0 + kChunk);
      od::F8 a[NV] = {};
      for (Index i = i0; i < i1; ++i)
        for (int v = 0; v < NV; ++v) a[v] += od::load8(p + i * BS + 8 * v);
      for (int v = 0; v < NV; ++v)
        for (int l = 0; l < 8; ++l) sm[8 * v + l] += a[v][l];
    }
    od::F8 mu[NV], scale[NV], shift[NV];
    for (int v = 0; v < NV; ++v)
      for (int l = 0; l < 8; ++l) mu[v][l] = static_cast<float>(sm[8 * v + l] / static_cast<double>(HW));
    for (Index i0 = 0; i0 < HW; i0 += kChunk) {
      const Index i1 = std::min(HW, i0 + kChunk);
      od::F8 a[NV] = {};
      for (Index i = i0; i < i1; ++i)
        for (int v = 0; v < NV; ++v) {
          const od::F8 d = od::load8(p + i * BS + 8 * v) - mu[v];
          a[v] += d * d;
        }
      for (int v = 0; v < NV; ++v)
        for (int l = 0; l < 8; ++l) sv[8 * v + l] += a[v][l];
    }
    for (int v = 0; v < NV; ++v)
      for (int l = 0; l < 8; ++l) {
        const int lane = 8 * v + l;
        const Index ch = cb * BS + lane;
        const double rs = 1.0 / std::sqrt(sv[lane] / static_cast<double>(HW) + eps);
        const float g = ch < C ? gamma[ch] : 0.f, b = ch < C ? beta[ch] : 0.f;
        scale[v][l] = static_cast<float>(g * rs);
        shift[v][l] = b;
        mean[nb * BS + lane] = mu[v][l];
        rstd[nb * BS + lane] = static_cast<float>(rs);
      }
    for (Index i = 0; i < HW; ++i)
      for (int v = 0; v < NV; ++v) {
        const od::F8 t = (od::load8(p + i * BS + 8 * v) - mu[v]) * scale[v] + shift[v];
        od::store8(q + i * BS + 8 * v, od::relu_mask8(t, t));
      }
  }
}

/// Backward of in_relu_fwd_blocked, in place on `d` (dy in, ∂L/∂c out); per-(n, lane) sums of
/// dbeta = Σ d and dgamma = Σ d·x̂ (d masked by y > 0) written to sb/sg (N·CB·BS). Same formula
/// as the plain kernel (onednn::detail::in_bwd_plane): dc = A·d + Bx·(c − μ) + C0 per lane.
template <int BS>
void in_relu_bwd_blocked(const float* c, const float* y, const float* mean, const float* rstd,
                         const float* gamma, float* d, Index N, Index C, Index HW, double* sb, double* sg) {
  namespace od = onednn::detail;
  constexpr int NV = BS / 8;
  constexpr Index kChunk = 256;
  const Index CB = (C + BS - 1) / BS;
#pragma omp parallel for schedule(static)
  for (Index nb = 0; nb < N * CB; ++nb) {
    const Index cb = nb % CB;
    const float* p = c + nb * HW * BS;
    const float* q = y + nb * HW * BS;
    float* r = d + nb * HW * BS;
    od::F8 mu[NV];
    for (int v = 0; v < NV; ++v) mu[v] = od::load8(mean + nb * BS + 8 * v);
    double b8[BS] = {}, x8[BS] = {};
    for (Index i0 = 0; i0 < HW; i0 += kChunk) {
      const Index i1 = std::min(HW, i0 + kChunk);
      od::F8 fb[NV] = {}, fx[NV] = {};
      for (Index i = i0; i < i1; ++i)
        for (int v = 0; v < NV; ++v) {
          const Index o = i * BS + 8 * v;
          const od::F8 dd = od::relu_mask8(od::load8(q + o), od::load8(r + o));
          fb[v] += dd;
          fx[v] += dd * (od::load8(p + o) - mu[v]);
        }
      for (int v = 0; v < NV; ++v)
        for (int l = 0; l < 8; ++l) b8[8 * v + l] += fb[v][l], x8[8 * v + l] += fx[v][l];
    }
    od::F8 A[NV], Bx[NV], C0[NV];
    const double inv_hw = 1.0 / static_cast<double>(HW);
    for (int v = 0; v < NV; ++v)
      for (int l = 0; l < 8; ++l) {
        const int lane = 8 * v + l;
        const Index ch = cb * BS + lane;
        const double rs = rstd[nb * BS + lane], g = ch < C ? gamma[ch] : 0.0;
        sb[nb * BS + lane] = b8[lane];
        sg[nb * BS + lane] = x8[lane] * rs;
        A[v][l] = static_cast<float>(g * rs);
        Bx[v][l] = static_cast<float>(-g * rs * rs * rs * x8[lane] * inv_hw);
        C0[v][l] = static_cast<float>(-g * rs * b8[lane] * inv_hw);
      }
    for (Index i = 0; i < HW; ++i)
      for (int v = 0; v < NV; ++v) {
        const Index o = i * BS + 8 * v;
        const od::F8 dd = od::relu_mask8(od::load8(q + o), od::load8(r + o));
        od::store8(r + o, A[v] * dd + (Bx[v] * (od::load8(p + o) - mu[v]) + C0[v]));
      }
  }
}

/// What the blocked training forward keeps for the backward.
struct TrainState {
  Index n = 0;
  std::vector<std::shared_ptr<const TrainEntry>> es;
  std::vector<Index> hs;                 // output size of each block
  std::vector<Buf> conv, y;              // blocked conv output and block output, per block
  std::vector<std::vector<float>> mean, rstd;
  Tensor<float, OneDnn> x;               // the plain input (block 0's source)
  std::unique_ptr<Buf> x_w;              // the input reordered for block 0's backward-weights
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
    std::vector<ConvInReluState<T, B>> blocks;  // one per conv block (plain path)
    TensorB flat;                               // (B, flat_features)
#ifdef BLENDFUSE_NN_HAVE_ONEDNN
    std::shared_ptr<const detail::blocked::TrainState> blocked;  // blocked path (then no `blocks`)
#endif
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

  /// Frozen weights (inference deployments): oneDNN inference keeps the weights' blocked copies
  /// across calls and runs the blocked kernels at every batch size. The caller promises not to
  /// write the parameters in place without Parameter::touch() while frozen (optimiser steps and
  /// loads touch them; a stale copy is also caught by a sampled-element check, but not always).
  void set_frozen(bool on) { frozen_ = on; }
  bool frozen() const noexcept { return frozen_; }

  /// x (B, in_channels, S, S) → (B, out_features).
  TensorB forward(const TensorB& x, Context* ctx = nullptr) const {
    check_shape(x, {-1, cfg_.in_channels, cfg_.map_size, cfg_.map_size}, "ConvInReluEncoder input");
#ifdef BLENDFUSE_NN_HAVE_ONEDNN
    if constexpr (std::is_same_v<B, OneDnn> && std::is_same_v<T, float>) {
      // inference at batch >= 4, or at any batch when frozen: a frozen encoder caches the
      // weights' blocked copies across calls (detail::blocked::WeightCache); otherwise the
      // per-call reorder (≈ 6 MB at paper scale) costs at batch 1 what the blocked kernels save
      if (!ctx && (frozen_ || x.dim(0) >= 4)) {
        TensorB flat = blocked_features(x);
        if (!flat.empty()) return ops::linear(flat, pv(fc_w_), pv(fc_b_));
      }
      // training: the blocked chain too (three weight reorders per block, ≈ 1 % of the step)
      if (ctx && x.dim(0) >= 4) {
        TensorB flat = blocked_train_forward(x, *ctx);
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
#ifdef BLENDFUSE_NN_HAVE_ONEDNN
    if constexpr (std::is_same_v<B, OneDnn> && std::is_same_v<T, float>) {
      if (ctx.blocked) {
        blocked_backward(*ctx.blocked, lg.dx);
        return;
      }
    }
#endif
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
      const auto wbuf = wcache_.get(i, conv_w_[i], e.wei, e.wei_reorder, frozen_);
      auto dst = std::make_unique<bl::Buf>(e.dst.get_size());
      od::run(e.conv, {{DNNL_ARG_SRC, dnnl::memory(e.src, eng, const_cast<float*>(src))},
                       {DNNL_ARG_WEIGHTS, dnnl::memory(e.wei, eng, wbuf->get())},
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

  /// Training forward on blocked layouts (see detail::blocked, "training on blocked layouts"):
  /// fills ctx.blocked and ctx.flat and returns the flat features, or an empty tensor (ctx
  /// untouched) where a block has no JIT layout the blocked norm handles.
  TensorB blocked_train_forward(const TensorB& x_in, Context& ctx) const {
    namespace bl = detail::blocked;
    namespace od = onednn::detail;
    const Index n = x_in.dim(0), k = cfg_.kernel, pad = k / 2, nb = static_cast<Index>(conv_w_.size());
    auto s = std::make_shared<bl::TrainState>();
    s->n = n;
    Index cin = cfg_.in_channels, h = cfg_.map_size;
    for (Index i = 0; i < nb; ++i) {
      s->es.push_back(bl::train_entry(n, cin, h, h, cfg_.channels[static_cast<std::size_t>(i)], k, 2, pad, i == 0));
      if (s->es.back()->block == 0 || (i > 0 && !(s->es[i]->src == s->es[i - 1]->dst))) return {};
      cin = cfg_.channels[static_cast<std::size_t>(i)];
      h = (h + 2 * pad - k) / 2 + 1;
      s->hs.push_back(h);
    }
    const auto& eng = onednn::engine();
    s->x = x_in.contiguous();
    const Index S = cfg_.map_size;
    s->x_w = std::make_unique<bl::Buf>(s->es[0]->src_w.get_size());
    od::run(s->es[0]->src_to_w, {{DNNL_ARG_FROM, od::wrap(od::plain_md({n, cfg_.in_channels, S, S}), s->x.data())},
                                 {DNNL_ARG_TO, dnnl::memory(s->es[0]->src_w, eng, s->x_w->get())}});
    const float* src = s->x.data();
    cin = cfg_.in_channels;
    for (Index i = 0; i < nb; ++i) {
      const auto& e = *s->es[static_cast<std::size_t>(i)];
      const std::size_t iu = static_cast<std::size_t>(i);
      const Index cout = cfg_.channels[iu], hw = s->hs[iu] * s->hs[iu];
      bl::Buf wbuf(e.wei_fwd.get_size());
      od::run(e.to_fwd, {{DNNL_ARG_FROM, od::wrap(od::plain_md({cout, cin, k, k}), conv_w_[iu].value.data())},
                         {DNNL_ARG_TO, dnnl::memory(e.wei_fwd, eng, wbuf.get())}});
      s->conv.emplace_back(e.dst.get_size());
      s->y.emplace_back(e.dst.get_size());
      od::run(e.fwd, {{DNNL_ARG_SRC, dnnl::memory(e.src, eng, const_cast<float*>(src))},
                      {DNNL_ARG_WEIGHTS, dnnl::memory(e.wei_fwd, eng, wbuf.get())},
                      {DNNL_ARG_DST, dnnl::memory(e.dst, eng, s->conv.back().get())}});
      const Index lanes = n * ((cout + e.block - 1) / e.block) * e.block;
      s->mean.emplace_back(static_cast<std::size_t>(lanes));
      s->rstd.emplace_back(static_cast<std::size_t>(lanes));
      const float* gm = norm_w_[iu].value.data();
      const float* bt = norm_b_[iu].value.data();
      if (e.block == 8)
        bl::in_relu_fwd_blocked<8>(s->conv.back().get(), s->y.back().get(), s->mean.back().data(),
                                   s->rstd.back().data(), n, cout, hw, gm, bt, cfg_.eps);
      else
        bl::in_relu_fwd_blocked<16>(s->conv.back().get(), s->y.back().get(), s->mean.back().data(),
                                    s->rstd.back().data(), n, cout, hw, gm, bt, cfg_.eps);
      src = s->y.back().get();
      cin = cout;
    }
    const Index hl = s->hs.back();
    TensorB out({n, cin, hl, hl});
    const auto r = od::PrimitiveCache::instance().get<dnnl::reorder>(
        od::make_key("nn_blocked_to_plain", n, cin, hl, Index(s->es.back()->block)), [&] {
          return std::make_shared<dnnl::reorder>(dnnl::reorder::primitive_desc(
              eng, s->es.back()->dst, eng, od::plain_md({n, cin, hl, hl}), od::scratch_attr()));
        });
    od::run(*r, {{DNNL_ARG_FROM, dnnl::memory(s->es.back()->dst, eng, const_cast<float*>(src))},
                 {DNNL_ARG_TO, od::wrap(od::plain_md({n, cin, hl, hl}), out.data())}});
    ctx.blocks.clear();
    ctx.flat = out.reshape({n, -1});
    ctx.blocked = std::move(s);
    return ctx.flat;
  }

  /// Backward of blocked_train_forward for dflat = ∂L/∂flat (N, flat_features): accumulates the
  /// conv, gamma and beta gradients.
  void blocked_backward(const detail::blocked::TrainState& s, const TensorB& dflat_in) {
    namespace bl = detail::blocked;
    namespace od = onednn::detail;
    const auto& eng = onednn::engine();
    const Index n = s.n, k = cfg_.kernel, nb = static_cast<Index>(conv_w_.size());
    const TensorB dflat = dflat_in.contiguous();
    const Index cl = cfg_.channels.back(), hl = s.hs.back();
    const auto r = od::PrimitiveCache::instance().get<dnnl::reorder>(
        od::make_key("nn_plain_to_blocked", n, cl, hl, Index(s.es.back()->block)), [&] {
          return std::make_shared<dnnl::reorder>(dnnl::reorder::primitive_desc(
              eng, od::plain_md({n, cl, hl, hl}), eng, s.es.back()->dst, od::scratch_attr()));
        });
    auto d = std::make_unique<bl::Buf>(s.es.back()->dst.get_size());
    od::run(*r, {{DNNL_ARG_FROM, od::wrap(od::plain_md({n, cl, hl, hl}), dflat.data())},
                 {DNNL_ARG_TO, dnnl::memory(s.es.back()->dst, eng, d->get())}});
    for (Index i = nb; i-- > 0;) {
      const std::size_t iu = static_cast<std::size_t>(i);
      const auto& e = *s.es[iu];
      const Index cout = cfg_.channels[iu], cin = i == 0 ? cfg_.in_channels : cfg_.channels[iu - 1];
      const Index hw = s.hs[iu] * s.hs[iu];
      const std::size_t lanes = s.mean[iu].size();
      std::vector<double> sb(lanes), sg(lanes);
      if (e.block == 8)
        bl::in_relu_bwd_blocked<8>(s.conv[iu].get(), s.y[iu].get(), s.mean[iu].data(), s.rstd[iu].data(),
                                   norm_w_[iu].value.data(), d->get(), n, cout, hw, sb.data(), sg.data());
      else
        bl::in_relu_bwd_blocked<16>(s.conv[iu].get(), s.y[iu].get(), s.mean[iu].data(), s.rstd[iu].data(),
                                    norm_w_[iu].value.data(), d->get(), n, cout, hw, sb.data(), sg.data());
      const Index lanes_per_n = static_cast<Index>(lanes) / n;
      for (Index c = 0; c < cout; ++c) {
        double a = 0, b = 0;
        for (Index j = 0; j < n; ++j) {
          a += sg[static_cast<std::size_t>(j * lanes_per_n + c)];
          b += sb[static_cast<std::size_t>(j * lanes_per_n + c)];
        }
        norm_w_[iu].grad.data()[c] += static_cast<float>(a);
        norm_b_[iu].grad.data()[c] += static_cast<float>(b);
      }
      // weight gradient: src = the block input (blocked; block 0: x reordered), diff_dst = d
      const float* src = i == 0 ? s.x_w->get() : s.y[iu - 1].get();
      bl::Buf dw(e.wei_bwd_w.get_size());
      od::run(e.bwd_w, {{DNNL_ARG_SRC, dnnl::memory(e.src_w, eng, const_cast<float*>(src))},
                        {DNNL_ARG_DIFF_DST, dnnl::memory(e.dst, eng, d->get())},
                        {DNNL_ARG_DIFF_WEIGHTS, dnnl::memory(e.wei_bwd_w, eng, dw.get())}});
      od::run(e.grad_back, {{DNNL_ARG_FROM, dnnl::memory(e.wei_bwd_w, eng, dw.get())},
                            {DNNL_ARG_TO, od::wrap(od::plain_md({cout, cin, k, k}), conv_w_[iu].grad.data())}});
      if (i == 0) break;  // the input needs no gradient
      bl::Buf wb(e.wei_bwd_d.get_size());
      od::run(e.to_bwd_d, {{DNNL_ARG_FROM, od::wrap(od::plain_md({cout, cin, k, k}), conv_w_[iu].value.data())},
                           {DNNL_ARG_TO, dnnl::memory(e.wei_bwd_d, eng, wb.get())}});
      auto dx = std::make_unique<bl::Buf>(e.src.get_size());
      od::run(e.bwd_d, {{DNNL_ARG_DIFF_DST, dnnl::memory(e.dst, eng, d->get())},
                        {DNNL_ARG_WEIGHTS, dnnl::memory(e.wei_bwd_d, eng, wb.get())},
                        {DNNL_ARG_DIFF_SRC, dnnl::memory(e.src, eng, dx->get())}});
      d = std::move(dx);
    }
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
  bool frozen_ = false;
#ifdef BLENDFUSE_NN_HAVE_ONEDNN
  mutable detail::blocked::WeightCache wcache_;  // blocked inference weights (oneDNN, float)
#endif
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
