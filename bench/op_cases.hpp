// blendfuse — the op-case table: every op case (op, shapes, parameters, NMSE bound, whether it has
// a backward, whether bench_ops times it) in one list, op_cases(). It drives
//   * the cross-backend op suite (tests/test_backend_ops.cpp): every case, every compiled
//     backend, forward and backward against the reference;
//   * the op benchmarks (bench/bench_ops.cpp): the cases marked for benchmarking, named
//     <op>_fwd/<tag>/<backend> (bench_name());
//   * the LibTorch peer (bench/peers/bench_torch.cpp) through the per-op views conv2d_cases(),
//     linear_cases(), ... (the benchmarked cases of one op, with the fields the peer reads).
// Dependency-free (standard library, C++17: the peer is built as C++17) so the peer shares it without blendfuse. How a case
// runs on a blendfuse backend is next to it, in bench/op_runners.hpp; docs/backends.md says how
// to add an op or a case.
//
// Benchmarked shapes come from the two models: the fusion encoder's conv blocks (paper scale:
// 128×128 map, channels 32-64-128-256-256-256, batch 32 or 1), its decoder (V·3 = 32571 rows,
// K = 128), and wav2vec2-base on 10 s of audio where noted (T = 499 frames, E = 768, 12 heads)
// or its conv feature extractor on 1 s. The test-only cases cover odd sizes, groups, dilation,
// strides that do not tile, broadcasting, degenerate dimensions and the oneDNN routes' edges.
#pragma once

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace bfbench {

using Dims = std::vector<std::int64_t>;

inline double prod(const Dims& d) {
  double n = 1;
  for (auto v : d) n *= static_cast<double>(v);
  return n;
}

inline std::string dims_str(const Dims& d) {
  std::string s = "(";
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? "," : "") + std::to_string(d[i]);
  return s + ")";
}

// ---- the parameters of each op family ---------------------------------------------------------

/// conv2d (also conv2d_relu, conv_in_relu): x (n, cin, h, w), weight (cout, cin/groups, k, kw).
/// The *_w fields are the second axis where it differs (0, pad_w −1: same as the first).
struct Conv2dCase {
  std::string tag;
  std::int64_t n, cin, h, w, cout, k, stride, pad;
  std::int64_t kw = 0, stride_w = 0, pad_w = -1;
  std::int64_t dil = 1, dil_w = 0, groups = 1;
  bool bias = false;

  std::int64_t kw_() const { return kw ? kw : k; }
  std::int64_t sw_() const { return stride_w ? stride_w : stride; }
  std::int64_t pw_() const { return pad_w >= 0 ? pad_w : pad; }
  std::int64_t dw_() const { return dil_w ? dil_w : dil; }
  // builders for the table's rows
  Conv2dCase with_bias() const { auto c = *this; c.bias = true; return c; }
  Conv2dCase with_groups(std::int64_t g) const { auto c = *this; c.groups = g; return c; }
  Conv2dCase with_dilation(std::int64_t dh, std::int64_t dw) const { auto c = *this; c.dil = dh; c.dil_w = dw; return c; }
  Conv2dCase with_w_axis(std::int64_t kernel_w, std::int64_t sw, std::int64_t pw) const {
    auto c = *this; c.kw = kernel_w; c.stride_w = sw; c.pad_w = pw; return c;
  }
  std::int64_t hout() const { return (h + 2 * pad - dil * (k - 1) - 1) / stride + 1; }
  std::int64_t wout() const { return (w + 2 * pw_() - dw_() * (kw_() - 1) - 1) / sw_() + 1; }
  Dims x_shape() const { return {n, cin, h, w}; }
  Dims w_shape() const { return {cout, cin / groups, k, kw_()}; }
  double flops() const { return 2.0 * n * cout * hout() * wout() * (cin / groups) * k * kw_(); }
  std::string describe() const {
    std::ostringstream s;
    s << "x=" << dims_str(x_shape()) << " w=" << dims_str(w_shape()) << " s=(" << stride << "," << sw_()
      << ") p=(" << pad << "," << pw_() << ") d=(" << dil << "," << dw_() << ") g=" << groups
      << " bias=" << bias;
    return s.str();
  }
};

/// conv1d: x (n, cin, l), weight (cout, cin/groups, k).
struct Conv1dCase {
  std::string tag;
  std::int64_t n, cin, l, cout, k, stride;
  std::int64_t pad = 0, dil = 1, groups = 1;
  bool bias = false;

