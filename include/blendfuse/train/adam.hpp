// blendfuse — Adam optimiser (Kingma & Ba 2015) over named parameters, with state that can be
// checkpointed (moments saved as "<name>.adam_m" / ".adam_v", the step count in metadata).
#pragma once

#include <cmath>
#include <string>
#include <vector>

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
  void step() {
    ++t_;
    const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t_));
    const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t_));
    const double step_size = cfg_.lr / bc1;
    for (std::size_t k = 0; k < params_.size(); ++k) {
      auto& p = *params_[k];
      T* w = p.value.data();
      const T* g = p.grad.data();
      T* m = m_[k].data();
      T* v = v_[k].data();
      const Index n = p.value.numel();
      for (Index i = 0; i < n; ++i) {
        m[i] = static_cast<T>(cfg_.beta1 * m[i] + (1 - cfg_.beta1) * g[i]);
        v[i] = static_cast<T>(cfg_.beta2 * v[i] + (1 - cfg_.beta2) * g[i] * g[i]);
        w[i] -= static_cast<T>(step_size * m[i] / (std::sqrt(v[i] / bc2) + cfg_.eps));
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

  void load_state(const io::SafeTensorsFile& f) {
    for (std::size_t k = 0; k < params_.size(); ++k) {
      m_[k] = f.get<T>(params_[k]->name + ".adam_m", params_[k]->value.shape());
      v_[k] = f.get<T>(params_[k]->name + ".adam_v", params_[k]->value.shape());
    }
    try {
      t_ = std::stol(f.meta("adam_step", "0"));
    } catch (const std::exception&) {
      throw IoError(f.path(), "metadata 'adam_step' is not an integer");
    }
  }

 private:
  nn::ParamList<T> params_;
  AdamConfig cfg_;
  std::vector<Tensor<T>> m_, v_;
  long t_ = 0;
};

}  // namespace blendfuse::train
