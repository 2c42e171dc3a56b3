// blendfuse — linear interpolation along time, as
// F.interpolate(x, size=T_out, mode='linear', align_corners=True).
//
// Dimension order:
//   interp_linear:      x (N, C, T_in) → y (N, C, T_out)   (PyTorch's layout for 1-d signals)
//   interp_linear_ntc:  x (N, T_in, C) → y (N, T_out, C)   (the same along dim 1, for sequences
//                       such as FaceFormer's 50 Hz → 30 Hz audio features; no transposes needed)
//
// Sampling (align_corners=True, as ATen's upsample_linear1d): output index i reads source
// position r = i · (T_in − 1)/(T_out − 1) (ratio 0 when T_out == 1, so T_out == 1 returns x[0]
// and T_in == 1 repeats x[0]); i0 = min(floor(r), T_in − 1), i1 = i0 + (i0 < T_in − 1),
// λ1 = clamp(r − i0, 0, 1), y = (1 − λ1) x[i0] + λ1 x[i1]. When T_out == T_in the input is copied.
// r and λ are computed in double for every element type (identical to PyTorch for double; for
// float slightly more accurate than PyTorch's float kernel, which rounds r to float).
#pragma once

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "blendfuse/backend/backend.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse {
namespace ops {

template <class T, class Backend = Cpu>
struct InterpGrads {
  Tensor<T, Backend> dx;  ///< shaped like the forward input
};

}  // namespace ops
namespace detail::interp {

template <class T>
struct InterpTap {
  Index i0 = 0, i1 = 0;
  T w0 = 1, w1 = 0;
};

template <class T>
InterpTap<T> interp_tap(Index i, Index t_in, Index t_out) {
  InterpTap<T> tap;
  if (t_in == t_out) {
    tap.i0 = tap.i1 = i;
    return tap;
  }
  // Positions in double even for float data: PyTorch's float kernel rounds the source position
  // to float (errors up to ~T_in·1e-7); computing it in double is closer to the exact result.
  const double ratio = t_out > 1 ? static_cast<double>(t_in - 1) / static_cast<double>(t_out - 1) : 0.0;
  const double r = ratio * static_cast<double>(i);
  tap.i0 = std::min(static_cast<Index>(std::floor(r)), t_in - 1);
  const double w1 = std::min(std::max(r - static_cast<double>(tap.i0), 0.0), 1.0);
  tap.i1 = tap.i0 + (tap.i0 < t_in - 1 ? 1 : 0);
  tap.w1 = static_cast<T>(w1);
  tap.w0 = static_cast<T>(1.0 - w1);
  return tap;
}

}  // namespace detail::interp
namespace ops {

/// Reference linear interpolation (align_corners=True) along one axis of a 3-d tensor.
template <class Backend>
struct InterpOp {
  template <class T>
  using TensorT = Tensor<T, Backend>;

  /// `time_dim` is 2 for (N, C, T), 1 for (N, T, C).
  template <class T>
  static TensorT<T> forward(const TensorT<T>& x, Index t_out, Index time_dim) {
    static_assert(std::is_floating_point_v<T>, "interp_linear needs a floating-point type");
    static_assert(Backend::host_memory, "InterpOp: the reference needs a host-memory backend");
    const char* op = time_dim == 2 ? "interp_linear" : "interp_linear_ntc";
    BF_CHECK(x.ndim() == 3, ShapeError, op, ": expected a 3-d input ",
             time_dim == 2 ? "(N, C, T)" : "(N, T, C)", ", got ", x.shape_string());
    BF_CHECK(t_out > 0, ArgumentError, op, ": output size must be positive, got ", t_out);
    const Index t_in = x.dim(time_dim);
    BF_CHECK(t_in > 0, ShapeError, op, ": input ", x.shape_string(), " has an empty time axis");
    Shape ys = x.shape();
    ys[static_cast<std::size_t>(time_dim)] = t_out;
    TensorT<T> y(ys);
    const TensorT<T> xc = x.contiguous();
    const Index outer = time_dim == 2 ? x.dim(0) * x.dim(1) : x.dim(0);
    const Index inner = time_dim == 2 ? 1 : x.dim(2);
    for (Index i = 0; i < t_out; ++i) {
      const auto tap = blendfuse::detail::interp::interp_tap<T>(i, t_in, t_out);
      for (Index o = 0; o < outer; ++o) {
        const T* x0 = xc.data() + (o * t_in + tap.i0) * inner;
        const T* x1 = xc.data() + (o * t_in + tap.i1) * inner;
        T* yr = y.data() + (o * t_out + i) * inner;
        for (Index c = 0; c < inner; ++c) yr[c] = tap.w0 * x0[c] + tap.w1 * x1[c];
      }
    }
    return y;
  }

