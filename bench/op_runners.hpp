// blendfuse — how one op case of the table (bench/op_cases.hpp) runs on a blendfuse backend:
// make_run<T, B>(case) builds the case's inputs (deterministic, from the case's seed, as float
// values on the host, so every backend and element type sees the same numbers), and the run
// object calls the op's forward and — with a seeded upstream gradient — its backward on
// Tensor<T, B>, and hands back every output and gradient as a named host tensor in double.
// The op suite (tests/test_backend_ops.cpp) compares those against the reference backend; the
// op benchmarks (bench/bench_ops.cpp) time forward() and backward().
//
// Adding an op: one Run class below (or a mode of an existing one) and one line in make_run;
// its cases are rows of op_cases(). See docs/backends.md.
//
// Host-memory backends only (inputs are written through data()); a device backend reports its
// ops as not supported until it has host↔device copies.
#pragma once

#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "blendfuse/backend/backend.hpp"
#include "blendfuse/core/rng.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/ops/conv_in_relu.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/attention.hpp"
#include "blendfuse/ops/conv.hpp"
#include "blendfuse/ops/interp.hpp"
#include "blendfuse/ops/linear.hpp"
#include "blendfuse/ops/norm.hpp"
#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"
#endif
#include "op_cases.hpp"

namespace bfops {

using namespace blendfuse;
using bfbench::OpCase;
using HostF = Tensor<float, Cpu>;
using HostD = Tensor<double, Cpu>;

/// Named outputs of one run, in a fixed order: the forward's, then (after backward) the grads.
/// An output that the op leaves empty (e.g. db without bias) is an empty tensor.
using Outputs = std::vector<std::pair<std::string, HostD>>;

inline Shape to_shape(const bfbench::Dims& d) { return Shape(d.begin(), d.end()); }

/// N(mean, sd²) float values on the host.
inline HostF host_normal(const Shape& s, Rng& rng, double sd = 1.0, double mean = 0.0) {
  HostF t(s);
  fill_normal(t, rng, sd, mean);
  return t;
}

/// The host values as a Tensor<T, B> (a copy; empty stays empty).
template <class T, class B>
Tensor<T, B> upload(const HostF& h) {
  static_assert(B::host_memory, "op runners: host-memory backends only");
  if (h.ndim() == 0 && h.data() == nullptr) return {};
  Tensor<T, B> out(h.shape());
  const HostF c = h.contiguous();
  for (Index i = 0; i < c.numel(); ++i) out.data()[i] = static_cast<T>(c.data()[i]);
  return out;
}

/// A contiguous double copy on the host (empty stays empty).
template <class T, class B>
HostD download(const Tensor<T, B>& t) {
  if (t.ndim() == 0 && t.data() == nullptr) return {};
  const Tensor<T, B> c = t.contiguous();
  HostD out(c.shape());
  for (Index i = 0; i < c.numel(); ++i) out.data()[i] = static_cast<double>(c.data()[i]);
  return out;
}

/// One case on one backend and element type.
template <class T, class B>
class CaseRun {
 public:
  virtual ~CaseRun() = default;
  /// Runs the forward (replacing the previous forward's outputs).
  virtual void forward() = 0;
  /// After forward(): draws the upstream gradient(s) from the case's seed.
  virtual void prepare_backward() = 0;
  /// After prepare_backward(): runs the backward (replacing the previous gradients).
  virtual void backward() = 0;
  /// Forward outputs, then the gradients once backward() ran.
  virtual Outputs outputs() const = 0;
};

namespace detail {

template <class T, class B>
using TB = Tensor<T, B>;

/// Shared plumbing: the seeded generators and the list of outputs.
template <class T, class B>
class RunBase : public CaseRun<T, B> {
 public:
  explicit RunBase(std::uint64_t seed) : rng_(seed), grad_rng_(seed * 2654435761u + 17) {}

