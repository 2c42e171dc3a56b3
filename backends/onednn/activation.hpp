// blendfuse — oneDNN backend: ReLU, GELU (erf and tanh forms) and softmax over the last
// dimension, forward and backward.
//
// Same semantics and shapes as ops/activation.hpp:
//   * ReLU: eltwise_relu (alpha = 0). relu_backward(y, dy) feeds y as the eltwise "src" — the mask
//     y > 0 equals x > 0 — and oneDNN's gradient at exactly 0 is 0, as PyTorch's.
//   * GELU: eltwise_gelu_erf (approximate='none') / eltwise_gelu_tanh; backward from x.
//   * softmax: softmax_forward over axis ndim-1 of x viewed as (rows, D); backward from the saved
//     output y.
// Tensors are treated as flat (numel,) or (rows, D) plain buffers, so the layout question does
// not arise. Dropout is not specialised: the reference runs on OneDnn tensors unchanged.
//
// float runs on oneDNN; double falls back to the reference implementation (copying the result).
#pragma once

#include <type_traits>

#include "blendfuse/ops/activation.hpp"
#include "onednn/common.hpp"

namespace blendfuse {
namespace onednn::detail {

struct EltwiseFwd {
  dnnl::eltwise_forward prim;
};
struct EltwiseBwd {
  dnnl::eltwise_backward prim;
};

inline dnnl::eltwise_forward::desc eltwise_fwd_desc(dnnl::algorithm alg, const dnnl::memory::desc& md) {
  return dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, alg, md, 0.f, 0.f);
}

/// dst = f(src) over n contiguous floats (src == dst allowed).
inline void eltwise_forward_f32(dnnl::algorithm alg, Index n, const float* src, float* dst) {
  const auto e = PrimitiveCache::instance().get<EltwiseFwd>(
      make_key("eltwise_fwd", Index(static_cast<int>(alg)), n), [&] {
        const dnnl::eltwise_forward::primitive_desc pd(eltwise_fwd_desc(alg, plain_md({n})),
                                                       scratch_attr(), engine());
        return std::make_shared<EltwiseFwd>(EltwiseFwd{dnnl::eltwise_forward(pd)});
      });
  const auto md = plain_md({n});
  run(e->prim, {{DNNL_ARG_SRC, wrap(md, src)}, {DNNL_ARG_DST, wrap(md, dst)}});
}

/// diff_src = f'(src) · diff_dst over n contiguous floats.
inline void eltwise_backward_f32(dnnl::algorithm alg, Index n, const float* src,
                                 const float* diff_dst, float* diff_src) {
  const auto e = PrimitiveCache::instance().get<EltwiseBwd>(
      make_key("eltwise_bwd", Index(static_cast<int>(alg)), n), [&] {
        const auto md = plain_md({n});
        const dnnl::eltwise_forward::primitive_desc hint(eltwise_fwd_desc(alg, md), engine());
        const dnnl::eltwise_backward::desc d(alg, md, md, 0.f, 0.f);
        const dnnl::eltwise_backward::primitive_desc pd(d, scratch_attr(), engine(), hint);
        return std::make_shared<EltwiseBwd>(EltwiseBwd{dnnl::eltwise_backward(pd)});
      });
  const auto md = plain_md({n});
  run(e->prim, {{DNNL_ARG_SRC, wrap(md, src)},
                {DNNL_ARG_DIFF_DST, wrap(md, diff_dst)},
                {DNNL_ARG_DIFF_SRC, wrap(md, diff_src)}});
}

inline Tensor<float, OneDnn> eltwise_forward(dnnl::algorithm alg, const Tensor<float, OneDnn>& x) {
  const Tensor<float, OneDnn> xc = x.contiguous();
  Tensor<float, OneDnn> y(x.shape());
  if (y.numel() > 0) eltwise_forward_f32(alg, y.numel(), xc.data(), y.data());
  return y;
}

inline Tensor<float, OneDnn> eltwise_backward(dnnl::algorithm alg, const Tensor<float, OneDnn>& src,
                                              const Tensor<float, OneDnn>& dy) {
  const Tensor<float, OneDnn> sc = src.contiguous(), dyc = dy.contiguous();
  Tensor<float, OneDnn> dx(dy.shape());
  if (dx.numel() > 0) eltwise_backward_f32(alg, dx.numel(), sc.data(), dyc.data(), dx.data());
  return dx;
}

inline dnnl::algorithm gelu_alg(ops::GeluApprox a) {
  return a == ops::GeluApprox::Tanh ? dnnl::algorithm::eltwise_gelu_tanh
                               : dnnl::algorithm::eltwise_gelu_erf;
}

struct SoftmaxFwd {
  dnnl::softmax_forward prim;
};
struct SoftmaxBwd {
  dnnl::softmax_backward prim;
};

inline void softmax_forward_f32(Index rows, Index d, const float* x, float* y) {
  const auto e = PrimitiveCache::instance().get<SoftmaxFwd>(make_key("softmax_fwd", rows, d), [&] {
    const dnnl::softmax_forward::desc sd(dnnl::prop_kind::forward_training, plain_md({rows, d}), 1);
    const dnnl::softmax_forward::primitive_desc pd(sd, scratch_attr(), engine());
    return std::make_shared<SoftmaxFwd>(SoftmaxFwd{dnnl::softmax_forward(pd)});
  });
  const auto md = plain_md({rows, d});
  run(e->prim, {{DNNL_ARG_SRC, wrap(md, x)}, {DNNL_ARG_DST, wrap(md, y)}});
}

inline void softmax_backward_f32(Index rows, Index d, const float* y, const float* dy, float* dx) {
  const auto e = PrimitiveCache::instance().get<SoftmaxBwd>(make_key("softmax_bwd", rows, d), [&] {
    const auto md = plain_md({rows, d});
    const dnnl::softmax_forward::primitive_desc hint(
        dnnl::softmax_forward::desc(dnnl::prop_kind::forward_training, md, 1), engine());
    const dnnl::softmax_backward::primitive_desc pd(dnnl::softmax_backward::desc(md, md, 1),
                                                    scratch_attr(), engine(), hint);
    return std::make_shared<SoftmaxBwd>(SoftmaxBwd{dnnl::softmax_backward(pd)});
  });
  const auto md = plain_md({rows, d});
  run(e->prim, {{DNNL_ARG_DST, wrap(md, y)},
                {DNNL_ARG_DIFF_DST, wrap(md, dy)},
                {DNNL_ARG_DIFF_SRC, wrap(md, dx)}});
}

}  // namespace onednn::detail

