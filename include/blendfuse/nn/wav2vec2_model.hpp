// blendfuse — the wav2vec 2.0 encoder (Baevski et al., 2020) as the Hugging Face
// `facebook/wav2vec2-base-960h` checkpoint defines it, any size from a config, built only from ops.
//
// Architecture (base; sizes from Wav2Vec2Config, defaults = base):
//   audio (B, L) 16 kHz mono
//   → [do_normalize] per utterance (x − mean) / sqrt(var + 1e-7), biased variance
//     (Wav2Vec2FeatureExtractor / Wav2Vec2Processor with do_normalize=True)
//   → feature extractor, frozen: conv_layers.i = Conv1d(kernel_i, stride_i, no bias); layer 0 is
//     followed by GroupNorm(C, C) ("group" feat_extract_norm mode); every layer ends in GELU
//     → conv features (B, T, C)                                   [Output::features]
//   → feature projection: LayerNorm(C) → Linear(C → E)   (dropout: identity at inference)
//     → projected (B, T, E)
//   → positional convolution: Conv1d(E → E, kernel K, padding K/2, groups G) whose weight is
//     weight-normalised over dim 2 (weight_g (1, 1, K), weight_v (E, E/G, K)):
//       w[o, i, k] = g[k] · v[o, i, k] / ‖v[:, :, k]‖₂,
//     the last output frame dropped when K is even (SamePad), GELU; added to `projected`
//   → encoder.layer_norm (before the layers: the post-norm "wav2vec2-base" variant)
//   → N post-norm transformer layers:
//       h  = layer_norm(x + out_proj(self-attention(q_proj x, k_proj x, v_proj x)))
//       x' = final_layer_norm(h + output_dense(GELU(intermediate_dense h)))
//     → last hidden state (B, T, E)                                [Output::hidden]
// GELU is the exact erf form; every LayerNorm uses layer_norm_eps, the GroupNorm eps 1e-5.
// Sequences are batch first (B, T, C); all utterances of a batch have the same length (no
// padding masks).
//
// Entry points: forward(audio, ctx) = encode(extract_features(audio), ctx). FaceFormer resamples
// the conv features (50 Hz → frame rate, ops/interp.hpp) between the two, so encode() takes any
// (B, T, C) features. backward(ctx, dhidden) is hand-written through the transformer layers, the
// encoder LayerNorm, the positional convolution (incl. the weight norm) and the feature projection;
// it accumulates those parameters' gradients and returns dL/dprojected and dL/dfeatures. The conv
// feature extractor is frozen (as in FaceFormer): there is no backward through it and its
// parameters are listed by frozen_parameters(), not trainable_parameters().
//
// Tensor names are the Hugging Face state_dict keys under a prefix (default "wav2vec2."):
//   feature_extractor.conv_layers.{i}.conv.weight, feature_extractor.conv_layers.0.layer_norm.{weight,bias}
//   feature_projection.layer_norm.{weight,bias}, feature_projection.projection.{weight,bias}
//   encoder.pos_conv_embed.conv.{weight_g,weight_v,bias}, encoder.layer_norm.{weight,bias}
//   encoder.layers.{n}.attention.{q_proj,k_proj,v_proj,out_proj}.{weight,bias}
//   encoder.layers.{n}.layer_norm.*, .feed_forward.{intermediate_dense,output_dense}.*, .final_layer_norm.*
// torchaudio (torchaudio.models.wav2vec2_base() / wav2vec2_model(), checked on torchaudio 0.13.1)
// names the same tensors (wav2vec2_torchaudio_name, wav2vec2_hf_name):
//   HF (without prefix)               torchaudio
//   feature_extractor.*            ↔  feature_extractor.*                    (identical)
//   feature_projection.*           ↔  encoder.feature_projection.*
//   encoder.pos_conv_embed.*       ↔  encoder.transformer.pos_conv_embed.*
//   encoder.layer_norm.*           ↔  encoder.transformer.layer_norm.*
//   encoder.layers.{n}.*           ↔  encoder.transformer.layers.{n}.*       (sub-names identical)
// Both torchaudio 0.13 and the HF hub checkpoints store the positional weight norm as
// nn.utils.weight_norm's weight_g / weight_v; the newer parametrization names
// (...conv.parametrizations.weight.original0 / original1 = g / v) are accepted when loading.
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/io/file.hpp"
#include "blendfuse/io/safetensors.hpp"
#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/nn/wav2vec2_config.hpp"
#include "blendfuse/nn/wav2vec2_layer.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/attention.hpp"
#include "blendfuse/ops/conv.hpp"
#include "blendfuse/ops/linear.hpp"
#include "blendfuse/ops/norm.hpp"

