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
// (`sampling_ramp` sets the fraction of the epochs over which p_e grows; 0.5 above.)
//
// Loss per sequence (audio_sequence_loss, all terms off by default = plain MSE):
//   (1/(T·V·3)) Σ_t Σ_k ω_k ‖x̂_tk − x_tk‖²           ω_k = 1 + lip_weight on the lip vertices
//   + gap_weight · loss::pair_difference_mse           on the upper/lower lip pairs (lip opening;
//                                                      pair_difference_huber with gap_delta > 0)
//   + velocity_weight · loss::velocity_mse             frame-to-frame differences
// each normalised per frame of the Adam step's batch. Optional augmentation (off by default): a
// random speed change (features and target resampled together) and random per-channel gains of
// the frozen conv features, drawn per sequence and epoch. The learning rate is constant, or with
// lr_final < lr follows a cosine from lr (epoch 0) to lr_final (last epoch).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "blendfuse/data/dataset.hpp"
#include "blendfuse/io/wav.hpp"
#include "blendfuse/loss/losses.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/ops/interp.hpp"
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
  double sampling_ramp = 0.5;       // fraction of the epochs over which that fraction grows from 0
  double lr_final = -1;             // < 0: constant lr; else cosine decay from lr to lr_final
  double lip_weight = 0;            // extra MSE weight of the lip vertices (ω = 1 + lip_weight)
  double gap_weight = 0;            // weight of the lip-gap loss on lip_pairs
  double gap_delta = 0;             // > 0: pseudo-Huber lip-gap loss with this δ (mm); 0: squared
  double velocity_weight = 0;       // weight of the velocity (temporal difference) loss
  double augment_speed = 0;         // > 0: random speed change 1 ± this per sequence and epoch
  double augment_gain = 0;          // > 0: random per-channel feature gains exp(this · N(0, 1))
  std::vector<std::int32_t> lip_vertices;                // for lip_weight
  std::vector<std::array<std::int32_t, 2>> lip_pairs;    // (upper, lower) lip vertices, for gap_weight
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

/// Longest speech audio accepted for training and evaluation (the offline encoder holds the whole
/// clip; dataset sentences are a few seconds).
inline constexpr double kMaxSequenceAudioSeconds = 120.0;

/// Loads the .wav of speech sequence `q` at 16 kHz and checks that it belongs to the sequence:
/// at least `min_samples` samples (one frame of the audio encoder), at most
/// kMaxSequenceAudioSeconds, and a duration within 0.5 s + 10 % of the sequence's T frames at
/// `fps`. Errors are IoError naming the .wav (and the .npy it was paired with).
inline io::Audio load_sequence_audio(const data::Sequence& q, double fps, Index min_samples) {
  io::Audio a = io::load_wav(q.wav_path);
  const double secs = a.duration();
  char buf[64];
  auto s2 = [&](double v) { std::snprintf(buf, sizeof buf, "%.3g s", v); return std::string(buf); };
  if (static_cast<Index>(a.samples.size()) < min_samples)
    throw IoError(q.wav_path, "audio too short: " + std::to_string(a.samples.size()) + " samples (" + s2(secs) +
                                  ") at 16 kHz, the audio encoder needs at least " + std::to_string(min_samples));
  if (secs > kMaxSequenceAudioSeconds)
    throw IoError(q.wav_path, "audio is " + s2(secs) + " long; training and evaluation take sequences of at most " +
                                  s2(kMaxSequenceAudioSeconds) + " (split it)");
  const double seq = static_cast<double>(q.num_frames()) / fps;
  if (std::abs(secs - seq) > 0.5 + 0.1 * std::max(secs, seq))
    throw IoError(q.wav_path, "audio is " + s2(secs) + " long but its sequence " + q.path + " has " +
                                  std::to_string(q.num_frames()) + " frames (" + s2(seq) + " at " +
                                  blendfuse::detail::concat(fps) + " fps): they do not belong together");
  return a;
}

