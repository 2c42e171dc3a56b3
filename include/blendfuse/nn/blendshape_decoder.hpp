// blendfuse — the linear blendshape decoder (paper §3.3.2): ΔV = B w, no bias. Its weight matrix
// (V·3, K) *is* the blendshape set [B_A | B_E] (columns are blendshapes, rows x,y,z per vertex).
//
// Free columns are parametrised as B = √V·W (a constant gain, see free_gain()).
// Optionally the columns are kept at a fixed norm: B = s · W / ‖W_col‖ (weight normalisation with
// a frozen gain s). Without it, scaling a column by c and its weight by 1/c leaves the
// reconstruction unchanged and makes any L1 penalty on weights meaningless (METHOD-NOTES).
//
// The fixed norm is folded into the input instead of materialising B: with per-column factors
// s_j = column_norm / ‖W_j‖, ΔV = B w = W (s ⊙ w), so a forward is one row-major pass over W for
// the K column norms plus one GEMM with the raw W (no (V·3, K) copy per call), and the backward
// needs only ∂L/∂W = G' − b̂ (b̂ᵀ G') column-wise, where G' = doutᵀ (s ⊙ w) is the plain linear
// weight gradient and b̂ = W/‖W‖ (one more row-major pass).
//
// Templated on the element type and a host backend B (Cpu or OneDnn): the GEMMs run on B; the
// parameter stays a host Tensor<T> (see encoders.hpp).
#pragma once

#include <cmath>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/ops/linear.hpp"


namespace blendfuse::nn {

template <class T, class B = Cpu>
class BlendshapeDecoder {
 public:
  using TensorB = Tensor<T, B>;
  struct Context {
    TensorB weights;  // (B, K)
    TensorB scaled;   // (B, K) s ⊙ weights (fixed-norm columns only)
    std::vector<double> norms;  // ‖W_j‖ at forward time (fixed-norm columns only)
  };

  BlendshapeDecoder() = default;
  /// `column_norm` > 0 enables fixed-norm columns with that norm; 0 leaves W free.
  BlendshapeDecoder(Index vertices, Index k, double column_norm, const std::string& name = "decoder.weight")
      : w_(name, Shape{vertices * 3, k}), column_norm_(column_norm) {}

  void init(Rng& rng) {
    // Small random blendshapes: each column has norm ≈ column_norm (or ≈ 1 mm RMS per vertex).
    // Both parametrisations start with columns of norm ≈ √V (≈ 1 mm RMS per vertex coordinate).
    fill_normal(w_.value, rng, 1.0 / std::sqrt(static_cast<double>(w_.value.dim(0))));
    w_.touch();
  }

  ParamList<T> parameters() { return {&w_}; }
  /// Cached derived weights: the column norms are kept between calls (see col_norms()); the
  /// caller promises to touch() the parameter after writing it in place.
  void cache_derived_weights(bool on = true) { cache_on_ = on; }
  bool derived_weights_cached() const noexcept { return cache_on_; }
  /// Free columns are B = g·W with a constant gain g = √V, so that W lives at the same O(1/√(3V))
  /// scale as in the fixed-norm parametrisation and Adam's step size means the same in both.
  double free_gain() const { return std::sqrt(static_cast<double>(w_.value.dim(0)) / 3.0); }
  Index vertices() const { return w_.value.dim(0) / 3; }
  Index k() const { return w_.value.dim(1); }
  double column_norm() const { return column_norm_; }

  /// The blendshapes actually applied: (V·3, K) (a copy when the columns are normalised).
  Tensor<T> blendshapes() const {
    Tensor<T> b = w_.value.clone();
    if (column_norm_ <= 0) {
      for (Index i = 0; i < b.numel(); ++i) b[i] = static_cast<T>(free_gain() * b[i]);
      return b;
    }
    const Index r = b.dim(0), k = b.dim(1);
    const std::vector<double> n = col_norms();
    for (Index i = 0; i < r; ++i)
      for (Index j = 0; j < k; ++j) b[i * k + j] = static_cast<T>(column_norm_ * b[i * k + j] / n[static_cast<std::size_t>(j)]);
    return b;
  }

