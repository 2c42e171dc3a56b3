// blendfuse — normalisation layers with hand-written backward: instance norm, group norm and
// layer norm (portable reference implementations).
//
// Dimension order (row-major, as PyTorch):
// * instance_norm: x (N, C, L) or (N, C, H, W) (any (N, C, *) with at least one inner dim);
//   statistics per (n, c) over the inner dims; gamma/beta (C); saved mean/rstd (N, C).
//   Matches torch.nn.functional.instance_norm / nn.InstanceNorm{1,2}d(affine=...) in training mode
//   (input statistics, no running stats).
// * group_norm: x (N, C, *); `groups` divides C; statistics per (n, g) over C/groups channels and
//   the inner dims; gamma/beta (C); saved mean/rstd (N, groups). Matches nn.GroupNorm
//   (wav2vec 2.0's GroupNorm(512, 512) is groups == C).
// * layer_norm: x (..., D), normalised over the last dim only; gamma/beta (D); saved mean/rstd
//   have x's shape without the last dim. Matches nn.LayerNorm(D).
//
// Variance is the biased (population) variance, rstd = 1 / sqrt(var + eps), as PyTorch.
// gamma and beta are optional: pass an empty tensor (`{}`) for "no affine". The forward returns
// NormResult {y, mean, rstd}; the backward takes x, gamma, the saved mean/rstd and dy and returns
// NormGrads {dx, dgamma, dbeta}. dgamma/dbeta are always computed (shape of gamma, i.e. (C) or
// (D)); ignore them when the layer has no affine parameters. Inference forms without statistics:
// group_norm_(x, ...) in place and layer_norm_into(y, x, ...) into a preallocated output. Statistics and parameter reductions
// are accumulated in double for both float and double tensors.
#pragma once

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse {
namespace ops {

/// Output of a normalisation forward: `y` (shape of x) and the statistics the backward needs.
template <class T, class Backend = Cpu>
struct NormResult {
  Tensor<T, Backend> y;
  Tensor<T, Backend> mean;  ///< per normalised group (see the op for the shape)
  Tensor<T, Backend> rstd;  ///< 1 / sqrt(var + eps), same shape as mean
};

/// Gradients of a normalisation layer.
template <class T, class Backend = Cpu>
struct NormGrads {
  Tensor<T, Backend> dx;      ///< shape of x
  Tensor<T, Backend> dgamma;  ///< (C) or (D)
  Tensor<T, Backend> dbeta;   ///< (C) or (D)
};

}  // namespace ops
namespace detail {

// Common layout of the three norms on a contiguous x: `rows` independent normalisation groups,
// each of `chans` channels × `inner` elements stored consecutively (row r covers
// x[r·chans·inner, (r+1)·chans·inner)). Channel k of row r uses affine parameter
// (r % groups)·chans + k; the parameter vectors have groups·chans entries.
struct NormLayout {
  Index rows = 0, groups = 1, chans = 1, inner = 1;
  Index row_size() const { return chans * inner; }
  Index params() const { return groups * chans; }
};

inline void norm_check_eps(double eps, const char* op) {
  BF_CHECK(std::isfinite(eps) && eps >= 0, ArgumentError, op, ": eps must be finite and >= 0, got ",
           eps);
}

template <class T, class B>
void norm_check_param(const Tensor<T, B>& p, Index n, const char* op, const char* name,
                      const Tensor<T, B>& x) {
  if (p.empty() && p.ndim() == 0) return;  // default-constructed: not given
  BF_CHECK(p.ndim() == 1 && p.dim(0) == n, ShapeError, op, ": ", name, " must have shape (", n,
           ",) for x of shape ", x.shape_string(), ", got ", p.shape_string());
}

template <class T, class B>
bool norm_has(const Tensor<T, B>& p) {
  return !(p.empty() && p.ndim() == 0);
}

template <class T, class B>
void norm_check_layout(const NormLayout& L, const Tensor<T, B>& x, const char* op) {
  BF_CHECK(L.rows == 0 || L.row_size() > 0, ShapeError, op,
           ": cannot normalise over an empty group for x of shape ", x.shape_string());
}

/// The forward arithmetic of the three norms on raw row-major buffers (layout L): y may alias x
/// (each row's statistics are taken before the row is written); gamma / beta / mean / rstd may
/// be null (no affine term / statistics not wanted). Statistics in double.
template <class T>
void norm_forward_rows(const T* xp, T* yp, const T* gamma, const T* beta, double eps,
                       const NormLayout& L, T* mean_out, T* rstd_out) {
  const Index M = L.row_size();
  for (Index row = 0; row < L.rows; ++row) {
    const T* xr = xp + row * M;
    T* yr = yp + row * M;
    double s = 0;
    for (Index i = 0; i < M; ++i) s += static_cast<double>(xr[i]);
    const double mean = s / static_cast<double>(M);
    double ss = 0;
    for (Index i = 0; i < M; ++i) {
      const double d = static_cast<double>(xr[i]) - mean;
      ss += d * d;
    }
    const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(M) + eps);
    if (mean_out) mean_out[row] = static_cast<T>(mean);
    if (rstd_out) rstd_out[row] = static_cast<T>(rstd);
    const Index pbase = (row % L.groups) * L.chans;
    for (Index k = 0; k < L.chans; ++k) {
      const double g = gamma ? static_cast<double>(gamma[pbase + k]) : 1.0;
      const double b = beta ? static_cast<double>(beta[pbase + k]) : 0.0;
      const double a = g * rstd;  // y = a·x + c
      const double c = b - mean * a;
      const T* xk = xr + k * L.inner;
      T* yk = yr + k * L.inner;
      for (Index i = 0; i < L.inner; ++i) yk[i] = static_cast<T>(a * static_cast<double>(xk[i]) + c);
    }
  }
}

template <class T, class B>
ops::NormResult<T, B> norm_forward_ref(const Tensor<T, B>& x_in, const Tensor<T, B>& gamma_in,
                                  const Tensor<T, B>& beta_in, double eps, const NormLayout& L,
                                  const Shape& stat_shape) {
  static_assert(std::is_floating_point_v<T>, "normalisation needs a floating-point tensor");
  static_assert(B::host_memory, "the reference normalisation needs host memory");
  const Tensor<T, B> x = x_in.contiguous();
  const bool has_g = norm_has(gamma_in), has_b = norm_has(beta_in);
  const Tensor<T, B> gamma = has_g ? gamma_in.contiguous() : Tensor<T, B>();
  const Tensor<T, B> beta = has_b ? beta_in.contiguous() : Tensor<T, B>();
  ops::NormResult<T, B> r{Tensor<T, B>(x.shape()), Tensor<T, B>(stat_shape), Tensor<T, B>(stat_shape)};
  norm_forward_rows(x.data(), r.y.data(), has_g ? gamma.data() : nullptr,
                    has_b ? beta.data() : nullptr, eps, L, r.mean.data(), r.rstd.data());
  return r;
}

/// The forward without statistics, written into y (contiguous, x's shape; y may be x itself).
/// Allocates nothing when x, gamma and beta are contiguous.
template <class T, class B>
void norm_forward_into_ref(Tensor<T, B>& y, const Tensor<T, B>& x, const Tensor<T, B>& gamma,
                           const Tensor<T, B>& beta, double eps, const NormLayout& L,
                           const char* op) {
  static_assert(std::is_floating_point_v<T>, "normalisation needs a floating-point tensor");
  static_assert(B::host_memory, "the reference normalisation needs host memory");
  BF_CHECK(y.shape() == x.shape() && y.is_contiguous(), ShapeError, op, ": output ",
           y.shape_string(), " must be contiguous with the shape of x ", x.shape_string());
  const bool has_g = norm_has(gamma), has_b = norm_has(beta);
  if (x.is_contiguous() && (!has_g || gamma.is_contiguous()) && (!has_b || beta.is_contiguous())) {
    norm_forward_rows(x.data(), y.data(), has_g ? gamma.data() : nullptr,
                      has_b ? beta.data() : nullptr, eps, L, static_cast<T*>(nullptr),
                      static_cast<T*>(nullptr));
    return;
  }
  const Tensor<T, B> xc = x.contiguous();
  const Tensor<T, B> gc = has_g ? gamma.contiguous() : Tensor<T, B>();
  const Tensor<T, B> bc = has_b ? beta.contiguous() : Tensor<T, B>();
  norm_forward_rows(xc.data(), y.data(), has_g ? gc.data() : nullptr, has_b ? bc.data() : nullptr,
                    eps, L, static_cast<T*>(nullptr), static_cast<T*>(nullptr));
}

template <class T, class B>
ops::NormGrads<T, B> norm_backward_ref(const Tensor<T, B>& x_in, const Tensor<T, B>& gamma_in,
                                  const Tensor<T, B>& mean_in, const Tensor<T, B>& rstd_in,
                                  const Tensor<T, B>& dy_in, const NormLayout& L) {
  static_assert(std::is_floating_point_v<T>, "normalisation needs a floating-point tensor");
  static_assert(B::host_memory, "the reference normalisation needs host memory");
  const Tensor<T, B> x = x_in.contiguous(), dy = dy_in.contiguous();
  const Tensor<T, B> mean = mean_in.contiguous(), rstd = rstd_in.contiguous();
  const bool has_g = norm_has(gamma_in);
  const Tensor<T, B> gamma = has_g ? gamma_in.contiguous() : Tensor<T, B>();
  ops::NormGrads<T, B> g{Tensor<T, B>(x.shape()), Tensor<T, B>({L.params()}),
                    Tensor<T, B>({L.params()})};
  std::vector<double> dgamma(static_cast<std::size_t>(L.params()), 0.0);
  std::vector<double> dbeta(static_cast<std::size_t>(L.params()), 0.0);
  const Index M = L.row_size();
  const double inv_m = M > 0 ? 1.0 / static_cast<double>(M) : 0.0;
  for (Index row = 0; row < L.rows; ++row) {
    const T* xr = x.data() + row * M;
    const T* dyr = dy.data() + row * M;
    T* dxr = g.dx.data() + row * M;
    const double mu = static_cast<double>(mean[row]);
    const double rs = static_cast<double>(rstd[row]);
    const Index pbase = (row % L.groups) * L.chans;
    // With xhat = (x - mu)·rs and gdy = dy·gamma:
    //   dx = rs · (gdy - mean(gdy) - xhat · mean(gdy · xhat))   (means over the row)
    double sum_gdy = 0, sum_gdy_xhat = 0;
    for (Index k = 0; k < L.chans; ++k) {
      const std::size_t p = static_cast<std::size_t>(pbase + k);
      const double gk = has_g ? static_cast<double>(gamma[pbase + k]) : 1.0;
      double sdy = 0, sdy_xhat = 0;
      for (Index i = k * L.inner; i < (k + 1) * L.inner; ++i) {
        const double xhat = (static_cast<double>(xr[i]) - mu) * rs;
        const double d = static_cast<double>(dyr[i]);
        sdy += d;
        sdy_xhat += d * xhat;
      }
      dbeta[p] += sdy;
      dgamma[p] += sdy_xhat;
      sum_gdy += gk * sdy;
      sum_gdy_xhat += gk * sdy_xhat;
    }
    const double m1 = sum_gdy * inv_m, m2 = sum_gdy_xhat * inv_m;
    for (Index k = 0; k < L.chans; ++k) {
      const double gk = has_g ? static_cast<double>(gamma[pbase + k]) : 1.0;
      for (Index i = k * L.inner; i < (k + 1) * L.inner; ++i) {
        const double xhat = (static_cast<double>(xr[i]) - mu) * rs;
        dxr[i] = static_cast<T>(rs * (gk * static_cast<double>(dyr[i]) - m1 - xhat * m2));
      }
    }
  }
  for (Index p = 0; p < L.params(); ++p) {
    g.dgamma[p] = static_cast<T>(dgamma[static_cast<std::size_t>(p)]);
    g.dbeta[p] = static_cast<T>(dbeta[static_cast<std::size_t>(p)]);
  }
  return g;
}

template <class T, class B>
void norm_check_backward(const Tensor<T, B>& x, const Tensor<T, B>& mean, const Tensor<T, B>& rstd,
                         const Tensor<T, B>& dy, const Shape& stat_shape, const char* op) {
  BF_CHECK(dy.shape() == x.shape(), ShapeError, op, ": dy has shape ", dy.shape_string(),
           " but x has shape ", x.shape_string());
  BF_CHECK(mean.shape() == stat_shape && rstd.shape() == stat_shape, ShapeError, op,
           ": saved mean/rstd must have shape ", shape_str(stat_shape), " for x of shape ",
           x.shape_string(), ", got ", mean.shape_string(), " and ", rstd.shape_string());
}

}  // namespace detail
namespace ops {

/// Instance normalisation of x (N, C, *); reference implementation (see the file comment).
template <class Backend>
struct InstanceNormOp {
  template <class T>
  static NormResult<T, Backend> forward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& gamma,
                                        const Tensor<T, Backend>& beta, double eps) {
    const blendfuse::detail::NormLayout L = layout(x);
    blendfuse::detail::norm_check_param(gamma, x.dim(1), "instance_norm", "gamma", x);
    blendfuse::detail::norm_check_param(beta, x.dim(1), "instance_norm", "beta", x);
    blendfuse::detail::norm_check_eps(eps, "instance_norm");
    return blendfuse::detail::norm_forward_ref(x, gamma, beta, eps, L, {x.dim(0), x.dim(1)});
  }

