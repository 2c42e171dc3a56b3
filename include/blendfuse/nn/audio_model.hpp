// blendfuse — the audio model: speech audio (16 kHz) → per-vertex deformations (FaceFormer).
//
//   audio (1, L) ─► wav2vec 2.0 conv feature extractor (frozen) ─► features (1, T50, C) at 50 Hz
//     ─► linear resampling in time to the frame rate (ops/interp.hpp, align_corners=True; FaceFormer
//        resamples the conv features BEFORE the feature projection, so the transformer runs at fps)
//     ─► wav2vec 2.0 feature projection + positional conv + transformer ─► hidden (1, T, E)
//     ─► FaceFormer decoder (style = one-hot training subject) ─► deformations (1, T, V·3)
//
// Training (train/audio_trainer.hpp) back-propagates by hand through the decoder and the wav2vec
// transformer; the conv extractor is frozen as in FaceFormer. Pretrained wav2vec 2.0 weights cannot
// be downloaded here, so AudioModelConfig::small() is a small encoder trained from scratch on top of
// a frozen, randomly initialised conv extractor (its seed is part of the model file); see
// docs/audio.md for why that works on our data and what a pretrained export changes.
//
// Offline inference: predict(audio, subject) resamples the features of the whole clip to
// T = round(L · fps / 16000) frames and runs the decoder autoregressively (KV cache).
//
// Streaming (AudioModel::Stream): audio arrives in chunks; output frames are produced in blocks of
// `stream_block` frames. Block [f0, f1) is encoded from a window of conv features that starts
// `stream_left_context` seconds before f0 and ends `stream_lookahead` seconds after frame f1 − 1
// (frame f sits at conv-feature position f · 50 / fps). The encoder's global operations (input
// normalisation, the extractor's GroupNorm, bidirectional self-attention, positional conv) see
// only that window, so the stream's output is a function of the audio alone — independent of how
// it was chunked — and the offline windowed result predict_streaming() is the same computation.
// Latency (audio time between a sample arriving and the frame it belongs to being available, plus
// compute): at most stream_block / fps + stream_lookahead + 400/16000 s (the extractor's receptive
// field); with the defaults 6/30 + 0.3 + 0.025 = 0.525 s.
//
// File: one safetensors file — wav2vec2 tensors under "audio_encoder." (Hugging Face names, as in
// FaceFormer's state_dict), decoder tensors under FaceFormer's names, subject templates
// "templates.<subject>" (V, 3), metadata "config" (this JSON: model_type "blendfuse_audio",
// wav2vec2 and faceformer configs, subjects, fps, stream settings), plus "wav2vec2_config" and
// "faceformer_config".
#pragma once

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/core/rng.hpp"
#include "blendfuse/io/safetensors.hpp"
#include "blendfuse/io/wav.hpp"
#include "blendfuse/nn/faceformer.hpp"
#include "blendfuse/nn/wav2vec2.hpp"
#include "blendfuse/ops/interp.hpp"

namespace blendfuse::nn {

struct AudioModelConfig {
  Wav2Vec2Config w2v;
  FaceFormerConfig decoder;
  std::vector<std::string> subjects;  ///< training subjects, in style-code order
  double fps = 30.0;
  std::uint64_t seed = 1;             ///< initialisation seed (also of the frozen conv extractor)
  double stream_left_context = 2.0;   ///< seconds of audio before a block the encoder sees
  Index stream_block = 6;             ///< frames produced per encoder run
  double stream_lookahead = 0.3;      ///< seconds of audio after a block the encoder waits for

  /// A small configuration trainable from scratch on 2 cores in minutes.
  static AudioModelConfig small(Index vertices, std::vector<std::string> subjects) {
    AudioModelConfig c;
    c.w2v.conv_dim = {128, 128, 128, 128, 128, 128, 128};
    c.w2v.hidden_size = 64;
    c.w2v.num_hidden_layers = 2;
    c.w2v.num_attention_heads = 4;
    c.w2v.intermediate_size = 128;
    c.w2v.num_conv_pos_embeddings = 16;
    c.w2v.num_conv_pos_embedding_groups = 4;
    c.decoder.vertices = vertices;
    c.decoder.feature_dim = 64;
    c.decoder.num_heads = 4;
    c.decoder.dim_feedforward = 128;
    c.decoder.period = 30;
    c.decoder.n_subjects = static_cast<Index>(subjects.size());
    c.decoder.audio_dim = c.w2v.hidden_size;
    c.subjects = std::move(subjects);
    return c;
  }