/// Loads the speech sequences of `subjects`' splits that have a .wav and turns them into samples.
/// `style_of` maps a subject to its style index (-1 allowed for held-out subjects).
///
/// Speed perturbation (Ko et al. 2015; Kaldi's 0.9/1.1 copies): for every factor f in `speeds`
/// each sequence also gives a sample "<name>@speed<f>" whose audio is played f times faster
/// (resampled from 16000·f Hz to 16 kHz, so tempo, pitch and formants all scale by f, much as
/// with another speaker) and whose target is resampled in time to round(T / f) frames.
template <class Backend = Cpu>
std::vector<AudioSample> load_audio_samples(const nn::AudioModel<float, Backend>& model, const data::Dataset& ds,
                                                   data::Split split,
                                                   const std::function<Index(const std::string&)>& style_of,
                                                   const std::vector<double>& speeds = {}) {
  for (double f : speeds)
    BF_CHECK(f >= 0.5 && f <= 2.0 && std::isfinite(f), ArgumentError, "load_audio_samples: speed factor ", f,
             " not in [0.5, 2]");
  std::vector<AudioSample> out;
  for (const auto* q : ds.sequences(data::Domain::Speech, split)) {
    if (q->wav_path.empty()) continue;
    const io::Audio a = load_sequence_audio(*q, model.config().fps, model.config().w2v.min_samples());
    const Index Tn = q->num_frames();
    AudioSample s;
    s.name = q->name;
    s.subject = style_of(q->subject);
    const Tensor<float> audio = Tensor<float>::from({1, static_cast<Index>(a.samples.size())}, a.samples);
    s.features = model.frame_features(audio, Tn);
    s.target = q->deformations.reshape({1, Tn, ds.num_vertices() * 3}).clone();
    for (double f : speeds) {
      const int rate = static_cast<int>(std::lround(io::kSpeechSampleRate * f));
      const std::vector<float> fast = io::resample(a.samples, rate, io::kSpeechSampleRate);
      if (static_cast<Index>(fast.size()) < model.config().w2v.min_samples()) continue;
      const Index Tf = std::max<Index>(1, static_cast<Index>(std::llround(static_cast<double>(Tn) / f)));
      AudioSample p;
      char tag[32];
      std::snprintf(tag, sizeof tag, "@speed%g", f);
      p.name = s.name + tag;
      p.subject = s.subject;
      p.features = model.frame_features(Tensor<float>::from({1, static_cast<Index>(fast.size())}, fast), Tf);
      p.target = ops::interp_linear_ntc(s.target, Tf);
      out.push_back(std::move(p));
    }
    out.push_back(std::move(s));
  }
  return out;
}

/// The loss terms of audio_sequence_loss besides the MSE.
struct AudioLossTerms {
  std::vector<double> vertex_weights;                   // (V) MSE weights ω_k; empty: all 1
  std::vector<std::array<std::int32_t, 2>> pairs;       // lip pairs of the gap loss
  double gap_weight = 0, gap_delta = 0, velocity_weight = 0;  // gap_delta > 0: pseudo-Huber gap loss
};