  template <class T>
  static NormGrads<T, Backend> backward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& gamma,
                                        const Tensor<T, Backend>& mean,
                                        const Tensor<T, Backend>& rstd,
                                        const Tensor<T, Backend>& dy) {
    const blendfuse::detail::NormLayout L = layout(x);
    blendfuse::detail::norm_check_param(gamma, x.dim(1), "instance_norm_backward", "gamma", x);
    blendfuse::detail::norm_check_backward(x, mean, rstd, dy, {x.dim(0), x.dim(1)}, "instance_norm_backward");
    return blendfuse::detail::norm_backward_ref(x, gamma, mean, rstd, dy, L);
  }

 private:
  template <class T>
  static blendfuse::detail::NormLayout layout(const Tensor<T, Backend>& x) {
    BF_CHECK(x.ndim() >= 3, ShapeError,
             "instance_norm: expected x of shape (N, C, L) or (N, C, H, W), got ", x.shape_string());
    blendfuse::detail::NormLayout L;
    L.rows = x.dim(0) * x.dim(1);
    L.groups = x.dim(1);
    L.chans = 1;
    L.inner = 1;
    for (Index d = 2; d < x.ndim(); ++d) L.inner *= x.dim(d);
    blendfuse::detail::norm_check_layout(L, x, "instance_norm");
    return L;
  }
};