 protected:
  TB<T, B> in(const Shape& s, double sd = 1.0, double mean = 0.0) { return upload<T, B>(host_normal(s, rng_, sd, mean)); }
  TB<T, B> grad_like(const TB<T, B>& y) { return upload<T, B>(host_normal(y.shape(), grad_rng_)); }
  static void put(Outputs& o, const char* name, const TB<T, B>& t) { o.emplace_back(name, download(t)); }
  Rng rng_, grad_rng_;
};

/// An error in what an op returns (not in its numbers): the suite reports it as a failure.
inline void expect(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

// ---- conv2d, conv2d_relu, conv_in_relu -----------------------------------------------------------

template <class T, class B>
class Conv2dRun final : public RunBase<T, B> {
 public:
  enum Mode { Plain, Relu, InRelu };
  Conv2dRun(const bfbench::Conv2dCase& c, Mode m, std::uint64_t seed) : RunBase<T, B>(seed), c_(c), mode_(m) {
    expect(!(c.bias && m == InRelu), "conv_in_relu: the conv has no bias (a norm follows)");
    x_ = this->in(to_shape(c.x_shape()));
    w_ = this->in(to_shape(c.w_shape()));
    if (c.bias && m != InRelu) b_ = this->in({c.cout});
    if (m == InRelu) gamma_ = this->in({c.cout}, 0.5, 1.0), beta_ = this->in({c.cout});
    p_.stride = {c.stride, c.sw_()};
    p_.padding = {c.pad, c.pw_()};
    p_.dilation = {c.dil, c.dw_()};
    p_.groups = c.groups;
  }
  void forward() override {
    y_ = {};
    const TB<T, B>* b = c_.bias && mode_ != InRelu ? &b_ : nullptr;
    if (mode_ == Plain) {
      y_ = ops::conv2d(x_, w_, b, p_);
    } else if (mode_ == Relu) {
#ifdef BLENDFUSE_WITH_ONEDNN
      y_ = onednn::conv2d_relu(x_, w_, b, p_);  // post-op on oneDNN, composed elsewhere
#else
      y_ = ops::conv2d(x_, w_, b, p_);
      ops::relu_(y_);
#endif
    } else {
      state_ = {};
      y_ = ops::conv_in_relu(x_, w_, gamma_, beta_, 1e-5, p_, &state_);
    }
  }
  void prepare_backward() override { dy_ = this->grad_like(y_); }
  void backward() override {
    g_ = {};
    cg_ = {};
    if (mode_ == InRelu) {
      cg_ = ops::conv_in_relu_backward(state_, w_, gamma_, dy_, p_);
      g_.dx = cg_.dx;
      g_.dw = cg_.dw;
      return;
    }
    const TB<T, B> d = mode_ == Relu ? ops::relu_backward(y_, dy_) : dy_;
    g_ = ops::conv2d_backward(x_, w_, d, p_, c_.bias);
    expect(g_.db.empty() == !c_.bias, c_.bias ? "db missing (need_bias_grad = true)" : "db computed without bias");
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "y", y_);
    if (g_.dx.numel() == 0 && g_.dw.numel() == 0) return o;
    this->put(o, "dx", g_.dx);
    this->put(o, "dw", g_.dw);
    if (mode_ == InRelu) {
      this->put(o, "dgamma", cg_.dgamma);
      this->put(o, "dbeta", cg_.dbeta);
    } else if (c_.bias) {
      this->put(o, "db", g_.db);
    }
    return o;
  }

 private:
  bfbench::Conv2dCase c_;
  Mode mode_;
  ops::Conv2dParams p_;
  TB<T, B> x_, w_, b_, gamma_, beta_, y_, dy_;
  ops::ConvGrads<T, B> g_;
  ops::ConvInReluGrads<T, B> cg_;
  ops::ConvInReluState<T, B> state_;
};

// ---- conv1d ------------------------------------------------------------------------------------

template <class T, class B>
class Conv1dRun final : public RunBase<T, B> {
 public:
  Conv1dRun(const bfbench::Conv1dCase& c, std::uint64_t seed) : RunBase<T, B>(seed), c_(c) {
    x_ = this->in(to_shape(c.x_shape()));
    w_ = this->in(to_shape(c.w_shape()));
    if (c.bias) b_ = this->in({c.cout});
    p_.stride = c.stride;
    p_.padding = c.pad;
    p_.dilation = c.dil;
    p_.groups = c.groups;
  }
  void forward() override {
    y_ = {};
    y_ = ops::conv1d(x_, w_, c_.bias ? &b_ : nullptr, p_);
  }
  void prepare_backward() override { dy_ = this->grad_like(y_); }
  void backward() override {
    g_ = {};
    g_ = ops::conv1d_backward(x_, w_, dy_, p_, c_.bias);
    expect(g_.db.empty() == !c_.bias, c_.bias ? "db missing (need_bias_grad = true)" : "db computed without bias");
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "y", y_);
    if (g_.dx.numel() == 0) return o;
    this->put(o, "dx", g_.dx);
    this->put(o, "dw", g_.dw);
    if (c_.bias) this->put(o, "db", g_.db);
    return o;
  }

