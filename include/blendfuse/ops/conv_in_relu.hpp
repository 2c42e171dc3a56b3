// blendfuse — the conv → instance norm → ReLU op family (the fusion encoder's blocks), forward
// with saved state and hand-written backward.
//
// One block:   y = relu(instance_norm(conv2d(x, w), gamma, beta, eps))      (no conv bias: the
//              norm right after it subtracts the per-channel mean, which cancels any bias)
//   x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW), gamma/beta (C_out) → y (N, C_out, H', W').
//   conv_in_relu(x, w, gamma, beta, eps, p, &state) / conv_in_relu_backward(state, w, gamma, dy, p)
//   → ConvInReluGrads {dx, dw, dgamma, dbeta}.
// A stack: blocks 0 … n−1 applied in turn, every block with the same Conv2dParams (the encoder:
//   stride 2, padding k/2). conv_in_relu_stack(x, weights, params, &state, cache) returns the last
//   block's output; conv_in_relu_stack_backward(state, weights, params, dy) returns
//   ConvInReluStackGrads {dx, dw[i], dgamma[i], dbeta[i]} (…_backward_into accumulates into
//   gradients the caller owns, e.g. views of its parameters' gradients: grad += g).
// The stack is an op of its own (not just a loop in the caller) because a backend may keep the
// activations in its private layouts across blocks (oneDNN: blocked nChw8c/16c, see
// backends/onednn/conv_in_relu.hpp) and only return to the plain layout at the end.
//
// Reference (primary template of ConvInReluOp): the composition of the existing ops —
// ops::conv2d → ops::instance_norm → in-place ops::relu_; backward ops::relu_backward →
// ops::instance_norm_backward → ops::conv2d_backward — and the stack is a loop of blocks. These
// calls dispatch on the backend tag, so a backend that specialises conv2d or instance norm but not
// this op still runs its own kernels here.
//
// Saved state. ConvInReluState / ConvInReluStackState have the same members on every backend:
// plain tensors (block input, conv output, block output, mean/rstd) plus `backend`, a type-erased
// `std::shared_ptr<const void>` for what a backend keeps privately (the oneDNN ReLU workspace;
// the blocked activations of a stack, in which case `blocks` is empty). Only the op of the same
// backend reads it.
//
// Weights and the backend's cached copies of them. The stack takes its conv weights as
// WeightRef {value, version}: `version` is the owner's modification counter (nn::Parameter::version,
// bumped by optimiser steps, initialisers and loads). A backend may keep its own copy of a weight
// (oneDNN: reordered into a blocked layout) in a BackendWeightCache the caller owns and passes in,
// when params.cache_weights is set: the copy is reused while the weight's stamp (data pointer,
// version and 65 sampled elements, WeightStamp) is unchanged, and rebuilt otherwise. With
// cache_weights off nothing is kept. The cache is an opaque handle: a copy of it starts empty
// (a copied module never shares a cache), it is thread-safe, and the reference ignores it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/conv.hpp"
#include "blendfuse/ops/norm.hpp"

namespace blendfuse::ops {

// ---- weights and the backend's cached copies ----------------------------------------------------

/// A weight as an op that may cache a backend copy of it sees it: the value and its owner's
/// modification counter (nn::Parameter::version). Implicitly built from a tensor (version 0) for
/// callers that keep no cache.
template <class T, class B = Cpu>
struct WeightRef {
  Tensor<T, B> value;
  std::uint64_t version = 0;

  WeightRef() = default;
  WeightRef(Tensor<T, B> v, std::uint64_t ver = 0) : value(std::move(v)), version(ver) {}  // NOLINT: implicit
};

/// What a cached copy remembers of its weight: the data pointer (the identity of the storage),
/// the version and 65 sampled elements. A changed stamp means the value may have changed.
template <class T>
struct WeightStamp {
  const T* data = nullptr;
  std::uint64_t version = 0;
  std::vector<T> probe;