/// ReLU on oneDNN (float); double falls back to the reference.
template <>
struct ops::ReluOp<OneDnn> {
  template <class T>
  static Tensor<T, OneDnn> forward(const Tensor<T, OneDnn>& x) {
    if constexpr (!std::is_same_v<T, float>) {
      return onednn::to_onednn(ops::ReluOp<Cpu>::forward(onednn::view_as_cpu(x)));
    } else {
      return onednn::detail::eltwise_forward(dnnl::algorithm::eltwise_relu, x);
    }
  }

  /// In place on x; strided views (and double) use the reference loop.
  template <class T>
  static void forward_inplace(Tensor<T, OneDnn>& x) {
    if constexpr (std::is_same_v<T, float>) {
      if (x.is_contiguous()) {
        if (x.numel() > 0)
          onednn::detail::eltwise_forward_f32(dnnl::algorithm::eltwise_relu, x.numel(), x.data(),
                                              x.data());
        return;
      }
    }
    Tensor<T, Cpu> v = onednn::view_as_cpu(x);
    ops::ReluOp<Cpu>::forward_inplace(v);
  }

  template <class T>
  static Tensor<T, OneDnn> backward(const Tensor<T, OneDnn>& y, const Tensor<T, OneDnn>& dy) {
    if constexpr (!std::is_same_v<T, float>) {
      return onednn::to_onednn(
          ops::ReluOp<Cpu>::backward(onednn::view_as_cpu(y), onednn::view_as_cpu(dy)));
    } else {
      blendfuse::detail::act_check_same(y, dy, "relu_backward", "y");
      return onednn::detail::eltwise_backward(dnnl::algorithm::eltwise_relu, y, dy);
    }
  }
};