  /// Conv-feature frame rate (16 kHz / total conv stride: 50 Hz for wav2vec 2.0).
  double feature_rate() const {
    Index s = 1;
    for (Index k : w2v.conv_stride) s *= k;
    return static_cast<double>(io::kSpeechSampleRate) / static_cast<double>(s);
  }
  Index total_stride() const {
    Index s = 1;
    for (Index k : w2v.conv_stride) s *= k;
    return s;
  }

  void validate() const {
    w2v.validate();
    decoder.validate();
    BF_CHECK(decoder.audio_dim == w2v.hidden_size, ArgumentError, "AudioModelConfig: decoder audio_dim ",
             decoder.audio_dim, " must equal the wav2vec2 hidden_size ", w2v.hidden_size);
    BF_CHECK(static_cast<Index>(subjects.size()) == decoder.n_subjects, ArgumentError,
             "AudioModelConfig: ", subjects.size(), " subject names for n_subjects = ", decoder.n_subjects);
    BF_CHECK(fps > 0 && std::isfinite(fps), ArgumentError, "AudioModelConfig: fps must be positive");
    BF_CHECK(stream_block >= 1 && stream_left_context >= 0 && stream_lookahead >= 0, ArgumentError,
             "AudioModelConfig: stream_block >= 1, stream_left_context >= 0 and stream_lookahead >= 0");
  }

  nlohmann::json to_json() const {
    return {{"model_type", "blendfuse_audio"}, {"wav2vec2", w2v.to_json()}, {"faceformer", decoder.to_json()},
            {"subjects", subjects}, {"fps", fps}, {"seed", seed},
            {"stream_left_context", stream_left_context}, {"stream_block", stream_block},
            {"stream_lookahead", stream_lookahead}};
  }

  /// Reads a config (keys as to_json; a partial object overrides small()'s sizes: "wav2vec2" and
  /// "faceformer" sub-objects, "fps", "seed", "stream_*"). Unknown top-level keys are errors.
  static AudioModelConfig from_json(const nlohmann::json& j, const std::string& where, AudioModelConfig base) {
    BF_CHECK(j.is_object(), ArgumentError, where, ": config must be a JSON object");
    AudioModelConfig c = std::move(base);
    try {
      for (const auto& [k, v] : j.items()) {
        if (k == "model_type") {
          BF_CHECK(v.get<std::string>() == "blendfuse_audio", ArgumentError, where, ": model_type is \"",
                   v.get<std::string>(), "\", expected \"blendfuse_audio\"");
        } else if (k == "wav2vec2") {
          nlohmann::json merged = c.w2v.to_json();
          for (const auto& [k2, v2] : v.items()) merged[k2] = v2;
          c.w2v = Wav2Vec2Config::from_json(merged, where + " wav2vec2");
        } else if (k == "faceformer") {
          nlohmann::json merged = c.decoder.to_json();
          for (const auto& [k2, v2] : v.items()) merged[k2] = v2;
          c.decoder = FaceFormerConfig::from_json(merged, where + " faceformer");
        } else if (k == "subjects") {
          c.subjects = v.get<std::vector<std::string>>();
        } else if (k == "fps") {
          c.fps = v.get<double>();
        } else if (k == "seed") {
          c.seed = v.get<std::uint64_t>();
        } else if (k == "stream_left_context") {
          c.stream_left_context = v.get<double>();
        } else if (k == "stream_block") {
          c.stream_block = v.get<Index>();
        } else if (k == "stream_lookahead") {
          c.stream_lookahead = v.get<double>();
        } else {
          throw ArgumentError(where + ": unknown config key '" + k + "'");
        }
      }
    } catch (const nlohmann::json::exception& e) {
      throw ArgumentError(where + ": bad config value: " + e.what());
    }
    c.decoder.audio_dim = c.w2v.hidden_size;
    return c;
  }
};

/// T: element type. EncBackend: the host backend the wav2vec 2.0 encoder runs on (Cpu = the
/// reference, or another backend's specialised ops); the decoder runs the reference ops on the
/// host either way, and every tensor this class takes or returns is a host Tensor<T>. A TU that
/// instantiates a non-reference EncBackend includes that backend's header first.
template <class T, class EncBackend = Cpu>
class AudioModel {
 public:
  using Encoder = Wav2Vec2Model<T, EncBackend>;