namespace blendfuse::nn {

template <class T, class Backend = Cpu>
class Wav2Vec2Model {
 public:
  using TensorB = Tensor<T, Backend>;

  using Layer = Wav2Vec2EncoderLayer<T, Backend>;
  /// What one transformer layer saves for backward.
  using LayerContext = typename Layer::Context;

  /// What encode() saves for backward (the frozen feature extractor saves nothing).
  struct Context {
    TensorB features, fp_mean, fp_rstd, fp_norm;  // projection LayerNorm input / stats / output
    TensorB pos_in;      // projected, transposed (B, E, T): positional conv input
    TensorB pos_weight;  // effective (weight-normalised) conv weight (E, E/G, K)
    TensorB pos_pre;     // conv output without the dropped frame (B, E, T), before GELU
    TensorB enc_in, enc_mean, enc_rstd;  // projected + positional (input of encoder.layer_norm)
    std::vector<LayerContext> layers;
  };

  struct Output {
    TensorB hidden;    // (B, T, E) last hidden state
    TensorB features;  // (B, T, C) conv feature extractor output
  };

  struct Grads {
    TensorB dprojected;  // dL/d(feature projection output) (B, T, E)
    TensorB dfeatures;   // dL/d(encode input features) (B, T, C)
  };

  Wav2Vec2Model() = default;

  /// Parameters named `prefix` + Hugging Face name (prefix "wav2vec2." as in the checkpoints).
  explicit Wav2Vec2Model(const Wav2Vec2Config& cfg, std::string prefix = "wav2vec2.")
      : cfg_(cfg), prefix_(std::move(prefix)) {
    cfg_.validate();
    const std::string fe = prefix_ + "feature_extractor.conv_layers.";
    Index cin = 1;
    for (std::size_t i = 0; i < cfg_.conv_dim.size(); ++i) {
      const Index cout = cfg_.conv_dim[i];
      conv_w_.emplace_back(fe + std::to_string(i) + ".conv.weight", Shape{cout, cin, cfg_.conv_kernel[i]});
      cin = cout;
    }
    const Index C0 = cfg_.conv_dim[0], C = cfg_.conv_channels(), E = cfg_.hidden_size;
    gn_w_ = Parameter<T>(fe + "0.layer_norm.weight", Shape{C0});
    gn_b_ = Parameter<T>(fe + "0.layer_norm.bias", Shape{C0});
    const std::string fp = prefix_ + "feature_projection.";
    fp_ln_w_ = Parameter<T>(fp + "layer_norm.weight", Shape{C});
    fp_ln_b_ = Parameter<T>(fp + "layer_norm.bias", Shape{C});
    fp_w_ = Parameter<T>(fp + "projection.weight", Shape{E, C});
    fp_b_ = Parameter<T>(fp + "projection.bias", Shape{E});
    const std::string en = prefix_ + "encoder.";
    const Index K = cfg_.num_conv_pos_embeddings, G = cfg_.num_conv_pos_embedding_groups;
    pos_g_ = Parameter<T>(en + "pos_conv_embed.conv.weight_g", Shape{1, 1, K});
    pos_v_ = Parameter<T>(en + "pos_conv_embed.conv.weight_v", Shape{E, E / G, K});
    pos_b_ = Parameter<T>(en + "pos_conv_embed.conv.bias", Shape{E});
    enc_ln_w_ = Parameter<T>(en + "layer_norm.weight", Shape{E});
    enc_ln_b_ = Parameter<T>(en + "layer_norm.bias", Shape{E});
    const Index F = cfg_.intermediate_size;
    layers_.reserve(static_cast<std::size_t>(cfg_.num_hidden_layers));
    for (Index n = 0; n < cfg_.num_hidden_layers; ++n)
      layers_.emplace_back(en + "layers." + std::to_string(n) + ".", E, cfg_.intermediate_size);
  }

