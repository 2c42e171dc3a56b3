// blendfuse — oneDNN backend: conv2d / conv1d forward and backward, and a conv2d with a fused ReLU
// post-op (`onednn::conv2d_relu`).
//
// Same semantics and shapes as ops/conv.hpp (torch.nn.functional.conv2d / conv1d): stride,
// zero padding on both sides, dilation and groups. conv1d runs as conv2d with H = kH = 1.
//   * forward: one convolution_forward primitive (bias optional; ReLU as an eltwise post-op).
//   * backward: convolution_backward_data (dx) and convolution_backward_weights (dw and, when
//     asked, db), built with the forward primitive descriptor as hint.
// oneDNN's padding_r is set equal to padding_l: its output-size check floors exactly like the
// reference's formula, so strides that do not tile the input (wav2vec's K=10, S=5) need no
// special case.
//
// Element type: float runs on oneDNN; double (gradient checks, tests) falls back to the reference
// implementation on the same memory and copies the result — correct but not accelerated.
//
// Layouts: plain nchw / (g)oihw at the op edges. 2-D convolutions with JIT-friendly channel
// counts run blocked inside the op (format_tag::any, reorders at the edges; "blocked route"
// below), the rest on the plain-layout primitives (im2col + GEMM). The fusion encoder's training
// and batched inference keep whole conv → norm → ReLU chains blocked (nn/encoders.hpp).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <type_traits>

#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/conv.hpp"
#include "onednn/activation.hpp"
#include "onednn/common.hpp"

namespace blendfuse {
namespace onednn::detail {

using ops::detail::ConvGeom;

inline std::atomic<bool>& blocked_route_flag() {
  static std::atomic<bool> f{true};
  return f;
}
inline bool blocked_route_enabled() { return blocked_route_flag().load(std::memory_order_relaxed); }

inline Shape conv_key_dims(const ConvGeom& g) {
  return {g.n, g.c_in, g.h, g.w, g.c_out, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups};
}

struct ConvMds {
  dnnl::memory::desc src, wei, bias, dst;
  dnnl::memory::dims strides, dilates, pad_l, pad_r;
};

inline ConvMds conv_mds(const ConvGeom& g) {
  ConvMds m;
  m.src = plain_md({g.n, g.c_in, g.h, g.w});
  m.dst = plain_md({g.n, g.c_out, g.h_out, g.w_out});
  m.wei = g.groups > 1 ? plain_md({g.groups, g.cout_g(), g.cin_g(), g.kh, g.kw})
                       : plain_md({g.c_out, g.c_in, g.kh, g.kw});
  m.bias = plain_md({g.c_out});
  m.strides = {g.sh, g.sw};
  m.dilates = {g.dh - 1, g.dw - 1};  // oneDNN counts dilation from 0
  m.pad_l = {g.ph, g.pw};
  m.pad_r = {g.ph, g.pw};
  return m;
}

inline dnnl::convolution_forward::desc conv_fwd_desc(const ConvMds& m, bool bias) {
  using namespace dnnl;
  if (bias)
    return convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                     m.src, m.wei, m.bias, m.dst, m.strides, m.dilates, m.pad_l,
                                     m.pad_r);
  return convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                   m.src, m.wei, m.dst, m.strides, m.dilates, m.pad_l, m.pad_r);
}

struct ConvFwd {
  dnnl::convolution_forward prim;
};

struct ConvBwd {
  dnnl::convolution_backward_data data;
  dnnl::convolution_backward_weights weights;
};

// ---- blocked route (2-D convolutions) ------------------------------------------------------------
// With plain nchw/oihw descriptors oneDNN 2.6 runs im2col + GEMM (`gemm:jit`) for every pass.
// For 2-D convolutions whose channels suit its direct JIT kernels, the op instead builds the
// primitives with format_tag::any (nChw8c/16c activations, blocked weights) and reorders at its
// edges: x, dy and w in, y / dx / dw out. Measured (bench_ops, 1 thread, AVX2, reorders
// included): fusion encoder block 2 (32→64 channels, 64×64 input) at batch 32 forward 24.1 →
// 18.7 ms, backward 62.8 → 45.3 ms; block 1 (4→32, 128×128) forward 12.6 → 7.3 ms.
// Used where every primitive of the pass is a JIT kernel (`jit:*` in its implementation name);
// otherwise (groups, odd channel counts, ...) the plain route runs. A model that keeps whole
// chains blocked (nn/encoders.hpp) also skips these reorders.

