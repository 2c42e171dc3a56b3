// Shared helper of the audio-model tests: a tiny AudioModelConfig that trains and runs in
// milliseconds.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "blendfuse/nn/audio_model.hpp"

namespace bft {

/// 2 conv layers (total stride 320 → 50 Hz), E = 8, one transformer layer, decoder d = 8.
inline blendfuse::nn::AudioModelConfig tiny_audio_config(blendfuse::Index vertices, std::vector<std::string> subjects) {
  blendfuse::nn::AudioModelConfig c = blendfuse::nn::AudioModelConfig::small(vertices, std::move(subjects));
  c.w2v.conv_dim = {6, 6};
  c.w2v.conv_kernel = {40, 8};
  c.w2v.conv_stride = {40, 8};
  c.w2v.hidden_size = 8;
  c.w2v.num_hidden_layers = 1;
  c.w2v.num_attention_heads = 2;
  c.w2v.intermediate_size = 8;
  c.w2v.num_conv_pos_embeddings = 4;
  c.w2v.num_conv_pos_embedding_groups = 2;
  c.decoder.feature_dim = 8;
  c.decoder.num_heads = 2;
  c.decoder.dim_feedforward = 8;
  c.decoder.period = 5;
  c.decoder.audio_dim = 8;
  return c;
}

}  // namespace bft