  /// Builds a model from a Hugging Face config.json and loads a safetensors checkpoint
  /// (names detected: Hugging Face with or without "wav2vec2.", or torchaudio).
  static Wav2Vec2Model from_files(const std::string& config_json, const std::string& weights,
                                  std::string prefix = "wav2vec2.") {
    Wav2Vec2Model m(Wav2Vec2Config::from_file(config_json), std::move(prefix));
    m.load(io::SafeTensorsFile::load(weights));
    return m;
  }

  const Wav2Vec2Config& config() const noexcept { return cfg_; }
  const std::string& prefix() const noexcept { return prefix_; }

  /// Random initialisation (tests): fan-in uniform convs/linears, unit/zero norms, weight_g equal
  /// to ‖weight_v‖ per kernel tap (nn.utils.weight_norm's initial state).
  void init(Rng& rng) {
    for (auto& w : conv_w_) init_uniform_fan_in(w, w.value.dim(1) * w.value.dim(2), rng);
    for (Parameter<T>* p : {&gn_w_, &fp_ln_w_, &enc_ln_w_}) p->value.fill(T(1));
    for (Parameter<T>* p : {&gn_b_, &fp_ln_b_, &enc_ln_b_}) p->value.zero();
    init_linear(fp_w_, fp_b_, rng);
    fill_normal(pos_v_.value, rng, 1.0);
    const Index E = cfg_.hidden_size;
    init_uniform_fan_in(pos_b_, E / cfg_.num_conv_pos_embedding_groups * cfg_.num_conv_pos_embeddings, rng);
    const std::vector<double> nv = tap_norms(pos_v_.value);
    for (Index k = 0; k < cfg_.num_conv_pos_embeddings; ++k) pos_g_.value[k] = static_cast<T>(nv[static_cast<std::size_t>(k)]);
    for (Layer& l : layers_) l.init(rng);
  }

  /// Every parameter, in the Hugging Face module order.
  ParamList<T> parameters() {
    ParamList<T> ps = frozen_parameters();
    for (Parameter<T>* p : trainable_parameters()) ps.push_back(p);
    return ps;
  }

  /// The frozen conv feature extractor (no gradients are ever accumulated into these).
  ParamList<T> frozen_parameters() {
    ParamList<T> ps;
    for (std::size_t i = 0; i < conv_w_.size(); ++i) {
      ps.push_back(&conv_w_[i]);
      if (i == 0) {
        ps.push_back(&gn_w_);
        ps.push_back(&gn_b_);
      }
    }
    return ps;
  }

  /// Feature projection, positional convolution, encoder LayerNorm and transformer layers:
  /// the parameters backward() accumulates gradients into (give these to the optimiser).
  ParamList<T> trainable_parameters() {
    ParamList<T> ps{&fp_ln_w_, &fp_ln_b_, &fp_w_, &fp_b_, &pos_b_, &pos_g_, &pos_v_, &enc_ln_w_, &enc_ln_b_};
    for (Layer& l : layers_)
      for (Parameter<T>* p : l.parameters()) ps.push_back(p);
    return ps;
  }

  /// True for the parameters of the frozen feature extractor.
  bool is_frozen(const Parameter<T>& p) const {
    if (&p == &gn_w_ || &p == &gn_b_) return true;
    for (const auto& w : conv_w_)
      if (&p == &w) return true;
    return false;
  }

  // ---- forward ---------------------------------------------------------------------------------

  /// Per-utterance zero-mean / unit-variance normalisation of audio (B, L) (statistics in double).
  TensorB normalize(const TensorB& audio) const {
    check_ndim(audio, 2, "Wav2Vec2Model::normalize: audio (B, L)");
    const TensorB a = audio.contiguous();
    const Index B = a.dim(0), L = a.dim(1);
    TensorB out(a.shape());
    for (Index b = 0; b < B; ++b) {
      const T* x = a.data() + b * L;
      T* y = out.data() + b * L;
      double s = 0;
      for (Index i = 0; i < L; ++i) s += static_cast<double>(x[i]);
      const double mean = L > 0 ? s / static_cast<double>(L) : 0.0;
      double ss = 0;
      for (Index i = 0; i < L; ++i) {
        const double d = static_cast<double>(x[i]) - mean;
        ss += d * d;
      }
      const double inv = 1.0 / std::sqrt((L > 0 ? ss / static_cast<double>(L) : 0.0) + cfg_.normalize_eps);
      for (Index i = 0; i < L; ++i) y[i] = static_cast<T>((static_cast<double>(x[i]) - mean) * inv);
    }
    return out;
  }

