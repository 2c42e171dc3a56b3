// blendfuse — the oneDNN CPU backend (umbrella header): `#include "onednn/onednn.hpp"`.
//
// Specialises the op templates for the `OneDnn` tag (backend/backend.hpp), so every
// `ops::xxx(Tensor<float, OneDnn> ...)` call runs on oneDNN 2.6 primitives:
//   conv2d / conv1d (+ backward)         Conv2dOp<OneDnn>, Conv1dOp<OneDnn>    onednn/conv.hpp
//   instance norm, layer norm (+ bwd)    InstanceNormOp<OneDnn>, LayerNormOp<OneDnn>  onednn/norm.hpp
//   linear, matmul (+ backward)          LinearOp<OneDnn>, MatmulOp<OneDnn>    onednn/linear.hpp
//   relu, gelu, softmax (+ backward)     ReluOp / GeluOp / SoftmaxOp<OneDnn>   onednn/activation.hpp
//   in-place gelu_, group_norm_          GeluOp / GroupNormOp<OneDnn>          onednn/activation.hpp, norm.hpp
//   inference attention (batched GEMMs)  AttentionInferenceOp<OneDnn>          onednn/attention.hpp
// plus fused variants that compose on other backends:
//   onednn::conv2d_relu(_backward)         conv with a ReLU post-op
//   onednn::instance_norm_relu(_backward)  norm + ReLU in one pass each way (training)
//   conv → instance norm → ReLU blocks and stacks (+ backward; blocked layouts across a stack,
//   cached blocked weights)           ConvInReluOp<OneDnn>                onednn/conv_in_relu.hpp
// Instance norm has two routes (layer norm over (N·C, L), default; batch norm over
// (1, N·C, 1, L) with fuse_norm_relu): onednn::set_instance_norm_route, see onednn/norm.hpp.
// Ops without a oneDNN primitive (group norm's forward/backward, dropout, sdpa's own loops, interp)
// run the reference implementation on the same host memory; attention's projections go through
// LinearOp<OneDnn>.
//
// Element types: float runs on oneDNN; double runs the reference on the same memory (so gradient
// checks in double work on OneDnn tensors too) and copies the result.
//
// Using it. Both host backends share memory layout, so a model switches by its tensor type:
// a model templated on the backend instantiates with OneDnn; tensors convert with
// onednn::to_onednn / onednn::to_cpu (copies) or onednn::view_as_onednn / view_as_cpu
// (non-owning views; keep the source alive).
//
// ODR: include this header in every translation unit that uses Tensor<…, OneDnn> with the ops,
// before the first use — a TU that instantiates e.g. Conv2dOp<OneDnn> from the primary template
// alone would violate the one-definition rule.
//
// Threads: OMP_NUM_THREADS / omp_set_num_threads (see onednn/common.hpp). Primitives are cached
// per op and shape: onednn::cache_stats(), onednn::clear_cache().
#pragma once

#ifndef BLENDFUSE_WITH_ONEDNN
#error "onednn/onednn.hpp needs the oneDNN backend (configure with BLENDFUSE_WITH_ONEDNN=ON)"
#endif

#include "onednn/common.hpp"
#include "onednn/activation.hpp"
#include "onednn/attention.hpp"
#include "onednn/conv.hpp"
#include "onednn/linear.hpp"
#include "onednn/norm.hpp"
#include "onednn/conv_in_relu.hpp"

namespace blendfuse {

// The ops this backend implements natively (backend/backend.hpp: native_op). The others run the
// reference implementation on the same memory; the op suite (tests/test_backend_ops.cpp) reports
// them as "not supported". Declare each new specialisation here.
template <> inline constexpr bool native_op<OneDnn, OpKind::conv2d> = true;              // conv.hpp
template <> inline constexpr bool native_op<OneDnn, OpKind::conv2d_relu> = true;         // conv.hpp (post-op)
template <> inline constexpr bool native_op<OneDnn, OpKind::conv1d> = true;              // conv.hpp
template <> inline constexpr bool native_op<OneDnn, OpKind::instance_norm> = true;       // norm.hpp
template <> inline constexpr bool native_op<OneDnn, OpKind::instance_norm_relu> = true;  // norm.hpp (fused)
template <> inline constexpr bool native_op<OneDnn, OpKind::conv_in_relu> = true;        // conv_in_relu.hpp (block and stack)
template <> inline constexpr bool native_op<OneDnn, OpKind::group_norm> = true;          // norm.hpp (wav2vec2's extractor, in place)
template <> inline constexpr bool native_op<OneDnn, OpKind::attention_inference> = true; // attention.hpp (batched GEMMs)
template <> inline constexpr bool native_op<OneDnn, OpKind::layer_norm> = true;          // norm.hpp
template <> inline constexpr bool native_op<OneDnn, OpKind::linear> = true;              // linear.hpp
template <> inline constexpr bool native_op<OneDnn, OpKind::matmul> = true;              // linear.hpp
template <> inline constexpr bool native_op<OneDnn, OpKind::relu> = true;                // activation.hpp
template <> inline constexpr bool native_op<OneDnn, OpKind::gelu> = true;                // activation.hpp
template <> inline constexpr bool native_op<OneDnn, OpKind::softmax> = true;             // activation.hpp

}  // namespace blendfuse
