// blendfuse — wav2vec 2.0 configuration (Wav2Vec2Config, Hugging Face config.json keys) and the
// tensor naming schemes (Hugging Face ↔ torchaudio) of nn/wav2vec2_model.hpp.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/file.hpp"

namespace blendfuse::nn {

/// wav2vec 2.0 sizes, with the Hugging Face config.json key names. Defaults: wav2vec2-base.
struct Wav2Vec2Config {
  std::vector<Index> conv_dim{512, 512, 512, 512, 512, 512, 512};
  std::vector<Index> conv_kernel{10, 3, 3, 3, 3, 2, 2};
  std::vector<Index> conv_stride{5, 2, 2, 2, 2, 2, 2};
  Index hidden_size = 768;
  Index num_hidden_layers = 12;
  Index num_attention_heads = 12;
  Index intermediate_size = 3072;
  Index num_conv_pos_embeddings = 128;
  Index num_conv_pos_embedding_groups = 16;
  double layer_norm_eps = 1e-5;
  double group_norm_eps = 1e-5;  // torch.nn.GroupNorm default (not a config.json key)
  bool do_normalize = true;      // from preprocessor_config.json; accepted here too
  double normalize_eps = 1e-7;   // Wav2Vec2FeatureExtractor's variance epsilon

  static Wav2Vec2Config base() { return {}; }

  Index conv_channels() const { return conv_dim.empty() ? 0 : conv_dim.back(); }

  /// Throws ArgumentError unless the sizes describe a buildable model.
  void validate() const {
    BF_CHECK(!conv_dim.empty() && conv_dim.size() == conv_kernel.size() &&
                 conv_dim.size() == conv_stride.size(),
             ArgumentError, "Wav2Vec2Config: conv_dim, conv_kernel and conv_stride must be non-empty and "
             "of equal length, got ", conv_dim.size(), ", ", conv_kernel.size(), ", ", conv_stride.size());
    for (std::size_t i = 0; i < conv_dim.size(); ++i)
      BF_CHECK(conv_dim[i] > 0 && conv_kernel[i] > 0 && conv_stride[i] > 0, ArgumentError,
               "Wav2Vec2Config: conv layer ", i, " needs positive dim/kernel/stride, got ", conv_dim[i],
               "/", conv_kernel[i], "/", conv_stride[i]);
    BF_CHECK(hidden_size > 0 && num_hidden_layers >= 0 && intermediate_size > 0, ArgumentError,
             "Wav2Vec2Config: hidden_size and intermediate_size must be positive, num_hidden_layers >= 0");
    BF_CHECK(num_attention_heads > 0 && hidden_size % num_attention_heads == 0, ArgumentError,
             "Wav2Vec2Config: hidden_size ", hidden_size, " is not divisible by num_attention_heads ",
             num_attention_heads);
    BF_CHECK(num_conv_pos_embeddings > 0 && num_conv_pos_embedding_groups > 0 &&
                 hidden_size % num_conv_pos_embedding_groups == 0,
             ArgumentError, "Wav2Vec2Config: hidden_size ", hidden_size,
             " is not divisible by num_conv_pos_embedding_groups ", num_conv_pos_embedding_groups);
    BF_CHECK(layer_norm_eps >= 0 && group_norm_eps >= 0 && normalize_eps >= 0, ArgumentError,
             "Wav2Vec2Config: epsilons must be >= 0");
  }

  /// Conv feature frames for `samples` input samples (0 when the audio is too short).
  Index num_frames(Index samples) const {
    Index n = samples;
    for (std::size_t i = 0; i < conv_kernel.size(); ++i) {
      if (n < conv_kernel[i]) return 0;
      n = (n - conv_kernel[i]) / conv_stride[i] + 1;
    }
    return n;
  }
  /// Fewest samples that give one frame (400 for base).
  Index min_samples() const {
    Index n = 1;
    for (std::size_t i = conv_kernel.size(); i-- > 0;) n = (n - 1) * conv_stride[i] + conv_kernel[i];
    return n;
  }

  nlohmann::json to_json() const {
    return {{"model_type", "wav2vec2"}, {"conv_dim", conv_dim}, {"conv_kernel", conv_kernel},
            {"conv_stride", conv_stride}, {"conv_bias", false}, {"feat_extract_norm", "group"},
            {"hidden_size", hidden_size}, {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads}, {"intermediate_size", intermediate_size},
            {"num_conv_pos_embeddings", num_conv_pos_embeddings},
            {"num_conv_pos_embedding_groups", num_conv_pos_embedding_groups},
            {"layer_norm_eps", layer_norm_eps}, {"do_stable_layer_norm", false},
            {"hidden_act", "gelu"}, {"feat_extract_activation", "gelu"},
            {"do_normalize", do_normalize}};
  }

