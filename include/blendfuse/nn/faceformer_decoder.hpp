// blendfuse — the FaceFormer decoder (Fan et al., "FaceFormer: Speech-Driven 3D Facial Animation
// with Transformers", CVPR 2022): audio features → per-vertex deformations, autoregressively.
//
// Input audio features. FaceFormer runs wav2vec 2.0 on the waveform, resamples the 50 Hz conv
// features in time to the output frame rate with F.interpolate(mode="linear",
// align_corners=True) (ops/interp.hpp: interp_linear_ntc) *before* the feature projection and the
// transformer (nn/wav2vec2.hpp: encode()), and feeds the last hidden state to this decoder. This
// module takes those already-resampled hidden states, audio (B, T, audio_dim), one per output
// frame — the "vocaset" alignment (BIWI's two audio frames per motion frame is not implemented).
//
// Deformations. Outputs and the teacher-forcing inputs are deformations d = vertices − template,
// flattened (B, T, V·3) in (x, y, z) order per vertex; add the subject's template outside.
//
// Architecture (d = feature_dim, H = num_heads, D = d / H, F = dim_feedforward, p = period):
//   memory  m_t = audio_feature_map(a_t)                     Linear(audio_dim → d)
//   style   s   = obj_vector(style)                          Linear(n_subjects → d, no bias),
//               style (B, n_subjects) is a one-hot subject code (any weights are accepted)
//   input   x_0 = s + PPE(0),  x_t = vertice_map(d_{t−1}) + s + PPE(t)   (t ≥ 1)
//               vertice_map = Linear(V·3 → d); PPE(t, 2i) = sin((t mod p)·ω_i),
//               PPE(t, 2i+1) = cos((t mod p)·ω_i), ω_i = 10000^(−2i/d) (FaceFormer's periodic
//               positional encoding; its dropout is ignored). No length cap: PPE and masks are
//               computed for any T (FaceFormer precomputes 600 frames).
//   decoder one torch.nn.TransformerDecoderLayer(d, H, F, batch_first=True) — post-norm, ReLU,
//           eval mode (no dropout), inside nn.TransformerDecoder(num_layers=1, norm=None):
//             h = norm1(x + self_attn(x, x, x, tgt_mask))
//             h = norm2(h + multihead_attn(h, m, m, memory_mask))
//             y = norm3(h + linear2(relu(linear1(h))))
//           tgt_mask (H, T, T): ALiBi-like biased causal mask,
//             mask_h(i, j) = −slope_h · floor((i − j) / p) for j ≤ i, −inf for j > i,
//             slope = FaceFormer's / ALiBi's get_slopes(H) (faceformer_alibi_slopes);
//           memory_mask (T, T): alignment mask, 0 on the diagonal, −inf elsewhere — frame t
//             attends only to audio frame t. The softmax over one key is exactly 1, so the
//             cross-attention equals out_proj(W_v m_t + b_v) and is computed that way (W_q, W_k
//             and their biases get exactly zero gradient, as in PyTorch).
//   output  d_t = vertice_map_r(y_t)                          Linear(d → V·3), zero-initialised
//
// Teacher forcing (training): forward(audio, deformations, style, ctx) feeds the ground-truth
// deformations of frames < t as input of frame t and returns all T outputs at once;
// backward(ctx, dout) accumulates every parameter gradient and returns d(audio), d(deformations)
// and d(style) — d(audio) lets gradients continue into the wav2vec 2.0 transformer.
// FaceFormer's training code feeds vertice_map(template − template) = vertice_map.bias + s at
// frame 0 where its predict() feeds s alone; `map_zero_first_frame = true` reproduces the
// training code, the default (false) is consistent with inference.
//
// Attention window. FaceFormer builds its biased mask for max_seq_len = 600 frames and cannot run
// longer sequences. Here the self-attention sees the last W = attention_window frames (default
// 600): identical to FaceFormer for T ≤ 600, and for longer sequences frame i attends to
// i − W < j ≤ i. Training (forward) and inference (Stream) use the same window; 0 = unbounded.
//
// Inference: Stream keeps per-head key/value caches of the self-attention, so frame t costs the
// projections (O(d·(V·3 + audio_dim) + d·F + d²)) plus one attention row over min(t + 1, W)
// cached keys — no recomputation of earlier frames as in FaceFormer's predict(), and a cost per
// frame that stops growing at t = W (bench_models: faceformer/step). With a window the cache is a
// ring of W frames allocated once; unbounded (W = 0) caches grow geometrically (reserve()
// preallocates). Once warm, step() does not allocate. start(style) / step(audio_t) stream frame by
// frame; predict(audio, style) runs a whole sequence.
//
// Tensor names are the PyTorch FaceFormer state_dict keys (under an optional prefix):
//   audio_feature_map.{weight,bias}, vertice_map.{weight,bias}, vertice_map_r.{weight,bias},
//   obj_vector.weight, transformer_decoder.layers.0.{self_attn,multihead_attn}.{in_proj_weight,
//   in_proj_bias,out_proj.weight,out_proj.bias}, ...layers.0.linear{1,2}.{weight,bias},
//   ...layers.0.norm{1,2,3}.{weight,bias}.
// Checkpoints store the config as JSON in the safetensors metadata key "faceformer_config".
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/io/safetensors.hpp"
#include "blendfuse/nn/faceformer_config.hpp"
#include "blendfuse/nn/faceformer_masks.hpp"
#include "blendfuse/nn/faceformer_stream.hpp"
#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/attention.hpp"
#include "blendfuse/ops/linear.hpp"
#include "blendfuse/ops/norm.hpp"

