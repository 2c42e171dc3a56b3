// blendfuse — losses of the deformation fusion module (paper eq. 9–12), each returning its value
// and its gradient together. All are averaged over the batch.
//
//   reconstruction (eq. 11): (1/V) Σ_k ω_k ‖ΔV̂_k − ΔV_k‖²       (weighted mean squared error)
//   sparsity       (eq. 9) : ‖ε‖₁ per sample                         (cross-domain weights)
//   Laplacian      (eq. 12): (1/V) Σ_i ‖L(ΔV̂)_i‖²                  (uniform Laplacian, squared)
//   L2 regulariser         : (1/V) Σ_k ‖ΔV̂_k‖²
//   usage group lasso      : Σ_k sqrt(mean_b w_bk² + δ)              (METHOD-NOTES)
//   cross-domain overlap   : Σ_e ‖P_A ê‖², speech/expression subspaces (ours)
//
// Two deliberate choices, documented in docs/results.md: the Laplacian term is taken on the
// predicted *deformation* (the template's own curvature is not a defect to smooth away), and both
// eq. 11 and eq. 12 use squared norms ("mean squared error" in the paper's text) so that their
// gradients are defined at zero.
#pragma once

#include <cmath>

#include <Eigen/Dense>

#include "blendfuse/core/tensor.hpp"

