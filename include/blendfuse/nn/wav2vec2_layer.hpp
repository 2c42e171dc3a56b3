// blendfuse — one wav2vec 2.0 transformer encoder layer (post-norm, as wav2vec2-base), built only
// from ops, with its hand-written backward (see nn/wav2vec2_model.hpp for the whole model):
//   h  = layer_norm(x + out_proj(self-attention(q_proj x, k_proj x, v_proj x)))
//   x' = final_layer_norm(h + output_dense(GELU(intermediate_dense h)))
// Inference (no context) runs ops::attention_inference, which backends may batch over the heads;
// training runs ops::sdpa, which keeps the probabilities for backward. Parameters are named
// `prefix` + attention.{q,k,v,out}_proj.*, layer_norm.*, feed_forward.{intermediate,output}_dense.*,
// final_layer_norm.* (the Hugging Face state_dict keys of encoder.layers.{n}).
#pragma once

#include <string>
#include <utility>

#include "blendfuse/core/rng.hpp"
#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/attention.hpp"
#include "blendfuse/ops/linear.hpp"
#include "blendfuse/ops/norm.hpp"

namespace blendfuse::nn {

template <class T, class Backend = Cpu>
class Wav2Vec2EncoderLayer {
 public:
  using TensorB = Tensor<T, Backend>;

  /// What forward() saves for backward.
  struct Context {
    TensorB x;              // layer input (B, T, E)
    TensorB q, k, v;        // projections (B, T, E)
    TensorB probs;          // (B, H, T, T)
    TensorB attn;           // merged heads, input of out_proj (B, T, E)
    TensorB h1, mean1, rstd1;  // x + attention (input of layer_norm) and its statistics
    TensorB n1;             // layer_norm output (B, T, E)
    TensorB f1, g;          // intermediate_dense output (B, T, F) and its GELU
    TensorB h2, mean2, rstd2;  // n1 + feed-forward (input of final_layer_norm)
  };

  Parameter<T> q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln1_w, ln1_b, ff1_w, ff1_b, ff2_w, ff2_b, ln2_w, ln2_b;

  Wav2Vec2EncoderLayer() = default;
  /// Parameters named prefix + Hugging Face name; E = hidden size, F = intermediate size.
  Wav2Vec2EncoderLayer(const std::string& prefix, Index E, Index F) {
    const std::string& b = prefix;
    q_w = Parameter<T>(b + "attention.q_proj.weight", Shape{E, E});
    q_b = Parameter<T>(b + "attention.q_proj.bias", Shape{E});
    k_w = Parameter<T>(b + "attention.k_proj.weight", Shape{E, E});
    k_b = Parameter<T>(b + "attention.k_proj.bias", Shape{E});
    v_w = Parameter<T>(b + "attention.v_proj.weight", Shape{E, E});
    v_b = Parameter<T>(b + "attention.v_proj.bias", Shape{E});
    o_w = Parameter<T>(b + "attention.out_proj.weight", Shape{E, E});
    o_b = Parameter<T>(b + "attention.out_proj.bias", Shape{E});
    ln1_w = Parameter<T>(b + "layer_norm.weight", Shape{E});
    ln1_b = Parameter<T>(b + "layer_norm.bias", Shape{E});
    ff1_w = Parameter<T>(b + "feed_forward.intermediate_dense.weight", Shape{F, E});
    ff1_b = Parameter<T>(b + "feed_forward.intermediate_dense.bias", Shape{F});
    ff2_w = Parameter<T>(b + "feed_forward.output_dense.weight", Shape{E, F});
    ff2_b = Parameter<T>(b + "feed_forward.output_dense.bias", Shape{E});
    ln2_w = Parameter<T>(b + "final_layer_norm.weight", Shape{E});
    ln2_b = Parameter<T>(b + "final_layer_norm.bias", Shape{E});
  }

  /// In the Hugging Face module order.
  ParamList<T> parameters() {
    return {&q_w, &q_b, &k_w, &k_b, &v_w, &v_b, &o_w, &o_b, &ln1_w, &ln1_b, &ff1_w, &ff1_b, &ff2_w, &ff2_b, &ln2_w, &ln2_b};
  }

  /// Fan-in uniform linears (weight then bias, q, k, v, out, intermediate, output), unit / zero norms.
  void init(Rng& rng) {
    init_linear(q_w, q_b, rng);
    init_linear(k_w, k_b, rng);
    init_linear(v_w, v_b, rng);
    init_linear(o_w, o_b, rng);
    init_linear(ff1_w, ff1_b, rng);
    init_linear(ff2_w, ff2_b, rng);
    for (Parameter<T>* p : {&ln1_w, &ln2_w}) p->value.fill(T(1));
    for (Parameter<T>* p : {&ln1_b, &ln2_b}) p->value.zero();
  }

  static void add_inplace(TensorB& y, const TensorB& x) {
    const TensorB xc = x.contiguous();
    const Index n = y.numel();
    T* yp = y.data();
    const T* xp = xc.data();
    for (Index i = 0; i < n; ++i) yp[i] += xp[i];
  }

  /// (B, T, E) → (B, H, T, D) view (no copy; unit last stride as sdpa needs).
  static TensorB heads(const TensorB& t, Index H) {
    return t.reshape({t.dim(0), t.dim(1), H, t.dim(2) / H}).transpose(1, 2);
  }

