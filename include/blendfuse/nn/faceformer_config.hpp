// blendfuse — FaceFormerConfig: the sizes of the FaceFormer decoder (nn/faceformer.hpp), its JSON
// form (checkpoint metadata "faceformer_config") and validation.
#pragma once

#include <cmath>
#include <string>

#include <nlohmann/json.hpp>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse::nn {

/// FaceFormer decoder sizes. Defaults: FaceFormer's VOCASET model (5023 FLAME vertices).
struct FaceFormerConfig {
  Index vertices = 5023;        ///< V; the vertex dimension is 3·V
  Index feature_dim = 64;       ///< d (even: the PPE interleaves sin/cos)
  Index num_heads = 4;          ///< H, divides d
  Index dim_feedforward = 128;  ///< F = 2·d in FaceFormer
  Index period = 30;            ///< p of the PPE and the temporal bias
  Index n_subjects = 8;         ///< training speakers (one-hot style code size)
  Index audio_dim = 768;        ///< wav2vec 2.0 hidden size
  /// Self-attention window W in frames: frame i attends to frames i − W < j ≤ i (0: all earlier
  /// frames). The default, FaceFormer's 600-frame mask length, reproduces FaceFormer exactly on
  /// every sequence it can run and bounds the per-frame cost of longer ones (a ring KV cache).
  Index attention_window = 600;
  double layer_norm_eps = 1e-5;

  Index vertex_dim() const { return 3 * vertices; }

  bool operator==(const FaceFormerConfig&) const = default;

  void validate() const {
    BF_CHECK(vertices > 0 && feature_dim > 0 && num_heads > 0 && dim_feedforward > 0 &&
                 period > 0 && n_subjects > 0 && audio_dim > 0 && attention_window >= 0,
             ArgumentError,
             "FaceFormerConfig: vertices, feature_dim, num_heads, dim_feedforward, period, "
             "n_subjects and audio_dim must be positive, attention_window >= 0");
    BF_CHECK(feature_dim % 2 == 0, ArgumentError, "FaceFormerConfig: feature_dim ", feature_dim,
             " must be even (periodic positional encoding)");
    BF_CHECK(feature_dim % num_heads == 0, ArgumentError, "FaceFormerConfig: feature_dim ",
             feature_dim, " is not divisible by num_heads ", num_heads);
    BF_CHECK(std::isfinite(layer_norm_eps) && layer_norm_eps >= 0, ArgumentError,
             "FaceFormerConfig: layer_norm_eps must be finite and >= 0");
  }

  nlohmann::json to_json() const {
    return {{"model_type", "faceformer"},          {"vertices", vertices},
            {"feature_dim", feature_dim},           {"num_heads", num_heads},
            {"dim_feedforward", dim_feedforward},   {"period", period},
            {"n_subjects", n_subjects},             {"audio_dim", audio_dim},
            {"attention_window", attention_window}, {"layer_norm_eps", layer_norm_eps}};
  }

  /// Reads a config object (absent keys keep the defaults; unknown keys are ignored).
  static FaceFormerConfig from_json(const nlohmann::json& j,
                                    const std::string& where = "faceformer config") {
    BF_CHECK(j.is_object(), ArgumentError, where, ": config must be a JSON object");
    FaceFormerConfig c;
    try {
      if (j.contains("model_type"))
        BF_CHECK(j.at("model_type").get<std::string>() == "faceformer", ArgumentError, where,
                 ": model_type is \"", j.at("model_type").get<std::string>(),
                 "\", expected \"faceformer\"");
      auto get = [&](const char* k, Index& dst) {
        if (j.contains(k)) dst = j.at(k).get<Index>();
      };
      get("vertices", c.vertices);
      get("feature_dim", c.feature_dim);
      get("num_heads", c.num_heads);
      get("dim_feedforward", c.dim_feedforward);
      get("period", c.period);
      get("n_subjects", c.n_subjects);
      get("audio_dim", c.audio_dim);
      get("attention_window", c.attention_window);
      if (j.contains("layer_norm_eps")) c.layer_norm_eps = j.at("layer_norm_eps").get<double>();
    } catch (const nlohmann::json::exception& e) {
      throw ArgumentError(where + ": bad config value: " + e.what());
    }
    try {
      c.validate();
    } catch (const ArgumentError& e) {
      throw ArgumentError(where + ": " + e.what());
    }
    return c;
  }
};

}  // namespace blendfuse::nn
