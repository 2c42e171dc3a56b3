// blendfuse — oneDNN specialisation of the conv → instance norm → ReLU op family
// (ConvInReluOp<OneDnn>, include/blendfuse/ops/conv_in_relu.hpp): float runs on oneDNN, double
// composes the oneDNN ops, which run the reference on the same memory.
//
// One block: Conv2dOp<OneDnn> (plain nchw edges), then onednn::instance_norm_relu — the
// normalisation, affine and ReLU in one pass over the data after oneDNN's layer norm, and one
// pass back (onednn/norm.hpp); its ReLU workspace, if any, is the state's `backend` extra.
//
// A stack (the fusion encoder's stride-2 blocks) runs on *blocked* layouts where it pays
// (detail::cir below): inference at batch >= 4, or at any batch when the caller caches the
// weights (ConvInReluStackParams::cache_weights + a BackendWeightCache: the blocked copies of the
// weights are kept across calls, so batch 1 does not reorder ≈ 6 MB of weights per call); and
// training at batch >= 4 when the backward needs no input gradient (the encoder's case; the
// blocked state, not per-block tensors, is kept in the state's `backend`). Everywhere else — and
// where oneDNN picks a layout the in-place blocked norm does not handle (no nChw8c/nChw16c
// destination, no JIT kernel), or the stack is not square/ungrouped/undilated with affine norms —
// the stack is the loop of single blocks above.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "blendfuse/ops/conv_in_relu.hpp"
#include "onednn/common.hpp"
#include "onednn/conv.hpp"
#include "onednn/norm.hpp"