 private:
  bfbench::Conv1dCase c_;
  ops::Conv1dParams p_;
  TB<T, B> x_, w_, b_, y_, dy_;
  ops::ConvGrads<T, B> g_;
};

// ---- normalisations ----------------------------------------------------------------------------

template <class T, class B>
class NormRun final : public RunBase<T, B> {
 public:
  enum Mode { Instance, InstanceRelu, Group, Layer };
  NormRun(const bfbench::NormCase& c, Mode m, std::uint64_t seed) : RunBase<T, B>(seed), c_(c), mode_(m) {
    x_ = this->in(to_shape(c.shape), c.sd, c.mean);
    const Index C = m == Layer ? x_.dim(-1) : x_.dim(1);
    if (c.gamma) gamma_ = this->in({C}, 0.5, 1.0);
    if (c.beta) beta_ = this->in({C});
  }
  void forward() override {
    r_ = {};
#ifdef BLENDFUSE_WITH_ONEDNN
    fr_ = {};
#endif
    switch (mode_) {
      case Instance: r_ = ops::instance_norm(x_, gamma_, beta_, c_.eps); break;
      case Group: r_ = ops::group_norm(x_, c_.groups, gamma_, beta_, c_.eps); break;
      case Layer: r_ = ops::layer_norm(x_, gamma_, beta_, c_.eps); break;
      case InstanceRelu:
#ifdef BLENDFUSE_WITH_ONEDNN
        fr_ = onednn::instance_norm_relu(x_, gamma_, beta_, c_.eps);  // fused on oneDNN
        r_ = {fr_.y, fr_.mean, fr_.rstd};
#else
        r_ = ops::instance_norm(x_, gamma_, beta_, c_.eps);
        ops::relu_(r_.y);
#endif
        break;
    }
  }
  void prepare_backward() override { dy_ = this->grad_like(r_.y); }
  void backward() override {
    g_ = {};
    switch (mode_) {
      case Instance: g_ = ops::instance_norm_backward(x_, gamma_, r_.mean, r_.rstd, dy_); break;
      case Group: g_ = ops::group_norm_backward(x_, c_.groups, gamma_, r_.mean, r_.rstd, dy_); break;
      case Layer: g_ = ops::layer_norm_backward(x_, gamma_, r_.mean, r_.rstd, dy_); break;
      case InstanceRelu:
#ifdef BLENDFUSE_WITH_ONEDNN
        g_ = onednn::instance_norm_relu_backward(x_, gamma_, fr_, dy_);
#else
        g_ = ops::instance_norm_backward(x_, gamma_, r_.mean, r_.rstd, ops::relu_backward(r_.y, dy_));
#endif
        break;
    }
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "y", r_.y);
    this->put(o, "mean", r_.mean);
    this->put(o, "rstd", r_.rstd);
    if (g_.dx.numel() == 0) return o;
    this->put(o, "dx", g_.dx);
    this->put(o, "dgamma", g_.dgamma);
    this->put(o, "dbeta", g_.dbeta);
    return o;
  }

 private:
  bfbench::NormCase c_;
  Mode mode_;
  TB<T, B> x_, gamma_, beta_, dy_;
  ops::NormResult<T, B> r_;
  ops::NormGrads<T, B> g_;
#ifdef BLENDFUSE_WITH_ONEDNN
  onednn::NormReluResult<T, B> fr_;
#endif
};