  struct Context {
    typename Encoder::Context enc;
    typename FaceFormer<T>::Context dec;
  };

  AudioModel() = default;
  explicit AudioModel(AudioModelConfig cfg)
      : cfg_(std::move(cfg)), enc_(cfg_.w2v, "audio_encoder."), dec_(cfg_.decoder) {
    cfg_.validate();
  }

  /// Random initialisation from cfg.seed (the frozen extractor too).
  void init() {
    Rng rng(cfg_.seed);
    enc_.init(rng);
    dec_.init(rng);
  }

  const AudioModelConfig& config() const noexcept { return cfg_; }
  Encoder& encoder() noexcept { return enc_; }
  const Encoder& encoder() const noexcept { return enc_; }
  FaceFormer<T>& decoder() noexcept { return dec_; }
  const FaceFormer<T>& decoder() const noexcept { return dec_; }
  Index vertices() const noexcept { return cfg_.decoder.vertices; }

  /// Trainable parameters: wav2vec2 projection/transformer + the whole decoder.
  ParamList<T> trainable_parameters() {
    ParamList<T> ps = enc_.trainable_parameters();
    for (auto* p : dec_.parameters()) ps.push_back(p);
    return ps;
  }
  ParamList<T> parameters() {
    ParamList<T> ps = enc_.parameters();
    for (auto* p : dec_.parameters()) ps.push_back(p);
    return ps;
  }

  /// Subject templates stored with the model (subject → (V, 3)).
  std::map<std::string, Tensor<float>>& templates() noexcept { return templates_; }
  const std::map<std::string, Tensor<float>>& templates() const noexcept { return templates_; }

  /// Index of a training subject (its style code); ArgumentError listing the known ones.
  Index subject_index(const std::string& name) const {
    for (std::size_t i = 0; i < cfg_.subjects.size(); ++i)
      if (cfg_.subjects[i] == name) return static_cast<Index>(i);
    std::string known;
    for (const auto& s : cfg_.subjects) known += (known.empty() ? "" : ", ") + s;
    throw ArgumentError("unknown subject '" + name + "' (the model's training subjects: " + known + ")");
  }

  /// Frames for `samples` samples of 16 kHz audio: round(samples · fps / 16000), at least 1.
  Index frames_for(Index samples) const {
    return std::max<Index>(1, static_cast<Index>(std::llround(static_cast<double>(samples) * cfg_.fps /
                                                              io::kSpeechSampleRate)));
  }

  /// Frozen conv features of audio (1, L), resampled to `frames` frames: (1, frames, C).
  Tensor<T> frame_features(const Tensor<T>& audio, Index frames) const {
    check_audio(audio);
    const Tensor<T> f = host(enc_.extract_features(dev(audio)));
    return ops::interp_linear_ntc(f, frames);
  }

  /// Teacher-forcing forward from precomputed frame features (1, T, C): `inputs` (1, T, V·3) are
  /// the deformations fed back (ground truth, or a scheduled-sampling mix); returns (1, T, V·3).
  Tensor<T> forward(const Tensor<T>& features, const Tensor<T>& inputs, Index subject, Context* ctx) const {
    const Tensor<T> hidden = host(enc_.encode(dev(features), ctx ? &ctx->enc : nullptr));
    return dec_.forward(hidden, inputs, dec_.one_hot(subject), ctx ? &ctx->dec : nullptr);
  }

  /// Accumulates parameter gradients for dout (1, T, V·3).
  void backward(const Context& ctx, const Tensor<T>& dout) {
    auto g = dec_.backward(ctx.dec, dout);
    enc_.backward(ctx.enc, dev(g.daudio));
  }