  /// x (B, T, E) → the layer's output (B, T, E) with `num_heads` heads and LayerNorm eps `eps`;
  /// with `c` saves what backward() needs (training: the attention keeps its probabilities).
  TensorB forward(const TensorB& x, Index num_heads, double eps, Context* c) const {
    TensorB q = ops::linear(x, pv(q_w), pv(q_b));
    TensorB k = ops::linear(x, pv(k_w), pv(k_b));
    TensorB v = ops::linear(x, pv(v_w), pv(v_b));
    ops::SdpaResult<T, Backend> sd;  // training keeps the probabilities for backward
    TensorB attn;
    if (c) {
      sd = ops::sdpa(heads(q, num_heads), heads(k, num_heads), heads(v, num_heads));
      attn = ops::merge_heads(sd.out);
    } else {
      attn = ops::attention_inference(q, k, v, num_heads);
    }
    TensorB h1 = ops::linear(attn, pv(o_w), pv(o_b));
    add_inplace(h1, x);
    auto n1 = ops::layer_norm(h1, pv(ln1_w), pv(ln1_b), eps);
    TensorB f1 = ops::linear(n1.y, pv(ff1_w), pv(ff1_b));
    TensorB g = ops::gelu(f1);
    TensorB h2 = ops::linear(g, pv(ff2_w), pv(ff2_b));
    add_inplace(h2, n1.y);
    auto n2 = ops::layer_norm(h2, pv(ln2_w), pv(ln2_b), eps);
    if (c) {
      c->x = x;
      c->q = std::move(q);
      c->k = std::move(k);
      c->v = std::move(v);
      c->probs = std::move(sd.probs);
      c->attn = std::move(attn);
      c->h1 = std::move(h1);
      c->mean1 = std::move(n1.mean);
      c->rstd1 = std::move(n1.rstd);
      c->n1 = std::move(n1.y);
      c->f1 = std::move(f1);
      c->g = std::move(g);
      c->h2 = std::move(h2);
      c->mean2 = std::move(n2.mean);
      c->rstd2 = std::move(n2.rstd);
    }
    return std::move(n2.y);
  }

  /// Accumulates this layer's parameter gradients for dout (B, T, E); returns dL/dx.
  TensorB backward(const Context& c, const TensorB& dout, Index num_heads) {
    auto g2 = ops::layer_norm_backward(c.h2, pv(ln2_w), c.mean2, c.rstd2, dout);
    ln2_w.accumulate(hv(g2.dgamma));
    ln2_b.accumulate(hv(g2.dbeta));
    auto gf2 = ops::linear_backward(c.g, pv(ff2_w), g2.dx);
    ff2_w.accumulate(hv(gf2.dw));
    ff2_b.accumulate(hv(gf2.db));
    TensorB df1 = ops::gelu_backward(c.f1, gf2.dx);
    auto gf1 = ops::linear_backward(c.n1, pv(ff1_w), df1);
    ff1_w.accumulate(hv(gf1.dw));
    ff1_b.accumulate(hv(gf1.db));
    TensorB dn1 = std::move(g2.dx);  // residual h2 = n1 + ff(n1)
    add_inplace(dn1, gf1.dx);
    auto g1 = ops::layer_norm_backward(c.h1, pv(ln1_w), c.mean1, c.rstd1, dn1);
    ln1_w.accumulate(hv(g1.dgamma));
    ln1_b.accumulate(hv(g1.dbeta));
    auto go = ops::linear_backward(c.attn, pv(o_w), g1.dx);
    o_w.accumulate(hv(go.dw));
    o_b.accumulate(hv(go.db));
    ops::SdpaGrads<T, Backend> gs = ops::AttentionOp<Backend>::template sdpa_backward<T>(heads(c.q, num_heads), heads(c.k, num_heads), heads(c.v, num_heads), c.probs,
                                                                   heads(go.dx, num_heads), ops::SdpaParams{});
    TensorB dx = std::move(g1.dx);  // residual h1 = x + attention(x)
    const std::pair<Parameter<T>*, Parameter<T>*> proj[3] = {{&q_w, &q_b}, {&k_w, &k_b}, {&v_w, &v_b}};
    const TensorB* dheads[3] = {&gs.dq, &gs.dk, &gs.dv};
    for (int i = 0; i < 3; ++i) {
      auto gi = ops::linear_backward(c.x, pv(*proj[i].first), ops::merge_heads(*dheads[i]));
      proj[i].first->accumulate(hv(gi.dw));
      proj[i].second->accumulate(hv(gi.db));
      add_inplace(dx, gi.dx);
    }
    return dx;
  }

 private:
  static TensorB pv(const Parameter<T>& p) { return detail::host_view<Backend>(p.value); }
  static Tensor<T> hv(const TensorB& t) { return detail::host_view<Cpu>(t); }
  static void init_linear(Parameter<T>& w, Parameter<T>& b, Rng& rng) {
    init_uniform_fan_in(w, w.value.dim(1), rng);
    init_uniform_fan_in(b, w.value.dim(1), rng);
  }
};

}  // namespace blendfuse::nn