// ---- relu, gelu, softmax -------------------------------------------------------------------------

template <class T, class B>
class EltwiseRun final : public RunBase<T, B> {
 public:
  enum Mode { Relu, Gelu, Softmax };
  EltwiseRun(const bfbench::EltwiseCase& c, Mode m, std::uint64_t seed) : RunBase<T, B>(seed), c_(c), mode_(m) {
    HostF x = host_normal(to_shape(c.shape), this->rng_, c.sd);
    if (c.zeros)
      for (Index i = 0; i < x.numel(); i += 7) x.data()[i] = 0.f;  // ReLU's gradient is 0 there
    x_ = upload<T, B>(x);
    expect(!c.strided || x_.ndim() == 2, "strided: a 2-d case (run on its transpose)");
    expect(!c.inplace || m == Relu, "inplace: only relu_ has an in-place form");
  }
  void forward() override {
    y_ = {};
    const ops::GeluApprox ap = c_.tanh ? ops::GeluApprox::Tanh : ops::GeluApprox::None;
    switch (mode_) {
      case Relu:
        if (c_.inplace) {
          y_ = x_.clone();
          TB<T, B> v = c_.strided ? y_.transpose(0, 1) : y_;
          ops::relu_(v);
        } else {
          y_ = ops::relu(x_);
        }
        break;
      case Gelu: y_ = ops::gelu(x_, ap); break;
      case Softmax: y_ = ops::softmax(x_); break;
    }
  }
  void prepare_backward() override { dy_ = this->grad_like(y_); }
  void backward() override {
    dx_ = {};
    switch (mode_) {
      case Relu: dx_ = ops::relu_backward(y_, dy_); break;
      case Gelu: dx_ = ops::gelu_backward(x_, dy_, c_.tanh ? ops::GeluApprox::Tanh : ops::GeluApprox::None); break;
      case Softmax: dx_ = ops::softmax_backward(y_, dy_); break;
    }
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "y", y_);
    if (dx_.numel() > 0) this->put(o, "dx", dx_);
    return o;
  }

 private:
  bfbench::EltwiseCase c_;
  Mode mode_;
  TB<T, B> x_, y_, dy_, dx_;
};

// ---- linear, matmul ----------------------------------------------------------------------------

template <class T, class B>
class LinearRun final : public RunBase<T, B> {
 public:
  LinearRun(const bfbench::LinearCase& c, std::uint64_t seed) : RunBase<T, B>(seed), c_(c) {
    x_ = this->in(to_shape(c.x_shape()));
    w_ = this->in({c.out, c.in});
    if (c.bias) b_ = this->in({c.out});
  }
  void forward() override {
    y_ = {};
    y_ = ops::linear(x_, w_, b_);
  }
  void prepare_backward() override { dy_ = this->grad_like(y_); }
  void backward() override {
    g_ = {};
    g_ = ops::linear_backward(x_, w_, dy_, c_.bias);
    expect(g_.db.empty() == !c_.bias, c_.bias ? "db missing (need_bias_grad = true)" : "db computed without bias");
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "y", y_);
    if (g_.dx.numel() == 0) return o;
    this->put(o, "dx", g_.dx);
    this->put(o, "dw", g_.dw);
    if (c_.bias) this->put(o, "db", g_.db);
    return o;
  }

 private:
  bfbench::LinearCase c_;
  TB<T, B> x_, w_, b_, y_, dy_;
  ops::LinearGrads<T, B> g_;
};

template <class T, class B>
class MatmulRun final : public RunBase<T, B> {
 public:
  MatmulRun(const bfbench::MatmulCase& c, std::uint64_t seed) : RunBase<T, B>(seed), p_{c.trans_a, c.trans_b} {
    a_ = this->in(to_shape(c.a_shape()));
    b_ = this->in(to_shape(c.b_shape()));
  }
  void forward() override {
    y_ = {};
    y_ = ops::matmul(a_, b_, p_);
  }
  void prepare_backward() override { dy_ = this->grad_like(y_); }
  void backward() override {
    g_ = {};
    g_ = ops::matmul_backward(a_, b_, dy_, p_);
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "C", y_);
    if (g_.da.numel() == 0) return o;
    this->put(o, "dA", g_.da);
    this->put(o, "dB", g_.db);
    return o;
  }

 private:
  ops::MatmulParams p_;
  TB<T, B> a_, b_, y_, dy_;
  ops::MatmulGrads<T, B> g_;
};