namespace blendfuse::nn {

template <class T>
class FaceFormer {
 public:
  static_assert(std::is_floating_point_v<T>, "FaceFormer needs a floating-point type");

  /// What the teacher-forcing forward saves for backward.
  struct Context {
    Tensor<T> audio, style;       // inputs (B, T, audio_dim), (B, n_subjects)
    Tensor<T> shifted;            // (B, T, V·3): frame t holds the deformation of frame t − 1
    Tensor<T> x0;                 // decoder input (B, T, d)
    ops::MhaContext<T> sa;             // self-attention
    Tensor<T> h1, mean1, rstd1, n1;
    Tensor<T> memory, cross_v;    // audio_feature_map output and its value projection (B, T, d)
    Tensor<T> h2, mean2, rstd2, n2;
    Tensor<T> relu;               // relu(linear1(n2)) (B, T, F)
    Tensor<T> h3, mean3, rstd3, n3;
    bool map_zero_first_frame = false;
  };

  /// Input gradients returned by backward().
  struct InputGrads {
    Tensor<T> daudio;         ///< (B, T, audio_dim)
    Tensor<T> ddeformations;  ///< (B, T, V·3); the last frame is not an input, its row is 0
    Tensor<T> dstyle;         ///< (B, n_subjects)
  };

  using Stream = FaceFormerStream<T>;