/// Blocked-route eligibility: 2-D, no groups, output channels a multiple of 8 (the AVX2 block),
/// input channels a multiple of 8 — or, forward only, the "first convolution" case (≤ 4
/// channels, nchw input; its backward is slower blocked: the source is padded to 8 channels) —
/// and at least 3 output pixels (N·Ho·Wo) per weight of one output channel (C_in·kh·kw). Below
/// that the direct kernel saves less than the reorders cost: measured on the 128→256 3×3 conv of
/// fusion block 4 (16×16 input), plain vs blocked forward 15.8 vs 18.1 ms at batch 32 (ratio
/// 1.8) and 0.49 vs 0.52 ms at batch 1, backward 33.3 vs 36.5 ms at batch 32; block 2 at batch
/// 1 (ratio 3.6) still gains (forward 0.73 → 0.50 ms, backward 1.92 → 1.15 ms).
inline bool conv_blocked_candidate(const ConvGeom& g, int nd, bool backward) {
  const bool cin_ok = g.c_in % 8 == 0 || (!backward && g.c_in <= 4);
  return nd == 2 && g.groups == 1 && g.c_out % 8 == 0 && cin_ok &&
         g.n * g.h_out * g.w_out >= 3 * g.cin_g() * g.kh * g.kw;
}

inline bool is_jit(const char* impl) { return std::string(impl).rfind("jit", 0) == 0; }

inline dnnl::memory::desc any_md(const dnnl::memory::dims& d) {
  return dnnl::memory::desc(d, dt::f32, tag::any);
}

struct ConvBlkFwd {
  bool ok = false;
  dnnl::convolution_forward prim;
  dnnl::memory::desc src, wei, dst;
  bool src_plain = false;
  dnnl::reorder src_in, wei_in, dst_out;
};

struct ConvBlkBwd {
  bool ok = false;
  dnnl::convolution_backward_data data;
  dnnl::convolution_backward_weights weights;
  dnnl::memory::desc src_d, src_w, wei_d, wei_w, dst;  // src_d: diff_src; src_w: bwd_w source
  dnnl::reorder dy_in, x_in, wei_in, dx_out, dw_out;
};

inline dnnl::convolution_forward::desc conv_fwd_desc_any(const ConvGeom& g, const ConvMds& m, bool bias) {
  using namespace dnnl;
  const memory::desc src = g.c_in <= 4 ? m.src : any_md(m.src.dims());
  const memory::desc wei = any_md(m.wei.dims()), dst = any_md(m.dst.dims());
  if (bias)
    return convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct, src,
                                     wei, m.bias, dst, m.strides, m.dilates, m.pad_l, m.pad_r);
  return convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct, src,
                                   wei, dst, m.strides, m.dilates, m.pad_l, m.pad_r);
}

inline std::shared_ptr<const ConvBlkFwd> conv_blk_fwd(const ConvGeom& g, bool bias, bool relu) {
  return PrimitiveCache::instance().get<ConvBlkFwd>(
      make_key("conv_fwd_blk", conv_key_dims(g), Index(bias), Index(relu)), [&] {
        using namespace dnnl;
        auto e = std::make_shared<ConvBlkFwd>();
        try {
          const ConvMds m = conv_mds(g);
          primitive_attr attr = scratch_attr();
          if (relu) {
            post_ops po;
            po.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
            attr.set_post_ops(po);
          }
          const convolution_forward::primitive_desc pd(conv_fwd_desc_any(g, m, bias), attr, engine());
          if (!is_jit(pd.impl_info_str())) return std::shared_ptr<const ConvBlkFwd>(e);
          e->src = pd.src_desc();
          e->wei = pd.weights_desc();
          e->dst = pd.dst_desc();
          e->src_plain = e->src == m.src;
          const auto& eng = engine();
          if (!e->src_plain) e->src_in = reorder(reorder::primitive_desc(eng, m.src, eng, e->src, scratch_attr()));
          e->wei_in = reorder(reorder::primitive_desc(eng, m.wei, eng, e->wei, scratch_attr()));
          e->dst_out = reorder(reorder::primitive_desc(eng, e->dst, eng, m.dst, scratch_attr()));
          e->prim = convolution_forward(pd);
          e->ok = true;
        } catch (const dnnl::error&) {
          e->ok = false;
        }
        return std::shared_ptr<const ConvBlkFwd>(e);
      });
}

