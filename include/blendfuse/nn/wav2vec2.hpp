// blendfuse — the wav2vec 2.0 encoder, by concern:
//   nn/wav2vec2_config.hpp  Wav2Vec2Config (Hugging Face config.json), Hugging Face ↔ torchaudio names
//   nn/wav2vec2_layer.hpp   Wav2Vec2EncoderLayer: one post-norm transformer layer, forward + backward
//   nn/wav2vec2_model.hpp   Wav2Vec2Model: frozen conv feature extractor, feature projection,
//                           positional convolution, the layers, backward, checkpoints (the
//                           architecture is documented there)
#pragma once

#include "blendfuse/nn/wav2vec2_config.hpp"
#include "blendfuse/nn/wav2vec2_layer.hpp"
#include "blendfuse/nn/wav2vec2_model.hpp"