  /// Conv feature extractor: audio (B, L) 16 kHz (normalised first when config().do_normalize)
  /// → features (B, T, C), T = config().num_frames(L). Frozen: no context, no backward.
  TensorB extract_features(const TensorB& audio) const {
    check_ndim(audio, 2, "Wav2Vec2Model: audio (B, L)");
    const Index B = audio.dim(0), L = audio.dim(1);
    BF_CHECK(cfg_.num_frames(L) >= 1, ShapeError, "Wav2Vec2Model: audio of shape ", audio.shape_string(),
             " is too short: the feature extractor needs at least ", cfg_.min_samples(), " samples");
    TensorB x = (cfg_.do_normalize ? normalize(audio) : audio.contiguous()).reshape({B, 1, L});
    for (std::size_t i = 0; i < conv_w_.size(); ++i) {
      ops::Conv1dParams p;
      p.stride = cfg_.conv_stride[i];
      TensorB c = ops::conv1d(x, pv(conv_w_[i]), nullptr, p);
      // GroupNorm(C, C) and GELU in place: the extractor's activations are the largest buffers of
      // the model (512 × 50·L/320 values), no second buffer.
      if (i == 0) ops::group_norm_(c, c.dim(1), pv(gn_w_), pv(gn_b_), cfg_.group_norm_eps);
      ops::gelu_(c);
      x = std::move(c);
    }
    return x.transpose(1, 2).clone();  // (B, C, T) → (B, T, C)
  }

  /// Feature projection, positional convolution, encoder LayerNorm and the transformer layers:
  /// features (B, T, C) → last hidden state (B, T, E). With `ctx` saves what backward() needs.
  TensorB encode(const TensorB& features, Context* ctx = nullptr) const {
    const Index C = cfg_.conv_channels(), E = cfg_.hidden_size;
    check_shape(features, {-1, -1, C}, "Wav2Vec2Model::encode: features (B, T, C)");
    const Index B = features.dim(0), Tn = features.dim(1);
    BF_CHECK(Tn >= 1, ShapeError, "Wav2Vec2Model::encode: features ", features.shape_string(), " have no frames");
    if (ctx) *ctx = Context{};
    auto fn = ops::layer_norm(features, pv(fp_ln_w_), pv(fp_ln_b_), cfg_.layer_norm_eps);
    TensorB projected = ops::linear(fn.y, pv(fp_w_), pv(fp_b_));

    TensorB w = positional_conv_weight();
    TensorB pin = projected.transpose(1, 2).clone();  // (B, E, T)
    const TensorB pos_b = pv(pos_b_);
    TensorB cfull = ops::conv1d(pin, w, &pos_b, pos_params());
    TensorB pre = cfull.slice(2, 0, Tn);  // SamePad: drop the extra frame of an even kernel
    TensorB pg = ops::gelu(pre);          // (B, E, T) contiguous
    TensorB h(projected.shape());
    for (Index b = 0; b < B; ++b)
      for (Index e = 0; e < E; ++e) {
        const T* src = pg.data() + (b * E + e) * Tn;
        const T* pp = projected.data() + b * Tn * E + e;
        T* hp = h.data() + b * Tn * E + e;
        for (Index t = 0; t < Tn; ++t) hp[t * E] = pp[t * E] + src[t];
      }
    auto en = ops::layer_norm(h, pv(enc_ln_w_), pv(enc_ln_b_), cfg_.layer_norm_eps);
    if (ctx) {
      ctx->features = features;
      ctx->fp_mean = std::move(fn.mean);
      ctx->fp_rstd = std::move(fn.rstd);
      ctx->fp_norm = std::move(fn.y);
      ctx->pos_in = std::move(pin);
      ctx->pos_weight = std::move(w);
      ctx->pos_pre = std::move(pre);
      ctx->enc_in = std::move(h);
      ctx->enc_mean = std::move(en.mean);
      ctx->enc_rstd = std::move(en.rstd);
      ctx->layers.resize(layers_.size());
    }
    TensorB x = std::move(en.y);
    for (std::size_t n = 0; n < layers_.size(); ++n)
      x = layers_[n].forward(x, cfg_.num_attention_heads, cfg_.layer_norm_eps, ctx ? &ctx->layers[n] : nullptr);
    return x;
  }

