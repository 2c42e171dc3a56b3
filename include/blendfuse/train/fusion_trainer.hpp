// blendfuse — trainer for the deformation fusion module: Adam, mini-batches mixing both domains,
// deterministic shuffling, validation loss, atomic checkpoints and exact resume at epoch
// boundaries, progress with ETA on a terminal.
//
// Data are in-memory frame pools of deformations (N, V, 3) per domain (speech = VOCAset-like,
// expression = Florence4D-like). An epoch is ceil(max(N_a, N_e) / (batch/2)) steps; each step
// draws batch/2 frames of each domain (the smaller pool is cycled), runs both encoders, and makes
// one Adam update. The shuffle of epoch e is seeded by (seed, e), so a run resumed from the
// checkpoint written after epoch e continues exactly as the uninterrupted run would.
//
// Backends: FusionTrainer<B> trains a DeformationFusionModule<float, B> on any host backend (Cpu,
// the reference and the default, or OneDnn). The frame pools, the vertex weights and the module's
// parameters stay host tensors (viewed as Tensor<float, B>, no copy), so the optimiser state and
// the checkpoints are the same whichever backend trained: a run may resume on another backend.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/train/adam.hpp"
#include "blendfuse/train/checkpoint.hpp"
#include "blendfuse/train/progress.hpp"

namespace blendfuse::train {

struct FusionTrainConfig {
  int epochs = 10;
  Index batch = 32;         // frames per step, half from each domain
  double lr = 3e-4;         // paper: 3e-4
  std::uint64_t seed = 1;
  std::string checkpoint;   // written atomically after every epoch when non-empty
  bool resume = false;      // continue from `checkpoint` if it exists
  bool progress = interactive_terminal();
  double max_seconds = 0;   // > 0: stop after the epoch during which this budget ran out
};

struct EpochStats {
  int epoch = 0;
  nn::DfmLosses train;      // mean over steps (both domains summed)
  nn::DfmLosses val;        // on the validation pools (empty pools → zeros)
  double seconds = 0;
};

/// The frames pool[idx] as a new (len(idx), V, 3) tensor.
inline Tensor<float> gather_frames(const Tensor<float>& pool, const std::vector<Index>& idx) {
  const Index V = pool.dim(1);
  Tensor<float> out({static_cast<Index>(idx.size()), V, 3});
  for (std::size_t i = 0; i < idx.size(); ++i)
    std::copy(pool.data() + idx[i] * V * 3, pool.data() + (idx[i] + 1) * V * 3, out.data() + static_cast<Index>(i) * V * 3);
  return out;
}

template <class B = Cpu>
class FusionTrainer {
 public:
  FusionTrainer(nn::DeformationFusionModule<float, B>& model, FusionTrainConfig cfg)
      : model_(model), cfg_(std::move(cfg)), opt_(model.parameters(), AdamConfig{cfg_.lr}) {
    BF_CHECK(cfg_.batch >= 2, ArgumentError, "FusionTrainer: batch must be at least 2");
    BF_CHECK(cfg_.epochs >= 0, ArgumentError, "FusionTrainer: epochs must be >= 0");
    BF_CHECK(std::isfinite(cfg_.lr) && cfg_.lr > 0, ArgumentError, "FusionTrainer: lr must be finite and > 0, got ", cfg_.lr);
    BF_CHECK(std::isfinite(cfg_.max_seconds) && cfg_.max_seconds >= 0, ArgumentError,
             "FusionTrainer: max_seconds must be finite and >= 0, got ", cfg_.max_seconds);
  }