  /// Autoregressive prediction from frame features (1, T, C) → (1, T, V·3).
  Tensor<T> predict_features(const Tensor<T>& features, Index subject) const {
    const Tensor<T> hidden = host(enc_.encode(dev(features)));
    return dec_.predict(hidden, dec_.one_hot(subject));
  }

  /// Offline prediction for a whole clip: audio (L,) or (1, L) at 16 kHz → (T, V, 3) deformations.
  Tensor<T> predict(const Tensor<T>& audio, Index subject) const {
    const Tensor<T> a = audio.ndim() == 1 ? audio.reshape({1, audio.dim(0)}) : audio;
    const Index Tn = frames_for(a.dim(1));
    Tensor<T> out = predict_features(frame_features(a, Tn), subject);
    return out.reshape({Tn, vertices(), 3});
  }

  // ---- streaming --------------------------------------------------------------------------------

  /// Streaming inference (see the file comment). Not thread-safe; one per audio stream.
  class Stream {
   public:
    Stream(const AudioModel& m, Index subject) : m_(&m), dec_(m.dec_) {
      const AudioModelConfig& c = m.cfg_;
      stride_ = c.total_stride();
      rf_ = c.w2v.min_samples();
      ratio_ = c.feature_rate() / c.fps;
      left_feats_ = static_cast<Index>(std::llround(c.stream_left_context * c.feature_rate()));
      look_feats_ = static_cast<Index>(std::ceil(c.stream_lookahead * c.feature_rate()));
      dec_.reserve(256);
      dec_.start(subject);
      frame_.assign(static_cast<std::size_t>(c.decoder.vertex_dim()), T(0));
    }

    /// Worst-case algorithmic latency in seconds (block + lookahead + receptive field).
    double latency_seconds() const {
      const AudioModelConfig& c = m_->cfg_;
      return static_cast<double>(c.stream_block) / c.fps + static_cast<double>(look_feats_) / c.feature_rate() +
             static_cast<double>(rf_) / io::kSpeechSampleRate;
    }

    /// Appends samples (16 kHz mono) and runs every block whose window is complete.
    void push(const float* x, std::size_t n) {
      BF_CHECK(!finished_, ArgumentError, "AudioModel::Stream::push: the stream was finished");
      for (std::size_t i = 0; i < n; ++i)
        BF_CHECK(std::isfinite(x[i]), ArgumentError, "AudioModel::Stream::push: non-finite sample");
      audio_.insert(audio_.end(), x, x + n);
      total_ += static_cast<Index>(n);
      run_ready();
    }
    void push(const std::vector<float>& x) { push(x.data(), x.size()); }

    /// Declares the end of the audio: the remaining frames (up to round(L · fps / 16000)) are made.
    void finish() {
      if (finished_) return;
      finished_ = true;
      run_ready();
    }

    /// Frames waiting to be taken.
    Index available() const { return static_cast<Index>(ready_.size() / frame_.size()); }
    /// Frames produced so far (taken or not).
    Index produced() const { return produced_; }
    /// Total samples pushed.
    Index samples() const { return total_; }

    /// Takes the next frame's deformation (V·3 values) into `out`; false when none is ready.
    bool pop(T* out) {
      if (ready_.empty()) return false;
      const std::size_t n = frame_.size();
      std::copy_n(ready_.begin(), n, out);
      ready_.erase(ready_.begin(), ready_.begin() + static_cast<std::ptrdiff_t>(n));
      return true;
    }

   private:
    /// Frames that exist for the audio so far (after finish: all of them).
    Index frame_limit() const {
      return finished_ ? m_->frames_for(total_) : std::numeric_limits<Index>::max();
    }