  FaceFormer() = default;
  explicit FaceFormer(const FaceFormerConfig& cfg, std::string prefix = "")
      : cfg_(cfg), prefix_(std::move(prefix)) {
    cfg_.validate();
    const Index d = cfg_.feature_dim, V3 = cfg_.vertex_dim(), F = cfg_.dim_feedforward;
    auto P = [&](const std::string& n, Shape s) { return Parameter<T>(prefix_ + n, std::move(s)); };
    afm_w_ = P("audio_feature_map.weight", {d, cfg_.audio_dim});
    afm_b_ = P("audio_feature_map.bias", {d});
    vm_w_ = P("vertice_map.weight", {d, V3});
    vm_b_ = P("vertice_map.bias", {d});
    vmr_w_ = P("vertice_map_r.weight", {V3, d});
    vmr_b_ = P("vertice_map_r.bias", {V3});
    obj_w_ = P("obj_vector.weight", {d, cfg_.n_subjects});
    const std::string L = "transformer_decoder.layers.0.";
    sa_in_w_ = P(L + "self_attn.in_proj_weight", {3 * d, d});
    sa_in_b_ = P(L + "self_attn.in_proj_bias", {3 * d});
    sa_out_w_ = P(L + "self_attn.out_proj.weight", {d, d});
    sa_out_b_ = P(L + "self_attn.out_proj.bias", {d});
    ca_in_w_ = P(L + "multihead_attn.in_proj_weight", {3 * d, d});
    ca_in_b_ = P(L + "multihead_attn.in_proj_bias", {3 * d});
    ca_out_w_ = P(L + "multihead_attn.out_proj.weight", {d, d});
    ca_out_b_ = P(L + "multihead_attn.out_proj.bias", {d});
    l1_w_ = P(L + "linear1.weight", {F, d});
    l1_b_ = P(L + "linear1.bias", {F});
    l2_w_ = P(L + "linear2.weight", {d, F});
    l2_b_ = P(L + "linear2.bias", {d});
    Parameter<T>* norms[6] = {&n1_w_, &n1_b_, &n2_w_, &n2_b_, &n3_w_, &n3_b_};
    for (int k = 0; k < 6; ++k)
      *norms[k] = P(L + "norm" + std::to_string(k / 2 + 1) + (k % 2 ? ".bias" : ".weight"), {d});
    for (Parameter<T>* p : {&n1_w_, &n2_w_, &n3_w_}) p->value.fill(T(1));
    ppe_ = faceformer_ppe_table<T>(d, cfg_.period);
    slopes_ = faceformer_alibi_slopes(cfg_.num_heads);
  }

  /// FaceFormer's initialisation: PyTorch defaults (Linear: U(±1/√fan_in) for weight and bias;
  /// MultiheadAttention: xavier-uniform in_proj, zero biases, U(±1/√d) out_proj; LayerNorm 1 / 0)
  /// and vertice_map_r set to zero.
  void init(Rng& rng) {
    auto lin = [&](Parameter<T>& w, Parameter<T>* b) {
      init_uniform_fan_in(w, w.value.dim(1), rng);
      if (b) init_uniform_fan_in(*b, w.value.dim(1), rng);
    };
    lin(afm_w_, &afm_b_);
    lin(vm_w_, &vm_b_);
    lin(obj_w_, nullptr);
    const Index d = cfg_.feature_dim;
    const double xb = std::sqrt(6.0 / static_cast<double>(d + 3 * d));
    for (auto [iw, ib, ow, ob] : {std::tuple{&sa_in_w_, &sa_in_b_, &sa_out_w_, &sa_out_b_},
                                  std::tuple{&ca_in_w_, &ca_in_b_, &ca_out_w_, &ca_out_b_}}) {
      fill_uniform(iw->value, rng, -xb, xb);
      ib->value.zero();
      init_uniform_fan_in(*ow, d, rng);
      ob->value.zero();
    }
    lin(l1_w_, &l1_b_);
    lin(l2_w_, &l2_b_);
    for (Parameter<T>* p : {&n1_w_, &n2_w_, &n3_w_}) p->value.fill(T(1));
    for (Parameter<T>* p : {&n1_b_, &n2_b_, &n3_b_}) p->value.zero();
    vmr_w_.value.zero();
    vmr_b_.value.zero();
  }

  ParamList<T> parameters() {
    return {&afm_w_,   &afm_b_,   &vm_w_,    &vm_b_,    &vmr_w_, &vmr_b_, &obj_w_,
            &sa_in_w_, &sa_in_b_, &sa_out_w_, &sa_out_b_, &ca_in_w_, &ca_in_b_, &ca_out_w_,
            &ca_out_b_, &l1_w_,   &l1_b_,    &l2_w_,    &l2_b_,  &n1_w_,  &n1_b_,
            &n2_w_,    &n2_b_,    &n3_w_,    &n3_b_};
  }

  const FaceFormerConfig& config() const noexcept { return cfg_; }
  const std::string& prefix() const noexcept { return prefix_; }
  /// The per-head slopes of the temporal bias.
  const std::vector<double>& slopes() const noexcept { return slopes_; }