/// Loss of one sequence, out/target (1, T, V·3), normalised by the `batch_frames` frames of the
/// Adam step: (1/(batch_frames·V·3)) Σ_t Σ_k ω_k ‖out_tk − target_tk‖² + (T/batch_frames) ·
/// (gap_weight · pair_difference_mse + velocity_weight · velocity_mse). With no extra terms the
/// value and gradient are those of the plain MSE, bit for bit.
template <class T>
loss::LossGrad<T> audio_sequence_loss(const Tensor<T>& out, const Tensor<T>& target, const AudioLossTerms& terms,
                                      Index batch_frames) {
  BF_CHECK(out.shape() == target.shape() && out.ndim() == 3 && out.dim(0) == 1, ShapeError,
           "audio_sequence_loss: output ", out.shape_string(), " vs target ", target.shape_string());
  const Index Tn = out.dim(1), V3 = out.dim(2);
  BF_CHECK(terms.vertex_weights.empty() || static_cast<Index>(terms.vertex_weights.size()) * 3 == V3, ShapeError,
           "audio_sequence_loss: ", terms.vertex_weights.size(), " vertex weights for ", V3 / 3, " vertices");
  loss::LossGrad<T> r{0, Tensor<T>(out.shape())};
  const double norm = 1.0 / static_cast<double>(batch_frames * V3);
  for (Index i = 0; i < out.numel(); ++i) {
    const double d = static_cast<double>(out[i]) - static_cast<double>(target[i]);
    const double w = terms.vertex_weights.empty() ? 1.0 : terms.vertex_weights[static_cast<std::size_t>((i % V3) / 3)];
    r.value += w * d * d * norm;
    r.grad[i] = static_cast<T>(2.0 * w * d * norm);
  }
  const double per_frame = static_cast<double>(Tn) / static_cast<double>(batch_frames);
  if (terms.gap_weight > 0) {
    const auto g = terms.gap_delta > 0 ? loss::pair_difference_huber(out, target, terms.pairs, terms.gap_delta)
                                       : loss::pair_difference_mse(out, target, terms.pairs);
    r.value += terms.gap_weight * per_frame * g.value;
    for (Index i = 0; i < out.numel(); ++i) r.grad[i] += static_cast<T>(terms.gap_weight * per_frame * g.grad[i]);
  }
  if (terms.velocity_weight > 0) {
    const auto g = loss::velocity_mse(out, target);
    r.value += terms.velocity_weight * per_frame * g.value;
    for (Index i = 0; i < out.numel(); ++i) r.grad[i] += static_cast<T>(terms.velocity_weight * per_frame * g.grad[i]);
  }
  return r;
}

/// Backend: the host backend the wav2vec 2.0 encoder trains on (Cpu = reference, OneDnn); the
/// model's parameters, the optimiser state and the checkpoints are host tensors either way, so a
/// checkpoint written on one backend resumes on another.
template <class Backend = Cpu>
class AudioTrainer {
 public:
  using Model = nn::AudioModel<float, Backend>;

  AudioTrainer(nn::AudioModel<float, Backend>& model, AudioTrainConfig cfg)
      : model_(model), cfg_(std::move(cfg)), opt_(model.trainable_parameters(), AdamConfig{cfg_.lr}) {
    BF_CHECK(cfg_.batch >= 1, ArgumentError, "AudioTrainer: batch must be at least 1");
    BF_CHECK(cfg_.epochs >= 0, ArgumentError, "AudioTrainer: epochs must be >= 0");
    BF_CHECK(std::isfinite(cfg_.lr) && cfg_.lr > 0, ArgumentError, "AudioTrainer: lr must be finite and > 0, got ", cfg_.lr);
    BF_CHECK(std::isfinite(cfg_.lr_final), ArgumentError,
             "AudioTrainer: lr_final must be finite, got ", cfg_.lr_final);
    BF_CHECK(std::isfinite(cfg_.max_seconds) && cfg_.max_seconds >= 0, ArgumentError,
             "AudioTrainer: max_seconds must be finite and >= 0, got ", cfg_.max_seconds);
    for (double w : {cfg_.lip_weight, cfg_.gap_weight, cfg_.gap_delta, cfg_.velocity_weight, cfg_.augment_speed,
                     cfg_.augment_gain, cfg_.scheduled_sampling, cfg_.sampling_ramp})
      BF_CHECK(std::isfinite(w), ArgumentError, "AudioTrainer: loss weights and schedule values must be finite, got ", w);
    BF_CHECK(cfg_.scheduled_sampling >= 0 && cfg_.scheduled_sampling <= 1, ArgumentError,
             "AudioTrainer: scheduled_sampling must be in [0, 1]");
    BF_CHECK(cfg_.sampling_ramp >= 0 && cfg_.sampling_ramp <= 1, ArgumentError,
             "AudioTrainer: sampling_ramp must be in [0, 1]");
    BF_CHECK(cfg_.augment_speed >= 0 && cfg_.augment_speed < 0.5 && cfg_.augment_gain >= 0, ArgumentError,
             "AudioTrainer: augment_speed must be in [0, 0.5) and augment_gain >= 0");
    BF_CHECK(cfg_.lip_weight >= 0 && cfg_.gap_weight >= 0 && cfg_.gap_delta >= 0 && cfg_.velocity_weight >= 0, ArgumentError,
             "AudioTrainer: loss weights must be >= 0");
    BF_CHECK(cfg_.lip_weight == 0 || !cfg_.lip_vertices.empty(), ArgumentError,
             "AudioTrainer: lip_weight needs the lip vertices");
    BF_CHECK(cfg_.gap_weight == 0 || !cfg_.lip_pairs.empty(), ArgumentError,
             "AudioTrainer: gap_weight needs the upper/lower lip vertex pairs");
    const Index V = model_.vertices();
    if (cfg_.lip_weight > 0) {
      terms_.vertex_weights.assign(static_cast<std::size_t>(V), 1.0);
      for (auto k : cfg_.lip_vertices) {
        BF_CHECK(k >= 0 && k < V, ArgumentError, "AudioTrainer: lip vertex ", k, " out of range for ", V, " vertices");
        terms_.vertex_weights[static_cast<std::size_t>(k)] = 1.0 + cfg_.lip_weight;
      }
    }
    for (const auto& p : cfg_.lip_pairs)
      BF_CHECK(p[0] >= 0 && p[0] < V && p[1] >= 0 && p[1] < V, ArgumentError, "AudioTrainer: lip pair (", p[0], ", ",
               p[1], ") out of range for ", V, " vertices");
    terms_.pairs = cfg_.lip_pairs;
    terms_.gap_weight = cfg_.gap_weight;
    terms_.gap_delta = cfg_.gap_delta;
    terms_.velocity_weight = cfg_.velocity_weight;
  }

