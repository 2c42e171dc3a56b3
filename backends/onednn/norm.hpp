// blendfuse — oneDNN backend: instance norm, layer norm, and an instance norm with a fused ReLU
// (`onednn::instance_norm_relu`) for training.
//
// Same semantics and shapes as ops/norm.hpp (biased variance, rstd = 1 / sqrt(var + eps), saved
// mean/rstd, dgamma/dbeta always returned).
//
// Instance norm: oneDNN 2.6 has no instance-norm primitive. Two routes, chosen process-wide with
// onednn::set_instance_norm_route (both are tested against the reference):
//
// * InstanceNormRoute::BatchNorm (the route DESIGN.md names). x (N, C, *) is viewed as a
//   batch-norm input (1, N·C, 1, L) (L = product of the inner dims) and normalised with batch
//   statistics (use_global_stats off, forward_training), so each (n, c) plane is one batch-norm
//   channel. The affine parameters are per C, not per N·C: gamma/beta (absent → 1/0) are tiled N
//   times into the (N·C) scale/shift arguments (use_scale | use_shift), and the (N·C)
//   diff_scale/diff_shift of the backward are reduced over N into dgamma/dbeta (C).
//   instance_norm_relu uses fuse_norm_relu: the forward writes relu(norm(x)) plus a workspace
//   (the ReLU mask, kept in NormReluResult), and the backward applies the mask inside the
//   batch-norm backward.
//
// * InstanceNormRoute::LayerNorm (default). A layer norm over x viewed as (N·C, L) without
//   scale/shift has exactly the (n, c) statistics; one extra pass applies gamma_c/beta_c (and the
//   fused ReLU, at no cost). The backward is a host kernel, not oneDNN (in_bwd_plane): per
//   (n, c) plane one pass for dbeta = Σ d and dgamma = Σ d·x̂ (d = dy, masked by y > 0 for the
//   fused ReLU) and one pass writing dx = γr(d − Σd/L − x̂·Σd·x̂/L), 8-float vectors; a plane
//   (≤ 16 KB per array in the fusion encoder) stays in L1/L2 between the two passes. It replaced
//   "∂L/∂x̂ pass + oneDNN layer-norm backward", which read the data three times and wrote it
//   twice (instance_norm_bwd was 0.33× LibTorch in docs/performance.md's op table).
//
//   Why the default: with plain layouts oneDNN 2.6 runs batch norm on its generic ncsp kernel
//   (`ncsp_bnorm:any`), which on (8, 64, 32, 32), one thread, measured 1.35 ms forward / 1.6 ms
//   backward (reference: 1.2 / 0.7 ms), and 3.8 ms with fuse_norm_relu — fusion does not help
//   there; the layer-norm route (JIT `simple_layer_normalization`) measured 0.21 / 0.70 ms, fused
//   ReLU included. The fusion encoder's training and batched inference run their instance norm
//   + ReLU on blocked nChw8c/16c activations with their own host kernels (nn/encoders.hpp).
//
// Backward from saved statistics. The blendfuse backward receives mean and rstd, not eps and the
// variance. oneDNN's backward uses rstd = 1 / sqrt(variance + eps), so it is given
// variance = 1 / rstd² (computed in double) and eps = 0, which reproduces the saved rstd.
//
// Layer norm: layer_normalization_forward/backward over x viewed as (rows, D), statistics
// (rows,), scale/shift (D). oneDNN 2.6 requires the shift argument in the backward when use_shift
// is set, although it does not read it (a zero vector is passed).
//
// Group norm is not specialised (the reference runs on OneDnn tensors). float runs on oneDNN;
// double falls back to the reference.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/norm.hpp"
#include "onednn/activation.hpp"
#include "onednn/common.hpp"