  std::int64_t lout() const { return (l + 2 * pad - dil * (k - 1) - 1) / stride + 1; }
  Dims x_shape() const { return {n, cin, l}; }
  Dims w_shape() const { return {cout, cin / groups, k}; }
  double flops() const { return 2.0 * n * cout * lout() * (cin / groups) * k; }
  std::string describe() const {
    std::ostringstream s;
    s << "x=" << dims_str(x_shape()) << " w=" << dims_str(w_shape()) << " s=" << stride << " p=" << pad
      << " d=" << dil << " g=" << groups << " bias=" << bias;
    return s.str();
  }
};

/// linear: x (rows, in) or `x` when given (any leading dims, last = in), weight (out, in).
struct LinearCase {
  std::string tag;
  std::int64_t rows, in, out;
  bool bias = true;
  Dims x = {};

  Dims x_shape() const { return x.empty() ? Dims{rows, in} : x; }
  double flops() const { return 2.0 * prod(x_shape()) / static_cast<double>(in) * in * out; }
  std::string describe() const {
    std::ostringstream s;
    s << "x=" << dims_str(x_shape()) << " w=(" << out << "," << in << ") bias=" << bias;
    return s.str();
  }
};

/// matmul: A (batch, m, k) · B (batch, k, n), or the stored shapes `a`, `b` when given (any
/// batch dims, broadcast; transposed operands stored transposed).
struct MatmulCase {
  std::string tag;
  std::int64_t batch, m, k, n;
  Dims a = {}, b = {};
  bool trans_a = false, trans_b = false;

  Dims a_shape() const { return a.empty() ? Dims{batch, m, k} : a; }
  Dims b_shape() const { return b.empty() ? Dims{batch, k, n} : b; }
  double flops() const { return 2.0 * batch * m * k * n; }
  std::string describe() const {
    std::ostringstream s;
    s << "A=" << dims_str(a_shape()) << " B=" << dims_str(b_shape()) << " trans_a=" << trans_a
      << " trans_b=" << trans_b;
    return s.str();
  }
};

/// Normalisations (instance, group, layer): x of `shape` ~ N(mean, sd²); affine parameters
/// (present or not) of the normalised channels; `groups` for group norm.
struct NormCase {
  std::string tag;
  Dims shape;
  bool gamma = true, beta = true;
  double eps = 1e-5;
  double mean = 0.0, sd = 1.0;
  std::int64_t groups = 0;

  double numel() const { return prod(shape); }
  std::string describe() const {
    std::ostringstream s;
    s << "x=" << dims_str(shape) << " gamma=" << gamma << " beta=" << beta << " eps=" << eps
      << " x~N(" << mean << "," << sd << ")";
    if (groups) s << " groups=" << groups;
    return s.str();
  }
};

/// Element-wise ops and softmax (last dim): x ~ N(0, sd²), optionally with exact zeros (every 7th
/// element), run in place (`inplace`), on a transposed view (`strided`, 2-d, in place), GELU's
/// tanh approximation (`tanh`).
struct EltwiseCase {
  std::string tag;
  Dims shape;
  double sd = 1.0;
  bool zeros = false, inplace = false, strided = false, tanh = false;

  double numel() const { return prod(shape); }
  std::string describe() const {
    std::ostringstream s;
    s << "x=" << dims_str(shape) << " sd=" << sd;
    if (zeros) s << " zeros=1";
    if (inplace) s << " inplace=1";
    if (strided) s << " strided=1";
    if (tanh) s << " approx=tanh";
    return s.str();
  }
};

/// Linear interpolation along time: x (N, C, T) → (N, C, t_out), or (N, T, C) with `ntc`.
struct InterpCase {
  std::string tag;
  Dims shape;
  std::int64_t t_out;
  bool ntc = false;

  double numel() const { return prod(shape); }
  std::string describe() const {
    std::ostringstream s;
    s << "x=" << dims_str(shape) << " t_out=" << t_out << " layout=" << (ntc ? "ntc" : "nct");
    return s.str();
  }
};

/// Dropout with drop probability p: eval (identity) or training with the mask drawn from the
/// case's seed (the same mask on every backend).
struct DropoutCase {
  std::string tag;
  Dims shape;
  double p = 0.1;
  bool training = false;