namespace blendfuse::loss {

template <class T>
struct LossGrad {
  double value = 0;
  Tensor<T> grad;  // ∂value/∂input, shape of the input
};

/// pred, target (B, V·3) or (B, V, 3); weights (V) or empty (all ones).
template <class T>
LossGrad<T> weighted_mse(const Tensor<T>& pred, const Tensor<T>& target, const Tensor<T>& weights) {
  BF_CHECK(pred.shape() == target.shape(), ShapeError, "weighted_mse: prediction ",
           pred.shape_string(), " vs target ", target.shape_string());
  const Index b = pred.dim(0);
  const Index per = pred.numel() / std::max<Index>(b, 1);
  BF_CHECK(per % 3 == 0, ShapeError, "weighted_mse: per-sample size ", per, " is not V·3");
  const Index v = per / 3;
  BF_CHECK(weights.empty() || weights.numel() == v, ShapeError, "weighted_mse: ", weights.numel(),
           " weights for ", v, " vertices");
  const auto p = pred.contiguous(), t = target.contiguous();
  LossGrad<T> r{0, Tensor<T>(pred.shape())};
  const double scale = 1.0 / (static_cast<double>(v) * static_cast<double>(b));
  for (Index s = 0; s < b; ++s)
    for (Index k = 0; k < v; ++k) {
      const double w = weights.empty() ? 1.0 : static_cast<double>(weights[k]);
      for (Index c = 0; c < 3; ++c) {
        const Index i = s * per + 3 * k + c;
        const double d = static_cast<double>(p[i]) - static_cast<double>(t[i]);
        r.value += scale * w * d * d;
        r.grad[i] = static_cast<T>(2 * scale * w * d);
      }
    }
  return r;
}

/// Mean over the batch of ‖x_b‖₁; x (B, K). Subgradient sign(x) (0 at 0).
template <class T>
LossGrad<T> l1(const Tensor<T>& x) {
  const auto c = x.contiguous();
  const Index b = std::max<Index>(x.dim(0), 1);
  LossGrad<T> r{0, Tensor<T>(x.shape())};
  for (Index i = 0; i < c.numel(); ++i) {
    const double v = static_cast<double>(c[i]);
    r.value += std::abs(v) / b;
    r.grad[i] = static_cast<T>(v > 0 ? 1.0 / b : v < 0 ? -1.0 / b : 0.0);
  }
  return r;
}

/// (1/V) Σ ‖x_k‖² averaged over the batch; x (B, V·3) or (B, V, 3).
template <class T>
LossGrad<T> mean_sq(const Tensor<T>& x) {
  const auto c = x.contiguous();
  const Index b = std::max<Index>(x.dim(0), 1);
  const double v = static_cast<double>(c.numel()) / (3.0 * b);
  LossGrad<T> r{0, Tensor<T>(x.shape())};
  for (Index i = 0; i < c.numel(); ++i) {
    const double d = static_cast<double>(c[i]);
    r.value += d * d / (v * b);
    r.grad[i] = static_cast<T>(2 * d / (v * b));
  }
  return r;
}

/// Group lasso on latent usage: Σ_k sqrt(mean_b w_bk² + δ) − K·sqrt(δ); w (B, K).
/// With blendshape columns of fixed norm, this makes each additional blendshape in use cost,
/// so a leaked direction is explained by the other domain's blendshape instead of a private copy.
template <class T>
LossGrad<T> usage_group_lasso(const Tensor<T>& w, double delta = 1e-8) {
  check_ndim(w, 2, "usage_group_lasso");
  const auto c = w.contiguous();
  const Index b = w.dim(0), k = w.dim(1);
  LossGrad<T> r{0, Tensor<T>(w.shape())};
  for (Index j = 0; j < k; ++j) {
    double ms = 0;
    for (Index s = 0; s < b; ++s) ms += static_cast<double>(c[s * k + j]) * c[s * k + j];
    ms /= static_cast<double>(b);
    const double rms = std::sqrt(ms + delta);
    r.value += rms - std::sqrt(delta);
    for (Index s = 0; s < b; ++s) r.grad[s * k + j] = static_cast<T>(c[s * k + j] / (b * rms));
  }
  return r;
}

/// Cross-domain overlap of blendshape subspaces: Σ_e ‖P_A ê‖², the squared length of each
/// unit-normalised expression blendshape ê's projection onto the span of the (unit-normalised)
/// speech blendshapes, P_A = Â (ÂᵀÂ + δI)⁻¹ Âᵀ. B is (rows × K) with columns [B_A | B_E]. Zero
/// when the two sets span orthogonal subspaces; unlike pairwise cosines it also sees overlap
/// with combinations of several speech blendshapes.
template <class T>
LossGrad<T> cross_domain_overlap(const Tensor<T>& B, Index k_a, double delta = 1e-3) {
  check_ndim(B, 2, "cross_domain_overlap");
  const Index r = B.dim(0), K = B.dim(1), k_e = K - k_a;
  BF_CHECK(k_a > 0 && k_a < K, ArgumentError, "cross_domain_overlap: k_a ", k_a, " not in (0, ", K, ")");
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;
  const auto c = B.contiguous();
  Mat X(r, K);
  for (Index i = 0; i < r; ++i)
    for (Index j = 0; j < K; ++j) X(i, j) = static_cast<double>(c[i * K + j]);
  Eigen::VectorXd norms = X.colwise().norm().transpose().array() + 1e-12;
  Mat U = X * norms.cwiseInverse().asDiagonal();  // unit columns
  const Mat A = U.leftCols(k_a), E = U.rightCols(k_e);
  const Mat G = A.transpose() * A + delta * Mat::Identity(k_a, k_a);
  const Mat C = A.transpose() * E;
  const Eigen::LDLT<Mat> ldlt(G);
  const Mat MC = ldlt.solve(C);              // (G+δI)⁻¹ C
  LossGrad<T> out{(C.array() * MC.array()).sum(), Tensor<T>(B.shape())};
  const Mat dC = 2.0 * MC;                    // ∂P/∂C
  const Mat dG = -MC * MC.transpose();        // ∂P/∂G (symmetric)
  Mat dU(r, K);
  dU.leftCols(k_a) = E * dC.transpose() + 2.0 * A * dG;
  dU.rightCols(k_e) = A * dC;
  // through the column normalisation u = x/‖x‖: dx = (du − u (u·du)) / ‖x‖
  for (Index j = 0; j < K; ++j) {
    const double dot = U.col(j).dot(dU.col(j));
    const Eigen::VectorXd dx = (dU.col(j) - U.col(j) * dot) / norms(j);
    for (Index i = 0; i < r; ++i) out.grad[i * K + j] = static_cast<T>(dx(i));
  }
  return out;
}

}  // namespace blendfuse::loss