inline std::shared_ptr<const ConvBlkBwd> conv_blk_bwd(const ConvGeom& g, bool bias) {
  return PrimitiveCache::instance().get<ConvBlkBwd>(
      make_key("conv_bwd_blk", conv_key_dims(g), Index(bias)), [&] {
        using namespace dnnl;
        auto e = std::make_shared<ConvBlkBwd>();
        try {
          const ConvMds m = conv_mds(g);
          const auto& eng = engine();
          const convolution_forward::primitive_desc hint(conv_fwd_desc_any(g, m, bias), engine());
          const memory::desc dst = hint.dst_desc();
          // the backward passes need a blocked source: nChw8c/16c like dst (padded for c_in ≤ 4)
          const memory::desc src = g.c_in <= 4
                                       ? memory::desc(m.src.dims(), dt::f32,
                                                      dst == memory::desc(m.dst.dims(), dt::f32, tag::nChw16c)
                                                          ? tag::nChw16c
                                                          : tag::nChw8c)
                                       : hint.src_desc();
          const convolution_backward_data::primitive_desc dpd(
              convolution_backward_data::desc(algorithm::convolution_direct, src, any_md(m.wei.dims()),
                                              dst, m.strides, m.dilates, m.pad_l, m.pad_r),
              scratch_attr(), eng, hint);
          const convolution_backward_weights::primitive_desc wpd(
              bias ? convolution_backward_weights::desc(algorithm::convolution_direct, src,
                                                        any_md(m.wei.dims()), m.bias, dst, m.strides,
                                                        m.dilates, m.pad_l, m.pad_r)
                   : convolution_backward_weights::desc(algorithm::convolution_direct, src,
                                                        any_md(m.wei.dims()), dst, m.strides,
                                                        m.dilates, m.pad_l, m.pad_r),
              scratch_attr(), eng, hint);
          if (!is_jit(dpd.impl_info_str()) || !is_jit(wpd.impl_info_str()) ||
              !(dpd.diff_src_desc() == src) || !(wpd.src_desc() == src) ||
              !(dpd.diff_dst_desc() == dst) || !(wpd.diff_dst_desc() == dst))
            return std::shared_ptr<const ConvBlkBwd>(e);
          e->src_d = e->src_w = src;
          e->dst = dst;
          e->wei_d = dpd.weights_desc();
          e->wei_w = wpd.diff_weights_desc();
          e->dy_in = reorder(reorder::primitive_desc(eng, m.dst, eng, dst, scratch_attr()));
          e->x_in = reorder(reorder::primitive_desc(eng, m.src, eng, src, scratch_attr()));
          e->wei_in = reorder(reorder::primitive_desc(eng, m.wei, eng, e->wei_d, scratch_attr()));
          e->dx_out = reorder(reorder::primitive_desc(eng, src, eng, m.src, scratch_attr()));
          e->dw_out = reorder(reorder::primitive_desc(eng, e->wei_w, eng, m.wei, scratch_attr()));
          e->data = convolution_backward_data(dpd);
          e->weights = convolution_backward_weights(wpd);
          e->ok = true;
        } catch (const dnnl::error&) {
          e->ok = false;
        }
        return std::shared_ptr<const ConvBlkBwd>(e);
      });
}

/// Uninitialised float scratch of `bytes` (every element is written by a primitive).
struct BlkBuf {
  std::unique_ptr<float[]> p;
  explicit BlkBuf(std::size_t bytes) : p(new float[(bytes + sizeof(float) - 1) / sizeof(float)]) {}
  float* get() const { return p.get(); }
};