  double numel() const { return prod(shape); }
  std::string describe() const {
    std::ostringstream s;
    s << "x=" << dims_str(shape) << " p=" << p << " training=" << training;
    return s.str();
  }
};

/// Scaled dot-product attention (sdpa, sdpa_cached): q (n, h, l, d), k (n, h, s, d),
/// v (n, h, s, dv); an additive mask (l, s) (causal) or none; scale 0 = 1/sqrt(d). sdpa_cached
/// attends to the first `s` positions of caches of length s + 3.
struct AttentionCase {
  std::string tag;
  std::int64_t n, h, l, s, d, dv;
  bool mask = false;
  double scale = 0.0;

  double flops() const { return 2.0 * n * h * l * s * (d + dv); }
  std::string describe() const {
    std::ostringstream o;
    o << "q=(" << n << "," << h << "," << l << "," << d << ") k=(" << n << "," << h << "," << s << ","
      << d << ") v=(" << n << "," << h << "," << s << "," << dv << ") mask=" << mask << " scale=" << scale;
    return o.str();
  }
};

/// torch.nn.MultiheadAttention (batch first): query (n, l, e), key/value (n, s, e), `heads`.
struct MhaCase {
  std::string tag;
  std::int64_t n, l, s, e, heads;
  bool bias = true, mask = false;

  double flops() const { return 2.0 * n * (2.0 * l * e * e + 2.0 * s * e * e + 2.0 * l * s * e); }
  std::string describe() const {
    std::ostringstream o;
    o << "query=(" << n << "," << l << "," << e << ") key=(" << n << "," << s << "," << e << ") heads=" << heads
      << " bias=" << bias << " mask=" << mask;
    return o.str();
  }
};

using CaseSpec = std::variant<Conv2dCase, Conv1dCase, LinearCase, MatmulCase, NormCase, EltwiseCase,
                              InterpCase, DropoutCase, AttentionCase, MhaCase>;

// ---- one row -------------------------------------------------------------------------------------

/// What bench_ops times of a case: nothing (suite only), the forward, or forward and backward.
enum class Bench { None, Fwd, FwdBwd };

/// Default NMSE bound (Σ(got − ref)² / Σref²) of a backend's output against the reference.
inline constexpr double kNmse = 1e-7;

struct OpCase {
  std::string op;  ///< op name (blendfuse::op_name), e.g. "conv2d"
  CaseSpec spec;   ///< shapes and parameters; the spec's tag names the case
  Bench bench = Bench::None;
  double nmse = kNmse;   ///< bound for every output and gradient
  bool backward = true;  ///< the op has a backward (the suite runs it with a seeded dy)

  const std::string& tag() const {
    return std::visit([](const auto& s) -> const std::string& { return s.tag; }, spec);
  }
  /// "op=conv2d tag=enc1_b32 x=(32,4,128,128) w=(...) ..." — the case part of a repro line.
  std::string describe() const {
    return "op=" + op + " tag=" + tag() + " " + std::visit([](const auto& s) { return s.describe(); }, spec);
  }
  /// A seed derived from the description (stable when rows are added or reordered).
  std::uint64_t seed() const {
    std::uint64_t h = 1469598103934665603ull;
    for (char c : describe()) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    return h % 100000;
  }
};

/// Work of one call for the benchmark counters: FLOPs (convs, GEMMs, attention: 2·MACs,
/// backward = 2× forward) or bytes (read + written once; memory-bound ops).
struct Work {
  double flops = 0, bytes = 0;
};
template <class S, class = void>
struct has_flops : std::false_type {};
template <class S>
struct has_flops<S, std::void_t<decltype(std::declval<const S&>().flops())>> : std::true_type {};

inline Work work(const OpCase& c, bool backward) {
  const double f = backward ? 2.0 : 1.0;
  return std::visit(
      [&](const auto& s) -> Work {
        if constexpr (has_flops<std::decay_t<decltype(s)>>::value) {
          return {f * s.flops(), 0};
        } else {
          (void)s;
          return {0, (backward ? 12.0 : 8.0) * s.numel()};
        }
      },
      c.spec);
}