// ---- reference-only ops: dropout, interp, attention ---------------------------------------------

template <class T, class B>
class DropoutRun final : public RunBase<T, B> {
 public:
  DropoutRun(const bfbench::DropoutCase& c, std::uint64_t seed) : RunBase<T, B>(seed), c_(c), seed_(seed) {
    x_ = this->in(to_shape(c.shape));
  }
  void forward() override {
    Rng mask_rng(seed_ + 1);  // the same mask on every backend
    r_ = {};
    r_ = ops::dropout(x_, c_.p, c_.training, mask_rng);
    expect(r_.mask.empty() == !c_.training, "dropout: a mask exactly in training mode");
  }
  void prepare_backward() override { dy_ = this->grad_like(r_.y); }
  void backward() override {
    dx_ = {};
    dx_ = ops::dropout_backward(dy_, r_.mask, c_.p);
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "y", r_.y);
    if (dx_.numel() > 0) this->put(o, "dx", dx_);
    return o;
  }

 private:
  bfbench::DropoutCase c_;
  std::uint64_t seed_;
  TB<T, B> x_, dy_, dx_;
  ops::DropoutResult<T, B> r_;
};

template <class T, class B>
class InterpRun final : public RunBase<T, B> {
 public:
  InterpRun(const bfbench::InterpCase& c, std::uint64_t seed) : RunBase<T, B>(seed), c_(c) {
    x_ = this->in(to_shape(c.shape));
  }
  void forward() override {
    y_ = {};
    y_ = c_.ntc ? ops::interp_linear_ntc(x_, c_.t_out) : ops::interp_linear(x_, c_.t_out);
  }
  void prepare_backward() override { dy_ = this->grad_like(y_); }
  void backward() override {
    const Index t_in = x_.dim(c_.ntc ? 1 : 2);
    dx_ = {};
    dx_ = (c_.ntc ? ops::interp_linear_ntc_backward(dy_, t_in) : ops::interp_linear_backward(dy_, t_in)).dx;
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "y", y_);
    if (dx_.numel() > 0) this->put(o, "dx", dx_);
    return o;
  }

 private:
  bfbench::InterpCase c_;
  TB<T, B> x_, y_, dy_, dx_;
};

/// Additive causal mask (l, s), aligned to the end of the keys: position j is visible from
/// query i when j <= i + s − l (no query row is fully masked while l <= s).
template <class T, class B>
TB<T, B> causal_mask(Index l, Index s) {
  TB<T, B> m({l, s});
  for (Index i = 0; i < l; ++i)
    for (Index j = 0; j < s; ++j) m.data()[i * s + j] = j <= i + s - l ? T(0) : -std::numeric_limits<T>::infinity();
  return m;
}

template <class T, class B>
class SdpaRun final : public RunBase<T, B> {
 public:
  SdpaRun(const bfbench::AttentionCase& c, bool cached, std::uint64_t seed)
      : RunBase<T, B>(seed), c_(c), cached_(cached), p_{c.scale} {
    const Index extra = cached ? 3 : 0;  // cache slots past `s` (never attended)
    q_ = this->in({c.n, c.h, c.l, c.d});
    k_ = this->in({c.n, c.h, c.s + extra, c.d});
    v_ = this->in({c.n, c.h, c.s + extra, c.dv});
    if (c.mask) mask_ = causal_mask<T, B>(c.l, c.s);
  }
  void forward() override {
    r_ = {};
    if (cached_)
      r_.out = ops::sdpa_cached(q_, k_, v_, c_.s, mask_, p_);
    else
      r_ = ops::sdpa(q_, k_, v_, mask_, p_);
  }
  void prepare_backward() override { dout_ = this->grad_like(r_.out); }
  void backward() override {
    expect(!cached_, "sdpa_cached has no backward");
    g_ = {};
    g_ = ops::sdpa_backward(q_, k_, v_, r_.probs, dout_, p_);
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "out", r_.out);
    if (!cached_) this->put(o, "probs", r_.probs);
    if (g_.dq.numel() == 0) return o;
    this->put(o, "dq", g_.dq);
    this->put(o, "dk", g_.dk);
    this->put(o, "dv", g_.dv);
    return o;
  }

 private:
  bfbench::AttentionCase c_;
  bool cached_;
  ops::SdpaParams p_;
  TB<T, B> q_, k_, v_, mask_, dout_;
  ops::SdpaResult<T, B> r_;
  ops::SdpaGrads<T, B> g_;
};