namespace blendfuse {

namespace onednn {

/// Output of instance_norm_relu: `y` = relu(instance_norm(x)), the saved statistics, and the
/// oneDNN ReLU workspace (empty where the op was composed from reference ops).
template <class T, class Backend = OneDnn>
struct NormReluResult {
  Tensor<T, Backend> y;
  Tensor<T, Backend> mean;  ///< (N, C)
  Tensor<T, Backend> rstd;  ///< (N, C)
  Tensor<std::uint8_t, Backend> workspace;
};

/// How InstanceNormOp<OneDnn> maps instance norm onto oneDNN 2.6 (see the file comment).
enum class InstanceNormRoute {
  LayerNorm,  ///< layer norm over (N·C, L) + one affine pass (default: measured faster)
  BatchNorm,  ///< batch norm over (1, N·C, 1, L), gamma/beta tiled, fuse_norm_relu
};

namespace detail {
inline std::atomic<InstanceNormRoute>& route_flag() {
  static std::atomic<InstanceNormRoute> r{InstanceNormRoute::LayerNorm};
  return r;
}
}  // namespace detail

/// Process-wide choice of the instance-norm route (thread-safe; affects later calls).
inline void set_instance_norm_route(InstanceNormRoute r) { detail::route_flag().store(r); }
inline InstanceNormRoute instance_norm_route() { return detail::route_flag().load(); }

}  // namespace onednn

namespace onednn::detail {

inline dnnl::normalization_flags bn_flags(bool fuse_relu) {
  auto f = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  if (fuse_relu) f = f | dnnl::normalization_flags::fuse_norm_relu;
  return f;
}

struct BnFwd {
  dnnl::batch_normalization_forward prim;
  std::size_t workspace_bytes = 0;
};
struct BnBwd {
  dnnl::batch_normalization_backward prim;
};

/// Instance-norm geometry as batch norm: channels = N·C, plane = product of inner dims.
struct InGeom {
  Index n = 0, c = 0, inner = 1;
  Index channels() const { return n * c; }
};

template <class T, class B>
InGeom in_geom(const Tensor<T, B>& x, const char* op) {
  BF_CHECK(x.ndim() >= 3, ShapeError, op, ": expected x of shape (N, C, L) or (N, C, H, W), got ",
           x.shape_string());
  InGeom g{x.dim(0), x.dim(1), 1};
  for (Index d = 2; d < x.ndim(); ++d) g.inner *= x.dim(d);
  return g;
}

inline dnnl::memory::desc bn_data_md(const InGeom& g) { return plain_md({1, g.channels(), 1, g.inner}); }

inline dnnl::batch_normalization_forward::primitive_desc bn_fwd_pd(const InGeom& g, float eps,
                                                                   bool relu) {
  return dnnl::batch_normalization_forward::primitive_desc(
      dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_training, bn_data_md(g),
                                              eps, bn_flags(relu)),
      scratch_attr(), engine());
}

/// gamma/beta (C) (absent → 1/0) tiled N times.
template <class B>
std::vector<float> tile_param(const Tensor<float, B>& p, const InGeom& g, float dflt) {
  std::vector<float> out(static_cast<std::size_t>(g.channels()), dflt);
  if (!::blendfuse::detail::norm_has(p)) return out;
  const Tensor<float, B> pc = p.contiguous();
  for (Index n = 0; n < g.n; ++n)
    for (Index c = 0; c < g.c; ++c) out[static_cast<std::size_t>(n * g.c + c)] = pc[c];
  return out;
}

/// Instance-norm forward (float, non-degenerate); y gets relu(norm(x)) when `relu`.
inline NormReluResult<float> in_bn_forward(const Tensor<float, OneDnn>& x,
                                                   const Tensor<float, OneDnn>& gamma,
                                                   const Tensor<float, OneDnn>& beta, double eps,
                                                   bool relu) {
  const InGeom g = in_geom(x, "instance_norm");
  const float feps = static_cast<float>(eps);
  const auto e = PrimitiveCache::instance().get<BnFwd>(
      make_key("instance_norm_fwd", g.channels(), g.inner, feps, Index(relu)), [&] {
        const auto pd = bn_fwd_pd(g, feps, relu);
        return std::make_shared<BnFwd>(
            BnFwd{dnnl::batch_normalization_forward(pd), relu ? pd.workspace_desc().get_size() : 0});
      });
  const Tensor<float, OneDnn> xc = x.contiguous();
  NormReluResult<float> r{Tensor<float, OneDnn>(x.shape()), Tensor<float, OneDnn>({g.n, g.c}),
                          Tensor<float, OneDnn>({g.n, g.c}), {}};
  std::vector<float> var(static_cast<std::size_t>(g.channels()));
  const std::vector<float> scale = tile_param(gamma, g, 1.f), shift = tile_param(beta, g, 0.f);
  const auto md = bn_data_md(g), smd = plain_md({g.channels()});
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, wrap(md, xc.data())},       {DNNL_ARG_DST, wrap(md, r.y.data())},
      {DNNL_ARG_MEAN, wrap(smd, r.mean.data())}, {DNNL_ARG_VARIANCE, wrap(smd, var.data())},
      {DNNL_ARG_SCALE, wrap(smd, scale.data())}, {DNNL_ARG_SHIFT, wrap(smd, shift.data())}};
  if (relu) {
    r.workspace = Tensor<std::uint8_t, OneDnn>({static_cast<Index>(e->workspace_bytes)});
    args.emplace(DNNL_ARG_WORKSPACE,
                 dnnl::memory(bn_fwd_pd(g, feps, true).workspace_desc(), engine(),
                              r.workspace.data()));
  }
  run(e->prim, args);
  for (Index i = 0; i < g.channels(); ++i)
    r.rstd[i] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[static_cast<std::size_t>(i)]) + eps));
  return r;
}

