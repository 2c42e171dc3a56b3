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
// Sequence losses of the audio trainer (train/audio_trainer.hpp), on (T, V·3) deformation
// sequences, averaged over the T frames and the coordinates:
//   pair difference (lip gap): (1/(3TP)) Σ_t Σ_(a,b) ‖(x̂_ta − x̂_tb) − (x_ta − x_tb)‖²
//                            (or its pseudo-Huber version, pair_difference_huber)
//   velocity               : (1/(T·V·3)) Σ_{t≥1} ‖(x̂_t − x̂_{t−1}) − (x_t − x_{t−1})‖²
//
// Two deliberate choices, documented in docs/results.md: the Laplacian term is taken on the
// predicted *deformation* (the template's own curvature is not a defect to smooth away), and both
// eq. 11 and eq. 12 use squared norms ("mean squared error" in the paper's text) so that their
// gradients are defined at zero.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

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
  // Row-major double copies (B is row-major: no strided passes), and the gradient through the
  // identity dG = −MC·MCᵀ, dC = 2MC: dU_A = E dCᵀ + 2A dG = 2(E − A·MC)·MCᵀ, dU_E = 2A·MC
  // (four (V·3)×64×64 GEMMs instead of five, G by a rank update).
  using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;
  using MatR = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const auto c = B.contiguous();
  const T* cp = c.data();
  const auto Ku = static_cast<std::size_t>(K);
  MatR U(r, K);
  std::vector<double> nn(Ku, 0.0), inv(Ku);
  for (Index i = 0; i < r; ++i)
    for (Index j = 0; j < K; ++j) {
      const double x = static_cast<double>(cp[i * K + j]);
      U(i, j) = x;
      nn[static_cast<std::size_t>(j)] += x * x;
    }
  for (std::size_t j = 0; j < Ku; ++j) inv[j] = 1.0 / (std::sqrt(nn[j]) + 1e-12);
  for (Index i = 0; i < r; ++i)
    for (Index j = 0; j < K; ++j) U(i, j) *= inv[static_cast<std::size_t>(j)];  // unit columns
  const auto A = U.leftCols(k_a);
  const auto E = U.rightCols(k_e);
  Mat G = delta * Mat::Identity(k_a, k_a);
  G.selfadjointView<Eigen::Lower>().rankUpdate(A.transpose());
  G = G.selfadjointView<Eigen::Lower>();
  const Mat C = A.transpose() * E;
  const Eigen::LDLT<Mat> ldlt(G);
  const Mat MC = ldlt.solve(C);              // (G+δI)⁻¹ C
  LossGrad<T> out{(C.array() * MC.array()).sum(), Tensor<T>(B.shape())};
  MatR P = A * MC;                            // (r, k_e)
  MatR dU(r, K);
  dU.rightCols(k_e) = 2.0 * P;
  P = E - P;
  dU.leftCols(k_a).noalias() = 2.0 * P * MC.transpose();
  // through the column normalisation u = x/‖x‖: dx = (du − u (u·du)) / ‖x‖
  std::vector<double> dot(Ku, 0.0);
  for (Index i = 0; i < r; ++i)
    for (Index j = 0; j < K; ++j) dot[static_cast<std::size_t>(j)] += U(i, j) * dU(i, j);
  T* g = out.grad.data();
  for (Index i = 0; i < r; ++i)
    for (Index j = 0; j < K; ++j) {
      const auto ju = static_cast<std::size_t>(j);
      g[i * K + j] = static_cast<T>((dU(i, j) - U(i, j) * dot[ju]) * inv[ju]);
    }
  return out;
}

/// Lip-gap loss: mean squared error of the relative displacement of vertex pairs (a, b) — for the
/// upper/lower lip pairs, of the lip opening vector. pred, target (T, V·3) or (1, T, V·3);
/// value (1/(3·T·P)) Σ_t Σ_(a,b) ‖(p_ta − p_tb) − (y_ta − y_tb)‖². Invariant to any
/// displacement shared by both vertices of a pair, so it weighs only how far the lips open.
template <class T>
LossGrad<T> pair_difference_mse(const Tensor<T>& pred, const Tensor<T>& target,
                                const std::vector<std::array<std::int32_t, 2>>& pairs) {
  BF_CHECK(pred.shape() == target.shape(), ShapeError, "pair_difference_mse: prediction ",
           pred.shape_string(), " vs target ", target.shape_string());
  BF_CHECK(!pairs.empty(), ArgumentError, "pair_difference_mse: no vertex pairs");
  BF_CHECK(pred.ndim() >= 2, ShapeError, "pair_difference_mse: need (T, V·3), got ", pred.shape_string());
  const auto p = pred.contiguous(), y = target.contiguous();
  const Index frames = pred.dim(pred.ndim() - 2), per = pred.dim(pred.ndim() - 1);
  BF_CHECK(per % 3 == 0 && per * frames == p.numel(), ShapeError, "pair_difference_mse: ", pred.shape_string(),
           " is not (T, V·3)");
  for (const auto& pr : pairs)
    BF_CHECK(pr[0] >= 0 && 3 * pr[0] < per && pr[1] >= 0 && 3 * pr[1] < per, ArgumentError,
             "pair_difference_mse: pair (", pr[0], ", ", pr[1], ") out of range for ", per / 3, " vertices");
  LossGrad<T> r{0, Tensor<T>(pred.shape())};
  const double scale = 1.0 / (3.0 * static_cast<double>(frames) * static_cast<double>(pairs.size()));
  for (Index t = 0; t < frames; ++t)
    for (const auto& pr : pairs)
      for (Index c = 0; c < 3; ++c) {
        const Index a = t * per + 3 * pr[0] + c, b = t * per + 3 * pr[1] + c;
        const double d = (static_cast<double>(p[a]) - p[b]) - (static_cast<double>(y[a]) - y[b]);
        r.value += scale * d * d;
        r.grad[a] += static_cast<T>(2 * scale * d);
        r.grad[b] -= static_cast<T>(2 * scale * d);
      }
  return r;
}