  template <class B>
  static WeightStamp of(const WeightRef<T, B>& w) {
    WeightStamp s{w.value.data(), w.version, {}};
    const Index n = w.value.numel();
    if (n > 0 && w.value.is_contiguous()) {
      s.probe.reserve(65);
      for (Index i = 0; i < 64; ++i) s.probe.push_back(s.data[(i * n) / 64]);
      s.probe.push_back(s.data[n - 1]);
    }
    return s;
  }
  bool operator==(const WeightStamp& o) const {
    return data == o.data && version == o.version && probe == o.probe;
  }
};

/// Opaque handle to a backend's cached copies of some weights, owned by the caller (a module) and
/// filled by the op of the backend that uses it. Copying or assigning gives an empty handle (a
/// copy never shares a cache); thread-safe.
class BackendWeightCache {
 public:
  BackendWeightCache() = default;
  BackendWeightCache(const BackendWeightCache&) {}
  BackendWeightCache& operator=(const BackendWeightCache&) {
    clear();
    return *this;
  }

  /// The backend's cache object of type C, created on first use (one type per handle; another
  /// type replaces it).
  template <class C>
  std::shared_ptr<C> get() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!p_ || tag_ != tag_of<C>()) {
      p_ = std::make_shared<C>();
      tag_ = tag_of<C>();
    }
    return std::static_pointer_cast<C>(p_);
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    p_.reset();
    tag_ = nullptr;
  }
  bool empty() const {
    std::lock_guard<std::mutex> lock(mu_);
    return p_ == nullptr;
  }

 private:
  template <class C>
  static const void* tag_of() {
    static const char tag = 0;
    return &tag;
  }
  mutable std::mutex mu_;
  std::shared_ptr<void> p_;
  const void* tag_ = nullptr;
};

// ---- state, weights and gradients -------------------------------------------------------------

/// Saved state of one block: the block input `x`, the conv output `conv` (the norm's input), the
/// block output `y` = relu(norm(conv)), the norm statistics (N, C_out), and the backend's private
/// extra (null on the reference).
template <class T, class B = Cpu>
struct ConvInReluState {
  Tensor<T, B> x, conv, y, mean, rstd;
  std::shared_ptr<const void> backend;
};

/// Gradients of one block.
template <class T, class B = Cpu>
struct ConvInReluGrads {
  Tensor<T, B> dx, dw, dgamma, dbeta;
};

/// Parameters of a stack: the conv parameters of every block, the norm's eps, whether the
/// backward must return dL/dx (training an encoder needs only the parameter gradients), and
/// whether the backend may keep copies of the conv weights across calls (inference with weights
/// that change only through their version; see the file comment).
struct ConvInReluStackParams {
  Conv2dParams conv;
  double eps = 1e-5;
  bool input_grad = true;
  bool cache_weights = false;
};

/// The weights of a stack, one entry per block: conv weights (C_i, C_{i−1}, kH, kW), norm
/// gamma/beta (C_i).
template <class T, class B = Cpu>
struct ConvInReluStackWeights {
  std::vector<WeightRef<T, B>> conv;
  std::vector<Tensor<T, B>> gamma, beta;
};

/// Saved state of a stack: per block (`blocks`) where the stack ran block by block, or the
/// backend's private state (`backend`, `blocks` empty) where it ran in the backend's own layouts;
/// `y` is the stack's output either way.
template <class T, class B = Cpu>
struct ConvInReluStackState {
  std::vector<ConvInReluState<T, B>> blocks;
  Tensor<T, B> y;
  std::shared_ptr<const void> backend;
};

/// Gradients of a stack: dx (empty unless params.input_grad) and per-block parameter gradients.
template <class T, class B = Cpu>
struct ConvInReluStackGrads {
  Tensor<T, B> dx;
  std::vector<Tensor<T, B>> dw, dgamma, dbeta;
};