  /// Multiply-adds of one forward per sample.
  double macs_per_sample() const { return static_cast<double>(w_.value.dim(0)) * w_.value.dim(1); }

  /// weights (B, K) → ΔV (B, V·3).
  TensorB forward(const TensorB& weights, Context* ctx = nullptr) const {
    check_shape(weights, {-1, k()}, "BlendshapeDecoder input");
    if (ctx) *ctx = Context{weights, {}, {}};
    if (column_norm_ <= 0) {
      TensorB scaled = weights.clone();
      for (Index i = 0; i < scaled.numel(); ++i) scaled[i] = static_cast<T>(free_gain() * scaled[i]);
      TensorB y = ops::linear(scaled, wv(), TensorB());
      if (ctx) ctx->scaled = std::move(scaled);
      return y;
    }
    std::vector<double> n = col_norms();
    const TensorB wc = weights.contiguous();
    TensorB scaled(wc.shape());
    const Index rows = wc.dim(0), K = k();
    for (Index b = 0; b < rows; ++b)
      for (Index j = 0; j < K; ++j)
        scaled[b * K + j] = static_cast<T>(column_norm_ * wc[b * K + j] / n[static_cast<std::size_t>(j)]);
    TensorB y = ops::linear(scaled, wv(), TensorB());
    if (ctx) {
      ctx->scaled = std::move(scaled);
      ctx->norms = std::move(n);
    }
    return y;
  }

  /// Accumulates ∂L/∂W and returns ∂L/∂weights for dout = ∂L/∂ΔV (B, V·3).
  TensorB backward(const Context& ctx, const TensorB& dout) {
    if (column_norm_ <= 0) {
      auto g = ops::linear_backward(ctx.scaled, wv(), dout, false);
      w_.accumulate(detail::host_view<Cpu>(g.dw));
      for (Index i = 0; i < g.dx.numel(); ++i) g.dx[i] = static_cast<T>(free_gain() * g.dx[i]);
      return g.dx;
    }
    // Forward: y = W u, u = s ⊙ w, s_j = c/‖W_j‖. With G' = ∂L/∂W|_u (= doutᵀ u) the chain rule
    // through s gives ∂L/∂W_ij = G'_ij − b̂_ij Σ_i b̂_ij G'_ij, b̂ = W/‖W‖; ∂L/∂w = s ⊙ ∂L/∂u.
    auto g = ops::linear_backward(ctx.scaled, wv(), dout, false);
    const Index r = w_.value.dim(0), K = k();
    const std::vector<double>& n = ctx.norms;
    std::vector<double> dot(static_cast<std::size_t>(K), 0.0);
    const Tensor<T> gw = detail::host_view<Cpu>(g.dw).contiguous();
    const T* W = w_.value.data();
    const T* G = gw.data();
    for (Index i = 0; i < r; ++i)
      for (Index j = 0; j < K; ++j) dot[static_cast<std::size_t>(j)] += static_cast<double>(W[i * K + j]) * G[i * K + j];
    std::vector<T> a(static_cast<std::size_t>(K));  // Σ b̂ G' / ‖W‖ per column
    for (Index j = 0; j < K; ++j) {
      const double nj = n[static_cast<std::size_t>(j)];
      a[static_cast<std::size_t>(j)] = static_cast<T>(dot[static_cast<std::size_t>(j)] / (nj * nj));
    }
    T* D = w_.grad.data();
    for (Index i = 0; i < r; ++i)
      for (Index j = 0; j < K; ++j) D[i * K + j] += G[i * K + j] - W[i * K + j] * a[static_cast<std::size_t>(j)];
    TensorB dx = std::move(g.dx);
    const Index rows = dx.dim(0);
    for (Index b = 0; b < rows; ++b)
      for (Index j = 0; j < K; ++j)
        dx[b * K + j] = static_cast<T>(column_norm_ / n[static_cast<std::size_t>(j)] * dx[b * K + j]);
    return dx;
  }