/// GELU on oneDNN (float; eltwise_gelu_erf / eltwise_gelu_tanh); double falls back.
template <>
struct ops::GeluOp<OneDnn> {
  template <class T>
  static Tensor<T, OneDnn> forward(const Tensor<T, OneDnn>& x, ops::GeluApprox approx) {
    if constexpr (!std::is_same_v<T, float>) {
      return onednn::to_onednn(ops::GeluOp<Cpu>::forward(onednn::view_as_cpu(x), approx));
    } else {
      return onednn::detail::eltwise_forward(onednn::detail::gelu_alg(approx), x);
    }
  }

  /// In place on x: float contiguous tensors run the eltwise primitive with src == dst (no
  /// second buffer); strided views and double use the reference loop on the same memory.
  template <class T>
  static void forward_inplace(Tensor<T, OneDnn>& x, ops::GeluApprox approx) {
    if constexpr (std::is_same_v<T, float>) {
      if (x.is_contiguous()) {
        if (x.numel() > 0)
          onednn::detail::eltwise_forward_f32(onednn::detail::gelu_alg(approx), x.numel(), x.data(),
                                              x.data());
        return;
      }
    }
    Tensor<T, Cpu> v = onednn::view_as_cpu(x);
    ops::GeluOp<Cpu>::forward_inplace(v, approx);
  }

  template <class T>
  static Tensor<T, OneDnn> backward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& dy,
                                    ops::GeluApprox approx) {
    if constexpr (!std::is_same_v<T, float>) {
      return onednn::to_onednn(
          ops::GeluOp<Cpu>::backward(onednn::view_as_cpu(x), onednn::view_as_cpu(dy), approx));
    } else {
      blendfuse::detail::act_check_same(x, dy, "gelu_backward", "x");
      return onednn::detail::eltwise_backward(onednn::detail::gelu_alg(approx), x, dy);
    }
  }

  template <class T>
  static T value(T x, ops::GeluApprox approx) {
    return ops::GeluOp<Cpu>::value(x, approx);
  }
  template <class T>
  static T derivative(T x, ops::GeluApprox approx) {
    return ops::GeluOp<Cpu>::derivative(x, approx);
  }
};

/// Softmax over the last dimension on oneDNN (float); double falls back.
template <>
struct ops::SoftmaxOp<OneDnn> {
  template <class T>
  static Tensor<T, OneDnn> forward(const Tensor<T, OneDnn>& x) {
    if constexpr (std::is_same_v<T, float>) {
      if (x.ndim() >= 1 && x.numel() > 0) {
        const Index d = x.dim(-1), rows = x.numel() / d;
        const Tensor<float, OneDnn> xc = x.contiguous();
        Tensor<float, OneDnn> y(x.shape());
        onednn::detail::softmax_forward_f32(rows, d, xc.data(), y.data());
        return y;
      }
    }
    return onednn::to_onednn(ops::SoftmaxOp<Cpu>::forward(onednn::view_as_cpu(x)));
  }

  template <class T>
  static Tensor<T, OneDnn> backward(const Tensor<T, OneDnn>& y, const Tensor<T, OneDnn>& dy) {
    if constexpr (std::is_same_v<T, float>) {
      if (y.ndim() >= 1 && y.numel() > 0 && y.shape() == dy.shape()) {
        const Index d = y.dim(-1), rows = y.numel() / d;
        const Tensor<float, OneDnn> yc = y.contiguous(), dyc = dy.contiguous();
        Tensor<float, OneDnn> dx(y.shape());
        onednn::detail::softmax_backward_f32(rows, d, yc.data(), dyc.data(), dx.data());
        return dx;
      }
    }
    // Shape errors and degenerate shapes are reported / handled by the reference.
    return onednn::to_onednn(
        ops::SoftmaxOp<Cpu>::backward(onednn::view_as_cpu(y), onednn::view_as_cpu(dy)));
  }
};

}  // namespace blendfuse
