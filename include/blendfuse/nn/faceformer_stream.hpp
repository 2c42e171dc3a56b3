// blendfuse — the FaceFormer decoder's streaming inference (FaceFormer<T>::Stream): one frame per
// step against per-head key/value caches, built from the same ops as the teacher-forcing forward
// (nn/faceformer_decoder.hpp): linear_into, sdpa_cached_into with the temporal bias of the cached
// frames as an additive mask, layer_norm_into, relu_. Every buffer is a tensor of the stream,
// allocated once (constructor, reserve(), ring growth), so a warm step allocates nothing.
// Include nn/faceformer.hpp (this header alone declares the class only).
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/nn/faceformer_config.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/attention.hpp"
#include "blendfuse/ops/linear.hpp"
#include "blendfuse/ops/norm.hpp"

namespace blendfuse::nn {

template <class T>
class FaceFormer;

/// Streaming inference state: key/value caches and scratch buffers of one sequence (batch 1).
/// Bound to a model by pointer: the model must outlive the stream and stay in place; parameter
/// values are read live at every step (the style embedding once, at start()).
/// The step is built from the same ops as the teacher-forcing forward (linear_into,
/// sdpa_cached_into, layer_norm_into, relu_): every buffer is a tensor of this stream, allocated
/// by the constructor / reserve(), so a warm step allocates nothing. Copies are deep.
template <class T>
class FaceFormerStream {
 public:
  FaceFormerStream() = default;
  explicit FaceFormerStream(const FaceFormer<T>& model) : m_(&model) { allocate(); }
  FaceFormerStream(const FaceFormerStream& o) : m_(o.m_), t_(o.t_), started_(o.started_) { copy_state(o); }
  FaceFormerStream& operator=(const FaceFormerStream& o) {
    if (this != &o) {
      m_ = o.m_;
      t_ = o.t_;
      started_ = o.started_;
      cap_ = 0;
      copy_state(o);
    }
    return *this;
  }
  FaceFormerStream(FaceFormerStream&&) noexcept = default;
  FaceFormerStream& operator=(FaceFormerStream&&) noexcept = default;

  const FaceFormer<T>* model() const noexcept { return m_; }
  /// Frames produced since start().
  Index frames() const noexcept { return t_; }
  /// Frames the caches hold without growing.
  Index capacity() const noexcept { return cap_; }
  bool started() const noexcept { return started_; }

  /// Preallocates the caches for `frames` frames (no allocation in step() up to that length).
  /// With an attention window W the cache is a ring of W frames, allocated once: reserve()
  /// allocates it, any sequence length then steps without allocating.
  void reserve(Index frames) {
    require_model("reserve");
    const Index W = m_->cfg_.attention_window;
    if (W > 0) {
      if (cap_ < W) grow(W);
    } else if (frames > cap_) {
      grow(frames);
    }
  }

  /// Starts a new sequence with style (n_subjects,) or (1, n_subjects); keeps the caches.
  void start(const Tensor<T>& style) {
    require_model("start");
    const FaceFormerConfig& c = m_->cfg_;
    BF_CHECK(style.numel() == c.n_subjects && (style.ndim() == 1 || (style.ndim() == 2 && style.dim(0) == 1)),
             ShapeError, "FaceFormer::Stream::start: style must be (n_subjects,) or (1, n_subjects) with n_subjects = ",
             c.n_subjects, ", got ", style.shape_string());
    ops::linear_into(style_, style.contiguous().reshape({1, c.n_subjects}), m_->obj_w_.value);
    refresh_cross_value_weights();  // here, so that step() does not allocate them
    t_ = 0;
    started_ = true;
  }
  void start(Index subject) {
    require_model("start");
    start(m_->one_hot(subject));
  }

