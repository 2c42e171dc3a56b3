// blendfuse — trainer for the audio model (nn/audio_model.hpp): Adam on the wav2vec2 transformer
// and the FaceFormer decoder, MSE on per-vertex deformations, teacher forcing with optional
// scheduled sampling, deterministic shuffling, atomic per-epoch checkpoints with exact resume,
// progress bar with ETA on a terminal (never in CI).
//
// Samples carry the frozen conv features already resampled to the sequence's frames (the extractor
// is frozen, so they are computed once per sequence, not once per step).
//
// Scheduled sampling (two-pass, Mihaylova & Martins 2019): in epoch e a fraction
// p_e = scheduled_sampling · min(1, e / (epochs / 2)) of the fed-back frames is replaced by the
// model's own autoregressive prediction (computed without gradient), so the decoder learns to
// recover from its own errors as it must at inference. The loss is always against the truth.
#pragma once

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "blendfuse/data/dataset.hpp"
#include "blendfuse/io/wav.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/train/adam.hpp"
#include "blendfuse/train/checkpoint.hpp"
#include "blendfuse/train/progress.hpp"

namespace blendfuse::train {

struct AudioSample {
  std::string name;
  Index subject = 0;         // style index (training subjects) or -1
  Tensor<float> features;    // (1, T, C) frozen conv features at the frame rate
  Tensor<float> target;      // (1, T, V·3) deformations
  Index frames() const { return target.dim(1); }
};

struct AudioTrainConfig {
  int epochs = 30;
  Index batch = 4;                  // sequences per Adam step (gradients summed)
  double lr = 1e-3;
  std::uint64_t seed = 1;
  double scheduled_sampling = 0.5;  // final fraction of self-fed frames (0: pure teacher forcing)
  std::string checkpoint;           // written atomically after every epoch when non-empty
  bool resume = false;
  bool progress = interactive_terminal();
  double max_seconds = 0;           // > 0: stop after the epoch in which the budget ran out
};

struct AudioEpochStats {
  int epoch = 0;
  double train_mse = 0;  // teacher-forced (with scheduled sampling), mm²
  double val_mse = 0;    // autoregressive on the validation sequences, mm² (0 without any)
  double sampling = 0;   // scheduled-sampling fraction used
  double seconds = 0;
};

/// Loads the speech sequences of `subjects`' splits that have a .wav and turns them into samples.
/// `style_of` maps a subject to its style index (-1 allowed for held-out subjects).
inline std::vector<AudioSample> load_audio_samples(const nn::AudioModel<float>& model, const data::Dataset& ds,
                                                   data::Split split,
                                                   const std::function<Index(const std::string&)>& style_of) {
  std::vector<AudioSample> out;
  for (const auto* q : ds.sequences(data::Domain::Speech, split)) {
    if (q->wav_path.empty()) continue;
    const io::Audio a = io::load_wav(q->wav_path);
    const Index Tn = q->num_frames();
    AudioSample s;
    s.name = q->name;
    s.subject = style_of(q->subject);
    const Tensor<float> audio = Tensor<float>::from({1, static_cast<Index>(a.samples.size())}, a.samples);
    if (audio.dim(1) < model.config().w2v.min_samples())
      throw IoError(q->wav_path, "audio too short (" + std::to_string(audio.dim(1)) + " samples at 16 kHz)");
    s.features = model.frame_features(audio, Tn);
    s.target = q->deformations.reshape({1, Tn, ds.num_vertices() * 3}).clone();
    out.push_back(std::move(s));
  }
  return out;
}

class AudioTrainer {
 public:
  AudioTrainer(nn::AudioModel<float>& model, AudioTrainConfig cfg)
      : model_(model), cfg_(std::move(cfg)), opt_(model.trainable_parameters(), AdamConfig{cfg_.lr}) {
    BF_CHECK(cfg_.batch >= 1, ArgumentError, "AudioTrainer: batch must be at least 1");
    BF_CHECK(cfg_.epochs >= 0, ArgumentError, "AudioTrainer: epochs must be >= 0");
    BF_CHECK(cfg_.scheduled_sampling >= 0 && cfg_.scheduled_sampling <= 1, ArgumentError,
             "AudioTrainer: scheduled_sampling must be in [0, 1]");
  }

