// blendfuse — the FaceFormer decoder (speech features → per-vertex deformations), by concern:
//   nn/faceformer_config.hpp   FaceFormerConfig (sizes, JSON, validation)
//   nn/faceformer_masks.hpp    ALiBi slopes, biased causal mask, alignment mask, periodic
//                              positional encoding
//   nn/faceformer_decoder.hpp  FaceFormer<T>: parameters, teacher-forcing forward / backward,
//                              predict(), checkpoints (the architecture is documented there)
//   nn/faceformer_stream.hpp   FaceFormer<T>::Stream: streaming inference with key/value caches
#pragma once

#include "blendfuse/nn/faceformer_config.hpp"
#include "blendfuse/nn/faceformer_decoder.hpp"
#include "blendfuse/nn/faceformer_masks.hpp"
#include "blendfuse/nn/faceformer_stream.hpp"
