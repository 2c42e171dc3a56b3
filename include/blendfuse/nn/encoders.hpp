// blendfuse — the encoders of the deformation fusion module (paper §3.3.2): the conv encoder
// (nn/conv_encoder.hpp: ConvEncoderConfig, ConvInReluEncoder) and the MLP encoder of the
// "without geometric map" ablation (nn/mlp_encoder.hpp: MlpEncoderConfig, MlpEncoder).
#pragma once

#include "blendfuse/nn/conv_encoder.hpp"
#include "blendfuse/nn/mlp_encoder.hpp"