  std::vector<AudioEpochStats> fit(const std::vector<AudioSample>& train, const std::vector<AudioSample>& val,
                                   const std::function<void(const AudioEpochStats&)>& on_epoch = {}) {
    BF_CHECK(!train.empty(), ArgumentError, "AudioTrainer: no training sequences with audio");
    for (const auto& s : train)
      BF_CHECK(s.subject >= 0 && s.subject < model_.config().decoder.n_subjects, ArgumentError,
               "AudioTrainer: training sequence ", s.name, " has no style index");
    if (cfg_.resume && !cfg_.checkpoint.empty() && std::filesystem::exists(cfg_.checkpoint)) load_checkpoint();
    const Index n = static_cast<Index>(train.size());
    const Index steps = (n + cfg_.batch - 1) / cfg_.batch;
    std::vector<AudioEpochStats> out;
    Progress bar("train-audio", static_cast<long>(std::max(0, cfg_.epochs - epoch_) * steps), cfg_.progress);
    long done = 0;
    const auto start = Progress::now();
    auto params = model_.trainable_parameters();
    for (; epoch_ < cfg_.epochs; ++epoch_) {
      const auto t0 = Progress::now();
      Rng rng(cfg_.seed * 1000003ULL + static_cast<std::uint64_t>(epoch_) + 17);
      std::vector<Index> order(static_cast<std::size_t>(n));
      std::iota(order.begin(), order.end(), Index{0});
      for (Index i = n - 1; i > 0; --i) std::swap(order[static_cast<std::size_t>(i)], order[rng.below(static_cast<std::uint64_t>(i + 1))]);
      AudioEpochStats st;
      st.epoch = epoch_ + 1;
      const double half = std::max(1.0, cfg_.epochs / 2.0);
      st.sampling = cfg_.scheduled_sampling * std::min(1.0, static_cast<double>(epoch_) / half);
      double sum = 0;
      Index frames = 0;
      for (Index s = 0; s < steps; ++s) {
        nn::zero_grads(params);
        Index batch_frames = 0;
        for (Index b = s * cfg_.batch; b < std::min(n, (s + 1) * cfg_.batch); ++b)
          batch_frames += train[static_cast<std::size_t>(order[static_cast<std::size_t>(b)])].frames();
        for (Index b = s * cfg_.batch; b < std::min(n, (s + 1) * cfg_.batch); ++b) {
          const AudioSample& x = train[static_cast<std::size_t>(order[static_cast<std::size_t>(b)])];
          sum += step_sample(x, st.sampling, rng, batch_frames);
          frames += x.frames();
        }
        opt_.step();
        bar.update(++done, "mse " + fmt(sum / static_cast<double>(std::max<Index>(frames, 1))));
      }
      st.train_mse = sum / static_cast<double>(std::max<Index>(frames, 1));
      st.val_mse = validate(val);
      st.seconds = Progress::seconds_since(t0);
      if (!cfg_.checkpoint.empty())  // records the epochs completed, this one included
        train::save_checkpoint(cfg_.checkpoint, model_, opt_, epoch_ + 1, cfg_.seed);
      out.push_back(st);
      if (on_epoch) on_epoch(st);
      if (cfg_.max_seconds > 0 && Progress::seconds_since(start) > cfg_.max_seconds) {
        ++epoch_;
        break;
      }
    }
    bar.finish();
    return out;
  }

  /// Mean autoregressive MSE per element (mm²) over `val` (style 0 for held-out subjects).
  double validate(const std::vector<AudioSample>& val) const {
    double sum = 0;
    Index count = 0;
    for (const auto& x : val) {
      const Tensor<float> p = model_.predict_features(x.features, std::max<Index>(0, x.subject));
      for (Index i = 0; i < p.numel(); ++i) {
        const double d = static_cast<double>(p[i]) - static_cast<double>(x.target[i]);
        sum += d * d;
      }
      count += p.numel();
    }
    return count ? sum / static_cast<double>(count) : 0.0;
  }

  int epochs_done() const { return epoch_; }

  void load_checkpoint() { epoch_ = train::load_checkpoint(cfg_.checkpoint, model_, opt_); }

 private:
  /// One sequence: forward, MSE (normalised by the batch's element count), backward. Returns the
  /// sequence's summed squared error per vertex coordinate (mm² · frames).
  double step_sample(const AudioSample& x, double sampling, Rng& rng, Index batch_frames) {
    const Index Tn = x.frames(), V3 = x.target.dim(2);
    Tensor<float> inputs = x.target;
    if (sampling > 0) {
      const Tensor<float> pred = model_.predict_features(x.features, x.subject);
      inputs = x.target.clone();
      for (Index t = 0; t < Tn; ++t)
        if (rng.uniform() < sampling) std::copy_n(pred.data() + t * V3, V3, inputs.data() + t * V3);
    }
    nn::AudioModel<float>::Context ctx;
    const Tensor<float> out = model_.forward(x.features, inputs, x.subject, &ctx);
    Tensor<float> dout(out.shape());
    const double norm = 1.0 / static_cast<double>(batch_frames * V3);
    double sq = 0;
    for (Index i = 0; i < out.numel(); ++i) {
      const double d = static_cast<double>(out[i]) - static_cast<double>(x.target[i]);
      sq += d * d;
      dout[i] = static_cast<float>(2.0 * d * norm);
    }
    model_.backward(ctx, dout);
    return sq / static_cast<double>(V3);
  }

  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4g", v);
    return b;
  }

  nn::AudioModel<float>& model_;
  AudioTrainConfig cfg_;
  Adam<float> opt_;
  int epoch_ = 0;
};

}  // namespace blendfuse::train