  /// One-hot style code (1, n_subjects) of training subject `subject`.
  Tensor<T> one_hot(Index subject) const {
    BF_CHECK(subject >= 0 && subject < cfg_.n_subjects, ArgumentError, "FaceFormer: subject ",
             subject, " out of range [0, ", cfg_.n_subjects, ")");
    Tensor<T> s({1, cfg_.n_subjects});
    s[subject] = T(1);
    return s;
  }

  // ---- teacher forcing ---------------------------------------------------------------------------

  /// audio (B, T, audio_dim) resampled wav2vec 2.0 hidden states, deformations (B, T, V·3) the
  /// ground truth (frames < t are the input of frame t; the last frame is not used), style
  /// (B, n_subjects) → predicted deformations (B, T, V·3). With `ctx` saves what backward needs.
  Tensor<T> forward(const Tensor<T>& audio, const Tensor<T>& deformations, const Tensor<T>& style,
                    Context* ctx = nullptr, bool map_zero_first_frame = false) const {
    check_ndim(audio, 3, "FaceFormer audio");
    const Index B = audio.dim(0), Tn = audio.dim(1), d = cfg_.feature_dim, V3 = cfg_.vertex_dim();
    check_shape(audio, {-1, -1, cfg_.audio_dim}, "FaceFormer audio (B, T, audio_dim)");
    check_shape(deformations, {B, Tn, V3}, "FaceFormer deformations (B, T, V*3) for audio " + audio.shape_string());
    check_shape(style, {B, cfg_.n_subjects}, "FaceFormer style (B, n_subjects)");
    BF_CHECK(B > 0 && Tn > 0, ShapeError, "FaceFormer: empty batch or sequence ", audio.shape_string());
    const Tensor<T> defs = deformations.contiguous();

    Tensor<T> shifted({B, Tn, V3});
    for (Index b = 0; b < B; ++b)
      std::copy(defs.data() + b * Tn * V3, defs.data() + (b * Tn + Tn - 1) * V3,
                shifted.data() + (b * Tn + 1) * V3);
    Tensor<T> x0 = ops::linear(shifted, vm_w_.value, vm_b_.value);
    const Tensor<T> semb = ops::linear(style, obj_w_.value);
    for (Index b = 0; b < B; ++b)
      for (Index t = 0; t < Tn; ++t) {
        T* x = x0.data() + (b * Tn + t) * d;
        const T* pe = ppe_.data() + (t % cfg_.period) * d;
        const T* s = semb.data() + b * d;
        for (Index i = 0; i < d; ++i) x[i] = (t == 0 && !map_zero_first_frame ? T(0) : x[i]) + s[i] + pe[i];
      }

    const Tensor<T> mask = faceformer_biased_mask<T>(cfg_.num_heads, Tn, cfg_.period, cfg_.attention_window);
    ops::MhaResult<T> sa = ops::multi_head_attention(x0, x0, x0, self_weights(), ops::MhaParams{cfg_.num_heads}, mask);
    Tensor<T> h1 = add(x0, sa.output);
    ops::NormResult<T> r1 = ops::layer_norm(h1, n1_w_.value, n1_b_.value, cfg_.layer_norm_eps);

    Tensor<T> memory = ops::linear(audio, afm_w_.value, afm_b_.value);
    Tensor<T> cross_v = ops::linear(memory, ca_in_w_.value.slice(0, 2 * d, 3 * d), ca_in_b_.value.slice(0, 2 * d, 3 * d));
    Tensor<T> h2 = add(r1.y, ops::linear(cross_v, ca_out_w_.value, ca_out_b_.value));
    ops::NormResult<T> r2 = ops::layer_norm(h2, n2_w_.value, n2_b_.value, cfg_.layer_norm_eps);

    Tensor<T> relu = ops::relu(ops::linear(r2.y, l1_w_.value, l1_b_.value));
    Tensor<T> h3 = add(r2.y, ops::linear(relu, l2_w_.value, l2_b_.value));
    ops::NormResult<T> r3 = ops::layer_norm(h3, n3_w_.value, n3_b_.value, cfg_.layer_norm_eps);
    Tensor<T> out = ops::linear(r3.y, vmr_w_.value, vmr_b_.value);
    if (ctx) {
      ctx->audio = audio.contiguous();
      ctx->style = style.contiguous();
      ctx->shifted = std::move(shifted);
      ctx->x0 = std::move(x0);
      ctx->sa = std::move(sa.ctx);
      ctx->h1 = std::move(h1);
      ctx->mean1 = std::move(r1.mean);
      ctx->rstd1 = std::move(r1.rstd);
      ctx->n1 = std::move(r1.y);
      ctx->memory = std::move(memory);
      ctx->cross_v = std::move(cross_v);
      ctx->h2 = std::move(h2);
      ctx->mean2 = std::move(r2.mean);
      ctx->rstd2 = std::move(r2.rstd);
      ctx->n2 = std::move(r2.y);
      ctx->relu = std::move(relu);
      ctx->h3 = std::move(h3);
      ctx->mean3 = std::move(r3.mean);
      ctx->rstd3 = std::move(r3.rstd);
      ctx->n3 = std::move(r3.y);
      ctx->map_zero_first_frame = map_zero_first_frame;
    }
    return out;
  }