/// Blocked-route forward; false (nothing written) when the route does not apply.
inline bool conv_forward_blocked(const ConvGeom& g, const float* x, const float* w, const float* b,
                                 bool relu, float* y) {
  const auto e = conv_blk_fwd(g, b != nullptr, relu);
  if (!e->ok) return false;
  const ConvMds m = conv_mds(g);
  const auto& eng = engine();
  std::unique_ptr<BlkBuf> xs;
  const float* src = x;
  if (!e->src_plain) {
    xs = std::make_unique<BlkBuf>(e->src.get_size());
    run(e->src_in, {{DNNL_ARG_FROM, wrap(m.src, x)}, {DNNL_ARG_TO, dnnl::memory(e->src, eng, xs->get())}});
    src = xs->get();
  }
  BlkBuf wb(e->wei.get_size()), yb(e->dst.get_size());
  run(e->wei_in, {{DNNL_ARG_FROM, wrap(m.wei, w)}, {DNNL_ARG_TO, dnnl::memory(e->wei, eng, wb.get())}});
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, dnnl::memory(e->src, eng, const_cast<float*>(src))},
                                             {DNNL_ARG_WEIGHTS, dnnl::memory(e->wei, eng, wb.get())},
                                             {DNNL_ARG_DST, dnnl::memory(e->dst, eng, yb.get())}};
  if (b) args.emplace(DNNL_ARG_BIAS, wrap(m.bias, b));
  run(e->prim, args);
  run(e->dst_out, {{DNNL_ARG_FROM, dnnl::memory(e->dst, eng, yb.get())}, {DNNL_ARG_TO, wrap(m.dst, y)}});
  return true;
}

/// Blocked-route backward; false (nothing written) when the route does not apply.
inline bool conv_backward_blocked(const ConvGeom& g, const float* x, const float* w, const float* dy,
                                  float* dx, float* dw, float* db) {
  const auto e = conv_blk_bwd(g, db != nullptr);
  if (!e->ok) return false;
  const ConvMds m = conv_mds(g);
  const auto& eng = engine();
  BlkBuf dyb(e->dst.get_size()), xb(e->src_w.get_size()), wb(e->wei_d.get_size());
  run(e->dy_in, {{DNNL_ARG_FROM, wrap(m.dst, dy)}, {DNNL_ARG_TO, dnnl::memory(e->dst, eng, dyb.get())}});
  run(e->wei_in, {{DNNL_ARG_FROM, wrap(m.wei, w)}, {DNNL_ARG_TO, dnnl::memory(e->wei_d, eng, wb.get())}});
  {
    BlkBuf dxb(e->src_d.get_size());
    run(e->data, {{DNNL_ARG_DIFF_DST, dnnl::memory(e->dst, eng, dyb.get())},
                  {DNNL_ARG_WEIGHTS, dnnl::memory(e->wei_d, eng, wb.get())},
                  {DNNL_ARG_DIFF_SRC, dnnl::memory(e->src_d, eng, dxb.get())}});
    run(e->dx_out, {{DNNL_ARG_FROM, dnnl::memory(e->src_d, eng, dxb.get())}, {DNNL_ARG_TO, wrap(m.src, dx)}});
  }
  run(e->x_in, {{DNNL_ARG_FROM, wrap(m.src, x)}, {DNNL_ARG_TO, dnnl::memory(e->src_w, eng, xb.get())}});
  BlkBuf dwb(e->wei_w.get_size());
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, dnnl::memory(e->src_w, eng, xb.get())},
                                             {DNNL_ARG_DIFF_DST, dnnl::memory(e->dst, eng, dyb.get())},
                                             {DNNL_ARG_DIFF_WEIGHTS, dnnl::memory(e->wei_w, eng, dwb.get())}};
  if (db) args.emplace(DNNL_ARG_DIFF_BIAS, wrap(m.bias, db));
  run(e->weights, args);
  run(e->dw_out, {{DNNL_ARG_FROM, dnnl::memory(e->wei_w, eng, dwb.get())}, {DNNL_ARG_TO, wrap(m.wei, dw)}});
  return true;
}