  /// Learning rate of epoch e (0-based): constant, or cosine from lr to lr_final.
  double lr_at(int e) const {
    if (cfg_.lr_final < 0 || cfg_.epochs <= 1) return cfg_.lr;
    const double u = static_cast<double>(e) / static_cast<double>(cfg_.epochs - 1);
    return cfg_.lr_final + 0.5 * (cfg_.lr - cfg_.lr_final) * (1.0 + std::cos(3.14159265358979323846 * std::min(1.0, u)));
  }

  std::vector<AudioEpochStats> fit(const std::vector<AudioSample>& train, const std::vector<AudioSample>& val,
                                   const std::function<void(const AudioEpochStats&)>& on_epoch = {}) {
    BF_CHECK(!train.empty(), ArgumentError, "AudioTrainer: no training sequences with audio");
    for (const auto& s : train)
      BF_CHECK(s.subject >= 0 && s.subject < model_.config().decoder.n_subjects, ArgumentError,
               "AudioTrainer: training sequence ", s.name, " has no style index");
    if (cfg_.resume && !cfg_.checkpoint.empty() && std::filesystem::exists(cfg_.checkpoint)) {
      load_checkpoint();
      check_resume_epochs(cfg_.checkpoint, epoch_, cfg_.epochs);
    }
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
      const double ramp = std::max(1.0, cfg_.epochs * cfg_.sampling_ramp);
      st.sampling = cfg_.scheduled_sampling * std::min(1.0, static_cast<double>(epoch_) / ramp);
      opt_.config().lr = lr_at(epoch_);
      double sum = 0;
      Index frames = 0;
      for (Index s = 0; s < steps; ++s) {
        nn::zero_grads(params);
        Index batch_frames = 0;
        for (Index b = s * cfg_.batch; b < std::min(n, (s + 1) * cfg_.batch); ++b)
          batch_frames += train[static_cast<std::size_t>(order[static_cast<std::size_t>(b)])].frames();
        double step_loss = 0;
        for (Index b = s * cfg_.batch; b < std::min(n, (s + 1) * cfg_.batch); ++b) {
          const AudioSample& x = train[static_cast<std::size_t>(order[static_cast<std::size_t>(b)])];
          const double l = step_sample(x, st.sampling, rng, batch_frames);
          step_loss += l;
          sum += l;
          frames += x.frames();
        }
        opt_.step();
        check_finite_step("train-audio", step_loss, params, epoch_, static_cast<long>(s + 1));
        bar.update(++done, "mse " + fmt(sum / static_cast<double>(std::max<Index>(frames, 1))));
      }
      st.train_mse = sum / static_cast<double>(std::max<Index>(frames, 1));
      st.val_mse = validate(val);
      st.seconds = Progress::seconds_since(t0);
      if (train::finish_epoch(cfg_, model_, opt_, epoch_, st, out, on_epoch, Progress::seconds_since(start))) {
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
  /// One sequence: forward, loss (normalised by the batch's frame count), backward. Returns the
  /// sequence's summed squared error per vertex coordinate (mm² · frames).
  double step_sample(const AudioSample& orig, double sampling, Rng& rng, Index batch_frames) {
    AudioSample augmented;
    if (cfg_.augment_speed > 0 || cfg_.augment_gain > 0) augmented = augment(orig, rng);
    const AudioSample& x = cfg_.augment_speed > 0 || cfg_.augment_gain > 0 ? augmented : orig;
    const Index Tn = x.frames(), V3 = x.target.dim(2);
    Tensor<float> inputs = x.target;
    if (sampling > 0) {
      const Tensor<float> pred = model_.predict_features(x.features, x.subject);
      inputs = x.target.clone();
      for (Index t = 0; t < Tn; ++t)
        if (rng.uniform() < sampling) std::copy_n(pred.data() + t * V3, V3, inputs.data() + t * V3);
    }
    typename Model::Context ctx;
    const Tensor<float> out = model_.forward(x.features, inputs, x.subject, &ctx);
    double sq = 0;
    for (Index i = 0; i < out.numel(); ++i) {
      const double d = static_cast<double>(out[i]) - static_cast<double>(x.target[i]);
      sq += d * d;
    }
    model_.backward(ctx, audio_sequence_loss(out, x.target, terms_, batch_frames).grad);
    return sq / static_cast<double>(V3) * static_cast<double>(orig.frames()) / static_cast<double>(Tn);
  }

  /// Augmentation of one training sequence (drawn from the epoch's rng): speed s = 1 ± augment_speed
  /// (uniform) resamples features and target together to round(T / s) frames (linear, as the
  /// 50 Hz → fps resampling); per-channel feature gains exp(augment_gain · N(0, 1)).
  AudioSample augment(const AudioSample& x, Rng& rng) const {
    AudioSample a;
    a.name = x.name;
    a.subject = x.subject;
    a.features = x.features;
    a.target = x.target;
    if (cfg_.augment_speed > 0) {
      const double speed = 1.0 + cfg_.augment_speed * (2.0 * rng.uniform() - 1.0);
      const Index Tn = std::max<Index>(2, static_cast<Index>(std::llround(static_cast<double>(x.frames()) / speed)));
      a.features = ops::interp_linear_ntc(x.features, Tn);
      a.target = ops::interp_linear_ntc(x.target, Tn);
    }
    if (cfg_.augment_gain > 0) {
      const Index C = a.features.dim(2), Tn = a.features.dim(1);
      std::vector<float> g(static_cast<std::size_t>(C));
      for (auto& v : g) v = static_cast<float>(std::exp(cfg_.augment_gain * rng.normal()));
      Tensor<float> f = a.features.clone();
      for (Index t = 0; t < Tn; ++t)
        for (Index c = 0; c < C; ++c) f[t * C + c] *= g[static_cast<std::size_t>(c)];
      a.features = std::move(f);
    }
    return a;
  }

  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.4g", v);
    return b;
  }

  Model& model_;
  AudioTrainConfig cfg_;
  Adam<float> opt_;
  AudioLossTerms terms_;
  int epoch_ = 0;
};

}  // namespace blendfuse::train