  /// Accumulates every parameter gradient for dout = ∂L/∂out (B, T, V·3) and returns the input
  /// gradients.
  InputGrads backward(const Context& c, const Tensor<T>& dout) {
    BF_CHECK(!c.n3.empty(), ArgumentError, "FaceFormer::backward: empty context (run forward with a context)");
    const Index B = c.audio.dim(0), Tn = c.audio.dim(1), d = cfg_.feature_dim, V3 = cfg_.vertex_dim();
    check_shape(dout, {B, Tn, V3}, "FaceFormer::backward dout");

    auto gr = ops::linear_backward(c.n3, vmr_w_.value, dout);
    vmr_w_.accumulate(gr.dw);
    vmr_b_.accumulate(gr.db);
    auto g3 = ops::layer_norm_backward(c.h3, n3_w_.value, c.mean3, c.rstd3, gr.dx);
    n3_w_.accumulate(g3.dgamma);
    n3_b_.accumulate(g3.dbeta);
    auto gl2 = ops::linear_backward(c.relu, l2_w_.value, g3.dx);
    l2_w_.accumulate(gl2.dw);
    l2_b_.accumulate(gl2.db);
    auto gl1 = ops::linear_backward(c.n2, l1_w_.value, ops::relu_backward(c.relu, gl2.dx));
    l1_w_.accumulate(gl1.dw);
    l1_b_.accumulate(gl1.db);
    add_into(gl1.dx, g3.dx);  // dn2

    auto g2 = ops::layer_norm_backward(c.h2, n2_w_.value, c.mean2, c.rstd2, gl1.dx);
    n2_w_.accumulate(g2.dgamma);
    n2_b_.accumulate(g2.dbeta);
    auto gco = ops::linear_backward(c.cross_v, ca_out_w_.value, g2.dx);
    ca_out_w_.accumulate(gco.dw);
    ca_out_b_.accumulate(gco.db);
    auto gcv = ops::linear_backward(c.memory, ca_in_w_.value.slice(0, 2 * d, 3 * d), gco.dx);
    {
      Tensor<T> dw({3 * d, d}), db({3 * d});
      dw.slice(0, 2 * d, 3 * d).assign(gcv.dw);
      db.slice(0, 2 * d, 3 * d).assign(gcv.db);
      ca_in_w_.accumulate(dw);
      ca_in_b_.accumulate(db);
    }
    auto gafm = ops::linear_backward(c.audio, afm_w_.value, gcv.dx);
    afm_w_.accumulate(gafm.dw);
    afm_b_.accumulate(gafm.db);

    auto g1 = ops::layer_norm_backward(c.h1, n1_w_.value, c.mean1, c.rstd1, g2.dx);
    n1_w_.accumulate(g1.dgamma);
    n1_b_.accumulate(g1.dbeta);
    auto gsa = ops::multi_head_attention_backward(c.x0, c.x0, c.x0, self_weights(),
                                                  ops::MhaParams{cfg_.num_heads}, c.sa, g1.dx);
    sa_in_w_.accumulate(gsa.din_proj_weight);
    sa_in_b_.accumulate(gsa.din_proj_bias);
    sa_out_w_.accumulate(gsa.dout_proj_weight);
    sa_out_b_.accumulate(gsa.dout_proj_bias);
    Tensor<T> dx0 = std::move(g1.dx);
    add_into(dx0, gsa.dquery);
    add_into(dx0, gsa.dkey);
    add_into(dx0, gsa.dvalue);

    // x0 = [vertice_map(shifted)] + style embedding + PPE.
    Tensor<T> dsemb({B, d});
    for (Index b = 0; b < B; ++b)
      for (Index t = 0; t < Tn; ++t)
        for (Index i = 0; i < d; ++i) dsemb[b * d + i] += dx0[(b * Tn + t) * d + i];
    auto gobj = ops::linear_backward(c.style, obj_w_.value, dsemb, false);
    obj_w_.accumulate(gobj.dw);
    if (!c.map_zero_first_frame)
      for (Index b = 0; b < B; ++b) std::fill_n(dx0.data() + b * Tn * d, d, T(0));
    auto gvm = ops::linear_backward(c.shifted, vm_w_.value, dx0);
    vm_w_.accumulate(gvm.dw);
    vm_b_.accumulate(gvm.db);

    InputGrads g;
    g.daudio = std::move(gafm.dx);
    g.dstyle = std::move(gobj.dx);
    g.ddeformations = Tensor<T>({B, Tn, V3});
    for (Index b = 0; b < B; ++b)
      std::copy(gvm.dx.data() + (b * Tn + 1) * V3, gvm.dx.data() + (b * Tn + Tn) * V3,
                g.ddeformations.data() + b * Tn * V3);
    return g;
  }