namespace blendfuse::onednn::detail::cir {

/// Geometry of a stack the blocked path handles: a square (N, C, S, S) input, square k×k kernels,
/// the same stride and padding in both dimensions, no dilation or groups, affine norms.
struct StackGeom {
  Index n = 0, cin0 = 0, size0 = 0, k = 0, stride = 0, pad = 0;
  std::vector<Index> cout;  // output channels per block
  std::vector<Index> hs;    // output size per block
};

/// Fills `g` and returns true when the blocked path can run this stack (else the plain loop runs,
/// and reports any bad shape).
inline bool stack_geom(const Tensor<float, OneDnn>& x, const ops::ConvInReluStackWeights<float, OneDnn>& w,
                       const ops::ConvInReluStackParams& p, StackGeom& g) {
  const ops::Conv2dParams& c = p.conv;
  if (x.ndim() != 4 || x.dim(0) < 1 || x.dim(1) < 1 || x.dim(2) != x.dim(3)) return false;
  if (c.stride[0] != c.stride[1] || c.padding[0] != c.padding[1] || c.dilation[0] != 1 || c.dilation[1] != 1 ||
      c.groups != 1 || c.stride[0] < 1 || c.padding[0] < 0)
    return false;
  if (!(std::isfinite(p.eps) && p.eps >= 0)) return false;
  g = StackGeom{};
  g.n = x.dim(0), g.cin0 = x.dim(1), g.size0 = x.dim(2), g.stride = c.stride[0], g.pad = c.padding[0];
  Index cin = g.cin0, h = g.size0;
  for (std::size_t i = 0; i < w.conv.size(); ++i) {
    const Tensor<float, OneDnn>& wi = w.conv[i].value;
    if (wi.ndim() != 4 || !wi.is_contiguous() || wi.dim(0) < 1 || wi.dim(1) != cin || wi.dim(2) != wi.dim(3) ||
        wi.dim(2) < 1)
      return false;
    if (i == 0) g.k = wi.dim(2);
    if (wi.dim(2) != g.k) return false;
    const Index cout = wi.dim(0);
    for (const Tensor<float, OneDnn>* t : {&w.gamma[i], &w.beta[i]})
      if (t->ndim() != 1 || t->dim(0) != cout || !t->is_contiguous()) return false;
    if (h + 2 * g.pad < g.k) return false;
    h = (h + 2 * g.pad - g.k) / g.stride + 1;
    g.cout.push_back(cout);
    g.hs.push_back(h);
    cin = cout;
  }
  return true;
}

// Inference of the conv stack (the fusion encoder) on oneDNN with *blocked* activations. The op-level oneDNN
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
/// calls when the caller asks for it (ConvInReluStackParams::cache_weights, with a
/// ops::BackendWeightCache handle it owns: ConvInReluEncoder::cache_derived_weights; the caller
/// promises not to write the weights in place behind the library's back). An entry is still
/// checked on every call: it is rebuilt when its weight's data pointer, version (WeightRef::version
/// = Parameter::version, bumped by Adam, the initialisers and loads) or 65 sampled elements
/// changed (ops::WeightStamp), or oneDNN asks for another layout. A copied handle starts empty.
/// Thread-safe (one mutex; buffers are shared_ptrs, so
/// a caller keeps the one it ran with even if another thread replaces it).
struct WeightCache {
  struct Entry {
    ops::WeightStamp<float> stamp;
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
  /// `cache` false: reorder into a fresh buffer and keep nothing (the weights may change at any time).
  std::shared_ptr<const Buf> get(std::size_t i, const ops::WeightRef<float, OneDnn>& p, const dnnl::memory::desc& md,
                                 const dnnl::reorder& reorder, bool cache) {
    auto fresh = [&] {
      const Tensor<float, OneDnn> w = p.value.contiguous();
      auto b = std::make_shared<Buf>(md.get_size());
      onednn::detail::run(reorder, {{DNNL_ARG_FROM, onednn::detail::wrap(onednn::detail::plain_md(dims_of(w.shape())), w.data())},
                                    {DNNL_ARG_TO, dnnl::memory(md, onednn::engine(), b->get())}});
      return b;
    };
    if (!cache) return fresh();
    std::lock_guard<std::mutex> lock(mu);
    if (entries.size() <= i) entries.resize(i + 1);
    Entry& e = entries[i];
    auto stamp = ops::WeightStamp<float>::of(p);
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
  StackGeom g;                           // the stack's geometry (channels, kernel, stride, padding)
  std::vector<std::shared_ptr<const TrainEntry>> es;
  std::vector<Index> hs;                 // output size of each block
  std::vector<Buf> conv, y;              // blocked conv output and block output, per block
  std::vector<std::vector<float>> mean, rstd;
  Tensor<float, OneDnn> x;               // the plain input (block 0's source)
  std::unique_ptr<Buf> x_w;              // the input reordered for block 0's backward-weights
};


/// The stack's inference on blocked layouts: x (N, C, S, S) → the last block's output
/// (N, C_n, S_n, S_n), or an empty tensor where oneDNN chose a layout the in-place norm does not
/// handle (the caller then runs the plain loop). `wcache` (may be null): the caller's cached
/// blocked weights, used when `cache`.
inline Tensor<float, OneDnn> blocked_features(const Tensor<float, OneDnn>& x_in,
                                              const ops::ConvInReluStackWeights<float, OneDnn>& wts,
                                              const StackGeom& g, double eps, WeightCache* wcache, bool cache) {
  namespace od = onednn::detail;
  const Tensor<float, OneDnn> x = x_in.contiguous();
  const Index n = g.n, k = g.k, pad = g.pad, st = g.stride;
  Index cin = g.cin0, h = g.size0;
  std::vector<std::shared_ptr<const ConvEntry>> es;
  for (std::size_t i = 0; i < g.cout.size(); ++i) {
    es.push_back(conv_entry(n, cin, h, h, g.cout[i], k, st, pad, i == 0));
    if (es.back()->block == 0 || (i > 0 && !(es[i]->src == es[i - 1]->dst))) return {};
    cin = g.cout[i];
    h = g.hs[i];
  }
  WeightCache uncached;  // with `cache` off nothing is stored in it
  WeightCache& wc = wcache && cache ? *wcache : uncached;
  const auto& eng = onednn::engine();
  std::unique_ptr<Buf> cur;  // current activation (blocked)
  const float* src = x.data();
  if (es[0]->src_needs_reorder) {
    cur = std::make_unique<Buf>(es[0]->src.get_size());
    od::run(es[0]->src_reorder, {{DNNL_ARG_FROM, od::wrap(od::plain_md({n, g.cin0, g.size0, g.size0}), x.data())},
                                 {DNNL_ARG_TO, dnnl::memory(es[0]->src, eng, cur->get())}});
    src = cur->get();
  }
  h = g.size0;
  cin = g.cin0;
  for (std::size_t i = 0; i < es.size(); ++i) {
    const auto& e = *es[i];
    const Index cout = g.cout[i];
    const auto wbuf = wc.get(i, wts.conv[i], e.wei, e.wei_reorder, cache && wcache);
    auto dst = std::make_unique<Buf>(e.dst.get_size());
    od::run(e.conv, {{DNNL_ARG_SRC, dnnl::memory(e.src, eng, const_cast<float*>(src))},
                     {DNNL_ARG_WEIGHTS, dnnl::memory(e.wei, eng, wbuf->get())},
                     {DNNL_ARG_DST, dnnl::memory(e.dst, eng, dst->get())}});
    h = g.hs[i];
    if (e.block == 8)
      instance_norm_relu_blocked<8>(dst->get(), n, cout, h * h, wts.gamma[i].data(), wts.beta[i].data(), eps);
    else
      instance_norm_relu_blocked<16>(dst->get(), n, cout, h * h, wts.gamma[i].data(), wts.beta[i].data(), eps);
    cur = std::move(dst);
    src = cur->get();
    cin = cout;
  }
  Tensor<float, OneDnn> out({n, cin, h, h});
  const auto r = od::PrimitiveCache::instance().get<dnnl::reorder>(
      od::make_key("nn_blocked_to_plain", n, cin, h, Index(es.back()->block)), [&] {
        return std::make_shared<dnnl::reorder>(dnnl::reorder::primitive_desc(
            eng, es.back()->dst, eng, od::plain_md({n, cin, h, h}), od::scratch_attr()));
      });
  od::run(*r, {{DNNL_ARG_FROM, dnnl::memory(es.back()->dst, eng, const_cast<float*>(src))},
               {DNNL_ARG_TO, od::wrap(od::plain_md({n, cin, h, h}), out.data())}});
  return out;
}

/// Training forward on blocked layouts (see "training on blocked layouts"): returns the last
/// block's output (plain) and fills `state` (its `backend` = the TrainState, no `blocks`), or an
/// empty tensor (state untouched) where a block has no JIT layout the blocked norm handles.
inline Tensor<float, OneDnn> blocked_train_forward(const Tensor<float, OneDnn>& x_in,
                                                   const ops::ConvInReluStackWeights<float, OneDnn>& wts,
                                                   const StackGeom& g, double eps,
                                                   ops::ConvInReluStackState<float, OneDnn>& state) {
  namespace od = onednn::detail;
  const Index n = g.n, k = g.k, pad = g.pad, nb = static_cast<Index>(g.cout.size());
  auto s = std::make_shared<TrainState>();
  s->n = n;
  s->g = g;
  Index cin = g.cin0, h = g.size0;
  for (Index i = 0; i < nb; ++i) {
    s->es.push_back(train_entry(n, cin, h, h, g.cout[static_cast<std::size_t>(i)], k, g.stride, pad, i == 0));
    if (s->es.back()->block == 0 || (i > 0 && !(s->es[i]->src == s->es[i - 1]->dst))) return {};
    cin = g.cout[static_cast<std::size_t>(i)];
    h = g.hs[static_cast<std::size_t>(i)];
    s->hs.push_back(h);
  }
  const auto& eng = onednn::engine();
  s->x = x_in.contiguous();
  const Index S = g.size0;
  s->x_w = std::make_unique<Buf>(s->es[0]->src_w.get_size());
  od::run(s->es[0]->src_to_w, {{DNNL_ARG_FROM, od::wrap(od::plain_md({n, g.cin0, S, S}), s->x.data())},
                               {DNNL_ARG_TO, dnnl::memory(s->es[0]->src_w, eng, s->x_w->get())}});
  const float* src = s->x.data();
  cin = g.cin0;
  for (Index i = 0; i < nb; ++i) {
    const auto& e = *s->es[static_cast<std::size_t>(i)];
    const std::size_t iu = static_cast<std::size_t>(i);
    const Index cout = g.cout[iu], hw = s->hs[iu] * s->hs[iu];
    Buf wbuf(e.wei_fwd.get_size());
    od::run(e.to_fwd, {{DNNL_ARG_FROM, od::wrap(od::plain_md({cout, cin, k, k}), wts.conv[iu].value.data())},
                       {DNNL_ARG_TO, dnnl::memory(e.wei_fwd, eng, wbuf.get())}});
    s->conv.emplace_back(e.dst.get_size());
    s->y.emplace_back(e.dst.get_size());
    od::run(e.fwd, {{DNNL_ARG_SRC, dnnl::memory(e.src, eng, const_cast<float*>(src))},
                    {DNNL_ARG_WEIGHTS, dnnl::memory(e.wei_fwd, eng, wbuf.get())},
                    {DNNL_ARG_DST, dnnl::memory(e.dst, eng, s->conv.back().get())}});
    const Index lanes = n * ((cout + e.block - 1) / e.block) * e.block;
    s->mean.emplace_back(static_cast<std::size_t>(lanes));
    s->rstd.emplace_back(static_cast<std::size_t>(lanes));
    const float* gm = wts.gamma[iu].data();
    const float* bt = wts.beta[iu].data();
    if (e.block == 8)
      in_relu_fwd_blocked<8>(s->conv.back().get(), s->y.back().get(), s->mean.back().data(), s->rstd.back().data(),
                             n, cout, hw, gm, bt, eps);
    else
      in_relu_fwd_blocked<16>(s->conv.back().get(), s->y.back().get(), s->mean.back().data(), s->rstd.back().data(),
                              n, cout, hw, gm, bt, eps);
    src = s->y.back().get();
    cin = cout;
  }
  const Index hl = s->hs.back();
  Tensor<float, OneDnn> out({n, cin, hl, hl});
  const auto r = od::PrimitiveCache::instance().get<dnnl::reorder>(
      od::make_key("nn_blocked_to_plain", n, cin, hl, Index(s->es.back()->block)), [&] {
        return std::make_shared<dnnl::reorder>(dnnl::reorder::primitive_desc(
            eng, s->es.back()->dst, eng, od::plain_md({n, cin, hl, hl}), od::scratch_attr()));
      });
  od::run(*r, {{DNNL_ARG_FROM, dnnl::memory(s->es.back()->dst, eng, const_cast<float*>(src))},
               {DNNL_ARG_TO, od::wrap(od::plain_md({n, cin, hl, hl}), out.data())}});
  state.blocks.clear();
  state.y = out;
  state.backend = std::move(s);
  return out;
}

/// Backward of blocked_train_forward for dy = ∂L/∂y (the stack output's shape): accumulates the
/// conv (reordered back into acc.dw with a sum post-op: grad += dW, no temporary), gamma and beta
/// gradients. No input gradient.
inline void blocked_backward(const TrainState& s, const ops::ConvInReluStackWeights<float, OneDnn>& wts,
                             const Tensor<float, OneDnn>& dy_in, ops::ConvInReluStackGrads<float, OneDnn>& acc) {
  namespace od = onednn::detail;
  const auto& eng = onednn::engine();
  const StackGeom& g = s.g;
  const Index n = s.n, k = g.k, nb = static_cast<Index>(g.cout.size());
  const Tensor<float, OneDnn> dflat = dy_in.contiguous();
  const Index cl = g.cout.back(), hl = s.hs.back();
  BF_CHECK(dflat.numel() == n * cl * hl * hl, ShapeError, "conv_in_relu_stack_backward: dy of shape ",
           dflat.shape_string(), " does not match the stack output (", n, ", ", cl, ", ", hl, ", ", hl, ")");
  const auto r = od::PrimitiveCache::instance().get<dnnl::reorder>(
      od::make_key("nn_plain_to_blocked", n, cl, hl, Index(s.es.back()->block)), [&] {
        return std::make_shared<dnnl::reorder>(dnnl::reorder::primitive_desc(
            eng, od::plain_md({n, cl, hl, hl}), eng, s.es.back()->dst, od::scratch_attr()));
      });
  auto d = std::make_unique<Buf>(s.es.back()->dst.get_size());
  od::run(*r, {{DNNL_ARG_FROM, od::wrap(od::plain_md({n, cl, hl, hl}), dflat.data())},
               {DNNL_ARG_TO, dnnl::memory(s.es.back()->dst, eng, d->get())}});
  for (Index i = nb; i-- > 0;) {
    const std::size_t iu = static_cast<std::size_t>(i);
    const auto& e = *s.es[iu];
    const Index cout = g.cout[iu], cin = i == 0 ? g.cin0 : g.cout[iu - 1];
    const Index hw = s.hs[iu] * s.hs[iu];
    const std::size_t lanes = s.mean[iu].size();
    std::vector<double> sb(lanes), sg(lanes);
    if (e.block == 8)
      in_relu_bwd_blocked<8>(s.conv[iu].get(), s.y[iu].get(), s.mean[iu].data(), s.rstd[iu].data(),
                             wts.gamma[iu].data(), d->get(), n, cout, hw, sb.data(), sg.data());
    else
      in_relu_bwd_blocked<16>(s.conv[iu].get(), s.y[iu].get(), s.mean[iu].data(), s.rstd[iu].data(),
                              wts.gamma[iu].data(), d->get(), n, cout, hw, sb.data(), sg.data());
    const Index lanes_per_n = static_cast<Index>(lanes) / n;
    float* dgamma = acc.dgamma[iu].data();
    float* dbeta = acc.dbeta[iu].data();
    for (Index c = 0; c < cout; ++c) {
      double a = 0, b = 0;
      for (Index j = 0; j < n; ++j) {
        a += sg[static_cast<std::size_t>(j * lanes_per_n + c)];
        b += sb[static_cast<std::size_t>(j * lanes_per_n + c)];
      }
      dgamma[c] += static_cast<float>(a);
      dbeta[c] += static_cast<float>(b);
    }
    // weight gradient: src = the block input (blocked; block 0: x reordered), diff_dst = d
    const float* src = i == 0 ? s.x_w->get() : s.y[iu - 1].get();
    Buf dw(e.wei_bwd_w.get_size());
    od::run(e.bwd_w, {{DNNL_ARG_SRC, dnnl::memory(e.src_w, eng, const_cast<float*>(src))},
                      {DNNL_ARG_DIFF_DST, dnnl::memory(e.dst, eng, d->get())},
                      {DNNL_ARG_DIFF_WEIGHTS, dnnl::memory(e.wei_bwd_w, eng, dw.get())}});
    od::run(e.grad_back, {{DNNL_ARG_FROM, dnnl::memory(e.wei_bwd_w, eng, dw.get())},
                          {DNNL_ARG_TO, od::wrap(od::plain_md({cout, cin, k, k}), acc.dw[iu].data())}});
    if (i == 0) break;  // the input needs no gradient
    Buf wb(e.wei_bwd_d.get_size());
    od::run(e.to_bwd_d, {{DNNL_ARG_FROM, od::wrap(od::plain_md({cout, cin, k, k}), wts.conv[iu].value.data())},
                         {DNNL_ARG_TO, dnnl::memory(e.wei_bwd_d, eng, wb.get())}});
    auto dx = std::make_unique<Buf>(e.src.get_size());
    od::run(e.bwd_d, {{DNNL_ARG_DIFF_DST, dnnl::memory(e.dst, eng, d->get())},
                      {DNNL_ARG_WEIGHTS, dnnl::memory(e.wei_bwd_d, eng, wb.get())},
                      {DNNL_ARG_DIFF_SRC, dnnl::memory(e.src, eng, dx->get())}});
    d = std::move(dx);
  }
}

}  // namespace blendfuse::onednn::detail::cir

namespace blendfuse::ops {

template <>
struct ConvInReluOp<OneDnn> {
  /// One block: Conv2dOp<OneDnn>, then onednn::instance_norm_relu (its workspace kept in
  /// state->backend).
  template <class T>
  static Tensor<T, OneDnn> forward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& w,
                                   const Tensor<T, OneDnn>& gamma, const Tensor<T, OneDnn>& beta, double eps,
                                   const Conv2dParams& p, ConvInReluState<T, OneDnn>* state) {
    Tensor<T, OneDnn> c = ops::conv2d(x, w, nullptr, p);
    auto r = onednn::instance_norm_relu(c, gamma, beta, eps);
    if (state) {
      std::shared_ptr<const void> ws;
      if (r.workspace.numel() > 0) ws = std::make_shared<const Tensor<std::uint8_t, OneDnn>>(std::move(r.workspace));
      *state = ConvInReluState<T, OneDnn>{x, std::move(c), r.y, std::move(r.mean), std::move(r.rstd), std::move(ws)};
    }
    return r.y;
  }