namespace detail {

template <class T, class B>
void cir_check_stack(const ConvInReluStackWeights<T, B>& w, const char* op) {
  BF_CHECK(!w.conv.empty(), ArgumentError, op, ": the stack has no blocks");
  BF_CHECK(w.gamma.size() == w.conv.size() && w.beta.size() == w.conv.size(), ArgumentError, op,
           ": ", w.conv.size(), " conv weights but ", w.gamma.size(), " gammas and ", w.beta.size(), " betas");
}

template <class T, class B>
void cir_check_state(const ConvInReluStackState<T, B>& s, std::size_t blocks, const char* op) {
  BF_CHECK(s.backend != nullptr || s.blocks.size() == blocks, ArgumentError, op,
           ": the saved state has ", s.blocks.size(), " blocks, the weights ", blocks,
           " (state not from conv_in_relu_stack with these weights?)");
  BF_CHECK(s.y.ndim() > 0, ArgumentError, op, ": empty saved state (forward run without a state?)");
}

/// Shape checks of the gradients a stack backward accumulates into (like the weights, contiguous).
template <class T, class B>
void cir_check_grads(const ConvInReluStackWeights<T, B>& w, const ConvInReluStackGrads<T, B>& g, const char* op) {
  const std::size_t n = w.conv.size();
  BF_CHECK(g.dw.size() == n && g.dgamma.size() == n && g.dbeta.size() == n, ArgumentError, op,
           ": gradients for ", g.dw.size(), "/", g.dgamma.size(), "/", g.dbeta.size(), " blocks, the stack has ", n);
  for (std::size_t i = 0; i < n; ++i) {
    BF_CHECK(g.dw[i].shape() == w.conv[i].value.shape() && g.dw[i].is_contiguous(), ShapeError, op, ": block ", i,
             ": dw ", g.dw[i].shape_string(), " must be contiguous and match the weight ", w.conv[i].value.shape_string());
    BF_CHECK(g.dgamma[i].shape() == w.gamma[i].shape() && g.dgamma[i].is_contiguous(), ShapeError, op, ": block ", i,
             ": dgamma ", g.dgamma[i].shape_string(), " must be contiguous and match gamma ", w.gamma[i].shape_string());
    BF_CHECK(g.dbeta[i].shape() == w.beta[i].shape() && g.dbeta[i].is_contiguous(), ShapeError, op, ": block ", i,
             ": dbeta ", g.dbeta[i].shape_string(), " must be contiguous and match beta ", w.beta[i].shape_string());
  }
}

/// acc += g elementwise (same shapes, acc contiguous), in the order nn::Parameter::accumulate uses.
template <class T, class B>
void cir_accumulate(Tensor<T, B> acc, const Tensor<T, B>& g) {  // acc: a handle sharing the storage
  const auto c = g.contiguous();
  T* a = acc.data();
  const T* s = c.data();
  for (Index i = 0; i < acc.numel(); ++i) a[i] += s[i];
}

/// Zero gradients shaped like the stack's weights.
template <class T, class B>
ConvInReluStackGrads<T, B> cir_zero_grads(const ConvInReluStackWeights<T, B>& w) {
  ConvInReluStackGrads<T, B> g;
  for (std::size_t i = 0; i < w.conv.size(); ++i) {
    g.dw.emplace_back(w.conv[i].value.shape());
    g.dgamma.emplace_back(w.gamma[i].shape());
    g.dbeta.emplace_back(w.beta[i].shape());
  }
  return g;
}

/// The stack as a loop of `Op`'s blocks (the reference; also a backend's fallback).
template <class Op, class T, class B>
Tensor<T, B> cir_stack_loop(const Tensor<T, B>& x, const ConvInReluStackWeights<T, B>& w,
                            const ConvInReluStackParams& p, ConvInReluStackState<T, B>* state) {
  Tensor<T, B> h = x;
  if (state) *state = ConvInReluStackState<T, B>{std::vector<ConvInReluState<T, B>>(w.conv.size()), {}, {}};
  for (std::size_t i = 0; i < w.conv.size(); ++i)
    h = Op::forward(h, w.conv[i].value, w.gamma[i], w.beta[i], p.eps, p.conv, state ? &state->blocks[i] : nullptr);
  if (state) state->y = h;
  return h;
}

/// Backward of cir_stack_loop: accumulates into `acc`, returns dx (from block 0's conv backward).
template <class Op, class T, class B>
Tensor<T, B> cir_stack_loop_backward(const ConvInReluStackState<T, B>& s, const ConvInReluStackWeights<T, B>& w,
                                     const ConvInReluStackParams& p, const Tensor<T, B>& dy,
                                     ConvInReluStackGrads<T, B>& acc) {
  Tensor<T, B> d = dy;
  for (std::size_t k = w.conv.size(); k-- > 0;) {
    auto g = Op::backward(s.blocks[k], w.conv[k].value, w.gamma[k], d, p.conv);
    cir_accumulate(acc.dgamma[k], g.dgamma);
    cir_accumulate(acc.dbeta[k], g.dbeta);
    cir_accumulate(acc.dw[k], g.dw);
    d = std::move(g.dx);
  }
  return d;
}

}  // namespace detail

