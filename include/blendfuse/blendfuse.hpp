// blendfuse — umbrella header: everything the enabled backends need.
//
//   #include <blendfuse/blendfuse.hpp>
//
// Core (tensors, errors, rng), the reference ops with their backward passes, I/O (safetensors,
// npy, OBJ/PLY, WAV), geometry maps, the dataset loader, the fusion module with its losses and
// trainer, the audio model (wav2vec 2.0 + FaceFormer) with its trainer, the inference pipeline
// (pipeline.hpp: animate()), and metrics. The oneDNN backend is included when the build defines
// BLENDFUSE_WITH_ONEDNN (CMake option of the same name).
//
// Not included (tools for making data, include them where used): data/procedural.hpp (the
// procedural dataset generator) and data/phonemes.hpp (espeak-ng synthesis and phoneme timing).
#pragma once

#include "blendfuse/core/domain.hpp"
#include "blendfuse/core/error.hpp"
#include "blendfuse/core/rng.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/backend/backend.hpp"

#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/attention.hpp"
#include "blendfuse/ops/conv.hpp"
#include "blendfuse/ops/conv_in_relu.hpp"
#include "blendfuse/ops/interp.hpp"
#include "blendfuse/ops/linear.hpp"
#include "blendfuse/ops/norm.hpp"

#include "blendfuse/io/file.hpp"
#include "blendfuse/io/mesh.hpp"
#include "blendfuse/io/npy.hpp"
#include "blendfuse/io/safetensors.hpp"
#include "blendfuse/io/wav.hpp"

#include "blendfuse/geometry/geometry_map.hpp"
#include "blendfuse/geometry/mesh_topology.hpp"

#include "blendfuse/data/dataset.hpp"

#include "blendfuse/loss/losses.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/nn/blendshape_decoder.hpp"
#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/nn/conv_encoder.hpp"
#include "blendfuse/nn/encoders.hpp"
#include "blendfuse/nn/faceformer.hpp"
#include "blendfuse/nn/mlp_encoder.hpp"
#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/nn/wav2vec2.hpp"
#include "blendfuse/train/adam.hpp"
#include "blendfuse/train/audio_trainer.hpp"
#include "blendfuse/train/fusion_trainer.hpp"
#include "blendfuse/train/progress.hpp"

#include "blendfuse/metrics/fusion_eval.hpp"
#include "blendfuse/metrics/metrics.hpp"

#include "blendfuse/pipeline.hpp"

#if defined(BLENDFUSE_WITH_ONEDNN) && __has_include("onednn/onednn.hpp")
#include "onednn/onednn.hpp"
#endif