  /// Trains on the pools; returns one EpochStats per epoch run in this call.
  std::vector<EpochStats> fit(const Tensor<float>& speech, const Tensor<float>& expression,
                              const Tensor<float>& speech_val, const Tensor<float>& expression_val,
                              const Tensor<float>& vertex_weights,
                              const std::function<void(const EpochStats&)>& on_epoch = {}) {
    const Index V = model_.vertices();
    check_shape(speech, {-1, V, 3}, "FusionTrainer: speech frames");
    check_shape(expression, {-1, V, 3}, "FusionTrainer: expression frames");
    BF_CHECK(speech.dim(0) > 0 && expression.dim(0) > 0, ArgumentError,
             "FusionTrainer: both domains need training frames (speech ", speech.dim(0),
             ", expression ", expression.dim(0), ")");
    if (cfg_.resume && !cfg_.checkpoint.empty() && std::filesystem::exists(cfg_.checkpoint)) {
      load_checkpoint();
      check_resume_epochs(cfg_.checkpoint, epoch_, cfg_.epochs);
    }

    const Index half = cfg_.batch / 2;
    const Index steps = (std::max(speech.dim(0), expression.dim(0)) + half - 1) / half;
    std::vector<EpochStats> out;
    Progress bar("train-fusion", static_cast<long>((cfg_.epochs - epoch_) * steps), cfg_.progress);
    long done = 0;
    const Progress::TimePoint start = Progress::now();
    for (; epoch_ < cfg_.epochs; ++epoch_) {
      const auto t0 = Progress::now();
      Rng rng(cfg_.seed * 1000003ULL + static_cast<std::uint64_t>(epoch_));
      const auto order_a = permutation(speech.dim(0), rng);
      const auto order_e = permutation(expression.dim(0), rng);
      EpochStats st;
      st.epoch = epoch_ + 1;
      for (Index s = 0; s < steps; ++s) {
        const auto ia = window(order_a, s * half, half);
        const auto ie = window(order_e, s * half, half);
        nn::zero_grads(model_.parameters());
        const nn::DfmLosses la = model_.train_batch(nn::Domain::Speech, on_b(gather_frames(speech, ia)), on_b(vertex_weights));
        const nn::DfmLosses le = model_.train_batch(nn::Domain::Expression, on_b(gather_frames(expression, ie)), on_b(vertex_weights));
        st.train += la;
        st.train += le;
        opt_.step();
        check_finite_step("train-fusion", la.total + le.total, model_.parameters(), epoch_, static_cast<long>(s + 1));
        bar.update(++done, "loss " + fmt(st.train.total / static_cast<double>(s + 1)));
      }
      scale(st.train, 1.0 / static_cast<double>(steps));
      st.val = validate(speech_val, expression_val, vertex_weights);
      st.seconds = Progress::seconds_since(t0);
      if (train::finish_epoch(cfg_, model_, opt_, epoch_, st, out, on_epoch, Progress::seconds_since(start))) {
        ++epoch_;
        break;
      }
    }
    bar.finish();
    return out;
  }

  /// Mean loss terms over the validation pools (batches of `batch` frames).
  nn::DfmLosses validate(const Tensor<float>& speech_val, const Tensor<float>& expression_val,
                         const Tensor<float>& vertex_weights) const {
    nn::DfmLosses total;
    for (nn::Domain d : {nn::Domain::Speech, nn::Domain::Expression}) {
      const Tensor<float>& pool = d == nn::Domain::Speech ? speech_val : expression_val;
      if (pool.empty()) continue;
      nn::DfmLosses acc;
      Index n = 0;
      for (Index s = 0; s < pool.dim(0); s += cfg_.batch) {
        const Index e = std::min(pool.dim(0), s + cfg_.batch);
        nn::DfmLosses l = model_.evaluate_batch(d, on_b(pool.slice(0, s, e).clone()), on_b(vertex_weights));
        scale(l, static_cast<double>(e - s));
        acc += l;
        n += e - s;
      }
      scale(acc, 1.0 / static_cast<double>(n));
      total += acc;
    }
    return total;
  }

  int epochs_done() const { return epoch_; }
  long steps_done() const { return opt_.step_count(); }

  void load_checkpoint() { epoch_ = train::load_checkpoint(cfg_.checkpoint, model_, opt_); }

 private:
  /// A host tensor as the backend's (same memory; identity on Cpu).
  static Tensor<float, B> on_b(const Tensor<float>& t) { return nn::detail::host_view<B>(t); }
  static std::vector<Index> permutation(Index n, Rng& rng) {
    std::vector<Index> p(static_cast<std::size_t>(n));
    std::iota(p.begin(), p.end(), Index{0});
    for (Index i = n - 1; i > 0; --i) std::swap(p[static_cast<std::size_t>(i)], p[rng.below(static_cast<std::uint64_t>(i + 1))]);
    return p;
  }
  /// `len` entries of `order` from `start`, cycling.
  static std::vector<Index> window(const std::vector<Index>& order, Index start, Index len) {
    std::vector<Index> out(static_cast<std::size_t>(len));
    const Index n = static_cast<Index>(order.size());
    for (Index i = 0; i < len; ++i) out[static_cast<std::size_t>(i)] = order[static_cast<std::size_t>((start + i) % n)];
    return out;
  }
  static void scale(nn::DfmLosses& l, double s) {
    l.rec *= s; l.sparsity *= s; l.laplace *= s; l.reg *= s; l.usage *= s; l.overlap *= s; l.total *= s;
  }
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4g", v);
    return b;
  }

  nn::DeformationFusionModule<float, B>& model_;
  FusionTrainConfig cfg_;
  Adam<float> opt_;
  int epoch_ = 0;
};

}  // namespace blendfuse::train