/// ops::attention_inference: multi-head attention of already projected q (n, l, h·d) and
/// k, v (n, s, h·d) — wav2vec2's inference path (batched GEMMs over all heads on oneDNN).
template <class T, class B>
class AttentionInferenceRun final : public RunBase<T, B> {
 public:
  AttentionInferenceRun(const bfbench::AttentionCase& c, std::uint64_t seed) : RunBase<T, B>(seed), c_(c) {
    expect(c.d == c.dv && !c.mask && c.scale == 0.0, "attention_inference: d = dv, no mask, default scale");
    q_ = this->in({c.n, c.l, c.h * c.d});
    k_ = this->in({c.n, c.s, c.h * c.d});
    v_ = this->in({c.n, c.s, c.h * c.d});
  }
  void forward() override { out_ = ops::attention_inference(q_, k_, v_, c_.h); }
  void prepare_backward() override {}
  void backward() override { expect(false, "attention_inference has no backward"); }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "out", out_);
    return o;
  }

 private:
  bfbench::AttentionCase c_;
  TB<T, B> q_, k_, v_, out_;
};

template <class T, class B>
class MhaRun final : public RunBase<T, B> {
 public:
  MhaRun(const bfbench::MhaCase& c, std::uint64_t seed) : RunBase<T, B>(seed), p_{c.heads} {
    const double ws = 1.0 / std::sqrt(static_cast<double>(c.e));
    query_ = this->in({c.n, c.l, c.e});
    key_ = this->in({c.n, c.s, c.e});
    value_ = this->in({c.n, c.s, c.e});
    w_.in_proj_weight = this->in({3 * c.e, c.e}, ws);
    w_.out_proj_weight = this->in({c.e, c.e}, ws);
    if (c.bias) w_.in_proj_bias = this->in({3 * c.e}, 0.1), w_.out_proj_bias = this->in({c.e}, 0.1);
    if (c.mask) mask_ = causal_mask<T, B>(c.l, c.s);
  }
  void forward() override {
    r_ = {};
    r_ = ops::multi_head_attention(query_, key_, value_, w_, p_, mask_);
  }
  void prepare_backward() override { dout_ = this->grad_like(r_.output); }
  void backward() override {
    g_ = {};
    g_ = ops::multi_head_attention_backward(query_, key_, value_, w_, p_, r_.ctx, dout_);
  }
  Outputs outputs() const override {
    Outputs o;
    this->put(o, "output", r_.output);
    if (g_.dquery.numel() == 0) return o;
    this->put(o, "dquery", g_.dquery);
    this->put(o, "dkey", g_.dkey);
    this->put(o, "dvalue", g_.dvalue);
    this->put(o, "din_proj_weight", g_.din_proj_weight);
    this->put(o, "din_proj_bias", g_.din_proj_bias);
    this->put(o, "dout_proj_weight", g_.dout_proj_weight);
    this->put(o, "dout_proj_bias", g_.dout_proj_bias);
    return o;
  }

 private:
  ops::MhaParams p_;
  TB<T, B> query_, key_, value_, mask_, dout_;
  ops::MhaWeights<T, B> w_;
  ops::MhaResult<T, B> r_;
  ops::MhaGrads<T, B> g_;
};

}  // namespace detail