/// Instance-norm backward (float, non-degenerate). With a workspace, the ReLU mask it holds is
/// applied to dy inside the batch-norm backward (dy is then ∂L/∂relu-output).
inline ops::NormGrads<float, OneDnn> in_bn_backward(const Tensor<float, OneDnn>& x,
                                                       const Tensor<float, OneDnn>& gamma,
                                                       const Tensor<float, OneDnn>& mean,
                                                       const Tensor<float, OneDnn>& rstd,
                                                       const Tensor<float, OneDnn>& dy,
                                                       const Tensor<std::uint8_t, OneDnn>* ws) {
  const InGeom g = in_geom(x, "instance_norm_backward");
  const bool relu = ws != nullptr;
  const auto e = PrimitiveCache::instance().get<BnBwd>(
      make_key("instance_norm_bwd", g.channels(), g.inner, Index(relu)), [&] {
        const auto md = bn_data_md(g);
        const auto hint = bn_fwd_pd(g, 0.f, relu);
        const dnnl::batch_normalization_backward::desc d(dnnl::prop_kind::backward, md, md, 0.f,
                                                         bn_flags(relu));
        return std::make_shared<BnBwd>(BnBwd{dnnl::batch_normalization_backward(
            dnnl::batch_normalization_backward::primitive_desc(d, scratch_attr(), engine(), hint))});
      });
  const Tensor<float, OneDnn> xc = x.contiguous(), dyc = dy.contiguous();
  const Tensor<float, OneDnn> mc = mean.contiguous(), rc = rstd.contiguous();
  const std::size_t nc = static_cast<std::size_t>(g.channels());
  std::vector<float> var(nc), dscale(nc), dshift(nc), shift(nc, 0.f);
  for (std::size_t i = 0; i < nc; ++i) {
    const double rs = static_cast<double>(rc[static_cast<Index>(i)]);
    var[i] = static_cast<float>(1.0 / (rs * rs));
  }
  const std::vector<float> scale = tile_param(gamma, g, 1.f);
  ops::NormGrads<float, OneDnn> out{Tensor<float, OneDnn>(x.shape()), Tensor<float, OneDnn>({g.c}),
                               Tensor<float, OneDnn>({g.c})};
  const auto md = bn_data_md(g), smd = plain_md({g.channels()});
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, wrap(md, xc.data())},          {DNNL_ARG_DIFF_DST, wrap(md, dyc.data())},
      {DNNL_ARG_MEAN, wrap(smd, mc.data())},         {DNNL_ARG_VARIANCE, wrap(smd, var.data())},
      {DNNL_ARG_SCALE, wrap(smd, scale.data())},     {DNNL_ARG_DIFF_SRC, wrap(md, out.dx.data())},
      {DNNL_ARG_SHIFT, wrap(smd, shift.data())},  // required by oneDNN 2.6 with use_shift, unused
      {DNNL_ARG_DIFF_SCALE, wrap(smd, dscale.data())}, {DNNL_ARG_DIFF_SHIFT, wrap(smd, dshift.data())}};
  if (relu)
    args.emplace(DNNL_ARG_WORKSPACE,
                 wrap(bn_fwd_pd(g, 0.f, true).workspace_desc(), ws->data()));
  run(e->prim, args);
  for (Index c = 0; c < g.c; ++c) {
    double sg = 0, sb = 0;
    for (Index n = 0; n < g.n; ++n) {
      sg += dscale[static_cast<std::size_t>(n * g.c + c)];
      sb += dshift[static_cast<std::size_t>(n * g.c + c)];
    }
    out.dgamma[c] = static_cast<float>(sg);
    out.dbeta[c] = static_cast<float>(sb);
  }
  return out;
}

template <class T>
ops::NormResult<T, OneDnn> norm_result_back(const ops::NormResult<T, Cpu>& r) {
  return {to_onednn(r.y), to_onednn(r.mean), to_onednn(r.rstd)};
}
template <class T>
ops::NormGrads<T, OneDnn> norm_grads_back(const ops::NormGrads<T, Cpu>& g) {
  return {to_onednn(g.dx), to_onednn(g.dgamma), to_onednn(g.dbeta)};
}

// ---- layer norm -------------------------------------------------------------------------------

struct LnFwd {
  dnnl::layer_normalization_forward prim;
};
struct LnBwd {
  dnnl::layer_normalization_backward prim;
};

inline dnnl::layer_normalization_forward::primitive_desc ln_fwd_pd(
    Index rows, Index d, float eps, dnnl::normalization_flags flags = bn_flags(false)) {
  return dnnl::layer_normalization_forward::primitive_desc(
      dnnl::layer_normalization_forward::desc(dnnl::prop_kind::forward_training,
                                              plain_md({rows, d}), plain_md({rows}), eps, flags),
      scratch_attr(), engine());
}