  /// Produces the deformation (V·3) of the next frame from its audio feature (audio_dim values,
  /// the resampled wav2vec 2.0 hidden state of this frame). Allocation-free once the caches
  /// hold the frame (see reserve()).
  void step(const T* audio, T* out) {
    require_model("step");
    BF_CHECK(started_, ArgumentError, "FaceFormer::Stream::step: call start(style) first");
    const FaceFormer<T>& M = *m_;
    const FaceFormerConfig& c = M.cfg_;
    const Index d = c.feature_dim, H = c.num_heads, D = d / H, V3 = c.vertex_dim(), t = t_;
    const Index W = c.attention_window;
    if (W > 0) {
      if (cap_ < W) grow(W);
    } else if (t + 1 > cap_) {
      grow(std::max<Index>({t + 1, 2 * cap_, 16}));
    }
    refresh_cross_value_weights();
    // Frame t's key/value go to slot t (unbounded) or t mod W (ring of the last W frames); the
    // n cached frames are slots 0..n−1, slot s holding frame t − ((t − s) mod W).
    const Index slot = W > 0 ? t % W : t, n_keys = W > 0 ? std::min(t + 1, W) : t + 1;

    // Input embedding x_t = vertice_map(d_{t−1}) + s + PPE(t) (x_0 = s + PPE(0)).
    if (t > 0)
      ops::linear_into(e_, prev_, M.vm_w_.value, M.vm_b_.value);
    else
      std::fill_n(e_.data(), d, T(0));
    {
      T* e = e_.data();
      const T* st = style_.data();
      const T* pe = M.ppe_.data() + (t % c.period) * d;
      for (Index i = 0; i < d; ++i) e[i] += st[i] + pe[i];
    }

    // Self-attention against the key/value cache with the temporal bias of each cached frame.
    ops::linear_into(qkv_, e_, M.sa_in_w_.value, M.sa_in_b_.value);
    for (Index h = 0; h < H; ++h) {
      std::copy_n(qkv_.data() + d + h * D, D, kc_.data() + (h * cap_ + slot) * D);
      std::copy_n(qkv_.data() + 2 * d + h * D, D, vc_.data() + (h * cap_ + slot) * D);
    }
    for (Index h = 0; h < H; ++h) {
      const double slope = M.slopes_[static_cast<std::size_t>(h)];
      T* row = mask_.data() + h * cap_;
      for (Index j = 0; j < n_keys; ++j) {
        const Index age = W > 0 ? (t - j) % W : t - j;  // t − (frame in slot j)
        row[j] = static_cast<T>(-slope * static_cast<double>(age / c.period));
      }
    }
    ops::sdpa_cached_into(attn_, q_, kc_, vc_, n_keys, mask_, ops::SdpaParams{}, scores_);
    ops::linear_into(h_, attn_flat_, M.sa_out_w_.value, M.sa_out_b_.value);
    add_to(h_, e_);
    ops::layer_norm_into(n_, h_, M.n1_w_.value, M.n1_b_.value, c.layer_norm_eps);

    // Cross-attention to audio frame t (alignment mask: the value projection of that frame).
    std::copy_n(audio, c.audio_dim, audio_.data());
    ops::linear_into(mem_, audio_, M.afm_w_.value, M.afm_b_.value);
    ops::linear_into(v_, mem_, ca_v_w_, ca_v_b_);
    ops::linear_into(h_, v_, M.ca_out_w_.value, M.ca_out_b_.value);
    add_to(h_, n_);
    ops::layer_norm_into(n_, h_, M.n2_w_.value, M.n2_b_.value, c.layer_norm_eps);

    // Feed-forward.
    ops::linear_into(f_, n_, M.l1_w_.value, M.l1_b_.value);
    ops::relu_(f_);
    ops::linear_into(h_, f_, M.l2_w_.value, M.l2_b_.value);
    add_to(h_, n_);
    ops::layer_norm_into(n_, h_, M.n3_w_.value, M.n3_b_.value, c.layer_norm_eps);

    ops::linear_into(prev_, n_, M.vmr_w_.value, M.vmr_b_.value);
    if (out) std::copy_n(prev_.data(), V3, out);
    ++t_;
  }

  /// Tensor form of step(): audio_t with audio_dim elements (any shape, e.g. (audio_dim,) or
  /// (1, 1, audio_dim)) → deformation (V·3,). Allocates the returned tensor.
  Tensor<T> step(const Tensor<T>& audio_t) {
    require_model("step");
    BF_CHECK(audio_t.numel() == m_->cfg_.audio_dim, ShapeError,
             "FaceFormer::Stream::step: audio frame must have audio_dim = ", m_->cfg_.audio_dim,
             " values, got ", audio_t.shape_string());
    const Tensor<T> a = audio_t.contiguous();
    Tensor<T> out({m_->cfg_.vertex_dim()});
    step(a.data(), out.data());
    return out;
  }