/// y = [relu](conv(x, w) + b) on contiguous float buffers.
inline void conv_forward_f32(const ConvGeom& g, const float* x, const float* w, const float* b,
                             bool relu, float* y) {
  const auto e = PrimitiveCache::instance().get<ConvFwd>(
      make_key("conv_fwd", conv_key_dims(g), Index(b != nullptr), Index(relu)), [&] {
        const ConvMds m = conv_mds(g);
        dnnl::primitive_attr attr = scratch_attr();
        if (relu) {
          dnnl::post_ops po;
          po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
          attr.set_post_ops(po);
        }
        dnnl::convolution_forward::primitive_desc pd(conv_fwd_desc(m, b != nullptr), attr,
                                                     engine());
        return std::make_shared<ConvFwd>(ConvFwd{dnnl::convolution_forward(pd)});
      });
  const ConvMds m = conv_mds(g);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, wrap(m.src, x)},
                                             {DNNL_ARG_WEIGHTS, wrap(m.wei, w)},
                                             {DNNL_ARG_DST, wrap(m.dst, y)}};
  if (b) args.emplace(DNNL_ARG_BIAS, wrap(m.bias, b));
  run(e->prim, args);
}

/// dx, dw and (if db) db of a convolution on contiguous float buffers (outputs overwritten).
inline void conv_backward_f32(const ConvGeom& g, const float* x, const float* w, const float* dy,
                              float* dx, float* dw, float* db) {
  const auto e = PrimitiveCache::instance().get<ConvBwd>(
      make_key("conv_bwd", conv_key_dims(g), Index(db != nullptr)), [&] {
        using namespace dnnl;
        const ConvMds m = conv_mds(g);
        const convolution_forward::primitive_desc hint(conv_fwd_desc(m, db != nullptr), engine());
        const convolution_backward_data::desc dd(algorithm::convolution_direct, m.src, m.wei, m.dst,
                                                 m.strides, m.dilates, m.pad_l, m.pad_r);
        const convolution_backward_data::primitive_desc dpd(dd, scratch_attr(), engine(), hint);
        auto wd = db ? convolution_backward_weights::desc(algorithm::convolution_direct, m.src,
                                                          m.wei, m.bias, m.dst, m.strides,
                                                          m.dilates, m.pad_l, m.pad_r)
                     : convolution_backward_weights::desc(algorithm::convolution_direct, m.src,
                                                          m.wei, m.dst, m.strides, m.dilates,
                                                          m.pad_l, m.pad_r);
        const convolution_backward_weights::primitive_desc wpd(wd, scratch_attr(), engine(), hint);
        return std::make_shared<ConvBwd>(
            ConvBwd{convolution_backward_data(dpd), convolution_backward_weights(wpd)});
      });
  const ConvMds m = conv_mds(g);
  run(e->data, {{DNNL_ARG_DIFF_DST, wrap(m.dst, dy)},
                {DNNL_ARG_WEIGHTS, wrap(m.wei, w)},
                {DNNL_ARG_DIFF_SRC, wrap(m.src, dx)}});
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, wrap(m.src, x)},
                                             {DNNL_ARG_DIFF_DST, wrap(m.dst, dy)},
                                             {DNNL_ARG_DIFF_WEIGHTS, wrap(m.wei, dw)}};
  if (db) args.emplace(DNNL_ARG_DIFF_BIAS, wrap(m.bias, db));
  run(e->weights, args);
}

template <class T>
ops::ConvGrads<T, OneDnn> grads_back(const ops::ConvGrads<T, Cpu>& g) {
  return {to_onednn(g.dx), to_onednn(g.dw), to_onednn(g.db)};
}

/// Shared body of the conv2d / conv1d specialisations (float).
inline Tensor<float, OneDnn> conv_forward(const ConvGeom& g, int nd, const Tensor<float, OneDnn>& x,
                                          const Tensor<float, OneDnn>& w,
                                          const Tensor<float, OneDnn>* b, bool relu) {
  const auto xc = x.contiguous(), wc = w.contiguous();
  Tensor<float, OneDnn> bc;
  if (b) bc = b->contiguous();
  Tensor<float, OneDnn> y(g.out_shape(nd));
  if (!(conv_blocked_candidate(g, nd, false) && blocked_route_enabled() &&
        conv_forward_blocked(g, xc.data(), wc.data(), b ? bc.data() : nullptr, relu, y.data())))
    conv_forward_f32(g, xc.data(), wc.data(), b ? bc.data() : nullptr, relu, y.data());
  return y;
}