  // ---- autoregressive inference -------------------------------------------------------------------

  /// A new stream bound to this model.
  Stream stream() const { return Stream(*this); }

  /// The model's own stream (see Stream): start a sequence with style (n_subjects,) /
  /// (1, n_subjects) or a subject index, then step() once per frame.
  void start(const Tensor<T>& style) {
    bind_stream();
    stream_.start(style);
  }
  void start(Index subject) {
    bind_stream();
    stream_.start(subject);
  }
  void reserve(Index frames) {
    bind_stream();
    stream_.reserve(frames);
  }
  Tensor<T> step(const Tensor<T>& audio_t) {
    require_started();
    return stream_.step(audio_t);
  }
  void step(const T* audio_t, T* out) {
    require_started();
    stream_.step(audio_t, out);
  }
  /// Frames produced by the model's own stream since start().
  Index frames() const noexcept { return stream_.model() == this ? stream_.frames() : 0; }

  /// Autoregressive prediction of a whole sequence: audio (B, T, audio_dim), style
  /// (B, n_subjects) → deformations (B, T, V·3); each batch entry runs its own stream.
  Tensor<T> predict(const Tensor<T>& audio, const Tensor<T>& style) const {
    check_ndim(audio, 3, "FaceFormer::predict audio");
    check_shape(audio, {-1, -1, cfg_.audio_dim}, "FaceFormer::predict audio (B, T, audio_dim)");
    const Index B = audio.dim(0), Tn = audio.dim(1), V3 = cfg_.vertex_dim();
    check_shape(style, {B, cfg_.n_subjects}, "FaceFormer::predict style (B, n_subjects)");
    const Tensor<T> a = audio.contiguous(), s = style.contiguous();
    Tensor<T> out({B, Tn, V3});
    Stream st(*this);
    st.reserve(Tn);
    for (Index b = 0; b < B; ++b) {
      st.start(s.select(b));
      for (Index t = 0; t < Tn; ++t)
        st.step(a.data() + (b * Tn + t) * cfg_.audio_dim, out.data() + (b * Tn + t) * V3);
    }
    return out;
  }

  // ---- checkpoints -------------------------------------------------------------------------------