 private:
  void require_model(const char* what) const {
    BF_CHECK(m_ != nullptr, ArgumentError, "FaceFormer::Stream::", what,
             ": stream is not bound to a model");
  }
  static void add_to(Tensor<T>& y, const Tensor<T>& x) {  // residual y += x (same shapes)
    T* yp = y.data();
    const T* xp = x.data();
    for (Index i = 0, n = y.numel(); i < n; ++i) yp[i] += xp[i];
  }
  /// The cross-attention's value projection: rows [2d, 3d) of in_proj (views, re-made only when
  /// the parameter tensors are replaced, e.g. by load()).
  void refresh_cross_value_weights() {
    const FaceFormer<T>& M = *m_;
    if (ca_w_src_ == M.ca_in_w_.value.data() && ca_b_src_ == M.ca_in_b_.value.data()) return;
    const Index d = M.cfg_.feature_dim;
    ca_v_w_ = M.ca_in_w_.value.slice(0, 2 * d, 3 * d);
    ca_v_b_ = M.ca_in_b_.value.slice(0, 2 * d, 3 * d);
    ca_w_src_ = M.ca_in_w_.value.data();
    ca_b_src_ = M.ca_in_b_.value.data();
  }
  void allocate() {
    const FaceFormerConfig& c = m_->cfg_;
    const Index d = c.feature_dim, H = c.num_heads, D = d / H;
    style_ = Tensor<T>({1, d});
    e_ = Tensor<T>({1, d});
    qkv_ = Tensor<T>({1, 3 * d});
    q_ = Tensor<T>::view(qkv_.data(), {1, H, 1, D});  // the query heads: first d of qkv_
    attn_ = Tensor<T>({1, H, 1, D});
    attn_flat_ = attn_.reshape({1, d});  // (1, H, 1, D) is merged-heads order already
    h_ = Tensor<T>({1, d});
    n_ = Tensor<T>({1, d});
    mem_ = Tensor<T>({1, d});
    v_ = Tensor<T>({1, d});
    f_ = Tensor<T>({1, c.dim_feedforward});
    prev_ = Tensor<T>({1, c.vertex_dim()});
    audio_ = Tensor<T>({1, c.audio_dim});
    ca_w_src_ = ca_b_src_ = nullptr;
  }
  void copy_state(const FaceFormerStream& o) {
    if (!m_) return;
    allocate();
    style_.assign(o.style_);
    prev_.assign(o.prev_);
    if (o.cap_ > 0) {
      const Index t = t_;
      t_ = 0;  // nothing to carry over from the fresh caches
      grow(o.cap_);
      t_ = t;
      kc_.assign(o.kc_);
      vc_.assign(o.vc_);
    }
  }
  void grow(Index cap) {
    const FaceFormerConfig& c = m_->cfg_;
    const Index H = c.num_heads, D = c.feature_dim / H;
    Tensor<T> k({1, H, cap, D}), v({1, H, cap, D});
    const Index kept = std::min(t_, cap_);  // a ring (window) is allocated once, before use
    for (Index h = 0; h < H; ++h) {
      std::copy_n(kc_.data() + h * cap_ * D, kept * D, k.data() + h * cap * D);
      std::copy_n(vc_.data() + h * cap_ * D, kept * D, v.data() + h * cap * D);
    }
    kc_ = std::move(k);
    vc_ = std::move(v);
    mask_ = Tensor<T>({H, 1, cap});
    scores_ = Tensor<T>({1, cap});
    cap_ = cap;
  }

  const FaceFormer<T>* m_ = nullptr;
  Index t_ = 0, cap_ = 0;
  bool started_ = false;
  Tensor<T> kc_, vc_;       // (1, H, cap, D) key / value caches
  Tensor<T> mask_;          // (H, 1, cap) temporal bias of the cached frames
  Tensor<T> scores_;        // (1, cap) attention probabilities of one head
  Tensor<T> style_, e_, qkv_, q_, attn_, attn_flat_, h_, n_, mem_, v_, f_, prev_, audio_;
  Tensor<T> ca_v_w_, ca_v_b_;  // views of the cross-attention's value projection
  const T* ca_w_src_ = nullptr;
  const T* ca_b_src_ = nullptr;
};

}  // namespace blendfuse::nn