/// The run of case `c` on Tensor<T, B> (throws std::invalid_argument for an op without a runner).
template <class T, class B>
std::unique_ptr<CaseRun<T, B>> make_run(const OpCase& c) {
  using namespace detail;
  const std::uint64_t seed = c.seed();
  const auto kind = op_kind_from_name(c.op);
  if (!kind) throw std::invalid_argument("op-case table: unknown op '" + c.op + "'");
  auto spec = [&]<class S>() -> const S& {
    const S* s = std::get_if<S>(&c.spec);
    if (!s) throw std::invalid_argument("op-case table: op '" + c.op + "' with the wrong parameter struct (" + c.tag() + ")");
    return *s;
  };
  switch (*kind) {
    case OpKind::conv2d: return std::make_unique<Conv2dRun<T, B>>(spec.template operator()<bfbench::Conv2dCase>(), Conv2dRun<T, B>::Plain, seed);
    case OpKind::conv2d_relu: return std::make_unique<Conv2dRun<T, B>>(spec.template operator()<bfbench::Conv2dCase>(), Conv2dRun<T, B>::Relu, seed);
    case OpKind::conv_in_relu: return std::make_unique<Conv2dRun<T, B>>(spec.template operator()<bfbench::Conv2dCase>(), Conv2dRun<T, B>::InRelu, seed);
    case OpKind::conv1d: return std::make_unique<Conv1dRun<T, B>>(spec.template operator()<bfbench::Conv1dCase>(), seed);
    case OpKind::instance_norm: return std::make_unique<NormRun<T, B>>(spec.template operator()<bfbench::NormCase>(), NormRun<T, B>::Instance, seed);
    case OpKind::instance_norm_relu: return std::make_unique<NormRun<T, B>>(spec.template operator()<bfbench::NormCase>(), NormRun<T, B>::InstanceRelu, seed);
    case OpKind::group_norm: return std::make_unique<NormRun<T, B>>(spec.template operator()<bfbench::NormCase>(), NormRun<T, B>::Group, seed);
    case OpKind::layer_norm: return std::make_unique<NormRun<T, B>>(spec.template operator()<bfbench::NormCase>(), NormRun<T, B>::Layer, seed);
    case OpKind::linear: return std::make_unique<LinearRun<T, B>>(spec.template operator()<bfbench::LinearCase>(), seed);
    case OpKind::matmul: return std::make_unique<MatmulRun<T, B>>(spec.template operator()<bfbench::MatmulCase>(), seed);
    case OpKind::relu: return std::make_unique<EltwiseRun<T, B>>(spec.template operator()<bfbench::EltwiseCase>(), EltwiseRun<T, B>::Relu, seed);
    case OpKind::gelu: return std::make_unique<EltwiseRun<T, B>>(spec.template operator()<bfbench::EltwiseCase>(), EltwiseRun<T, B>::Gelu, seed);
    case OpKind::softmax: return std::make_unique<EltwiseRun<T, B>>(spec.template operator()<bfbench::EltwiseCase>(), EltwiseRun<T, B>::Softmax, seed);
    case OpKind::dropout: return std::make_unique<DropoutRun<T, B>>(spec.template operator()<bfbench::DropoutCase>(), seed);
    case OpKind::interp: return std::make_unique<InterpRun<T, B>>(spec.template operator()<bfbench::InterpCase>(), seed);
    case OpKind::sdpa: return std::make_unique<SdpaRun<T, B>>(spec.template operator()<bfbench::AttentionCase>(), false, seed);
    case OpKind::sdpa_cached: return std::make_unique<SdpaRun<T, B>>(spec.template operator()<bfbench::AttentionCase>(), true, seed);
    case OpKind::attention_inference: return std::make_unique<AttentionInferenceRun<T, B>>(spec.template operator()<bfbench::AttentionCase>(), seed);
    case OpKind::mha: return std::make_unique<MhaRun<T, B>>(spec.template operator()<bfbench::MhaCase>(), seed);
  }
  throw std::invalid_argument("op-case table: no runner for op '" + c.op + "'");
}

}  // namespace bfops