  /// Loads every parameter from `f`, looked up as file_prefix + name (without this model's
  /// prefix). Missing tensors, wrong shapes, non-finite values and a "faceformer_config" metadata
  /// entry that differs from this model's config throw IoError naming the file; nothing is
  /// changed then. Extra tensors (audio_encoder.*, PPE.pe, ...) are ignored.
  void load(const io::SafeTensorsFile& f, const std::string& file_prefix = "") {
    const std::string meta = f.meta("faceformer_config");
    if (!meta.empty()) {
      const FaceFormerConfig fc = parse_config(meta, f.path());
      if (!(fc == cfg_))
        throw IoError(f.path(), "faceformer_config in the file (" + fc.to_json().dump() +
                                    ") does not match the model's (" + cfg_.to_json().dump() + ")");
    }
    load_parameters(f, parameters(), [&](const Parameter<T>& p) {
      return ParameterKey{file_prefix + p.name.substr(prefix_.size()), " (FaceFormer parameter)"};
    });
  }

  /// Adds the parameters (file_prefix + name without this model's prefix) and the config
  /// (metadata "faceformer_config") to `w`.
  void add_to(io::SafeTensorsWriter& w, const std::string& file_prefix = "") {
    for (Parameter<T>* p : parameters()) w.add(file_prefix + p->name.substr(prefix_.size()), p->value);
    w.set_metadata("faceformer_config", cfg_.to_json().dump());
  }

  /// Writes a safetensors checkpoint atomically.
  void save(const std::string& path) {
    io::SafeTensorsWriter w;
    add_to(w);
    w.save(path);
  }

  /// Builds a model from a checkpoint written by save() (config from its metadata).
  static FaceFormer from_file(const std::string& path, const std::string& file_prefix = "") {
    const io::SafeTensorsFile f = io::SafeTensorsFile::load(path);
    const std::string meta = f.meta("faceformer_config");
    if (meta.empty())
      throw IoError(path, "no 'faceformer_config' metadata (build the model from a config and call load())");
    FaceFormer m(parse_config(meta, path));
    m.load(f, file_prefix);
    return m;
  }

 private:
  friend class FaceFormerStream<T>;

  static FaceFormerConfig parse_config(const std::string& text, const std::string& path) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw IoError(path, std::string("faceformer_config metadata is not valid JSON: ") + e.what());
    }
    try {
      return FaceFormerConfig::from_json(j, "faceformer_config");
    } catch (const ArgumentError& e) {
      throw IoError(path, e.what());
    }
  }

  ops::MhaWeights<T> self_weights() const {
    return ops::MhaWeights<T>{sa_in_w_.value, sa_in_b_.value, sa_out_w_.value, sa_out_b_.value};
  }

  static Tensor<T> add(const Tensor<T>& a, const Tensor<T>& b) {
    Tensor<T> r = a.clone();
    add_into(r, b);
    return r;
  }
  static void add_into(Tensor<T>& a, const Tensor<T>& b) {
    BF_CHECK(a.shape() == b.shape() && a.is_contiguous(), ShapeError, "FaceFormer: cannot add ",
             b.shape_string(), " to ", a.shape_string());
    const Tensor<T> bc = b.contiguous();
    for (Index i = 0; i < a.numel(); ++i) a[i] += bc[i];
  }

  void bind_stream() {
    if (stream_.model() != this) stream_ = Stream(*this);
  }
  void require_started() const {
    BF_CHECK(stream_.model() == this && stream_.started(), ArgumentError,
             "FaceFormer::step: call start(style) first");
  }

  FaceFormerConfig cfg_;
  std::string prefix_;
  Parameter<T> afm_w_, afm_b_, vm_w_, vm_b_, vmr_w_, vmr_b_, obj_w_;
  Parameter<T> sa_in_w_, sa_in_b_, sa_out_w_, sa_out_b_, ca_in_w_, ca_in_b_, ca_out_w_, ca_out_b_;
  Parameter<T> l1_w_, l1_b_, l2_w_, l2_b_, n1_w_, n1_b_, n2_w_, n2_b_, n3_w_, n3_b_;
  Tensor<T> ppe_;               // (period, d)
  std::vector<double> slopes_;  // (H)
  Stream stream_;
};

}  // namespace blendfuse::nn