inline ops::ConvGrads<float, OneDnn> conv_backward(const ConvGeom& g, int nd, const Tensor<float, OneDnn>& x,
                                                   const Tensor<float, OneDnn>& w,
                                                   const Tensor<float, OneDnn>& dy, bool need_db) {
  ops::ConvGrads<float, OneDnn> r{Tensor<float, OneDnn>(x.shape()), Tensor<float, OneDnn>(w.shape()),
                                  {}};
  if (need_db) r.db = Tensor<float, OneDnn>(Shape{g.c_out});
  const auto xc = x.contiguous(), wc = w.contiguous(), dyc = dy.contiguous();
  if (!(conv_blocked_candidate(g, nd, true) && blocked_route_enabled() &&
        conv_backward_blocked(g, xc.data(), wc.data(), dyc.data(), r.dx.data(), r.dw.data(),
                              need_db ? r.db.data() : nullptr)))
    conv_backward_f32(g, xc.data(), wc.data(), dyc.data(), r.dx.data(), r.dw.data(),
                      need_db ? r.db.data() : nullptr);
  return r;
}

/// Zero-sized problems go to the reference (oneDNN rejects or no-ops them inconsistently).
inline bool conv_degenerate(const ConvGeom& g) {
  return g.n == 0 || g.c_in == 0 || g.c_out == 0 || g.h_out <= 0 || g.w_out <= 0;
}

}  // namespace onednn::detail

namespace ops {

/// conv2d on oneDNN (float); double falls back to the reference. See the file comment.
template <>
struct Conv2dOp<OneDnn> {
  template <class T>
  static Tensor<T, OneDnn> forward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& w,
                                   const Tensor<T, OneDnn>* b, const Conv2dParams& p) {
    return forward_impl(x, w, b, p, false);
  }

  template <class T>
  static ConvGrads<T, OneDnn> backward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& w,
                                       const Tensor<T, OneDnn>& dy, const Conv2dParams& p,
                                       bool need_bias_grad) {
    namespace od = onednn::detail;
    if constexpr (!std::is_same_v<T, float>) {
      return od::grads_back(Conv2dOp<Cpu>::backward(onednn::view_as_cpu(x), onednn::view_as_cpu(w),
                                                    onednn::view_as_cpu(dy), p, need_bias_grad));
    } else {
      const auto g = detail::conv_geometry("conv2d_backward", 2, x.shape(), w.shape(),
                                           p.stride.data(), p.padding.data(), p.dilation.data(),
                                           p.groups);
      detail::check_grad_output("conv2d_backward", 2, dy, g, x.shape(), w.shape());
      if (od::conv_degenerate(g))
        return od::grads_back(Conv2dOp<Cpu>::backward(onednn::view_as_cpu(x),
                                                      onednn::view_as_cpu(w),
                                                      onednn::view_as_cpu(dy), p, need_bias_grad));
      return od::conv_backward(g, 2, x, w, dy, need_bias_grad);
    }
  }

  /// relu(conv2d(x, w) + b) with the ReLU as a oneDNN post-op (float; double composes).
  template <class T>
  static Tensor<T, OneDnn> forward_relu(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& w,
                                        const Tensor<T, OneDnn>* b, const Conv2dParams& p) {
    return forward_impl(x, w, b, p, true);
  }

 private:
  template <class T>
  static Tensor<T, OneDnn> forward_impl(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& w,
                                        const Tensor<T, OneDnn>* b, const Conv2dParams& p,
                                        bool relu) {
    namespace od = onednn::detail;
    auto reference = [&] {
      const Tensor<T, Cpu> bc = b ? onednn::view_as_cpu(*b) : Tensor<T, Cpu>();
      Tensor<T, Cpu> y = Conv2dOp<Cpu>::forward(onednn::view_as_cpu(x), onednn::view_as_cpu(w),
                                                b ? &bc : nullptr, p);
      if (relu) ops::ReluOp<Cpu>::forward_inplace(y);
      return onednn::to_onednn(y);
    };
    if constexpr (!std::is_same_v<T, float>) {
      return reference();
    } else {
      const auto g = detail::conv_geometry("conv2d", 2, x.shape(), w.shape(), p.stride.data(),
                                           p.padding.data(), p.dilation.data(), p.groups);
      if (b) detail::check_bias("conv2d", *b, g, w.shape());
      if (od::conv_degenerate(g)) return reference();
      return od::conv_forward(g, 2, x, w, b, relu);
    }
  }
};