  /// audio (B, L) → {hidden (B, T, E), features (B, T, C)}.
  Output forward(const TensorB& audio, Context* ctx = nullptr) const {
    Output o;
    o.features = extract_features(audio);
    o.hidden = encode(o.features, ctx);
    return o;
  }

  /// Effective positional conv weight w = g · v / ‖v‖ (norm over dims 0 and 1, per kernel tap).
  TensorB positional_conv_weight() const {
    const Tensor<T>& v = pos_v_.value;
    const Index O = v.dim(0), I = v.dim(1), K = v.dim(2);
    const std::vector<double> nv = tap_norms(v);
    std::vector<T> scale(static_cast<std::size_t>(K));
    for (Index k = 0; k < K; ++k)
      scale[static_cast<std::size_t>(k)] = static_cast<T>(static_cast<double>(pos_g_.value[k]) / nv[static_cast<std::size_t>(k)]);
    TensorB w(v.shape());
    for (Index r = 0; r < O * I; ++r)
      for (Index k = 0; k < K; ++k) w[r * K + k] = v[r * K + k] * scale[static_cast<std::size_t>(k)];
    return w;
  }

  // ---- backward --------------------------------------------------------------------------------

  /// Accumulates the gradients of every trainable parameter for dhidden = dL/dhidden (B, T, E)
  /// and returns dL/dprojected and dL/dfeatures.
  Grads backward(const Context& ctx, const TensorB& dhidden) {
    BF_CHECK(ctx.layers.size() == layers_.size() && !ctx.enc_in.empty(), ArgumentError,
             "Wav2Vec2Model::backward: context was not filled by encode()/forward() of this model");
    BF_CHECK(dhidden.shape() == ctx.enc_in.shape(), ShapeError, "Wav2Vec2Model::backward: dhidden ",
             dhidden.shape_string(), " does not match the hidden state ", ctx.enc_in.shape_string());
    const Index B = dhidden.dim(0), Tn = dhidden.dim(1), E = cfg_.hidden_size;
    TensorB d = dhidden.contiguous();
    for (std::size_t n = layers_.size(); n-- > 0;) d = layers_[n].backward(ctx.layers[n], d, cfg_.num_attention_heads);

    auto ge = ops::layer_norm_backward(ctx.enc_in, pv(enc_ln_w_), ctx.enc_mean, ctx.enc_rstd, d);
    enc_ln_w_.accumulate(hv(ge.dgamma));
    enc_ln_b_.accumulate(hv(ge.dbeta));
    // enc_in = projected + GELU(conv(projectedᵀ))ᵀ
    TensorB dg(Shape{B, E, Tn});
    for (Index b = 0; b < B; ++b)
      for (Index e = 0; e < E; ++e) {
        const T* src = ge.dx.data() + b * Tn * E + e;
        T* dst = dg.data() + (b * E + e) * Tn;
        for (Index t = 0; t < Tn; ++t) dst[t] = src[t * E];
      }
    TensorB dpre = ops::gelu_backward(ctx.pos_pre, dg);
    const ops::Conv1dParams pp = pos_params();
    const Index Tc = ops::conv_output_size(Tn, cfg_.num_conv_pos_embeddings, 1, pp.padding, 1);
    TensorB dconv = dpre;
    if (Tc != Tn) {
      dconv = TensorB(Shape{B, E, Tc});
      dconv.slice(2, 0, Tn).assign(dpre);
    }
    auto gc = ops::conv1d_backward(ctx.pos_in, ctx.pos_weight, dconv, pp, true);
    pos_b_.accumulate(hv(gc.db));
    weight_norm_backward(gc.dw);
    Grads out;
    out.dprojected = std::move(ge.dx);
    for (Index b = 0; b < B; ++b)
      for (Index e = 0; e < E; ++e) {
        const T* src = gc.dx.data() + (b * E + e) * Tn;
        T* dst = out.dprojected.data() + b * Tn * E + e;
        for (Index t = 0; t < Tn; ++t) dst[t * E] += src[t];
      }
    auto gp = ops::linear_backward(ctx.fp_norm, pv(fp_w_), out.dprojected);
    fp_w_.accumulate(hv(gp.dw));
    fp_b_.accumulate(hv(gp.db));
    auto gl = ops::layer_norm_backward(ctx.features, pv(fp_ln_w_), ctx.fp_mean, ctx.fp_rstd, gp.dx);
    fp_ln_w_.accumulate(hv(gl.dgamma));
    fp_ln_b_.accumulate(hv(gl.dbeta));
    out.dfeatures = std::move(gl.dx);
    return out;
  }