/// Group normalisation of x (N, C, *) with `groups` groups; reference implementation.
template <class Backend>
struct GroupNormOp {
  template <class T>
  static NormResult<T, Backend> forward(const Tensor<T, Backend>& x, Index groups,
                                        const Tensor<T, Backend>& gamma,
                                        const Tensor<T, Backend>& beta, double eps) {
    const blendfuse::detail::NormLayout L = layout(x, groups, "group_norm");
    blendfuse::detail::norm_check_param(gamma, x.dim(1), "group_norm", "gamma", x);
    blendfuse::detail::norm_check_param(beta, x.dim(1), "group_norm", "beta", x);
    blendfuse::detail::norm_check_eps(eps, "group_norm");
    return blendfuse::detail::norm_forward_ref(x, gamma, beta, eps, L, {x.dim(0), groups});
  }

  /// In place on x (inference: no statistics kept, no second buffer); the values of forward().y.
  template <class T>
  static void forward_inplace(Tensor<T, Backend>& x, Index groups, const Tensor<T, Backend>& gamma,
                              const Tensor<T, Backend>& beta, double eps) {
    const blendfuse::detail::NormLayout L = layout(x, groups, "group_norm_");
    blendfuse::detail::norm_check_param(gamma, x.dim(1), "group_norm_", "gamma", x);
    blendfuse::detail::norm_check_param(beta, x.dim(1), "group_norm_", "beta", x);
    blendfuse::detail::norm_check_eps(eps, "group_norm_");
    BF_CHECK(x.is_contiguous(), ShapeError, "group_norm_: x ", x.shape_string(),
             " must be contiguous to be normalised in place");
    blendfuse::detail::norm_forward_into_ref(x, x, gamma, beta, eps, L, "group_norm_");
  }

