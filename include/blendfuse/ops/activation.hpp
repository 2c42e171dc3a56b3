// blendfuse — activations with hand-written backward: ReLU, GELU, softmax, dropout (portable
// reference implementations).
//
// * relu(x) → y, any shape. relu_backward(y, dy) → dx = dy·[y > 0] (takes the forward *output*,
//   so relu_(x) may overwrite x in place; since y > 0 ⇔ x > 0 passing x works as well). The
//   gradient at exactly 0 is 0, as in PyTorch.
// * gelu(x, approx) → y, any shape: x·Φ(x) with the exact erf form (PyTorch's default
//   approximate='none') or the tanh approximation (approximate='tanh').
//   gelu_backward(x, dy, approx) → dx. gelu_(x, approx) applies it in place (inference: no second
//   buffer; x may be a strided view).
// * softmax(x) → y over the last dimension of x (..., D) (max-subtracted, stable).
//   softmax_backward(y, dy) → dx = y·(dy - Σ_last dy·y), from the saved output.
// * dropout(x, p, training, rng) → {y, mask}: in training each element is kept with probability
//   1 - p (drawn in row-major order from blendfuse::Rng: kept iff rng.uniform() >= p) and scaled
//   by 1 / (1 - p); mask (uint8, shape of x) is 1 where kept. p == 1 drops everything. In eval
//   (training == false) y is a copy of x and mask is empty. dropout_backward(dy, mask, p) → dx
//   applies the same mask and scale (identity for an empty mask).
//
// Single-input backward functions return the gradient dx directly. Outputs are contiguous.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/rng.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse {
namespace ops {

/// GELU variants, as PyTorch's `approximate` argument ('none' / 'tanh').
enum class GeluApprox { None, Tanh };

/// Output of dropout: `y` and the keep mask (1 = kept; empty in eval mode).
template <class T, class Backend = Cpu>
struct DropoutResult {
  Tensor<T, Backend> y;
  Tensor<std::uint8_t, Backend> mask;
};

}  // namespace ops
namespace detail {

template <class T, class B>
void act_check_same(const Tensor<T, B>& a, const Tensor<T, B>& dy, const char* op,
                    const char* name) {
  BF_CHECK(a.shape() == dy.shape(), ShapeError, op, ": dy has shape ", dy.shape_string(),
           " but ", name, " has shape ", a.shape_string());
}

template <class T, class B>
constexpr void act_static_checks() {
  static_assert(std::is_floating_point_v<T>, "activations need a floating-point tensor");
  static_assert(B::host_memory, "the reference activations need host memory");
}

}  // namespace detail
namespace ops {

/// ReLU; reference implementation.
template <class Backend>
struct ReluOp {
  template <class T>
  static Tensor<T, Backend> forward(const Tensor<T, Backend>& x) {
    blendfuse::detail::act_static_checks<T, Backend>();
    Tensor<T, Backend> y = x.clone();
    for (Index i = 0; i < y.numel(); ++i) y[i] = y[i] > T(0) ? y[i] : T(0);
    return y;
  }

  /// In place on x (which may be a strided view).
  template <class T>
  static void forward_inplace(Tensor<T, Backend>& x) {
    blendfuse::detail::act_static_checks<T, Backend>();
    T* p = x.data();
    if (x.is_contiguous()) {  // allocation-free (inference steps)
      for (Index i = 0, n = x.numel(); i < n; ++i) p[i] = p[i] > T(0) ? p[i] : T(0);
      return;
    }
    x.for_each_offset([&](Index off) { p[off] = p[off] > T(0) ? p[off] : T(0); });
  }

  template <class T>
  static Tensor<T, Backend> backward(const Tensor<T, Backend>& y, const Tensor<T, Backend>& dy) {
    blendfuse::detail::act_static_checks<T, Backend>();
    blendfuse::detail::act_check_same(y, dy, "relu_backward", "y");
    const Tensor<T, Backend> yc = y.contiguous();
    Tensor<T, Backend> dx = dy.clone();
    for (Index i = 0; i < dx.numel(); ++i)
      if (!(yc[i] > T(0))) dx[i] = T(0);
    return dx;
  }
};

/// GELU; reference implementation.
template <class Backend>
struct GeluOp {
  template <class T>
  static Tensor<T, Backend> forward(const Tensor<T, Backend>& x, GeluApprox approx) {
    blendfuse::detail::act_static_checks<T, Backend>();
    Tensor<T, Backend> y = x.clone();
    for (Index i = 0; i < y.numel(); ++i) y[i] = value(y[i], approx);
    return y;
  }