  // ---- checkpoints -----------------------------------------------------------------------------

  /// Loads every parameter from `f`. `names`: Auto detects the scheme and prefix; HuggingFace /
  /// Torchaudio force the scheme. `file_prefix` (default: detected — "wav2vec2." or "" for
  /// Hugging Face files, "audio_encoder." in FaceFormer / blendfuse audio-model files, this
  /// model's prefix when present, "" for torchaudio) is prepended to
  /// every name looked up. Missing tensors, shape mismatches and non-finite values throw IoError
  /// naming the file and the tensor. Extra tensors (CTC head, quantizer, ...) are ignored.
  void load(const io::SafeTensorsFile& f, Wav2Vec2Names names = Wav2Vec2Names::Auto,
            std::optional<std::string> file_prefix = std::nullopt) {
    const std::string probe_hf = "feature_projection.projection.weight";
    const std::string probe_ta = wav2vec2_torchaudio_name(probe_hf);
    if (!file_prefix) {
      auto find = [&](const std::string& probe, std::initializer_list<std::string> prefixes)
          -> std::optional<std::string> {
        for (const auto& p : prefixes)
          if (f.contains(p + probe)) return p;
        return std::nullopt;
      };
      std::optional<std::string> hf, ta;
      if (names != Wav2Vec2Names::Torchaudio) hf = find(probe_hf, {prefix_, std::string("wav2vec2."), std::string(), std::string("audio_encoder.")});
      if (names != Wav2Vec2Names::HuggingFace) ta = find(probe_ta, {std::string(), prefix_});
      if (hf) {
        names = Wav2Vec2Names::HuggingFace;
        file_prefix = *hf;
      } else if (ta) {
        names = Wav2Vec2Names::Torchaudio;
        file_prefix = *ta;
      } else {
        throw IoError(f.path(), "no wav2vec2 encoder found: none of '" + prefix_ + probe_hf +
                                    "', 'wav2vec2." + probe_hf + "', '" + probe_hf + "' (Hugging Face) or '" +
                                    probe_ta + "' (torchaudio) is in the file");
      }
    } else if (names == Wav2Vec2Names::Auto) {
      names = f.contains(*file_prefix + probe_ta) ? Wav2Vec2Names::Torchaudio : Wav2Vec2Names::HuggingFace;
    }
    // One transactional read (nn/parameter.hpp): a failure leaves the model unchanged.
    load_parameters(f, parameters(), [&](const Parameter<T>& p) {
      const std::string rel = relative_name(p);
      const std::string key = *file_prefix + (names == Wav2Vec2Names::Torchaudio ? wav2vec2_torchaudio_name(rel) : rel);
      std::string found = key;
      if (!f.contains(found)) {
        for (const auto& [old_suffix, new_suffix] :
             {std::pair<std::string, std::string>{"weight_g", "parametrizations.weight.original0"},
              std::pair<std::string, std::string>{"weight_v", "parametrizations.weight.original1"}}) {
          if (key.size() > old_suffix.size() && key.compare(key.size() - old_suffix.size(), old_suffix.size(), old_suffix) == 0) {
            const std::string alt = key.substr(0, key.size() - old_suffix.size()) + new_suffix;
            if (f.contains(alt)) found = alt;
          }
        }
      }
      return ParameterKey{found, " (wav2vec2 parameter '" + p.name + "')"};
    });
  }

  /// Adds every parameter to `w` under `file_prefix` + the scheme's name (HuggingFace or
  /// Torchaudio; Auto means HuggingFace) and stores the config as metadata "wav2vec2_config".
  void add_to(io::SafeTensorsWriter& w, Wav2Vec2Names names = Wav2Vec2Names::HuggingFace,
              std::optional<std::string> file_prefix = std::nullopt) {
    const bool ta = names == Wav2Vec2Names::Torchaudio;
    const std::string pre = file_prefix ? *file_prefix : (ta ? std::string() : prefix_);
    for (Parameter<T>* p : parameters()) {
      const std::string rel = relative_name(*p);
      w.add(pre + (ta ? wav2vec2_torchaudio_name(rel) : rel), p->value);
    }
    w.set_metadata("wav2vec2_config", cfg_.to_json().dump());
  }