inline std::vector<float> param_or(const Tensor<float, OneDnn>& p, Index n, float dflt) {
  std::vector<float> out(static_cast<std::size_t>(n), dflt);
  if (!::blendfuse::detail::norm_has(p)) return out;
  const Tensor<float, OneDnn> pc = p.contiguous();
  for (Index i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = pc[i];
  return out;
}


// ---- instance norm, layer-norm route ----------------------------------------------------------

/// Instance-norm forward as a layer norm over x viewed as (N·C, L) (no scale/shift: the row
/// statistics are the (n, c) statistics), then one pass y = gamma_c·y + beta_c [then relu].
inline NormReluResult<float> in_ln_forward(const Tensor<float, OneDnn>& x,
                                           const Tensor<float, OneDnn>& gamma,
                                           const Tensor<float, OneDnn>& beta, double eps, bool relu) {
  const InGeom g = in_geom(x, "instance_norm");
  const float feps = static_cast<float>(eps);
  const Index rows = g.channels(), L = g.inner;
  const auto e = PrimitiveCache::instance().get<LnFwd>(
      make_key("instance_norm_ln_fwd", rows, L, feps), [&] {
        return std::make_shared<LnFwd>(LnFwd{dnnl::layer_normalization_forward(
            ln_fwd_pd(rows, L, feps, dnnl::normalization_flags::none))});
      });
  const Tensor<float, OneDnn> xc = x.contiguous();
  NormReluResult<float> r{Tensor<float, OneDnn>(x.shape()), Tensor<float, OneDnn>({g.n, g.c}),
                          Tensor<float, OneDnn>({g.n, g.c}), {}};
  std::vector<float> var(static_cast<std::size_t>(rows));
  const auto md = plain_md({rows, L}), smd = plain_md({rows});
  run(e->prim, {{DNNL_ARG_SRC, wrap(md, xc.data())},
                {DNNL_ARG_DST, wrap(md, r.y.data())},
                {DNNL_ARG_MEAN, wrap(smd, r.mean.data())},
                {DNNL_ARG_VARIANCE, wrap(smd, var.data())}});
  const bool has_g = ::blendfuse::detail::norm_has(gamma), has_b = ::blendfuse::detail::norm_has(beta);
  const Tensor<float, OneDnn> gc = has_g ? gamma.contiguous() : Tensor<float, OneDnn>();
  const Tensor<float, OneDnn> bc = has_b ? beta.contiguous() : Tensor<float, OneDnn>();
  for (Index row = 0; row < rows; ++row) {
    r.rstd[row] = static_cast<float>(
        1.0 / std::sqrt(static_cast<double>(var[static_cast<std::size_t>(row)]) + eps));
    if (!has_g && !has_b && !relu) continue;
    const Index c = row % g.c;
    const float a = has_g ? gc[c] : 1.f, b = has_b ? bc[c] : 0.f;
    float* y = r.y.data() + row * L;
    if (relu)
      for (Index i = 0; i < L; ++i) y[i] = std::max(a * y[i] + b, 0.f);
    else
      for (Index i = 0; i < L; ++i) y[i] = a * y[i] + b;
  }
  return r;
}

// ---- 8-float vectors for the host norm kernels -------------------------------------------------
// GCC/Clang vector extension: one AVX2 register (two SSE ones without AVX). Written explicitly
// because the masked loads of the ReLU backward (y > 0 ? dy : 0) keep GCC from vectorising the
// scalar loops (it will not speculate the load of dy).

typedef float F8 __attribute__((vector_size(32)));
typedef std::int32_t I8 __attribute__((vector_size(32)));

inline F8 load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, F8 v) { std::memcpy(p, &v, sizeof v); }
inline F8 bcast8(float a) { return F8{a, a, a, a, a, a, a, a}; }
/// d where y > 0, else 0 (the ReLU backward mask).
inline F8 relu_mask8(F8 y, F8 d) { return reinterpret_cast<F8>(reinterpret_cast<I8>(d) & (y > F8{})); }
inline double hsum8(F8 v) {
  double s = 0;
  for (int k = 0; k < 8; ++k) s += v[k];
  return s;
}

/// Instance-norm (+ReLU) backward of one (n, c) plane of L elements, directly (no oneDNN):
/// with x̂ = (x − μ)·r and d = dy (masked by y > 0 when Relu),
///   sb = Σ d, sx = Σ d·(x − μ)   (dbeta_c += sb, dgamma_c += r·sx)
///   dx = γr·(d − sb/L − x̂·r·sx/L) = A·d + Bx·(x − μ) + C0.
/// Pass 1 reads x, dy (and y); pass 2 re-reads them (an encoder plane is ≤ 16 KB per array, in
/// L1/L2) and writes dx. Sums use 8 float lanes, combined in double.
template <bool Relu>
inline void in_bwd_plane(const float* __restrict x, const float* __restrict dy,
                         const float* __restrict y, Index L, float mu, float rs, float gm,
                         float* __restrict dx, double& sb_out, double& sg_out) {
  const F8 mu8 = bcast8(mu);
  F8 sb8{}, sx8{};
  Index i = 0;
  for (; i + 8 <= L; i += 8) {
    F8 d = load8(dy + i);
    if constexpr (Relu) d = relu_mask8(load8(y + i), d);
    sb8 += d;
    sx8 += d * (load8(x + i) - mu8);
  }
  double sb = hsum8(sb8), sx = hsum8(sx8);
  for (; i < L; ++i) {
    const float d = (Relu && !(y[i] > 0.f)) ? 0.f : dy[i];
    sb += d;
    sx += d * (x[i] - mu);
  }
  sb_out = sb;
  sg_out = sx * rs;
  const double inv_l = 1.0 / static_cast<double>(L);
  const float A = gm * rs;
  const float Bx = static_cast<float>(-static_cast<double>(gm) * rs * rs * rs * sx * inv_l);
  const float C0 = static_cast<float>(-static_cast<double>(A) * sb * inv_l);
  const F8 A8 = bcast8(A), B8 = bcast8(Bx), C8 = bcast8(C0);
  Index j = 0;
  for (; j + 8 <= L; j += 8) {  // (x − μ) kept explicit: no cancellation when |μ| ≫ σ
    F8 d = load8(dy + j);
    if constexpr (Relu) d = relu_mask8(load8(y + j), d);
    store8(dx + j, A8 * d + (B8 * (load8(x + j) - mu8) + C8));
  }
  for (; j < L; ++j) {
    const float d = (Relu && !(y[j] > 0.f)) ? 0.f : dy[j];
    dx[j] = A * d + (Bx * (x[j] - mu) + C0);
  }
}