  /// In place on x (which may be a strided view); the same values as forward().
  template <class T>
  static void forward_inplace(Tensor<T, Backend>& x, GeluApprox approx) {
    blendfuse::detail::act_static_checks<T, Backend>();
    T* p = x.data();
    if (x.is_contiguous()) {
      const Index n = x.numel();
      for (Index i = 0; i < n; ++i) p[i] = value(p[i], approx);
      return;
    }
    x.for_each_offset([&](Index off) { p[off] = value(p[off], approx); });
  }

  template <class T>
  static Tensor<T, Backend> backward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& dy,
                                     GeluApprox approx) {
    blendfuse::detail::act_static_checks<T, Backend>();
    blendfuse::detail::act_check_same(x, dy, "gelu_backward", "x");
    const Tensor<T, Backend> xc = x.contiguous();
    Tensor<T, Backend> dx = dy.clone();
    for (Index i = 0; i < dx.numel(); ++i) dx[i] *= derivative(xc[i], approx);
    return dx;
  }

  template <class T>
  static T value(T x, GeluApprox approx) {
    if (approx == GeluApprox::Tanh) {
      const T u = kSqrt2OverPi<T> * (x + T(0.044715) * x * x * x);
      return T(0.5) * x * (T(1) + std::tanh(u));
    }
    return T(0.5) * x * (T(1) + std::erf(x * kRsqrt2<T>));
  }

  template <class T>
  static T derivative(T x, GeluApprox approx) {
    if (approx == GeluApprox::Tanh) {
      const T x2 = x * x;
      const T t = std::tanh(kSqrt2OverPi<T> * x * (T(1) + T(0.044715) * x2));
      const T du = kSqrt2OverPi<T> * (T(1) + T(3 * 0.044715) * x2);
      return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
    }
    // d/dx x·Φ(x) = Φ(x) + x·φ(x)
    const T cdf = T(0.5) * (T(1) + std::erf(x * kRsqrt2<T>));
    const T pdf = kRsqrt2Pi<T> * std::exp(T(-0.5) * x * x);
    return cdf + x * pdf;
  }

 private:
  template <class T>
  static constexpr T kRsqrt2 = T(0.70710678118654752440084436210484903928L);
  template <class T>
  static constexpr T kRsqrt2Pi = T(0.39894228040143267793994605993438186848L);  // 1/sqrt(2π)
  template <class T>
  static constexpr T kSqrt2OverPi = T(0.79788456080286535587989211986876373695L);  // sqrt(2/π)
};

/// Softmax over the last dimension; reference implementation.
template <class Backend>
struct SoftmaxOp {
  template <class T>
  static Tensor<T, Backend> forward(const Tensor<T, Backend>& x) {
    blendfuse::detail::act_static_checks<T, Backend>();
    BF_CHECK(x.ndim() >= 1, ShapeError, "softmax: expected x of shape (..., D), got a 0-d tensor");
    Tensor<T, Backend> y = x.clone();
    const Index D = y.dim(-1);
    if (D == 0) return y;
    const Index rows = y.numel() / D;
    for (Index r = 0; r < rows; ++r) {
      T* yr = y.data() + r * D;
      T mx = yr[0];
      for (Index i = 1; i < D; ++i) mx = yr[i] > mx ? yr[i] : mx;
      double s = 0;
      for (Index i = 0; i < D; ++i) {
        yr[i] = std::exp(yr[i] - mx);
        s += static_cast<double>(yr[i]);
      }
      const double inv = 1.0 / s;
      for (Index i = 0; i < D; ++i) yr[i] = static_cast<T>(static_cast<double>(yr[i]) * inv);
    }
    return y;
  }

  template <class T>
  static Tensor<T, Backend> backward(const Tensor<T, Backend>& y, const Tensor<T, Backend>& dy) {
    blendfuse::detail::act_static_checks<T, Backend>();
    BF_CHECK(y.ndim() >= 1, ShapeError,
             "softmax_backward: expected y of shape (..., D), got a 0-d tensor");
    blendfuse::detail::act_check_same(y, dy, "softmax_backward", "y");
    const Tensor<T, Backend> yc = y.contiguous();
    Tensor<T, Backend> dx = dy.clone();
    const Index D = y.dim(-1);
    if (D == 0) return dx;
    const Index rows = y.numel() / D;
    for (Index r = 0; r < rows; ++r) {
      const T* yr = yc.data() + r * D;
      T* dr = dx.data() + r * D;
      double dot = 0;
      for (Index i = 0; i < D; ++i) dot += static_cast<double>(yr[i]) * static_cast<double>(dr[i]);
      for (Index i = 0; i < D; ++i)
        dr[i] = static_cast<T>(static_cast<double>(yr[i]) * (static_cast<double>(dr[i]) - dot));
    }
    return dx;
  }
};