/// conv → instance norm → ReLU, one block and stacks of blocks. Reference implementation
/// (primary template, any host-memory backend); backends specialise ConvInReluOp<Backend>.
template <class Backend>
struct ConvInReluOp {
  /// One block: y = relu(instance_norm(conv2d(x, w), gamma, beta, eps)); `state` (optional)
  /// receives what backward needs.
  template <class T>
  static Tensor<T, Backend> forward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& w,
                                    const Tensor<T, Backend>& gamma, const Tensor<T, Backend>& beta, double eps,
                                    const Conv2dParams& p, ConvInReluState<T, Backend>* state) {
    Tensor<T, Backend> c = ops::conv2d(x, w, nullptr, p);
    auto r = ops::instance_norm(c, gamma, beta, eps);
    ops::relu_(r.y);
    if (state) *state = ConvInReluState<T, Backend>{x, std::move(c), r.y, std::move(r.mean), std::move(r.rstd), {}};
    return r.y;
  }

  /// Gradients {dx, dw, dgamma, dbeta} of one block for dy = ∂L/∂y.
  template <class T>
  static ConvInReluGrads<T, Backend> backward(const ConvInReluState<T, Backend>& s, const Tensor<T, Backend>& w,
                                              const Tensor<T, Backend>& gamma, const Tensor<T, Backend>& dy,
                                              const Conv2dParams& p) {
    auto ng = ops::instance_norm_backward(s.conv, gamma, s.mean, s.rstd, ops::relu_backward(s.y, dy));
    auto cg = ops::conv2d_backward(s.x, w, ng.dx, p, false);
    return {std::move(cg.dx), std::move(cg.dw), std::move(ng.dgamma), std::move(ng.dbeta)};
  }

  /// The stack: the blocks in turn; `cache` is not used by the reference.
  template <class T>
  static Tensor<T, Backend> stack_forward(const Tensor<T, Backend>& x, const ConvInReluStackWeights<T, Backend>& w,
                                          const ConvInReluStackParams& p, ConvInReluStackState<T, Backend>* state,
                                          BackendWeightCache* /*cache*/) {
    detail::cir_check_stack(w, "conv_in_relu_stack");
    return detail::cir_stack_loop<ConvInReluOp>(x, w, p, state);
  }

  /// Accumulates the stack's parameter gradients into `acc` (acc.dw[i] += …); returns dx when
  /// p.input_grad (else an empty tensor).
  template <class T>
  static Tensor<T, Backend> stack_backward(const ConvInReluStackState<T, Backend>& s,
                                           const ConvInReluStackWeights<T, Backend>& w, const ConvInReluStackParams& p,
                                           const Tensor<T, Backend>& dy, ConvInReluStackGrads<T, Backend>& acc) {
    detail::cir_check_stack(w, "conv_in_relu_stack_backward");
    detail::cir_check_state(s, w.conv.size(), "conv_in_relu_stack_backward");
    detail::cir_check_grads(w, acc, "conv_in_relu_stack_backward");
    BF_CHECK(s.backend == nullptr, ArgumentError,
             "conv_in_relu_stack_backward: the saved state holds another backend's private state");
    Tensor<T, Backend> dx = detail::cir_stack_loop_backward<ConvInReluOp>(s, w, p, dy, acc);
    return p.input_grad ? dx : Tensor<T, Backend>{};
  }
};

