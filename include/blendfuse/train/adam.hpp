// blendfuse — Adam optimiser (Kingma & Ba 2015) over named parameters, with state that can be
// checkpointed (moments saved as "<name>.adam_m" / ".adam_v", the step count in metadata).
#pragma once

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "blendfuse/nn/parameter.hpp"

namespace blendfuse::train {

struct AdamConfig {
  double lr = 3e-4;  // the paper's learning rate
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

template <class T>
class Adam {
 public:
  Adam(nn::ParamList<T> params, AdamConfig cfg = {}) : params_(std::move(params)), cfg_(cfg) {
    for (auto* p : params_) {
      m_.emplace_back(p->value.shape());
      v_.emplace_back(p->value.shape());
    }
  }

  /// One update from the accumulated gradients (which are left untouched).
  ///
  /// float parameters: the update runs in float (8 lanes with AVX2; the scalar tail and non-AVX2
  /// builds run the same formula), with the bias corrections folded into two per-step scalars:
  ///   m ← β1·m + (1−β1)·g,  v ← β2·v + (1−β2)·g²,  w ← w − α/(1−β1^t) · m / (√v·(1−β2^t)^−½ + ε).
  /// Every element's result depends only on its own (w, g, m, v) and the step count, so a run
  /// resumed from saved (w, m, v, t) is bit-identical to the uninterrupted one. double parameters
  /// keep the reference loop (all arithmetic in double).
  void step() {
    ++t_;
    const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t_));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t_));
    const double step_size = cfg_.lr / bc1;
    for (std::size_t k = 0; k < params_.size(); ++k) {
      auto& p = *params_[k];
      p.touch();
      T* w = p.value.data();
      const T* g = p.grad.data();
      T* m = m_[k].data();
      T* v = v_[k].data();
      const Index n = p.value.numel();
      if constexpr (std::is_same_v<T, float>) {
        update_f32(w, g, m, v, n, step_size, 1.0 / std::sqrt(bc2));
      } else {
        for (Index i = 0; i < n; ++i) {
          m[i] = static_cast<T>(cfg_.beta1 * m[i] + (1 - cfg_.beta1) * g[i]);
          v[i] = static_cast<T>(cfg_.beta2 * v[i] + (1 - cfg_.beta2) * g[i] * g[i]);
          w[i] -= static_cast<T>(step_size * m[i] / (std::sqrt(v[i] / bc2) + cfg_.eps));
        }
      }
    }
  }

  long step_count() const noexcept { return t_; }
  AdamConfig& config() noexcept { return cfg_; }

  void save_state(io::SafeTensorsWriter& w) const {
    for (std::size_t k = 0; k < params_.size(); ++k) {
      w.add(params_[k]->name + ".adam_m", m_[k]);
      w.add(params_[k]->name + ".adam_v", v_[k]);
    }
    w.set_metadata("adam_step", std::to_string(t_));
  }

  /// Restores the moments and the step count; non-finite moments, a negative second moment or a
  /// negative/non-integer step count are errors naming the file (a resumed run would otherwise
  /// learn nothing or produce NaN).
  void load_state(const io::SafeTensorsFile& f) {
    std::vector<Tensor<T>> m(params_.size()), v(params_.size());
    for (std::size_t k = 0; k < params_.size(); ++k) {
      const std::string mk = params_[k]->name + ".adam_m", vk = params_[k]->name + ".adam_v";
      m[k] = f.get_weights<T>(mk, params_[k]->value.shape());
      v[k] = f.get_weights<T>(vk, params_[k]->value.shape());
      for (Index i = 0; i < m[k].numel(); ++i) {
        if (!std::isfinite(static_cast<double>(m[k][i])))
          throw IoError(f.path(), "tensor '" + mk + "' contains NaN or Inf at element " + std::to_string(i));
        if (!std::isfinite(static_cast<double>(v[k][i])) || v[k][i] < 0)
          throw IoError(f.path(), "tensor '" + vk + "' holds an invalid second moment at element " + std::to_string(i) +
                                      " (must be finite and >= 0)");
      }
    }
    const std::string step = f.meta("adam_step", "0");
    long t = 0;
    try {
      std::size_t used = 0;
      t = std::stol(step, &used);
      if (used != step.size()) throw std::invalid_argument("trailing characters");
    } catch (const std::exception&) {
      throw IoError(f.path(), "metadata 'adam_step' is not an integer: '" + step + "'");
    }
    if (t < 0) throw IoError(f.path(), "metadata 'adam_step' is negative (" + step + ")");
    m_ = std::move(m);
    v_ = std::move(v);
    t_ = t;
  }

 private:
  /// The float update of n elements (see step()); chunks of 64 Ki elements run on OpenMP
  /// threads (elementwise, so the thread count does not change the result).
  void update_f32(float* w, const float* g, float* m, float* v, Index n, double step_size,
                  double inv_sqrt_bc2) const {
    const float b1 = static_cast<float>(cfg_.beta1), c1 = static_cast<float>(1.0 - cfg_.beta1);
    const float b2 = static_cast<float>(cfg_.beta2), c2 = static_cast<float>(1.0 - cfg_.beta2);
    const float ss = static_cast<float>(step_size), ib = static_cast<float>(inv_sqrt_bc2);
    const float eps = static_cast<float>(cfg_.eps);
    constexpr Index kChunk = Index(1) << 16;
    const Index chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (Index ch = 0; ch < chunks; ++ch) {
      Index i = ch * kChunk;
      const Index end = std::min(n, i + kChunk);
#if defined(__AVX2__) && defined(__FMA__)
      const __m256 vb1 = _mm256_set1_ps(b1), vc1 = _mm256_set1_ps(c1), vb2 = _mm256_set1_ps(b2),
                   vc2 = _mm256_set1_ps(c2), vss = _mm256_set1_ps(ss), vib = _mm256_set1_ps(ib),
                   veps = _mm256_set1_ps(eps);
      for (; i + 8 <= end; i += 8) {
        const __m256 gi = _mm256_loadu_ps(g + i);
        const __m256 mi = _mm256_fmadd_ps(vb1, _mm256_loadu_ps(m + i), _mm256_mul_ps(vc1, gi));
        const __m256 vi = _mm256_fmadd_ps(vb2, _mm256_loadu_ps(v + i), _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        const __m256 den = _mm256_fmadd_ps(_mm256_sqrt_ps(vi), vib, veps);
        _mm256_storeu_ps(w + i, _mm256_sub_ps(_mm256_loadu_ps(w + i), _mm256_div_ps(_mm256_mul_ps(vss, mi), den)));
      }
#endif
      for (; i < end; ++i) {
        const float gi = g[i];
        const float mi = b1 * m[i] + c1 * gi;
        const float vi = b2 * v[i] + (c2 * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= (ss * mi) / (std::sqrt(vi) * ib + eps);
      }
    }
  }

  nn::ParamList<T> params_;
  AdamConfig cfg_;
  std::vector<Tensor<T>> m_, v_;
  long t_ = 0;
};

}  // namespace blendfuse::train