    void run_ready() {
      const AudioModelConfig& c = m_->cfg_;
      for (;;) {
        const Index f0 = next_frame_;
        Index f1 = f0 + c.stream_block;
        const Index limit = frame_limit();
        if (f0 >= limit) return;
        f1 = std::min(f1, limit);
        // Conv features needed: up to position of frame f1 − 1, plus the lookahead.
        const Index want_end = static_cast<Index>(std::ceil(ratio_ * static_cast<double>(f1 - 1) - 1e-9)) + 1 + look_feats_;
        const Index have = total_ >= rf_ ? (total_ - rf_) / stride_ + 1 : 0;
        Index j_end = want_end;
        if (have < want_end) {
          if (!finished_) return;
          j_end = have;
        }
        if (j_end <= 0) {  // shorter than one receptive field: silence-like zero features
          j_end = 0;
        }
        const Index j0 = std::max<Index>(0, static_cast<Index>(std::floor(ratio_ * static_cast<double>(f0))) - left_feats_);
        run_block(f0, f1, std::min(j0, std::max<Index>(0, j_end - 1)), j_end);
        next_frame_ = f1;
        // Drop audio that no later window needs.
        const Index nj0 = std::max<Index>(0, static_cast<Index>(std::floor(ratio_ * static_cast<double>(f1))) - left_feats_);
        const Index keep_from = nj0 * stride_;
        if (keep_from > offset_) {
          const Index drop = std::min<Index>(keep_from - offset_, static_cast<Index>(audio_.size()));
          audio_.erase(audio_.begin(), audio_.begin() + drop);
          offset_ += drop;
        }
      }
    }

    void run_block(Index f0, Index f1, Index j0, Index j_end) {
      const AudioModelConfig& c = m_->cfg_;
      const Index C = c.w2v.conv_channels();
      // Window frames: every frame g whose feature position lies in [j0, j_end − 1], plus the block.
      Index g0 = static_cast<Index>(std::ceil(static_cast<double>(j0) / ratio_ - 1e-9));
      g0 = std::min(g0, f0);
      Index g1 = j_end > 0 ? static_cast<Index>(std::floor(static_cast<double>(j_end - 1) / ratio_ + 1e-9)) + 1 : f1;
      g1 = std::max(g1, f1);
      const Index G = g1 - g0;
      Tensor<T> feats({1, G, C});
      if (j_end > j0) {
        const Index s0 = j0 * stride_, s1 = (j_end - 1) * stride_ + rf_;
        Tensor<T> win({1, s1 - s0});
        for (Index s = s0; s < s1; ++s) {
          const Index k = s - offset_;
          win[s - s0] = (k >= 0 && k < static_cast<Index>(audio_.size())) ? static_cast<T>(audio_[static_cast<std::size_t>(k)]) : T(0);
        }
        const Tensor<T> f = host(m_->enc_.extract_features(dev(win)));  // (1, j_end − j0, C)
        const Index J = f.dim(1);
        for (Index g = 0; g < G; ++g) {
          const double p = std::clamp(ratio_ * static_cast<double>(g0 + g) - static_cast<double>(j0), 0.0,
                                      static_cast<double>(J - 1));
          const Index i0 = std::min(static_cast<Index>(std::floor(p)), J - 1);
          const Index i1 = std::min(i0 + 1, J - 1);
          const T w1 = static_cast<T>(p - static_cast<double>(i0)), w0 = T(1) - w1;
          const T* a = f.data() + i0 * C;
          const T* b = f.data() + i1 * C;
          T* o = feats.data() + g * C;
          for (Index k = 0; k < C; ++k) o[k] = w0 * a[k] + w1 * b[k];
        }
      }
      const Tensor<T> hidden = host(m_->enc_.encode(dev(feats)));  // (1, G, E)
      const Index E = c.w2v.hidden_size;
      const std::size_t n = frame_.size();
      for (Index f = f0; f < f1; ++f) {
        dec_.step(hidden.data() + (f - g0) * E, frame_.data());
        ready_.insert(ready_.end(), frame_.begin(), frame_.end());
        ++produced_;
      }
      (void)n;
    }

    const AudioModel* m_;
    typename FaceFormer<T>::Stream dec_;
    std::vector<float> audio_;  // samples [offset_, total_)
    Index offset_ = 0, total_ = 0;
    Index stride_ = 320, rf_ = 400, left_feats_ = 0, look_feats_ = 0;
    double ratio_ = 5.0 / 3.0;
    Index next_frame_ = 0, produced_ = 0;
    bool finished_ = false;
    std::vector<T> frame_;
    std::deque<T> ready_;
  };