/// The benchmark name of a case: <op>_fwd / <op>_bwd (the element-wise ops and matmul, which are
/// timed forward only, keep their plain names) / <tag> / <backend>.
inline std::string bench_name(const OpCase& c, bool backward, const std::string& backend) {
  const bool plain = !backward && (c.op == "relu" || c.op == "gelu" || c.op == "softmax" || c.op == "matmul");
  return c.op + (plain ? "" : backward ? "_bwd" : "_fwd") + "/" + c.tag() + "/" + backend;
}

// ---- the table ------------------------------------------------------------------------------------

/// Every op case. Rows: {"op", Spec{"tag", shapes..., params...}, bench, nmse, backward}.
inline const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> table = [] {
    using B = Bench;
    std::vector<OpCase> t;
    // The fusion encoder's conv blocks (3×3, stride 2, padding 1, no bias: a norm follows),
    // timed as plain convs and as the conv → instance norm → ReLU block.
    for (const Conv2dCase& c : std::vector<Conv2dCase>{
             {"enc1_b32", 32, 4, 128, 128, 32, 3, 2, 1},
             {"enc2_b32", 32, 32, 64, 64, 64, 3, 2, 1},
             {"enc4_b32", 32, 128, 16, 16, 256, 3, 2, 1},
             {"enc2_b1", 1, 32, 64, 64, 64, 3, 2, 1},
             {"enc4_b1", 1, 128, 16, 16, 256, 3, 2, 1},
         }) {
      t.push_back({"conv2d", c, B::FwdBwd});
      t.push_back({"conv_in_relu", c, B::Fwd});
    }
    const std::vector<OpCase> rows{
        // conv2d: small encoder blocks, odd sizes, pointwise, groups + dilation, depthwise, strides
        // that do not tile; oneDNN's blocked route (channels multiple of 8, enough pixels) and
        // the shapes just outside it.
        {"conv2d", Conv2dCase{"enc_small", 2, 3, 32, 32, 16, 3, 2, 1}},
        {"conv2d", Conv2dCase{"enc_mid", 2, 16, 16, 16, 32, 3, 2, 1}},
        {"conv2d", Conv2dCase{"odd", 1, 3, 31, 29, 8, 3, 2, 1}.with_bias()},
        {"conv2d", Conv2dCase{"pointwise", 4, 8, 7, 5, 6, 1, 1, 0}.with_bias()},
        {"conv2d", Conv2dCase{"groups_dil", 2, 8, 9, 11, 12, 3, 1, 1}.with_w_axis(3, 1, 2).with_dilation(2, 1).with_groups(2).with_bias()},
        {"conv2d", Conv2dCase{"depthwise", 1, 6, 10, 10, 6, 3, 2, 1}.with_w_axis(3, 1, 1).with_groups(6)},
        {"conv2d", Conv2dCase{"stride_untiled", 1, 3, 17, 13, 4, 5, 3, 0}.with_w_axis(3, 2, 1).with_bias()},
        {"conv2d", Conv2dCase{"blocked", 4, 8, 16, 16, 16, 3, 2, 1}},
        {"conv2d", Conv2dCase{"blocked_odd", 4, 16, 13, 11, 8, 3, 1, 1}.with_bias()},
        {"conv2d", Conv2dCase{"few_pixels", 3, 16, 9, 11, 8, 3, 1, 1}.with_bias()},
        {"conv2d", Conv2dCase{"blocked_first", 4, 4, 20, 18, 8, 3, 2, 1}},
        {"conv2d", Conv2dCase{"blocked_pointwise", 2, 16, 12, 12, 32, 1, 1, 0}.with_bias()},
        // conv2d with a fused ReLU (oneDNN post-op; composed on the reference)
        {"conv2d_relu", Conv2dCase{"enc_small", 2, 3, 32, 32, 16, 3, 2, 1}},
        {"conv2d_relu", Conv2dCase{"odd", 1, 3, 31, 29, 8, 3, 2, 1}.with_bias()},
        {"conv2d_relu", Conv2dCase{"groups_dil", 2, 8, 9, 11, 12, 3, 1, 1}.with_w_axis(3, 1, 2).with_dilation(2, 1).with_groups(2).with_bias()},
        {"conv2d_relu", Conv2dCase{"blocked", 4, 8, 16, 16, 16, 3, 2, 1}},
        {"conv2d_relu", Conv2dCase{"blocked_odd", 4, 16, 13, 11, 8, 3, 1, 1}.with_bias()},
        // conv → instance norm → ReLU (the encoder block), small and odd
        {"conv_in_relu", Conv2dCase{"enc_small", 2, 4, 20, 20, 8, 3, 2, 1}},
        {"conv_in_relu", Conv2dCase{"blocked_odd", 5, 8, 13, 11, 16, 3, 2, 1}},
        // conv1d: wav2vec2's feature extractor (1 s), its small versions, the positional conv
        {"conv1d", Conv1dCase{"w2v_l0_1s", 1, 1, 16000, 512, 10, 5}, B::Fwd},
        {"conv1d", Conv1dCase{"w2v_l1_1s", 1, 512, 3199, 512, 3, 2}, B::Fwd},
        {"conv1d", Conv1dCase{"w2v_l0_small", 2, 1, 4003, 32, 10, 5}},
        {"conv1d", Conv1dCase{"w2v_l1_small", 2, 32, 799, 32, 3, 2}},
        {"conv1d", Conv1dCase{"w2v_pos_small", 1, 32, 100, 32, 16, 1, 8, 1, 16, true}},
        {"conv1d", Conv1dCase{"groups_dil", 3, 6, 50, 9, 4, 1, 2, 2, 3, true}},
        {"conv1d", Conv1dCase{"kernel_long", 2, 5, 7, 4, 7, 3, 1, 1, 1, true}},
        // instance norm: the encoder's planes, 1-d, partial affine, the per-plane backward
        // kernel's edges (planes shorter than its 8 lanes, scalar tails, |mean| ≫ sd)
        {"instance_norm", NormCase{"enc2_b32", {32, 64, 32, 32}}, B::FwdBwd},
        {"instance_norm", NormCase{"enc4_b32", {32, 256, 8, 8}}, B::FwdBwd},
        {"instance_norm", NormCase{"enc_small", {2, 4, 8, 8}, true, true, 1e-5, 3.0, 2.0}},
        {"instance_norm", NormCase{"1d_no_affine", {3, 5, 17}, false, false, 1e-5, 3.0, 2.0}},
        {"instance_norm", NormCase{"gamma_only", {1, 16, 6, 7}, true, false, 1e-3, 3.0, 2.0}},
        {"instance_norm", NormCase{"beta_only", {4, 3, 5, 5}, false, true, 1e-5, 3.0, 2.0}},
        {"instance_norm", NormCase{"mid", {2, 32, 16, 16}, true, true, 1e-5, 3.0, 2.0}},
        {"instance_norm", NormCase{"plane3", {2, 3, 1, 3}}},
        {"instance_norm", NormCase{"plane1", {1, 2, 1, 1}}},
        {"instance_norm", NormCase{"plane63", {3, 5, 9, 7}, true, true, 1e-5, 1.0, 2.0}},
        {"instance_norm", NormCase{"plane1023_no_gamma", {2, 3, 33, 31}, false, true, 1e-5, -2.0, 1.0}},
        {"instance_norm", NormCase{"plane4096", {2, 4, 64, 64}, true, true, 1e-5, 0.5, 1.0}},
        {"instance_norm", NormCase{"big_mean", {2, 6, 12, 10}, true, true, 1e-5, 50.0, 0.5}},
        {"instance_norm", NormCase{"1d", {1, 7, 13}}},
        // instance norm + ReLU fused (training: forward keeps what the backward needs)
        {"instance_norm_relu", NormCase{"enc_small", {2, 4, 8, 8}, true, true, 1e-5, 0.5, 2.0}},
        {"instance_norm_relu", NormCase{"1d_no_affine", {3, 5, 17}, false, false}},
        {"instance_norm_relu", NormCase{"gamma_only", {1, 16, 6, 7}, true, false, 1e-3}},
        {"instance_norm_relu", NormCase{"plane3", {2, 3, 1, 3}}},
        {"instance_norm_relu", NormCase{"plane63", {3, 5, 9, 7}, true, true, 1e-5, 1.0, 2.0}},
        {"instance_norm_relu", NormCase{"plane1023_no_gamma", {2, 3, 33, 31}, false, true, 1e-5, -2.0, 1.0}},
        {"instance_norm_relu", NormCase{"big_mean", {2, 6, 12, 10}, true, true, 1e-5, 50.0, 0.5}},
        // group norm (wav2vec2's first conv layer: GroupNorm(C, C); and real groups)
        {"group_norm", NormCase{"w2v_gn_small", {2, 32, 799}, true, true, 1e-5, 0.0, 1.0, 32}},
        {"group_norm", NormCase{"groups4", {3, 8, 5, 7}, true, true, 1e-5, 1.0, 2.0, 4}},
        {"group_norm", NormCase{"one_group", {2, 6, 11}, false, false, 1e-5, 0.0, 1.0, 1}},
        // layer norm
        {"layer_norm", NormCase{"w2v_10s", {1, 499, 768}}, B::FwdBwd},
        {"layer_norm", NormCase{"seq", {4, 10, 32}, true, true, 1e-5, -2.0, 1.5}},
        {"layer_norm", NormCase{"no_affine", {7, 64}, false, false, 1e-5, -2.0, 1.5}},
        {"layer_norm", NormCase{"4d", {2, 3, 5, 768}, true, true, 1e-5, -2.0, 1.5}},
        {"layer_norm", NormCase{"d1", {5, 1}, true, true, 1e-3, -2.0, 1.5}},
        {"layer_norm", NormCase{"odd", {3, 33}, true, true, 1e-6, -2.0, 1.5}},
        // linear: the decoder (V·3 rows of K = 128), wav2vec2's projections, odd and 1-d inputs
        {"linear", LinearCase{"decoder_b32", 32, 128, 32571}, B::FwdBwd},
        {"linear", LinearCase{"decoder_b1", 1, 128, 32571}, B::FwdBwd},
        {"linear", LinearCase{"w2v_ffn_10s", 499, 768, 3072}, B::FwdBwd},
        {"linear", LinearCase{"w2v_qkv_10s", 499, 768, 768}, B::FwdBwd},
        {"linear", LinearCase{"seq", 10, 16, 8, true, {2, 5, 16}}},
        {"linear", LinearCase{"no_bias", 33, 64, 128, false}},
        {"linear", LinearCase{"in1", 3, 1, 4}},
        {"linear", LinearCase{"w2v_small", 100, 768, 64, true, {2, 50, 768}}},
        {"linear", LinearCase{"x1d", 1, 7, 3, true, {7}}},
        // matmul: attention scores, transposes, batches, broadcasting
        {"matmul", MatmulCase{"w2v_scores_10s", 12, 499, 64, 499}, B::Fwd},
        {"matmul", MatmulCase{"2d", 1, 4, 5, 6, {4, 5}, {5, 6}}},
        {"matmul", MatmulCase{"batched", 3, 4, 5, 6}},
        {"matmul", MatmulCase{"trans_a", 3, 4, 5, 6, {3, 5, 4}, {3, 5, 6}, true}},
        {"matmul", MatmulCase{"trans_b", 3, 4, 5, 6, {3, 4, 5}, {3, 6, 5}, false, true}},
        {"matmul", MatmulCase{"trans_ab_4d", 6, 4, 5, 6, {2, 3, 5, 4}, {2, 3, 6, 5}, true, true}},
        {"matmul", MatmulCase{"bcast_a", 6, 4, 5, 6, {4, 5}, {2, 3, 5, 6}}},
        {"matmul", MatmulCase{"bcast_b_trans", 6, 4, 5, 6, {2, 3, 4, 5}, {6, 5}, false, true}},
        {"matmul", MatmulCase{"bcast_both", 6, 4, 5, 6, {2, 1, 4, 5}, {1, 3, 5, 6}}},
        {"matmul", MatmulCase{"scores_small", 8, 8, 16, 8, {2, 4, 8, 16}, {2, 4, 8, 16}, false, true}},
        // element-wise: the encoder / wav2vec2 sizes; odd, tiny, exact zeros, in place, strided
        {"relu", EltwiseCase{"enc2_b32", {32, 64, 32, 32}}, B::Fwd},
        {"relu", EltwiseCase{"n1000", {1000}, 3.0, true}},
        {"relu", EltwiseCase{"odd", {3, 7, 11}, 3.0, true}},
        {"relu", EltwiseCase{"one", {1}, 3.0}},
        {"relu", EltwiseCase{"inplace", {2, 1, 64}, 3.0, true, true}},
        {"relu", EltwiseCase{"inplace_strided", {6, 9}, 1.0, false, true, true}},
        {"gelu", EltwiseCase{"w2v_ffn_10s", {1, 499, 3072}}, B::Fwd},
        {"gelu", EltwiseCase{"n1000", {1000}, 3.0, true}},
        {"gelu", EltwiseCase{"odd", {3, 7, 11}, 3.0}},
        {"gelu", EltwiseCase{"odd_tanh", {3, 7, 11}, 3.0, false, false, false, true}},
        {"gelu", EltwiseCase{"one_tanh", {1}, 3.0, false, false, false, true}},
        {"softmax", EltwiseCase{"w2v_probs_10s", {1, 12, 499, 499}}, B::Fwd},
        {"softmax", EltwiseCase{"n1000", {1000}, 3.0}},
        {"softmax", EltwiseCase{"odd", {3, 7, 11}, 3.0}},
        {"softmax", EltwiseCase{"d1", {2, 1}, 3.0}},
        // logits ~ N(0, 200²): the output must stay finite. Forward only: with nearly one-hot
        // rows the backward y·(dy − Σ y·dy) cancels to rounding noise (float vs double NMSE ~ 4e-2)
        {"softmax", EltwiseCase{"big_logits", {4, 50}, 200.0}, B::None, kNmse, false},
        // reference-only ops (reported as not supported where a backend has no implementation)
        {"dropout", DropoutCase{"eval", {4, 33}, 0.1, false}},
        {"dropout", DropoutCase{"train_mask", {4, 33}, 0.3, true}},
        {"interp", InterpCase{"audio_to_video", {2, 16, 49}, 30}},
        {"interp", InterpCase{"upsample_ntc", {2, 7, 5}, 19, true}},
        {"sdpa", AttentionCase{"w2v_10s", 1, 12, 499, 499, 64, 64}},
        {"sdpa", AttentionCase{"odd_mask", 2, 3, 5, 7, 4, 6, true}},
        {"sdpa", AttentionCase{"scaled", 1, 2, 9, 9, 8, 8, false, 0.3}},
        {"sdpa_cached", AttentionCase{"step", 2, 4, 1, 9, 16, 16}, B::None, kNmse, false},
        {"sdpa_cached", AttentionCase{"chunk_mask", 1, 2, 3, 6, 8, 5, true}, B::None, kNmse, false},
        // attention_inference: q (n, l, h·d), k/v (n, s, h·d) → (n, l, h·d), forward only
        {"attention_inference", AttentionCase{"w2v_1s", 1, 12, 49, 49, 64, 64}, B::None, kNmse, false},
        {"attention_inference", AttentionCase{"odd", 2, 3, 5, 7, 4, 4}, B::None, kNmse, false},
        {"mha", MhaCase{"faceformer", 2, 9, 9, 64, 4, true, true}},
        {"mha", MhaCase{"cross_no_bias", 1, 5, 7, 24, 3, false, false}},
    };
    t.insert(t.end(), rows.begin(), rows.end());
    return t;
  }();
  return table;
}