  template <class T>
  static InterpGrads<T, Backend> backward(const TensorT<T>& dy, Index t_in, Index time_dim) {
    static_assert(std::is_floating_point_v<T>, "interp_linear needs a floating-point type");
    static_assert(Backend::host_memory, "InterpOp: the reference needs a host-memory backend");
    const char* op = time_dim == 2 ? "interp_linear_backward" : "interp_linear_ntc_backward";
    BF_CHECK(dy.ndim() == 3, ShapeError, op, ": expected a 3-d gradient ",
             time_dim == 2 ? "(N, C, T_out)" : "(N, T_out, C)", ", got ", dy.shape_string());
    BF_CHECK(t_in > 0, ArgumentError, op, ": input size must be positive, got ", t_in);
    const Index t_out = dy.dim(time_dim);
    BF_CHECK(t_out > 0, ShapeError, op, ": gradient ", dy.shape_string(),
             " has an empty time axis");
    Shape xs = dy.shape();
    xs[static_cast<std::size_t>(time_dim)] = t_in;
    InterpGrads<T, Backend> g{TensorT<T>(xs)};
    const TensorT<T> dyc = dy.contiguous();
    const Index outer = time_dim == 2 ? dy.dim(0) * dy.dim(1) : dy.dim(0);
    const Index inner = time_dim == 2 ? 1 : dy.dim(2);
    for (Index i = 0; i < t_out; ++i) {
      const auto tap = blendfuse::detail::interp::interp_tap<T>(i, t_in, t_out);
      for (Index o = 0; o < outer; ++o) {
        T* d0 = g.dx.data() + (o * t_in + tap.i0) * inner;
        T* d1 = g.dx.data() + (o * t_in + tap.i1) * inner;
        const T* dr = dyc.data() + (o * t_out + i) * inner;
        for (Index c = 0; c < inner; ++c) {
          d0[c] += tap.w0 * dr[c];
          d1[c] += tap.w1 * dr[c];
        }
      }
    }
    return g;
  }
};


/// F.interpolate(x, size=t_out, mode='linear', align_corners=True); x (N, C, T_in).
template <class T, class B>
Tensor<T, B> interp_linear(const Tensor<T, B>& x, Index t_out) {
  return InterpOp<B>::template forward<T>(x, t_out, 2);
}

/// Gradient of interp_linear w.r.t. x (N, C, t_in) given dy (N, C, T_out).
template <class T, class B>
InterpGrads<T, B> interp_linear_backward(const Tensor<T, B>& dy, Index t_in) {
  return InterpOp<B>::template backward<T>(dy, t_in, 2);
}

/// The same interpolation along dim 1 of a sequence x (N, T_in, C) → (N, T_out, C).
template <class T, class B>
Tensor<T, B> interp_linear_ntc(const Tensor<T, B>& x, Index t_out) {
  return InterpOp<B>::template forward<T>(x, t_out, 1);
}

template <class T, class B>
InterpGrads<T, B> interp_linear_ntc_backward(const Tensor<T, B>& dy, Index t_in) {
  return InterpOp<B>::template backward<T>(dy, t_in, 1);
}

}  // namespace ops
}  // namespace blendfuse