// ---- free functions (the backend is deduced from the tensors) ---------------------------------

/// y = relu(instance_norm(conv2d(x, w), gamma, beta, eps)) (no conv bias); `state` (optional)
/// receives what conv_in_relu_backward needs.
template <class T, class B>
Tensor<T, B> conv_in_relu(const Tensor<T, B>& x, const Tensor<T, B>& w, const Tensor<T, B>& gamma,
                          const Tensor<T, B>& beta, double eps, const Conv2dParams& p,
                          std::type_identity_t<ConvInReluState<T, B>>* state = nullptr) {
  return ConvInReluOp<B>::forward(x, w, gamma, beta, eps, p, state);
}

/// Gradients {dx, dw, dgamma, dbeta} of conv_in_relu for dy = ∂L/∂y.
template <class T, class B>
ConvInReluGrads<T, B> conv_in_relu_backward(const ConvInReluState<T, B>& state, const Tensor<T, B>& w,
                                            const Tensor<T, B>& gamma, const std::type_identity_t<Tensor<T, B>>& dy,
                                            const Conv2dParams& p) {
  return ConvInReluOp<B>::backward(state, w, gamma, dy, p);
}

/// The blocks of `w` applied in turn to x; returns the last block's output. `state` (optional)
/// receives what the backward needs; `cache` (optional) holds the backend's copies of the conv
/// weights when p.cache_weights.
template <class T, class B>
Tensor<T, B> conv_in_relu_stack(const Tensor<T, B>& x, const ConvInReluStackWeights<T, B>& w,
                                const ConvInReluStackParams& p,
                                std::type_identity_t<ConvInReluStackState<T, B>>* state = nullptr,
                                BackendWeightCache* cache = nullptr) {
  return ConvInReluOp<B>::stack_forward(x, w, p, state, cache);
}

/// Accumulates the gradients of conv_in_relu_stack for dy = ∂L/∂y (the stack output's shape)
/// into `acc` (acc.dw[i] += dL/dw_i, …; e.g. views of parameter gradients); acc.dx is set to
/// dL/dx when p.input_grad.
template <class T, class B>
void conv_in_relu_stack_backward_into(const ConvInReluStackState<T, B>& state, const ConvInReluStackWeights<T, B>& w,
                                      const ConvInReluStackParams& p, const std::type_identity_t<Tensor<T, B>>& dy,
                                      ConvInReluStackGrads<T, B>& acc) {
  acc.dx = ConvInReluOp<B>::stack_backward(state, w, p, dy, acc);
}

/// Gradients {dx (when p.input_grad), dw[i], dgamma[i], dbeta[i]} of conv_in_relu_stack.
template <class T, class B>
ConvInReluStackGrads<T, B> conv_in_relu_stack_backward(const ConvInReluStackState<T, B>& state,
                                                       const ConvInReluStackWeights<T, B>& w,
                                                       const ConvInReluStackParams& p,
                                                       const std::type_identity_t<Tensor<T, B>>& dy) {
  detail::cir_check_stack(w, "conv_in_relu_stack_backward");
  ConvInReluStackGrads<T, B> g = detail::cir_zero_grads(w);
  conv_in_relu_stack_backward_into(state, w, p, dy, g);
  return g;
}

}  // namespace blendfuse::ops