/// Instance-norm backward on the layer-norm route (float, non-degenerate): in_bwd_plane per
/// (n, c) plane, the ReLU mask y > 0 applied when `relu_y` (the fused ReLU's output) is given.
/// One read of x, dy (and y) and one write of dx; replaces the former ∂L/∂x̂ pass + oneDNN
/// layer-norm backward (three reads and two writes, 0.33× LibTorch in the op table).
inline ops::NormGrads<float, OneDnn> in_ln_backward(const Tensor<float, OneDnn>& x,
                                               const Tensor<float, OneDnn>& gamma,
                                               const Tensor<float, OneDnn>& mean,
                                               const Tensor<float, OneDnn>& rstd,
                                               const Tensor<float, OneDnn>& dy,
                                               const Tensor<float, OneDnn>* relu_y) {
  const InGeom g = in_geom(x, "instance_norm_backward");
  const Index rows = g.channels(), L = g.inner;
  const Tensor<float, OneDnn> xc = x.contiguous(), dyc = dy.contiguous();
  const Tensor<float, OneDnn> mc = mean.contiguous(), rc = rstd.contiguous();
  const Tensor<float, OneDnn> yc = relu_y ? relu_y->contiguous() : Tensor<float, OneDnn>();
  const bool has_g = ::blendfuse::detail::norm_has(gamma);
  const Tensor<float, OneDnn> gc = has_g ? gamma.contiguous() : Tensor<float, OneDnn>();
  ops::NormGrads<float, OneDnn> out{Tensor<float, OneDnn>(x.shape()), Tensor<float, OneDnn>({g.c}),
                               Tensor<float, OneDnn>({g.c})};
  std::vector<double> sb(static_cast<std::size_t>(rows)), sg(static_cast<std::size_t>(rows));
  const float* xp = xc.data();
  const float* dp = dyc.data();
  const float* yp = relu_y ? yc.data() : nullptr;
  const float* mp = mc.data();
  const float* rp = rc.data();
  const float* gp = has_g ? gc.data() : nullptr;
  float* dxp = out.dx.data();
#pragma omp parallel for schedule(static)
  for (Index row = 0; row < rows; ++row) {
    const Index o = row * L;
    const float gm = gp ? gp[row % g.c] : 1.f;
    const auto r = static_cast<std::size_t>(row);
    if (yp)
      in_bwd_plane<true>(xp + o, dp + o, yp + o, L, mp[row], rp[row], gm, dxp + o, sb[r], sg[r]);
    else
      in_bwd_plane<false>(xp + o, dp + o, nullptr, L, mp[row], rp[row], gm, dxp + o, sb[r], sg[r]);
  }
  for (Index c = 0; c < g.c; ++c) {
    double a = 0, b = 0;
    for (Index n = 0; n < g.n; ++n) {
      a += sg[static_cast<std::size_t>(n * g.c + c)];
      b += sb[static_cast<std::size_t>(n * g.c + c)];
    }
    out.dgamma[c] = static_cast<float>(a);
    out.dbeta[c] = static_cast<float>(b);
  }
  return out;
}

/// Route-dispatching forward / backward (float, non-degenerate shapes).
inline NormReluResult<float> instance_norm_forward(const Tensor<float, OneDnn>& x,
                                                   const Tensor<float, OneDnn>& gamma,
                                                   const Tensor<float, OneDnn>& beta, double eps,
                                                   bool relu) {
  return instance_norm_route() == InstanceNormRoute::BatchNorm
             ? in_bn_forward(x, gamma, beta, eps, relu)
             : in_ln_forward(x, gamma, beta, eps, relu);
}

/// `fused`: the result of instance_norm_relu (its workspace, or its y for the mask), or null.
inline ops::NormGrads<float, OneDnn> instance_norm_backward(const Tensor<float, OneDnn>& x,
                                                       const Tensor<float, OneDnn>& gamma,
                                                       const Tensor<float, OneDnn>& mean,
                                                       const Tensor<float, OneDnn>& rstd,
                                                       const Tensor<float, OneDnn>& dy,
                                                       const NormReluResult<float>* fused) {
  if (fused && !fused->workspace.empty())  // forward ran on the batch-norm route
    return in_bn_backward(x, gamma, mean, rstd, dy, &fused->workspace);
  if (!fused && instance_norm_route() == InstanceNormRoute::BatchNorm)
    return in_bn_backward(x, gamma, mean, rstd, dy, nullptr);
  return in_ln_backward(x, gamma, mean, rstd, dy, fused ? &fused->y : nullptr);
}

}  // namespace onednn::detail

/// Instance norm on oneDNN (route per set_instance_norm_route, see the file comment); float only,
/// double falls back.
template <>
struct ops::InstanceNormOp<OneDnn> {
  template <class T>
  static ops::NormResult<T, OneDnn> forward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& gamma,
                                       const Tensor<T, OneDnn>& beta, double eps) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      const od::InGeom g = od::in_geom(x, "instance_norm");
      blendfuse::detail::norm_check_param(gamma, x.dim(1), "instance_norm", "gamma", x);
      blendfuse::detail::norm_check_param(beta, x.dim(1), "instance_norm", "beta", x);
      blendfuse::detail::norm_check_eps(eps, "instance_norm");
      if (g.channels() > 0 && g.inner > 0) {
        auto r = od::instance_norm_forward(x, gamma, beta, eps, false);
        return {r.y, r.mean, r.rstd};
      }
    }
    return od::norm_result_back(ops::InstanceNormOp<Cpu>::forward(
        onednn::view_as_cpu(x), onednn::view_as_cpu(gamma), onednn::view_as_cpu(beta), eps));
  }

  template <class T>
  static ops::NormGrads<T, OneDnn> backward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& gamma,
                                       const Tensor<T, OneDnn>& mean, const Tensor<T, OneDnn>& rstd,
                                       const Tensor<T, OneDnn>& dy) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      const od::InGeom g = od::in_geom(x, "instance_norm_backward");
      blendfuse::detail::norm_check_param(gamma, x.dim(1), "instance_norm_backward", "gamma", x);
      blendfuse::detail::norm_check_backward(x, mean, rstd, dy, {g.n, g.c}, "instance_norm_backward");
      if (g.channels() > 0 && g.inner > 0)
        return od::instance_norm_backward(x, gamma, mean, rstd, dy, nullptr);
    }
    return od::norm_grads_back(ops::InstanceNormOp<Cpu>::backward(
        onednn::view_as_cpu(x), onednn::view_as_cpu(gamma), onednn::view_as_cpu(mean),
        onednn::view_as_cpu(rstd), onednn::view_as_cpu(dy)));
  }
};