/// The case as the op suite runs it: a benchmarked (paper-scale) case keeps its per-sample shapes
/// but at most `max_batch` samples (rows for linear), so the suite stays fast on the reference;
/// other cases are unchanged.
inline OpCase suite_case(const OpCase& c, std::int64_t max_batch = 4) {
  if (c.bench == Bench::None) return c;
  OpCase r = c;
  std::visit(
      [&](auto& s) {
        using S = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<S, Conv2dCase> || std::is_same_v<S, Conv1dCase>) {
          s.n = std::min(s.n, max_batch);
        } else if constexpr (std::is_same_v<S, LinearCase>) {
          if (s.x.empty()) s.rows = std::min(s.rows, max_batch);
        } else if constexpr (std::is_same_v<S, NormCase> || std::is_same_v<S, EltwiseCase>) {
          if (!s.shape.empty()) s.shape[0] = std::min(s.shape[0], max_batch);
        }
      },
      r.spec);
  return r;
}

// ---- per-op views of the benchmarked cases (the LibTorch peer reads these) ------------------------

template <class S>
std::vector<S> bench_specs(const std::string& op) {
  std::vector<S> out;
  for (const OpCase& c : op_cases())
    if (c.op == op && c.bench != Bench::None) out.push_back(std::get<S>(c.spec));
  return out;
}