  /// Reads a Hugging Face config.json object (keys absent keep the base values; keys that do not
  /// change the inference architecture — dropouts, vocab_size, architectures, ... — are ignored).
  /// Architectures this module does not implement are rejected: feat_extract_norm other than
  /// "group", do_stable_layer_norm (the pre-norm "large-lv60" variant), conv_bias, activations
  /// other than "gelu".
  static Wav2Vec2Config from_json(const nlohmann::json& j, const std::string& where = "wav2vec2 config") {
    BF_CHECK(j.is_object(), ArgumentError, where, ": config must be a JSON object");
    Wav2Vec2Config c;
    try {
      auto get_index = [&](const char* k, Index& dst) { if (j.contains(k)) dst = j.at(k).get<Index>(); };
      auto get_vec = [&](const char* k, std::vector<Index>& dst) {
        if (j.contains(k)) dst = j.at(k).get<std::vector<Index>>();
      };
      get_vec("conv_dim", c.conv_dim);
      get_vec("conv_kernel", c.conv_kernel);
      get_vec("conv_stride", c.conv_stride);
      get_index("hidden_size", c.hidden_size);
      get_index("num_hidden_layers", c.num_hidden_layers);
      get_index("num_attention_heads", c.num_attention_heads);
      get_index("intermediate_size", c.intermediate_size);
      get_index("num_conv_pos_embeddings", c.num_conv_pos_embeddings);
      get_index("num_conv_pos_embedding_groups", c.num_conv_pos_embedding_groups);
      if (j.contains("layer_norm_eps")) c.layer_norm_eps = j.at("layer_norm_eps").get<double>();
      if (j.contains("do_normalize")) c.do_normalize = j.at("do_normalize").get<bool>();
      if (j.contains("num_feat_extract_layers"))
        BF_CHECK(j.at("num_feat_extract_layers").get<Index>() == static_cast<Index>(c.conv_dim.size()),
                 ArgumentError, where, ": num_feat_extract_layers does not match conv_dim");
      if (j.contains("feat_extract_norm"))
        BF_CHECK(j.at("feat_extract_norm").get<std::string>() == "group", ArgumentError, where,
                 ": only feat_extract_norm \"group\" (the base model) is supported, got \"",
                 j.at("feat_extract_norm").get<std::string>(), "\"");
      if (j.contains("do_stable_layer_norm"))
        BF_CHECK(!j.at("do_stable_layer_norm").get<bool>(), ArgumentError, where,
                 ": do_stable_layer_norm (pre-norm layers) is not supported");
      if (j.contains("conv_bias"))
        BF_CHECK(!j.at("conv_bias").get<bool>(), ArgumentError, where,
                 ": conv_bias = true is not supported");
      for (const char* k : {"hidden_act", "feat_extract_activation"})
        if (j.contains(k))
          BF_CHECK(j.at(k).get<std::string>() == "gelu", ArgumentError, where, ": ", k,
                   " must be \"gelu\", got \"", j.at(k).get<std::string>(), "\"");
    } catch (const nlohmann::json::exception& e) {
      throw ArgumentError(where + ": bad config value: " + e.what());
    }
    c.validate();
    return c;
  }

  /// Reads a config.json file; errors name the file.
  static Wav2Vec2Config from_file(const std::string& path) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(io::read_file_text(path));
    } catch (const nlohmann::json::exception& e) {
      throw IoError(path, std::string("invalid JSON: ") + e.what());
    }
    try {
      return from_json(j, path);
    } catch (const ArgumentError& e) {
      throw IoError(path, e.what());
    }
  }
};

/// torchaudio's name of a Hugging Face wav2vec2 tensor name given without the "wav2vec2." prefix
/// (see the table in the file comment). Throws ArgumentError for names outside the encoder.
inline std::string wav2vec2_torchaudio_name(const std::string& hf) {
  auto starts = [&](const char* p) { return hf.rfind(p, 0) == 0; };
  if (starts("feature_extractor.")) return hf;
  if (starts("feature_projection.")) return "encoder." + hf;
  if (starts("encoder.")) return "encoder.transformer." + hf.substr(8);
  throw ArgumentError("wav2vec2_torchaudio_name: '" + hf + "' is not a wav2vec2 encoder tensor name");
}

/// Inverse of wav2vec2_torchaudio_name.
inline std::string wav2vec2_hf_name(const std::string& ta) {
  auto starts = [&](const char* p) { return ta.rfind(p, 0) == 0; };
  if (starts("feature_extractor.")) return ta;
  if (starts("encoder.feature_projection.")) return ta.substr(8);
  if (starts("encoder.transformer.")) return "encoder." + ta.substr(20);
  throw ArgumentError("wav2vec2_hf_name: '" + ta + "' is not a torchaudio wav2vec2 encoder tensor name");
}

/// Naming scheme of a checkpoint.
enum class Wav2Vec2Names { Auto, HuggingFace, Torchaudio };

}  // namespace blendfuse::nn