/// Group norm on OneDnn tensors: forward / backward are the reference on the same memory
/// (oneDNN 2.6 has no group-norm primitive); the in-place inference form has a single-pass
/// per-channel route for groups == C (wav2vec 2.0's GroupNorm(512, 512)): statistics in double,
/// then y = a·x + c with a, c rounded to T — no second (C, T) buffer and no double per element.
template <>
struct ops::GroupNormOp<OneDnn> {
  template <class T>
  static ops::NormResult<T, OneDnn> forward(const Tensor<T, OneDnn>& x, Index groups,
                                       const Tensor<T, OneDnn>& gamma, const Tensor<T, OneDnn>& beta,
                                       double eps) {
    return onednn::detail::norm_result_back(ops::GroupNormOp<Cpu>::forward(
        onednn::view_as_cpu(x), groups, onednn::view_as_cpu(gamma), onednn::view_as_cpu(beta), eps));
  }

  template <class T>
  static ops::NormGrads<T, OneDnn> backward(const Tensor<T, OneDnn>& x, Index groups,
                                       const Tensor<T, OneDnn>& gamma, const Tensor<T, OneDnn>& mean,
                                       const Tensor<T, OneDnn>& rstd, const Tensor<T, OneDnn>& dy) {
    return onednn::detail::norm_grads_back(ops::GroupNormOp<Cpu>::backward(
        onednn::view_as_cpu(x), groups, onednn::view_as_cpu(gamma), onednn::view_as_cpu(mean),
        onednn::view_as_cpu(rstd), onednn::view_as_cpu(dy)));
  }

  template <class T>
  static void forward_inplace(Tensor<T, OneDnn>& x, Index groups, const Tensor<T, OneDnn>& gamma,
                              const Tensor<T, OneDnn>& beta, double eps) {
    const bool per_channel = x.ndim() >= 2 && x.numel() > 0 && groups == x.dim(1) && x.is_contiguous() &&
                             blendfuse::detail::norm_has(gamma) && blendfuse::detail::norm_has(beta);
    if (!per_channel) {
      Tensor<T, Cpu> v = onednn::view_as_cpu(x);
      ops::GroupNormOp<Cpu>::forward_inplace(v, groups, onednn::view_as_cpu(gamma),
                                        onednn::view_as_cpu(beta), eps);
      return;
    }
    const Index B = x.dim(0), C = x.dim(1), Tn = x.numel() / (B * C);
    blendfuse::detail::norm_check_param(gamma, C, "group_norm_", "gamma", x);
    blendfuse::detail::norm_check_param(beta, C, "group_norm_", "beta", x);
    blendfuse::detail::norm_check_eps(eps, "group_norm_");
    const Tensor<T, OneDnn> g = gamma.contiguous(), b = beta.contiguous();
    for (Index n = 0; n < B; ++n)
      for (Index ch = 0; ch < C; ++ch) {
        T* p = x.data() + (n * C + ch) * Tn;
        double s = 0, ss = 0;
        for (Index t = 0; t < Tn; ++t) s += static_cast<double>(p[t]);
        const double mean = s / static_cast<double>(Tn);
        for (Index t = 0; t < Tn; ++t) {
          const double d = static_cast<double>(p[t]) - mean;
          ss += d * d;
        }
        const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(Tn) + eps);
        const T a = static_cast<T>(rstd * static_cast<double>(g[ch]));
        const T c0 = static_cast<T>(static_cast<double>(b[ch]) - mean * rstd * static_cast<double>(g[ch]));
        for (Index t = 0; t < Tn; ++t) p[t] = a * p[t] + c0;
      }
  }
};