/// Dropout; reference implementation.
template <class Backend>
struct DropoutOp {
  template <class T>
  static DropoutResult<T, Backend> forward(const Tensor<T, Backend>& x, double p, bool training,
                                           Rng& rng) {
    blendfuse::detail::act_static_checks<T, Backend>();
    check_p(p, "dropout");
    DropoutResult<T, Backend> r{x.clone(), Tensor<std::uint8_t, Backend>()};
    if (!training) return r;
    r.mask = Tensor<std::uint8_t, Backend>(x.shape());
    const T scale = keep_scale<T>(p);
    for (Index i = 0; i < r.y.numel(); ++i) {
      const bool keep = p < 1.0 && rng.uniform() >= p;
      r.mask[i] = keep ? 1 : 0;
      r.y[i] = keep ? r.y[i] * scale : T(0);
    }
    return r;
  }

  template <class T>
  static Tensor<T, Backend> backward(const Tensor<T, Backend>& dy,
                                     const Tensor<std::uint8_t, Backend>& mask, double p) {
    blendfuse::detail::act_static_checks<T, Backend>();
    check_p(p, "dropout_backward");
    Tensor<T, Backend> dx = dy.clone();
    if (mask.empty() && mask.ndim() == 0) return dx;  // eval mode: identity
    BF_CHECK(mask.shape() == dy.shape(), ShapeError, "dropout_backward: dy has shape ",
             dy.shape_string(), " but mask has shape ", mask.shape_string());
    const Tensor<std::uint8_t, Backend> m = mask.contiguous();
    const T scale = keep_scale<T>(p);
    for (Index i = 0; i < dx.numel(); ++i) dx[i] = m[i] ? dx[i] * scale : T(0);
    return dx;
  }

 private:
  static void check_p(double p, const char* op) {
    BF_CHECK(p >= 0.0 && p <= 1.0, ArgumentError, op, ": drop probability p must be in [0, 1], got ",
             p);
  }
  template <class T>
  static T keep_scale(double p) {
    return p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
  }
};


/// max(x, 0), any shape.
template <class T, class B>
Tensor<T, B> relu(const Tensor<T, B>& x) {
  return ReluOp<B>::forward(x);
}

/// In-place ReLU (x may be a view); returns nothing, pass x as `y` to relu_backward.
template <class T, class B>
void relu_(Tensor<T, B>& x) {
  ReluOp<B>::forward_inplace(x);
}

/// dx = dy where y > 0, else 0. `y` is the forward output (or input).
template <class T, class B>
Tensor<T, B> relu_backward(const Tensor<T, B>& y, const Tensor<T, B>& dy) {
  return ReluOp<B>::backward(y, dy);
}

/// GELU, exact erf form by default (PyTorch approximate='none'), any shape.
template <class T, class B>
Tensor<T, B> gelu(const Tensor<T, B>& x, GeluApprox approx = GeluApprox::None) {
  return GeluOp<B>::forward(x, approx);
}

/// GELU in place on x (any shape, x may be a strided view); the values of gelu(x, approx).
template <class T, class B>
void gelu_(Tensor<T, B>& x, GeluApprox approx = GeluApprox::None) {
  GeluOp<B>::forward_inplace(x, approx);
}

/// dx = dy · gelu'(x).
template <class T, class B>
Tensor<T, B> gelu_backward(const Tensor<T, B>& x, const Tensor<T, B>& dy,
                           GeluApprox approx = GeluApprox::None) {
  return GeluOp<B>::backward(x, dy, approx);
}

/// Softmax over the last dim of x (..., D).
template <class T, class B>
Tensor<T, B> softmax(const Tensor<T, B>& x) {
  return SoftmaxOp<B>::forward(x);
}

/// dx from the saved softmax output y and dy (both (..., D)).
template <class T, class B>
Tensor<T, B> softmax_backward(const Tensor<T, B>& y, const Tensor<T, B>& dy) {
  return SoftmaxOp<B>::backward(y, dy);
}

/// Dropout with drop probability p; identity (mask empty) when !training.
template <class T, class B>
DropoutResult<T, B> dropout(const Tensor<T, B>& x, double p, bool training, Rng& rng) {
  return DropoutOp<B>::forward(x, p, training, rng);
}

/// dx = dy · mask / (1 - p) with the mask from the forward (identity for an empty mask).
template <class T, class B>
Tensor<T, B> dropout_backward(const Tensor<T, B>& dy, const Tensor<std::uint8_t, B>& mask,
                              double p) {
  return DropoutOp<B>::backward(dy, mask, p);
}

}  // namespace ops
}  // namespace blendfuse
