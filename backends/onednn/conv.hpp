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
// Layouts: plain nchw / (g)oihw at the edges. With format_tag::any for src/weights/dst, oneDNN's
// JIT convolutions would pick nChw8c/16c activations and blocked weights; a model that keeps a
// whole conv → norm → relu chain blocked (weights reordered once at load) would skip the plain-
// layout kernels. Left for part 2.
#pragma once

#include <type_traits>

#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/conv.hpp"
#include "onednn/activation.hpp"
#include "onednn/common.hpp"

namespace blendfuse {
namespace onednn::detail {

using ops::detail::ConvGeom;

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
  conv_forward_f32(g, xc.data(), wc.data(), b ? bc.data() : nullptr, relu, y.data());
  return y;
}

inline ops::ConvGrads<float, OneDnn> conv_backward(const ConvGeom& g, const Tensor<float, OneDnn>& x,
                                                   const Tensor<float, OneDnn>& w,
                                                   const Tensor<float, OneDnn>& dy, bool need_db) {
  ops::ConvGrads<float, OneDnn> r{Tensor<float, OneDnn>(x.shape()), Tensor<float, OneDnn>(w.shape()),
                                  {}};
  if (need_db) r.db = Tensor<float, OneDnn>(Shape{g.c_out});
  const auto xc = x.contiguous(), wc = w.contiguous(), dyc = dy.contiguous();
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
      return od::conv_backward(g, x, w, dy, need_bias_grad);
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
      if (relu) ReluOp<Cpu>::forward_inplace(y);
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
      return od::conv_backward(g, x, w, dy, need_bias_grad);
    }
  }
};

}  // namespace ops

namespace onednn {

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