  template <class T>
  static NormGrads<T, Backend> backward(const Tensor<T, Backend>& x, Index groups,
                                        const Tensor<T, Backend>& gamma,
                                        const Tensor<T, Backend>& mean,
                                        const Tensor<T, Backend>& rstd,
                                        const Tensor<T, Backend>& dy) {
    const blendfuse::detail::NormLayout L = layout(x, groups, "group_norm_backward");
    blendfuse::detail::norm_check_param(gamma, x.dim(1), "group_norm_backward", "gamma", x);
    blendfuse::detail::norm_check_backward(x, mean, rstd, dy, {x.dim(0), groups}, "group_norm_backward");
    return blendfuse::detail::norm_backward_ref(x, gamma, mean, rstd, dy, L);
  }

 private:
  template <class T>
  static blendfuse::detail::NormLayout layout(const Tensor<T, Backend>& x, Index groups, const char* op) {
    BF_CHECK(x.ndim() >= 2, ShapeError, op, ": expected x of shape (N, C, *), got ",
             x.shape_string());
    BF_CHECK(groups > 0, ArgumentError, op, ": groups must be positive, got ", groups);
    const Index C = x.dim(1);
    BF_CHECK(C % groups == 0, ShapeError, op, ": ", C, " channels of x with shape ",
             x.shape_string(), " are not divisible into ", groups, " groups");
    blendfuse::detail::NormLayout L;
    L.rows = x.dim(0) * groups;
    L.groups = groups;
    L.chans = C / groups;
    L.inner = 1;
    for (Index d = 2; d < x.ndim(); ++d) L.inner *= x.dim(d);
    blendfuse::detail::norm_check_layout(L, x, op);
    return L;
  }
};