/// Layer norm over the last dim on oneDNN; float only, double falls back.
template <>
struct ops::LayerNormOp<OneDnn> {
  template <class T>
  static ops::NormResult<T, OneDnn> forward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& gamma,
                                       const Tensor<T, OneDnn>& beta, double eps) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      if (x.ndim() >= 1 && x.numel() > 0) {
        blendfuse::detail::norm_check_param(gamma, x.dim(-1), "layer_norm", "gamma", x);
        blendfuse::detail::norm_check_param(beta, x.dim(-1), "layer_norm", "beta", x);
        blendfuse::detail::norm_check_eps(eps, "layer_norm");
        const Index d = x.dim(-1), rows = x.numel() / d;
        const float feps = static_cast<float>(eps);
        const auto e = od::PrimitiveCache::instance().get<od::LnFwd>(
            od::make_key("layer_norm_fwd", rows, d, feps), [&] {
              return std::make_shared<od::LnFwd>(
                  od::LnFwd{dnnl::layer_normalization_forward(od::ln_fwd_pd(rows, d, feps))});
            });
        const Shape ss(x.shape().begin(), x.shape().end() - 1);
        const Tensor<float, OneDnn> xc = x.contiguous();
        ops::NormResult<float, OneDnn> r{Tensor<float, OneDnn>(x.shape()), Tensor<float, OneDnn>(ss),
                                    Tensor<float, OneDnn>(ss)};
        std::vector<float> var(static_cast<std::size_t>(rows));
        const auto scale = od::param_or(gamma, d, 1.f), shift = od::param_or(beta, d, 0.f);
        const auto md = od::plain_md({rows, d}), smd = od::plain_md({rows}), pmd = od::plain_md({d});
        od::run(e->prim, {{DNNL_ARG_SRC, od::wrap(md, xc.data())},
                          {DNNL_ARG_DST, od::wrap(md, r.y.data())},
                          {DNNL_ARG_MEAN, od::wrap(smd, r.mean.data())},
                          {DNNL_ARG_VARIANCE, od::wrap(smd, var.data())},
                          {DNNL_ARG_SCALE, od::wrap(pmd, scale.data())},
                          {DNNL_ARG_SHIFT, od::wrap(pmd, shift.data())}});
        for (Index i = 0; i < rows; ++i)
          r.rstd[i] = static_cast<float>(
              1.0 / std::sqrt(static_cast<double>(var[static_cast<std::size_t>(i)]) + eps));
        return r;
      }
    }
    return od::norm_result_back(ops::LayerNormOp<Cpu>::forward(
        onednn::view_as_cpu(x), onednn::view_as_cpu(gamma), onednn::view_as_cpu(beta), eps));
  }

  /// Inference forward into a preallocated contiguous y (float: the layer-norm primitive writing
  /// y directly; double and empty tensors: the reference on the same memory).
  template <class T>
  static void forward_into(Tensor<T, OneDnn>& y, const Tensor<T, OneDnn>& x,
                           const Tensor<T, OneDnn>& gamma, const Tensor<T, OneDnn>& beta, double eps) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      if (x.ndim() >= 1 && x.numel() > 0) {
        blendfuse::detail::norm_check_param(gamma, x.dim(-1), "layer_norm_into", "gamma", x);
        blendfuse::detail::norm_check_param(beta, x.dim(-1), "layer_norm_into", "beta", x);
        blendfuse::detail::norm_check_eps(eps, "layer_norm_into");
        BF_CHECK(y.shape() == x.shape() && y.is_contiguous(), ShapeError, "layer_norm_into: output ",
                 y.shape_string(), " must be contiguous with the shape of x ", x.shape_string());
        const Index d = x.dim(-1), rows = x.numel() / d;
        const float feps = static_cast<float>(eps);
        const auto e = od::PrimitiveCache::instance().get<od::LnFwd>(
            od::make_key("layer_norm_fwd", rows, d, feps), [&] {
              return std::make_shared<od::LnFwd>(
                  od::LnFwd{dnnl::layer_normalization_forward(od::ln_fwd_pd(rows, d, feps))});
            });
        const Tensor<float, OneDnn> xc = x.contiguous();
        std::vector<float> mean(static_cast<std::size_t>(rows)), var(static_cast<std::size_t>(rows));
        const auto scale = od::param_or(gamma, d, 1.f), shift = od::param_or(beta, d, 0.f);
        const auto md = od::plain_md({rows, d}), smd = od::plain_md({rows}), pmd = od::plain_md({d});
        od::run(e->prim, {{DNNL_ARG_SRC, od::wrap(md, xc.data())},
                          {DNNL_ARG_DST, od::wrap(md, y.data())},
                          {DNNL_ARG_MEAN, od::wrap(smd, mean.data())},
                          {DNNL_ARG_VARIANCE, od::wrap(smd, var.data())},
                          {DNNL_ARG_SCALE, od::wrap(pmd, scale.data())},
                          {DNNL_ARG_SHIFT, od::wrap(pmd, shift.data())}});
        return;
      }
    }
    Tensor<T, Cpu> yv = onednn::view_as_cpu(y);
    ops::LayerNormOp<Cpu>::forward_into(yv, onednn::view_as_cpu(x), onednn::view_as_cpu(gamma),
                                   onednn::view_as_cpu(beta), eps);
  }

  template <class T>
  static ops::NormGrads<T, OneDnn> backward(const Tensor<T, OneDnn>& x, const Tensor<T, OneDnn>& gamma,
                                       const Tensor<T, OneDnn>& mean, const Tensor<T, OneDnn>& rstd,
                                       const Tensor<T, OneDnn>& dy) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      if (x.ndim() >= 1 && x.numel() > 0) {
        const Shape ss(x.shape().begin(), x.shape().end() - 1);
        blendfuse::detail::norm_check_param(gamma, x.dim(-1), "layer_norm_backward", "gamma", x);
        blendfuse::detail::norm_check_backward(x, mean, rstd, dy, ss, "layer_norm_backward");
        const Index d = x.dim(-1), rows = x.numel() / d;
        const auto e = od::PrimitiveCache::instance().get<od::LnBwd>(
            od::make_key("layer_norm_bwd", rows, d), [&] {
              const auto md = od::plain_md({rows, d});
              const dnnl::layer_normalization_backward::desc bd(
                  dnnl::prop_kind::backward, md, md, od::plain_md({rows}), 0.f, od::bn_flags(false));
              return std::make_shared<od::LnBwd>(od::LnBwd{dnnl::layer_normalization_backward(
                  dnnl::layer_normalization_backward::primitive_desc(bd, od::scratch_attr(), onednn::engine(),
                                                                     od::ln_fwd_pd(rows, d, 0.f)))});
            });
        const Tensor<float, OneDnn> xc = x.contiguous(), dyc = dy.contiguous();
        const Tensor<float, OneDnn> mc = mean.contiguous(), rc = rstd.contiguous();
        std::vector<float> var(static_cast<std::size_t>(rows));
        for (Index i = 0; i < rows; ++i) {
          const double rs = static_cast<double>(rc[i]);
          var[static_cast<std::size_t>(i)] = static_cast<float>(1.0 / (rs * rs));
        }
        const auto scale = od::param_or(gamma, d, 1.f);
        const std::vector<float> shift(static_cast<std::size_t>(d), 0.f);  // required, unused
        ops::NormGrads<float, OneDnn> g{Tensor<float, OneDnn>(x.shape()), Tensor<float, OneDnn>({d}),
                                   Tensor<float, OneDnn>({d})};
        const auto md = od::plain_md({rows, d}), smd = od::plain_md({rows}), pmd = od::plain_md({d});
        od::run(e->prim, {{DNNL_ARG_SRC, od::wrap(md, xc.data())},
                          {DNNL_ARG_DIFF_DST, od::wrap(md, dyc.data())},
                          {DNNL_ARG_MEAN, od::wrap(smd, mc.data())},
                          {DNNL_ARG_VARIANCE, od::wrap(smd, var.data())},
                          {DNNL_ARG_SCALE, od::wrap(pmd, scale.data())},
                          {DNNL_ARG_SHIFT, od::wrap(pmd, shift.data())},
                          {DNNL_ARG_DIFF_SRC, od::wrap(md, g.dx.data())},
                          {DNNL_ARG_DIFF_SCALE, od::wrap(pmd, g.dgamma.data())},
                          {DNNL_ARG_DIFF_SHIFT, od::wrap(pmd, g.dbeta.data())}});
        return g;
      }
    }
    return od::norm_grads_back(ops::LayerNormOp<Cpu>::backward(
        onednn::view_as_cpu(x), onednn::view_as_cpu(gamma), onednn::view_as_cpu(mean),
        onednn::view_as_cpu(rstd), onednn::view_as_cpu(dy)));
  }
};