  template <class T>
  static ConvInReluGrads<T, OneDnn> backward(const ConvInReluState<T, OneDnn>& s, const Tensor<T, OneDnn>& w,
                                             const Tensor<T, OneDnn>& gamma, const Tensor<T, OneDnn>& dy,
                                             const Conv2dParams& p) {
    onednn::NormReluResult<T, OneDnn> fwd{s.y, s.mean, s.rstd, {}};
    if (s.backend) fwd.workspace = *std::static_pointer_cast<const Tensor<std::uint8_t, OneDnn>>(s.backend);
    auto ng = onednn::instance_norm_relu_backward(s.conv, gamma, fwd, dy);
    auto cg = ops::conv2d_backward(s.x, w, ng.dx, p, false);
    return {std::move(cg.dx), std::move(cg.dw), std::move(ng.dgamma), std::move(ng.dbeta)};
  }

  template <class T>
  static Tensor<T, OneDnn> stack_forward(const Tensor<T, OneDnn>& x, const ConvInReluStackWeights<T, OneDnn>& w,
                                         const ConvInReluStackParams& p, ConvInReluStackState<T, OneDnn>* state,
                                         BackendWeightCache* cache) {
    detail::cir_check_stack(w, "conv_in_relu_stack");
    if constexpr (std::is_same_v<T, float>) {
      namespace cir = onednn::detail::cir;
      cir::StackGeom g;
      if (cir::stack_geom(x, w, p, g)) {
        // inference at batch >= 4, or at any batch with cached weights (the per-call reorder,
        // ≈ 6 MB at paper scale, costs at batch 1 what the blocked kernels save)
        if (!state && (p.cache_weights || g.n >= 4)) {
          const std::shared_ptr<cir::WeightCache> wc = cache && p.cache_weights ? cache->get<cir::WeightCache>() : nullptr;
          Tensor<float, OneDnn> y = cir::blocked_features(x, w, g, p.eps, wc.get(), p.cache_weights);
          if (!y.empty()) return y;
        }
        // training: the blocked chain too (three weight reorders per block, ≈ 1 % of the step)
        if (state && g.n >= 4 && !p.input_grad) {
          Tensor<float, OneDnn> y = cir::blocked_train_forward(x, w, g, p.eps, *state);
          if (!y.empty()) return y;
        }
      }
    }
    return detail::cir_stack_loop<ConvInReluOp>(x, w, p, state);
  }