  /// Writes the parameters to a safetensors file atomically (see add_to).
  void save(const std::string& path, Wav2Vec2Names names = Wav2Vec2Names::HuggingFace,
            std::optional<std::string> file_prefix = std::nullopt) {
    io::SafeTensorsWriter w;
    add_to(w, names, std::move(file_prefix));
    w.save(path);
  }

 private:
  static TensorB pv(const Parameter<T>& p) { return detail::host_view<Backend>(p.value); }
  static Tensor<T> hv(const TensorB& t) { return detail::host_view<Cpu>(t); }

  std::string relative_name(const Parameter<T>& p) const { return p.name.substr(prefix_.size()); }

  ops::Conv1dParams pos_params() const {
    ops::Conv1dParams p;
    p.padding = cfg_.num_conv_pos_embeddings / 2;
    p.groups = cfg_.num_conv_pos_embedding_groups;
    return p;
  }

  static void init_linear(Parameter<T>& w, Parameter<T>& b, Rng& rng) {
    init_uniform_fan_in(w, w.value.dim(1), rng);
    init_uniform_fan_in(b, w.value.dim(1), rng);
  }

  /// ‖v[:, :, k]‖₂ for each kernel tap k of v (O, I, K), in double.
  static std::vector<double> tap_norms(const Tensor<T>& v) {
    const Index R = v.dim(0) * v.dim(1), K = v.dim(2);
    std::vector<double> ss(static_cast<std::size_t>(K), 0.0);
    for (Index r = 0; r < R; ++r)
      for (Index k = 0; k < K; ++k) {
        const double x = static_cast<double>(v[r * K + k]);
        ss[static_cast<std::size_t>(k)] += x * x;
      }
    for (double& s : ss) s = std::sqrt(s);
    return ss;
  }

  /// dw → dg, dv for w = g · v / ‖v‖ (per tap k, s = Σ dw·v over dims 0, 1):
  ///   dg = s / ‖v‖,   dv = (g / ‖v‖) dw − (g s / ‖v‖³) v.
  void weight_norm_backward(const TensorB& dw) {
    const Tensor<T>& v = pos_v_.value;
    const Index R = v.dim(0) * v.dim(1), K = v.dim(2);
    const std::vector<double> nv = tap_norms(v);
    std::vector<double> s(static_cast<std::size_t>(K), 0.0);
    for (Index r = 0; r < R; ++r)
      for (Index k = 0; k < K; ++k)
        s[static_cast<std::size_t>(k)] += static_cast<double>(dw[r * K + k]) * static_cast<double>(v[r * K + k]);
    Tensor<T> dg(pos_g_.value.shape()), dv(v.shape());
    std::vector<T> a(static_cast<std::size_t>(K)), c(static_cast<std::size_t>(K));
    for (Index k = 0; k < K; ++k) {
      const auto ku = static_cast<std::size_t>(k);
      const double g = static_cast<double>(pos_g_.value[k]);
      dg[k] = static_cast<T>(s[ku] / nv[ku]);
      a[ku] = static_cast<T>(g / nv[ku]);
      c[ku] = static_cast<T>(g * s[ku] / (nv[ku] * nv[ku] * nv[ku]));
    }
    for (Index r = 0; r < R; ++r)
      for (Index k = 0; k < K; ++k) {
        const auto ku = static_cast<std::size_t>(k);
        dv[r * K + k] = a[ku] * dw[r * K + k] - c[ku] * v[r * K + k];
      }
    pos_g_.accumulate(dg);
    pos_v_.accumulate(dv);
  }

  Wav2Vec2Config cfg_;
  std::string prefix_;
  std::vector<Parameter<T>> conv_w_;
  Parameter<T> gn_w_, gn_b_;
  Parameter<T> fp_ln_w_, fp_ln_b_, fp_w_, fp_b_;
  Parameter<T> pos_g_, pos_v_, pos_b_;
  Parameter<T> enc_ln_w_, enc_ln_b_;
  std::vector<Layer> layers_;
};

}  // namespace blendfuse::nn
