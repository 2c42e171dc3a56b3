// blendfuse — the linear blendshape decoder (paper §3.3.2): ΔV = B w, no bias. Its weight matrix
// (V·3, K) *is* the blendshape set [B_A | B_E] (columns are blendshapes, rows x,y,z per vertex).
//
// Optionally the columns are kept at a fixed norm: B = s · W / ‖W_col‖ (weight normalisation with
// a frozen gain s). Without it, scaling a column by c and its weight by 1/c leaves the
// reconstruction unchanged and makes any L1 penalty on weights meaningless (METHOD-NOTES).
#pragma once

#include <cmath>
#include <string>

#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/ops/linear.hpp"

namespace blendfuse::nn {

template <class T>
class BlendshapeDecoder {
 public:
  struct Context {
    Tensor<T> weights;  // (B, K)
  };

  BlendshapeDecoder() = default;
  /// `column_norm` > 0 enables fixed-norm columns with that norm; 0 leaves W free.
  BlendshapeDecoder(Index vertices, Index k, double column_norm, const std::string& name = "decoder.weight")
      : w_(name, Shape{vertices * 3, k}), column_norm_(column_norm) {}

  void init(Rng& rng) {
    // Small random blendshapes: each column has norm ≈ column_norm (or ≈ 1 mm RMS per vertex).
    const double s = 1.0 / std::sqrt(static_cast<double>(w_.value.dim(0)));
    fill_normal(w_.value, rng, column_norm_ > 0 ? s : 1.0);
  }

  ParamList<T> parameters() { return {&w_}; }
  Index vertices() const { return w_.value.dim(0) / 3; }
  Index k() const { return w_.value.dim(1); }
  double column_norm() const { return column_norm_; }

  /// The blendshapes actually applied: (V·3, K).
  Tensor<T> blendshapes() const {
    if (column_norm_ <= 0) return w_.value;
    Tensor<T> b = w_.value.clone();
    const Index r = b.dim(0), k = b.dim(1);
    for (Index j = 0; j < k; ++j) {
      const double n = col_norm(j);
      for (Index i = 0; i < r; ++i) b[i * k + j] = static_cast<T>(column_norm_ * b[i * k + j] / n);
    }
    return b;
  }

  /// weights (B, K) → ΔV (B, V·3).
  Tensor<T> forward(const Tensor<T>& weights, Context* ctx = nullptr) const {
    check_shape(weights, {-1, k()}, "BlendshapeDecoder input");
    if (ctx) ctx->weights = weights;
    return ops::linear(weights, blendshapes());
  }

  /// Accumulates ∂L/∂W and returns ∂L/∂weights for dout = ∂L/∂ΔV (B, V·3).
  Tensor<T> backward(const Context& ctx, const Tensor<T>& dout) {
    const Tensor<T> b = blendshapes();
    auto g = ops::linear_backward(ctx.weights, b, dout);
    if (column_norm_ <= 0) {
      w_.accumulate(g.dw);
      return g.dx;
    }
    // B = s·W/‖W‖ per column ⇒ ∂L/∂W = (s/‖W‖)(G − b̂ (b̂·G)), b̂ = W/‖W‖.
    const Index r = b.dim(0), k = b.dim(1);
    Tensor<T> dw({r, k});
    for (Index j = 0; j < k; ++j) {
      const double n = col_norm(j);
      double dot = 0;
      for (Index i = 0; i < r; ++i) dot += (w_.value[i * k + j] / n) * g.dw[i * k + j];
      for (Index i = 0; i < r; ++i)
        dw[i * k + j] = static_cast<T>(column_norm_ / n * (g.dw[i * k + j] - (w_.value[i * k + j] / n) * dot));
    }
    w_.accumulate(dw);
    return g.dx;
  }

 private:
  double col_norm(Index j) const {
    const Index r = w_.value.dim(0), k = w_.value.dim(1);
    double s = 0;
    for (Index i = 0; i < r; ++i) s += static_cast<double>(w_.value[i * k + j]) * w_.value[i * k + j];
    return std::sqrt(s) + 1e-12;
  }

  Parameter<T> w_;
  double column_norm_ = 0;
};

}  // namespace blendfuse::nn