  template <class T>
  static Tensor<T, OneDnn> stack_backward(const ConvInReluStackState<T, OneDnn>& s,
                                          const ConvInReluStackWeights<T, OneDnn>& w, const ConvInReluStackParams& p,
                                          const Tensor<T, OneDnn>& dy, ConvInReluStackGrads<T, OneDnn>& acc) {
    detail::cir_check_stack(w, "conv_in_relu_stack_backward");
    detail::cir_check_state(s, w.conv.size(), "conv_in_relu_stack_backward");
    detail::cir_check_grads(w, acc, "conv_in_relu_stack_backward");
    if constexpr (std::is_same_v<T, float>) {
      if (s.backend) {
        const auto& ts = *std::static_pointer_cast<const onednn::detail::cir::TrainState>(s.backend);
        BF_CHECK(ts.g.cout.size() == w.conv.size(), ArgumentError, "conv_in_relu_stack_backward: the saved state has ",
                 ts.g.cout.size(), " blocks, the weights ", w.conv.size());
        BF_CHECK(!p.input_grad, ArgumentError, "conv_in_relu_stack_backward: an input gradient was asked for, but the "
                 "forward ran without one (ConvInReluStackParams::input_grad must match)");
        onednn::detail::cir::blocked_backward(ts, w, dy, acc);
        return {};  // the blocked path runs only without an input gradient (stack_forward)
      }
    }
    Tensor<T, OneDnn> dx = detail::cir_stack_loop_backward<ConvInReluOp>(s, w, p, dy, acc);
    return p.input_grad ? dx : Tensor<T, OneDnn>{};
  }
};

}  // namespace blendfuse::ops