/// Layer normalisation of x (..., D) over the last dimension; reference implementation.
template <class Backend>
struct LayerNormOp {
  template <class T>
  static NormResult<T, Backend> forward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& gamma,
                                        const Tensor<T, Backend>& beta, double eps) {
    const blendfuse::detail::NormLayout L = layout(x, "layer_norm");
    blendfuse::detail::norm_check_param(gamma, x.dim(-1), "layer_norm", "gamma", x);
    blendfuse::detail::norm_check_param(beta, x.dim(-1), "layer_norm", "beta", x);
    blendfuse::detail::norm_check_eps(eps, "layer_norm");
    return blendfuse::detail::norm_forward_ref(x, gamma, beta, eps, L, stat_shape(x));
  }

  /// Inference forward into a preallocated contiguous y (x's shape; y may be x); no statistics.
  /// Allocation-free when x, gamma and beta are contiguous.
  template <class T>
  static void forward_into(Tensor<T, Backend>& y, const Tensor<T, Backend>& x,
                           const Tensor<T, Backend>& gamma, const Tensor<T, Backend>& beta,
                           double eps) {
    const blendfuse::detail::NormLayout L = layout(x, "layer_norm_into");
    blendfuse::detail::norm_check_param(gamma, x.dim(-1), "layer_norm_into", "gamma", x);
    blendfuse::detail::norm_check_param(beta, x.dim(-1), "layer_norm_into", "beta", x);
    blendfuse::detail::norm_check_eps(eps, "layer_norm_into");
    blendfuse::detail::norm_forward_into_ref(y, x, gamma, beta, eps, L, "layer_norm_into");
  }

  template <class T>
  static NormGrads<T, Backend> backward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& gamma,
                                        const Tensor<T, Backend>& mean,
                                        const Tensor<T, Backend>& rstd,
                                        const Tensor<T, Backend>& dy) {
    const blendfuse::detail::NormLayout L = layout(x, "layer_norm_backward");
    blendfuse::detail::norm_check_param(gamma, x.dim(-1), "layer_norm_backward", "gamma", x);
    blendfuse::detail::norm_check_backward(x, mean, rstd, dy, stat_shape(x), "layer_norm_backward");
    return blendfuse::detail::norm_backward_ref(x, gamma, mean, rstd, dy, L);
  }

 private:
  template <class T>
  static Shape stat_shape(const Tensor<T, Backend>& x) {
    return Shape(x.shape().begin(), x.shape().end() - 1);
  }
  template <class T>
  static blendfuse::detail::NormLayout layout(const Tensor<T, Backend>& x, const char* op) {
    BF_CHECK(x.ndim() >= 1, ShapeError, op, ": expected x of shape (..., D), got a 0-d tensor");
    blendfuse::detail::NormLayout L;
    L.chans = x.dim(-1);
    L.rows = 1;  // the product of the leading dims (no Shape built: layer_norm_into must not allocate)
    for (Index d = 0; d + 1 < x.ndim(); ++d) L.rows *= x.dim(d);
    blendfuse::detail::norm_check_layout(L, x, op);
    return L;
  }
};