/// conv1d on oneDNN as conv2d with H = kH = 1 (float); double falls back to the reference.
template <>
struct Conv1dOp<OneDnn> {
  template <class T>
  static Tensor<T, OneDnn> forward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& w,
                                   const Tensor<T, OneDnn>* b, const Conv1dParams& p) {
    namespace od = onednn::detail;
    auto reference = [&] {
      const Tensor<T, Cpu> bc = b ? onednn::view_as_cpu(*b) : Tensor<T, Cpu>();
      return onednn::to_onednn(Conv1dOp<Cpu>::forward(
          onednn::view_as_cpu(x), onednn::view_as_cpu(w), b ? &bc : nullptr, p));
    };
    if constexpr (!std::is_same_v<T, float>) {
      return reference();
    } else {
      const auto g = detail::conv_geometry("conv1d", 1, x.shape(), w.shape(), &p.stride,
                                           &p.padding, &p.dilation, p.groups);
      if (b) detail::check_bias("conv1d", *b, g, w.shape());
      if (od::conv_degenerate(g)) return reference();
      return od::conv_forward(g, 1, x, w, b, false);
    }
  }

  template <class T>
  static ConvGrads<T, OneDnn> backward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& w,
                                       const Tensor<T, OneDnn>& dy, const Conv1dParams& p,
                                       bool need_bias_grad) {
    namespace od = onednn::detail;
    auto reference = [&] {
      return od::grads_back(Conv1dOp<Cpu>::backward(onednn::view_as_cpu(x), onednn::view_as_cpu(w),
                                                    onednn::view_as_cpu(dy), p, need_bias_grad));
    };
    if constexpr (!std::is_same_v<T, float>) {
      return reference();
    } else {
      const auto g = detail::conv_geometry("conv1d_backward", 1, x.shape(), w.shape(), &p.stride,
                                           &p.padding, &p.dilation, p.groups);
      detail::check_grad_output("conv1d_backward", 1, dy, g, x.shape(), w.shape());
      if (od::conv_degenerate(g)) return reference();
      return od::conv_backward(g, 1, x, w, dy, need_bias_grad);
    }
  }
};

}  // namespace ops

namespace onednn {

/// Process-wide switch of the blocked route of conv2d (see conv.hpp; on by default). Off: every
/// convolution runs on plain layouts (tests compare the two; thread-safe, affects later calls).
inline void set_conv_blocked_route(bool on) { detail::blocked_route_flag().store(on); }
inline bool conv_blocked_route() { return detail::blocked_route_enabled(); }

/// y = relu(conv2d(x, w) + b) — on oneDNN one primitive with an eltwise post-op; on any other
/// backend the composition ops::relu(ops::conv2d(...)). Same shapes as ops::conv2d.
template <class T, class B>
Tensor<T, B> conv2d_relu(const Tensor<T, B>& x, const Tensor<T, B>& w,
                         std::type_identity_t<const Tensor<T, B>*> b,
                         const ops::Conv2dParams& p = {}) {
  if constexpr (std::is_same_v<B, OneDnn>) {
    return ops::Conv2dOp<OneDnn>::forward_relu(x, w, b, p);
  } else {
    Tensor<T, B> y = ops::conv2d(x, w, b, p);
    ops::relu_(y);
    return y;
  }
}

/// Gradients {dx, dw, db} of conv2d_relu given its output y and dy = ∂L/∂y: the ReLU mask
/// (y > 0) is applied to dy, then the convolution backward runs.
template <class T, class B>
ops::ConvGrads<T, B> conv2d_relu_backward(const Tensor<T, B>& x, const Tensor<T, B>& w,
                                          const std::type_identity_t<Tensor<T, B>>& y,
                                          const std::type_identity_t<Tensor<T, B>>& dy,
                                          const ops::Conv2dParams& p = {},
                                          bool need_bias_grad = true) {
  return ops::conv2d_backward(x, w, ops::relu_backward(y, dy), p, need_bias_grad);
}

}  // namespace onednn
}  // namespace blendfuse