  Stream stream(Index subject) const { return Stream(*this, subject); }

  /// The streaming computation run offline on a whole clip (identical to pushing it in chunks):
  /// audio (L,) → (T, V, 3), T = round(L · fps / 16000).
  Tensor<T> predict_streaming(const std::vector<float>& audio, Index subject) const {
    Stream s(*this, subject);
    s.push(audio);
    s.finish();
    const Index Tn = s.available();
    Tensor<T> out({Tn, vertices(), 3});
    for (Index t = 0; t < Tn; ++t) s.pop(out.data() + t * vertices() * 3);
    return out;
  }

  // ---- files ----------------------------------------------------------------------------------

  void add_to(io::SafeTensorsWriter& w) {
    enc_.add_to(w, Wav2Vec2Names::HuggingFace, std::string("audio_encoder."));
    dec_.add_to(w);
    for (const auto& [name, t] : templates_) w.add("templates." + name, t);
    w.set_metadata("config", cfg_.to_json().dump());
  }

  void save(const std::string& path) {
    io::SafeTensorsWriter w;
    add_to(w);
    w.save(path);
  }

  static AudioModel from_safetensors(const io::SafeTensorsFile& f) {
    const std::string meta = f.meta("config");
    if (meta.empty())
      throw IoError(f.path(), "not a blendfuse audio model: no 'config' metadata (make one with blendfuse train-audio)");
    AudioModelConfig cfg;
    try {
      const auto j = nlohmann::json::parse(meta);
      if (!j.is_object() || j.value("model_type", std::string()) != "blendfuse_audio")
        throw IoError(f.path(), "not a blendfuse audio model: metadata 'config' has model_type \"" +
                                    (j.is_object() ? j.value("model_type", std::string()) : std::string()) +
                                    "\" (expected \"blendfuse_audio\")");
      cfg = AudioModelConfig::from_json(j, "config", AudioModelConfig{});
      cfg.validate();
    } catch (const nlohmann::json::exception& e) {
      throw IoError(f.path(), std::string("metadata 'config' is not valid JSON: ") + e.what());
    } catch (const ArgumentError& e) {
      throw IoError(f.path(), e.what());
    }
    AudioModel m(cfg);
    m.enc_.load(f, Wav2Vec2Names::HuggingFace, std::string("audio_encoder."));
    m.dec_.load(f);
    for (const auto& name : f.names()) {
      if (name.rfind("templates.", 0) != 0) continue;
      Tensor<float> t = f.get_weights<float>(name);
      if (t.ndim() != 2 || t.dim(0) != cfg.decoder.vertices || t.dim(1) != 3)
        throw IoError(f.path(), "tensor '" + name + "' must be (" + std::to_string(cfg.decoder.vertices) +
                                    ", 3), got " + t.shape_string());
      for (Index i = 0; i < t.numel(); ++i)
        if (!std::isfinite(t[i]))
          throw IoError(f.path(), "tensor '" + name + "' contains NaN or Inf at element " + std::to_string(i));
      m.templates_[name.substr(10)] = std::move(t);
    }
    return m;
  }

  static AudioModel load(const std::string& path) { return from_safetensors(io::SafeTensorsFile::load(path)); }

 private:
  static Tensor<T, EncBackend> dev(const Tensor<T>& t) { return detail::host_view<EncBackend>(t); }
  static Tensor<T> host(const Tensor<T, EncBackend>& t) { return detail::host_view<Cpu>(t); }

  void check_audio(const Tensor<T>& audio) const {
    BF_CHECK(audio.ndim() == 2 && audio.dim(0) == 1, ShapeError, "AudioModel: audio must be (1, L), got ",
             audio.shape_string());
    BF_CHECK(audio.dim(1) >= cfg_.w2v.min_samples(), ArgumentError, "AudioModel: audio of ", audio.dim(1),
             " samples is too short (at least ", cfg_.w2v.min_samples(), " samples at 16 kHz)");
  }

  AudioModelConfig cfg_;
  Encoder enc_;
  FaceFormer<T> dec_;
  std::map<std::string, Tensor<float>> templates_;
};

}  // namespace blendfuse::nn
