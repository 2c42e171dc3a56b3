// blendfuse — oneDNN backend: inference attention as batched GEMMs.
//
// AttentionInferenceOp<OneDnn> (ops/attention.hpp: ops::attention_inference) computes every head
// at once: the heads are split into contiguous (N, H, L, D) tensors, q is scaled by 1/sqrt(D) in
// place, and one matmul (q kᵀ over all N·H heads, MatmulOp<OneDnn>), one softmax primitive
// (SoftmaxOp<OneDnn>) and one matmul (· v) replace the reference's GEMM per head. The scaled
// dot-product training path (sdpa / sdpa_backward, which keep the probabilities) is not
// specialised: it runs the reference on the same host memory.
//
// Element types: the same sequence of ops for float and double (double matmul / softmax fall back
// to the reference inside their own specialisations).
#pragma once

#include <cmath>

#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/attention.hpp"
#include "blendfuse/ops/linear.hpp"
#include "onednn/activation.hpp"
#include "onednn/common.hpp"
#include "onednn/linear.hpp"

namespace blendfuse {

/// Inference attention on oneDNN: batched GEMMs + a softmax primitive over all heads.
template <>
struct ops::AttentionInferenceOp<OneDnn> {
  template <class T>
  static Tensor<T, OneDnn> forward(const Tensor<T, OneDnn>& q, const Tensor<T, OneDnn>& k,
                                   const Tensor<T, OneDnn>& v, Index num_heads) {
    ops::AttentionInferenceOp<Cpu>::check<T>(onednn::view_as_cpu(q), onednn::view_as_cpu(k),
                                        onednn::view_as_cpu(v), num_heads);
    const Index H = num_heads, D = q.dim(2) / H;
    Tensor<T, OneDnn> qh = ops::split_heads(q, H), kh = ops::split_heads(k, H), vh = ops::split_heads(v, H);
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(D)));
    T* qp = qh.data();
    for (Index i = 0; i < qh.numel(); ++i) qp[i] *= scale;
    ops::MatmulParams mp;
    mp.trans_b = true;
    const Tensor<T, OneDnn> probs = ops::softmax(ops::matmul(qh, kh, mp));  // (N, H, L, S)
    return ops::merge_heads(ops::matmul(probs, vh));                       // (N, L, E)
  }
};

}  // namespace blendfuse