/// Shape-only view of a norm / element-wise case (tag, shape, numel()).
struct ShapeCase {
  std::string tag;
  Dims shape;
  double numel() const { return prod(shape); }
};
template <class S>
std::vector<ShapeCase> bench_shapes(const std::string& op) {
  std::vector<ShapeCase> out;
  for (const S& s : bench_specs<S>(op)) out.push_back({s.tag, s.shape});
  return out;
}

inline const std::vector<Conv2dCase>& conv2d_cases() {
  static const auto c = bench_specs<Conv2dCase>("conv2d");
  return c;
}
inline const std::vector<Conv1dCase>& conv1d_cases() {
  static const auto c = bench_specs<Conv1dCase>("conv1d");
  return c;
}
inline const std::vector<LinearCase>& linear_cases() {
  static const auto c = bench_specs<LinearCase>("linear");
  return c;
}
inline const std::vector<MatmulCase>& matmul_cases() {
  static const auto c = bench_specs<MatmulCase>("matmul");
  return c;
}
inline const std::vector<ShapeCase>& instance_norm_cases() {
  static const auto c = bench_shapes<NormCase>("instance_norm");
  return c;
}
inline const std::vector<ShapeCase>& relu_cases() {
  static const auto c = bench_shapes<EltwiseCase>("relu");
  return c;
}
inline const std::vector<ShapeCase>& layer_norm_cases() {
  static const auto c = bench_shapes<NormCase>("layer_norm");
  return c;
}
inline const std::vector<ShapeCase>& gelu_cases() {
  static const auto c = bench_shapes<EltwiseCase>("gelu");
  return c;
}
inline const std::vector<ShapeCase>& softmax_cases() {
  static const auto c = bench_shapes<EltwiseCase>("softmax");
  return c;
}