/// Robust lip-gap loss: the pseudo-Huber version of pair_difference_mse. Per pair and frame
/// 2δ²(sqrt(1 + ‖r‖²/δ²) − 1) with r = (p_a − p_b) − (y_a − y_b): ≈ ‖r‖² for ‖r‖ ≪ δ, ≈ 2δ‖r‖
/// for ‖r‖ ≫ δ (so an uncertain closure is pulled towards the median, not the mean, opening);
/// same normalisation 1/(3·T·P). δ > 0 (mm).
template <class T>
LossGrad<T> pair_difference_huber(const Tensor<T>& pred, const Tensor<T>& target,
                                  const std::vector<std::array<std::int32_t, 2>>& pairs, double delta) {
  BF_CHECK(delta > 0, ArgumentError, "pair_difference_huber: delta must be positive, got ", delta);
  BF_CHECK(pred.shape() == target.shape(), ShapeError, "pair_difference_huber: prediction ",
           pred.shape_string(), " vs target ", target.shape_string());
  BF_CHECK(!pairs.empty(), ArgumentError, "pair_difference_huber: no vertex pairs");
  BF_CHECK(pred.ndim() >= 2, ShapeError, "pair_difference_huber: need (T, V·3), got ", pred.shape_string());
  const auto p = pred.contiguous(), y = target.contiguous();
  const Index frames = pred.dim(pred.ndim() - 2), per = pred.dim(pred.ndim() - 1);
  BF_CHECK(per % 3 == 0 && per * frames == p.numel(), ShapeError, "pair_difference_huber: ", pred.shape_string(),
           " is not (T, V·3)");
  for (const auto& pr : pairs)
    BF_CHECK(pr[0] >= 0 && 3 * pr[0] < per && pr[1] >= 0 && 3 * pr[1] < per, ArgumentError,
             "pair_difference_huber: pair (", pr[0], ", ", pr[1], ") out of range for ", per / 3, " vertices");
  LossGrad<T> r{0, Tensor<T>(pred.shape())};
  const double scale = 1.0 / (3.0 * static_cast<double>(frames) * static_cast<double>(pairs.size()));
  const double d2 = delta * delta;
  for (Index t = 0; t < frames; ++t)
    for (const auto& pr : pairs) {
      const Index a = t * per + 3 * pr[0], b = t * per + 3 * pr[1];
      double d[3], n2 = 0;
      for (Index c = 0; c < 3; ++c) {
        d[c] = (static_cast<double>(p[a + c]) - p[b + c]) - (static_cast<double>(y[a + c]) - y[b + c]);
        n2 += d[c] * d[c];
      }
      const double root = std::sqrt(1.0 + n2 / d2);
      r.value += scale * 2.0 * d2 * (root - 1.0);
      for (Index c = 0; c < 3; ++c) {
        const double g = scale * 2.0 * d[c] / root;
        r.grad[a + c] += static_cast<T>(g);
        r.grad[b + c] -= static_cast<T>(g);
      }
    }
  return r;
}

/// Velocity loss: mean squared error of the frame-to-frame differences. pred, target (T, D) or
/// (1, T, D); value (1/(T·D)) Σ_{t≥1} Σ_i ((p_ti − p_(t−1)i) − (y_ti − y_(t−1)i))² (averaged
/// over all T frames so that it adds to a per-frame MSE with a comparable weight; 0 for T = 1).
template <class T>
LossGrad<T> velocity_mse(const Tensor<T>& pred, const Tensor<T>& target) {
  BF_CHECK(pred.shape() == target.shape(), ShapeError, "velocity_mse: prediction ", pred.shape_string(),
           " vs target ", target.shape_string());
  BF_CHECK(pred.ndim() >= 2, ShapeError, "velocity_mse: need (T, D), got ", pred.shape_string());
  const auto p = pred.contiguous(), y = target.contiguous();
  const Index frames = pred.dim(pred.ndim() - 2), D = pred.dim(pred.ndim() - 1);
  BF_CHECK(frames * D == p.numel(), ShapeError, "velocity_mse: ", pred.shape_string(), " is not (T, D)");
  LossGrad<T> r{0, Tensor<T>(pred.shape())};
  const double scale = 1.0 / (static_cast<double>(frames) * static_cast<double>(D));
  for (Index t = 1; t < frames; ++t)
    for (Index i = 0; i < D; ++i) {
      const Index k = t * D + i, j = k - D;
      const double d = (static_cast<double>(p[k]) - p[j]) - (static_cast<double>(y[k]) - y[j]);
      r.value += scale * d * d;
      r.grad[k] += static_cast<T>(2 * scale * d);
      r.grad[j] -= static_cast<T>(2 * scale * d);
    }
  return r;
}

}  // namespace blendfuse::loss