namespace onednn {

/// relu(instance_norm(x, gamma, beta, eps)) for x (N, C, *), gamma/beta (C) or `{}`. On oneDNN
/// (float) one batch-norm primitive with fuse_norm_relu (workspace kept in the result); elsewhere
/// the composition of the reference ops.
template <class T, class B>
NormReluResult<T, B> instance_norm_relu(const Tensor<T, B>& x, const Tensor<T, B>& gamma = {},
                                        const Tensor<T, B>& beta = {}, double eps = 1e-5) {
  if constexpr (std::is_same_v<B, OneDnn> && std::is_same_v<T, float>) {
    const detail::InGeom g = detail::in_geom(x, "instance_norm_relu");
    ::blendfuse::detail::norm_check_param(gamma, x.dim(1), "instance_norm_relu", "gamma", x);
    ::blendfuse::detail::norm_check_param(beta, x.dim(1), "instance_norm_relu", "beta", x);
    ::blendfuse::detail::norm_check_eps(eps, "instance_norm_relu");
    if (g.channels() > 0 && g.inner > 0) return detail::instance_norm_forward(x, gamma, beta, eps, true);
  }
  ops::NormResult<T, B> r = ops::instance_norm(x, gamma, beta, eps);
  ops::relu_(r.y);
  return {r.y, r.mean, r.rstd, {}};
}

/// Gradients {dx, dgamma, dbeta} of instance_norm_relu given its result `fwd` and dy = ∂L/∂y.
template <class T, class B>
ops::NormGrads<T, B> instance_norm_relu_backward(const Tensor<T, B>& x, const Tensor<T, B>& gamma,
                                            const NormReluResult<T, B>& fwd,
                                            const std::type_identity_t<Tensor<T, B>>& dy) {
  if constexpr (std::is_same_v<B, OneDnn> && std::is_same_v<T, float>) {
    if (fwd.y.numel() > 0 && fwd.mean.numel() > 0) {
      const detail::InGeom g = detail::in_geom(x, "instance_norm_relu_backward");
      ::blendfuse::detail::norm_check_param(gamma, x.dim(1), "instance_norm_relu_backward", "gamma", x);
      ::blendfuse::detail::norm_check_backward(x, fwd.mean, fwd.rstd, dy, {g.n, g.c},
                                               "instance_norm_relu_backward");
      return detail::instance_norm_backward(x, gamma, fwd.mean, fwd.rstd, dy, &fwd);
    }
  }
  return ops::instance_norm_backward(x, gamma, fwd.mean, fwd.rstd, ops::relu_backward(fwd.y, dy));
}

}  // namespace onednn
}  // namespace blendfuse