/// Instance norm of x (N, C, *), optional affine gamma/beta (C) (pass `{}` for none).
/// Returns {y, mean (N, C), rstd (N, C)}.
template <class T, class B>
NormResult<T, B> instance_norm(const Tensor<T, B>& x, const Tensor<T, B>& gamma = {},
                               const Tensor<T, B>& beta = {}, double eps = 1e-5) {
  return InstanceNormOp<B>::forward(x, gamma, beta, eps);
}

/// Gradients of instance_norm given the saved mean/rstd and dy (shape of x).
template <class T, class B>
NormGrads<T, B> instance_norm_backward(const Tensor<T, B>& x, const Tensor<T, B>& gamma,
                                       const Tensor<T, B>& mean, const Tensor<T, B>& rstd,
                                       const Tensor<T, B>& dy) {
  return InstanceNormOp<B>::backward(x, gamma, mean, rstd, dy);
}

/// Group norm of x (N, C, *) with `groups` groups (C % groups == 0), optional affine gamma/beta
/// (C). Returns {y, mean (N, groups), rstd (N, groups)}.
template <class T, class B>
NormResult<T, B> group_norm(const Tensor<T, B>& x, Index groups, const Tensor<T, B>& gamma = {},
                            const Tensor<T, B>& beta = {}, double eps = 1e-5) {
  return GroupNormOp<B>::forward(x, groups, gamma, beta, eps);
}

/// Group norm of a contiguous x (N, C, *) in place (inference: no statistics); x afterwards holds
/// group_norm(x, groups, gamma, beta, eps).y (up to the backend's rounding).
template <class T, class B>
void group_norm_(Tensor<T, B>& x, Index groups, const Tensor<T, B>& gamma = {},
                 const Tensor<T, B>& beta = {}, double eps = 1e-5) {
  GroupNormOp<B>::forward_inplace(x, groups, gamma, beta, eps);
}

/// Gradients of group_norm given the saved mean/rstd and dy (shape of x).
template <class T, class B>
NormGrads<T, B> group_norm_backward(const Tensor<T, B>& x, Index groups, const Tensor<T, B>& gamma,
                                    const Tensor<T, B>& mean, const Tensor<T, B>& rstd,
                                    const Tensor<T, B>& dy) {
  return GroupNormOp<B>::backward(x, groups, gamma, mean, rstd, dy);
}

/// Layer norm of x (..., D) over the last dim, optional affine gamma/beta (D).
/// Returns {y, mean (...), rstd (...)} (x's shape without the last dim).
template <class T, class B>
NormResult<T, B> layer_norm(const Tensor<T, B>& x, const Tensor<T, B>& gamma = {},
                            const Tensor<T, B>& beta = {}, double eps = 1e-5) {
  return LayerNormOp<B>::forward(x, gamma, beta, eps);
}

/// Layer norm of x (..., D) written into y (contiguous, x's shape; y may be x itself), no
/// statistics: the allocation-free inference form of layer_norm(x, gamma, beta, eps).y.
template <class T, class B>
void layer_norm_into(Tensor<T, B>& y, const Tensor<T, B>& x, const Tensor<T, B>& gamma = {},
                     const Tensor<T, B>& beta = {}, double eps = 1e-5) {
  LayerNormOp<B>::forward_into(y, x, gamma, beta, eps);
}

/// Gradients of layer_norm given the saved mean/rstd and dy (shape of x).
template <class T, class B>
NormGrads<T, B> layer_norm_backward(const Tensor<T, B>& x, const Tensor<T, B>& gamma,
                                    const Tensor<T, B>& mean, const Tensor<T, B>& rstd,
                                    const Tensor<T, B>& dy) {
  return LayerNormOp<B>::backward(x, gamma, mean, rstd, dy);
}

}  // namespace ops
}  // namespace blendfuse