// ---- the models -----------------------------------------------------------------------------

/// The paper-scale fusion module the model benchmarks build (ours and the peer alike).
struct FusionScale {
  static constexpr std::int64_t grid_rows = 141, grid_cols = 77;  // 141 × 77 = 10857 vertices
  static constexpr std::int64_t vertices = grid_rows * grid_cols;
  static constexpr std::int64_t map_size = 128;
  static constexpr std::int64_t k_a = 64, k_e = 64;
  static std::vector<std::int64_t> channels() { return {32, 64, 128, 256, 256, 256}; }
};

/// Multiply-adds of one conv encoder forward per sample (convs + fc; 4 input channels).
inline double fusion_encoder_macs() {
  double m = 0;
  std::int64_t s = FusionScale::map_size, cin = 4;
  for (auto cout : FusionScale::channels()) {
    s = (s + 2 - 3) / 2 + 1;
    m += static_cast<double>(s) * s * cout * cin * 9;
    cin = cout;
  }
  return m + static_cast<double>(cin) * s * s * (FusionScale::k_a + FusionScale::k_e);
}
inline double fusion_decoder_macs() {
  return static_cast<double>(FusionScale::vertices) * 3 * (FusionScale::k_a + FusionScale::k_e);
}
/// Nominal FLOPs of one fused frame (two encoders + decoder).
inline double fusion_fuse_flops_per_frame() { return 2 * (2 * fusion_encoder_macs() + fusion_decoder_macs()); }
/// Nominal FLOPs of one training frame: forward (one encoder + decoder) and backward (2×).
inline double fusion_train_flops_per_frame() { return 3 * 2 * (fusion_encoder_macs() + fusion_decoder_macs()); }

/// wav2vec2-base (HF config) forward FLOPs for `samples` 16 kHz samples.
inline double wav2vec2_base_flops(std::int64_t samples, std::int64_t* frames_out = nullptr) {
  const std::int64_t kernel[7] = {10, 3, 3, 3, 3, 2, 2}, stride[7] = {5, 2, 2, 2, 2, 2, 2};
  double m = 0;
  std::int64_t n = samples, cin = 1;
  for (int i = 0; i < 7; ++i) {
    n = (n - kernel[i]) / stride[i] + 1;
    m += static_cast<double>(n) * 512 * cin * kernel[i];
    cin = 512;
  }
  const double T = static_cast<double>(n), E = 768, F = 3072;
  m += T * 512 * E;                  // feature projection
  m += T * E * (E / 16) * 128;       // grouped positional conv
  m += 12 * (T * (4 * E * E + 2 * E * F) + 2 * T * T * E);  // layers: projections, FFN, attention
  if (frames_out) *frames_out = n;
  return 2 * m;
}

}  // namespace bfbench