  /// Accumulates ∂L/∂W for a loss on the applied blendshapes, given dB = ∂L/∂B (V·3, K)
  /// (e.g. the cross-domain overlap penalty). With fixed-norm columns B_j = c·W_j/‖W_j‖:
  /// ∂L/∂W_j = (c/‖W_j‖)(dB_j − b̂_j (b̂_j·dB_j)).
  void accumulate_blendshape_grad(const Tensor<T>& dB) {
    BF_CHECK(dB.shape() == w_.value.shape(), ShapeError, "BlendshapeDecoder: blendshape gradient ",
             dB.shape_string(), " does not match ", w_.value.shape_string());
    if (column_norm_ <= 0) {
      Tensor<T> g = dB.clone();
      for (Index i = 0; i < g.numel(); ++i) g[i] = static_cast<T>(free_gain() * g[i]);
      w_.accumulate(g);
      return;
    }
    // Row-major passes (the matrix is (V·3, K) row-major): one pass for the column sums ‖W_j‖²
    // and W_j·g_j, one for grad_ij += a_j·g_ij − b_j·W_ij. Column-by-column loops stride by K
    // and measured ≈ 25× slower at paper scale (V·3 = 32571, K = 128).
    const Index r = w_.value.dim(0), K = k();
    const Tensor<T> g = dB.contiguous();
    const T* W = w_.value.data();
    const T* G = g.data();
    T* D = w_.grad.data();
    std::vector<double> nn(static_cast<std::size_t>(K), 0.0), dot(nn), a(nn), b(nn);
    for (Index i = 0; i < r; ++i)
      for (Index j = 0; j < K; ++j) {
        const double w = W[i * K + j];
        nn[static_cast<std::size_t>(j)] += w * w;
        dot[static_cast<std::size_t>(j)] += w * G[i * K + j];
      }
    for (std::size_t j = 0; j < static_cast<std::size_t>(K); ++j) {
      const double n = std::sqrt(nn[j]) + 1e-12;
      a[j] = column_norm_ / n;
      b[j] = column_norm_ / n * dot[j] / (n * n);
    }
    for (Index i = 0; i < r; ++i)
      for (Index j = 0; j < K; ++j)
        D[i * K + j] += static_cast<T>(a[static_cast<std::size_t>(j)] * G[i * K + j] -
                                       b[static_cast<std::size_t>(j)] * W[i * K + j]);
  }

 private:
  TensorB wv() const { return detail::host_view<B>(w_.value); }

  /// ‖W_j‖ (+1e-12) for every column, in one row-major pass (double accumulators); when cached,
  /// remembered with the parameter's stamp (ParameterStamp), so inference with fixed weights
  /// reads W once per call (the GEMM) instead of twice.
  std::vector<double> col_norms() const {
    if (!cache_on_) return compute_col_norms();
    auto stamp = ParameterStamp<T>::of(w_);
    {
      std::lock_guard<std::mutex> lock(norms_cache_.mu);
      if (!norms_cache_.norms.empty() && norms_cache_.stamp == stamp) return norms_cache_.norms;
    }
    std::vector<double> s = compute_col_norms();
    std::lock_guard<std::mutex> lock(norms_cache_.mu);
    norms_cache_.stamp = std::move(stamp);
    norms_cache_.norms = s;
    return s;
  }

  std::vector<double> compute_col_norms() const {
    const Index r = w_.value.dim(0), K = w_.value.dim(1);
    std::vector<double> s(static_cast<std::size_t>(K), 0.0);
    const T* W = w_.value.data();
    for (Index i = 0; i < r; ++i)
      for (Index j = 0; j < K; ++j) s[static_cast<std::size_t>(j)] += static_cast<double>(W[i * K + j]) * W[i * K + j];
    for (auto& v : s) v = std::sqrt(v) + 1e-12;
    return s;
  }

  struct NormsCache {  // a copied decoder starts empty
    std::mutex mu;
    ParameterStamp<T> stamp;
    std::vector<double> norms;
    NormsCache() = default;
    NormsCache(const NormsCache&) {}
    NormsCache& operator=(const NormsCache&) {
      std::lock_guard<std::mutex> lock(mu);
      norms.clear();
      return *this;
    }
  };

  Parameter<T> w_;
  double column_norm_ = 0;
  bool cache_on_ = false;
  mutable NormsCache norms_cache_;
};

}  // namespace blendfuse::nn
