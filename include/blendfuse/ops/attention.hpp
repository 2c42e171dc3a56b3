// blendfuse — attention: scaled dot-product attention on heads and multi-head attention with the
// semantics of torch.nn.MultiheadAttention(batch_first=True) in eval mode (no dropout).
//
// Dimension order:
//   sdpa:  q (N, H, L, D), k (N, H, S, D), v (N, H, S, Dv) → out (N, H, L, Dv);
//          probs (N, H, L, S) = softmax(scale · q kᵀ + mask) over S; scale defaults to 1/sqrt(D).
//          q, k, v may be strided views whose last dimension has unit stride (e.g. the first
//          `length` positions of a key/value cache) — they are read in place.
//   mha:   query (N, L, E), key (N, S, E), value (N, S, E); packed in-projection weight (3E, E)
//          and bias (3E,) laid out [W_q; W_k; W_v] as PyTorch's in_proj_weight / in_proj_bias;
//          out-projection weight (E, E) and bias (E,); H heads of size D = E / H;
//          output (N, L, E).
//   masks: additive float masks (−inf = masked), one of
//          (L, S)             shared by every batch entry and head,
//          (N·H, L, S)        one per (batch, head), index n·H + h — PyTorch's 3-d attn_mask,
//          (H, L, S)          one per head, shared over the batch (blendfuse extension; for N = 1
//                             it is the same as PyTorch's (N·H, L, S)),
//          (N|1, H|1, L, S)   4-d, size-1 dimensions broadcast.
//          Masks may be strided views. A query row whose mask is −inf everywhere yields NaN,
//          as in PyTorch.
//
// Absent biases / masks are empty (default-constructed) tensors. Backward passes take the saved
// probabilities (and projections for mha) explicitly; mask gradients are not computed.
// For self-attention (query, key and value the same tensor) add dquery + dkey + dvalue.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "blendfuse/backend/backend.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/ops/linear.hpp"

namespace blendfuse {
namespace ops {

struct SdpaParams {
  double scale = 0.0;  ///< multiplier of q kᵀ; 0 means 1/sqrt(D)
};

template <class T, class Backend = Cpu>
struct SdpaResult {
  Tensor<T, Backend> out;    ///< (N, H, L, Dv)
  Tensor<T, Backend> probs;  ///< (N, H, L, S) attention probabilities (saved for backward)
};

template <class T, class Backend = Cpu>
struct SdpaGrads {
  Tensor<T, Backend> dq, dk, dv;  ///< contiguous, shaped like q, k, v
};

struct MhaParams {
  Index num_heads = 1;
};

template <class T, class Backend = Cpu>
struct MhaWeights {
  Tensor<T, Backend> in_proj_weight;   ///< (3E, E), rows [W_q; W_k; W_v]
  Tensor<T, Backend> in_proj_bias;     ///< (3E,) or empty
  Tensor<T, Backend> out_proj_weight;  ///< (E, E)
  Tensor<T, Backend> out_proj_bias;    ///< (E,) or empty
};

/// What the mha forward saves for its backward.
template <class T, class Backend = Cpu>
struct MhaContext {
  Tensor<T, Backend> q;      ///< (N, H, L, D) projected queries
  Tensor<T, Backend> k;      ///< (N, H, S, D) projected keys
  Tensor<T, Backend> v;      ///< (N, H, S, D) projected values
  Tensor<T, Backend> probs;  ///< (N, H, L, S) attention probabilities
  Tensor<T, Backend> attn;   ///< (N, L, E) merged heads (input of the out-projection)
};

template <class T, class Backend = Cpu>
struct MhaResult {
  Tensor<T, Backend> output;  ///< (N, L, E)
  MhaContext<T, Backend> ctx;
};

template <class T, class Backend = Cpu>
struct MhaGrads {
  Tensor<T, Backend> dquery, dkey, dvalue;  ///< (N, L, E), (N, S, E), (N, S, E)
  Tensor<T, Backend> din_proj_weight;       ///< (3E, E)
  Tensor<T, Backend> din_proj_bias;         ///< (3E,) (also when the forward had no bias)
  Tensor<T, Backend> dout_proj_weight;      ///< (E, E)
  Tensor<T, Backend> dout_proj_bias;        ///< (E,)
};

}  // namespace ops
namespace detail::attn {

/// Read access to an additive mask broadcast to (N, H, L, S).
template <class T>
struct MaskAccess {
  const T* data = nullptr;
  Index sn = 0, sh = 0, sl = 0, ss = 0;
  const T* block(Index n, Index h) const { return data ? data + n * sn + h * sh : nullptr; }
  T at(const T* blk, Index l, Index s) const { return blk[l * sl + s * ss]; }
};

template <class T, class B>
MaskAccess<T> make_mask_access(const Tensor<T, B>& m, Index N, Index H, Index L, Index S,
                               const char* op) {
  MaskAccess<T> a;
  if (m.empty() && m.ndim() == 0) return a;
  const Shape& ms = m.shape();
  auto bad = [&]() {
    return ShapeError(::blendfuse::detail::concat(op, ": attn_mask ", m.shape_string(),
                                     " does not fit (L, S) = (", L, ", ", S, "), batch ", N,
                                     ", heads ", H, "; expected (L, S), (N*H, L, S), (H, L, S) or "
                                     "(N|1, H|1, L, S)"));
  };
  if (m.ndim() < 2 || m.ndim() > 4 || ms[ms.size() - 2] != L || ms.back() != S) throw bad();
  a.data = m.data();
  a.sl = m.stride(-2);
  a.ss = m.stride(-1);
  if (m.ndim() == 3) {
    if (ms[0] == N * H) {
      a.sn = H * m.stride(0);
      a.sh = m.stride(0);
    } else if (ms[0] == H) {
      a.sh = m.stride(0);
    } else {
      throw bad();
    }
  } else if (m.ndim() == 4) {
    if (!((ms[0] == N || ms[0] == 1) && (ms[1] == H || ms[1] == 1))) throw bad();
    a.sn = ms[0] == 1 ? 0 : m.stride(0);
    a.sh = ms[1] == 1 ? 0 : m.stride(1);
  }
  if (m.numel() == 0) a.data = nullptr;
  return a;
}

template <class T>
using StridedConstMap = Eigen::Map<const dense::RowMat<T>, 0, Eigen::OuterStride<>>;

/// `t` itself when its last dimension has unit stride, otherwise a contiguous copy.
template <class T, class B>
Tensor<T, B> unit_last_stride(const Tensor<T, B>& t) {
  return (t.ndim() > 0 && t.stride(-1) == 1) ? t : t.contiguous();
}

/// Matrix (rows, cols) of head (n, h) of a 4-d tensor with unit last stride: its first `rows`
/// positions (default: all of dim 2).
template <class T, class B>
StridedConstMap<T> head_map(const Tensor<T, B>& t, Index n, Index h, Index rows = -1) {
  if (rows < 0) rows = t.dim(2);
  const Index cols = t.dim(3);
  const Index outer = rows > 1 ? t.stride(2) : std::max<Index>(cols, 1);
  return StridedConstMap<T>(t.data() + n * t.stride(0) + h * t.stride(1), rows, cols,
                            Eigen::OuterStride<>(std::max<Index>(outer, cols)));
}

}  // namespace detail::attn
namespace ops {

/// Reference attention kernels.
template <class Backend>
struct AttentionOp {
  template <class T>
  using TensorT = Tensor<T, Backend>;

  template <class T>
  static void check_sdpa(const TensorT<T>& q, const TensorT<T>& k, const TensorT<T>& v,
                         const char* op) {
    BF_CHECK(q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4, ShapeError, op,
             ": q, k, v must be (N, H, L, D), (N, H, S, D), (N, H, S, Dv); got ",
             q.shape_string(), ", ", k.shape_string(), ", ", v.shape_string());
    BF_CHECK(k.dim(0) == q.dim(0) && k.dim(1) == q.dim(1) && k.dim(3) == q.dim(3), ShapeError,
             op, ": key ", k.shape_string(), " does not match query ", q.shape_string());
    BF_CHECK(v.dim(0) == k.dim(0) && v.dim(1) == k.dim(1) && v.dim(2) == k.dim(2), ShapeError,
             op, ": value ", v.shape_string(), " does not match key ", k.shape_string());
  }

  /// Forward; with `keep_probs` false the probabilities are not stored (inference).
  template <class T>
  static SdpaResult<T, Backend> sdpa_forward(const TensorT<T>& q_in, const TensorT<T>& k_in,
                                             const TensorT<T>& v_in, const TensorT<T>& mask,
                                             const SdpaParams& p, bool keep_probs = true) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    check_sdpa<T>(q_in, k_in, v_in, "sdpa");
    const TensorT<T> q = blendfuse::detail::attn::unit_last_stride(q_in), k = blendfuse::detail::attn::unit_last_stride(k_in),
                     v = blendfuse::detail::attn::unit_last_stride(v_in);
    const Index N = q.dim(0), H = q.dim(1), L = q.dim(2), D = q.dim(3), S = k.dim(2),
                Dv = v.dim(3);
    const auto ma = blendfuse::detail::attn::make_mask_access(mask, N, H, L, S, "sdpa");
    const T scale = static_cast<T>(p.scale != 0.0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(D)));
    SdpaResult<T, Backend> r;
    r.out = TensorT<T>({N, H, L, Dv});
    if (keep_probs) r.probs = TensorT<T>({N, H, L, S});
    blendfuse::detail::dense::RowMat<T> scratch;
    if (!keep_probs) scratch.resize(L, S);
    for (Index n = 0; n < N; ++n)
      for (Index h = 0; h < H; ++h) {
        T* pp = keep_probs ? r.probs.data() + (n * H + h) * L * S : scratch.data();
        head(pp, L, S, Dv, blendfuse::detail::attn::head_map(q, n, h), blendfuse::detail::attn::head_map(k, n, h),
             blendfuse::detail::attn::head_map(v, n, h), ma, ma.block(n, h), scale, r.out.data() + (n * H + h) * L * Dv);
      }
    return r;
  }

  /// The allocation-free core of ops::sdpa_cached_into (see there).
  template <class T>
  static void sdpa_cached_into(TensorT<T>& out, const TensorT<T>& q, const TensorT<T>& k_cache,
                               const TensorT<T>& v_cache, Index length, const TensorT<T>& mask,
                               const SdpaParams& p, TensorT<T>& scratch) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    check_sdpa<T>(q, k_cache, v_cache, "sdpa_cached_into");
    const Index N = q.dim(0), H = q.dim(1), L = q.dim(2), D = q.dim(3), Smax = k_cache.dim(2),
                Dv = v_cache.dim(3);
    BF_CHECK(length >= 0 && length <= Smax, ArgumentError, "sdpa_cached_into: length ", length,
             " exceeds cache ", k_cache.shape_string());
    BF_CHECK(q.stride(-1) == 1 && k_cache.stride(-1) == 1 && v_cache.stride(-1) == 1, ShapeError,
             "sdpa_cached_into: q and the caches need a unit last stride");
    BF_CHECK(out.ndim() == 4 && out.is_contiguous() && out.dim(0) == N && out.dim(1) == H &&
                 out.dim(2) == L && out.dim(3) == Dv,
             ShapeError, "sdpa_cached_into: output ", out.shape_string(), " must be contiguous (",
             N, ", ", H, ", ", L, ", ", Dv, ")");
    BF_CHECK(scratch.is_contiguous() && scratch.numel() >= L * length, ShapeError,
             "sdpa_cached_into: scratch ", scratch.shape_string(), " needs at least L·length = ",
             L * length, " contiguous elements");
    const bool has_mask = !(mask.empty() && mask.ndim() == 0);
    const Index Sm = has_mask && mask.ndim() >= 2 && mask.dim(-1) == Smax ? Smax : length;
    const auto ma = blendfuse::detail::attn::make_mask_access(mask, N, H, L, Sm, "sdpa_cached_into");
    const T scale = static_cast<T>(p.scale != 0.0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(D)));
    for (Index n = 0; n < N; ++n)
      for (Index h = 0; h < H; ++h)
        head(scratch.data(), L, length, Dv, blendfuse::detail::attn::head_map(q, n, h),
             blendfuse::detail::attn::head_map(k_cache, n, h, length), blendfuse::detail::attn::head_map(v_cache, n, h, length), ma,
             ma.block(n, h), scale, out.data() + (n * H + h) * L * Dv);
  }

  /// One head: P (L, S) = softmax(scale · Q Kᵀ + mask) in pp, O (L, Dv) = P V.
  template <class T, class QM, class KM, class VM>
  static void head(T* pp, Index L, Index S, Index Dv, const QM& Q, const KM& K, const VM& V,
                   const blendfuse::detail::attn::MaskAccess<T>& ma, const T* mb, T scale, T* op) {
    blendfuse::detail::dense::MatMap<T> P(pp, L, S);
    if (L == 0) return;
    if (S > 0) {
      P.noalias() = Q * K.transpose();
      P *= scale;
    }
    for (Index l = 0; l < L; ++l) {
      T* row = pp + l * S;
      if (mb)
        for (Index s = 0; s < S; ++s) row[s] += ma.at(mb, l, s);
      // Vectorised row softmax (Eigen's packet exp, which clamps its argument: masked −inf
      // entries are set to exactly 0); a fully masked row (max −inf) is NaN as in PyTorch.
      Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> r(row, S);
      const T mx = S > 0 ? r.maxCoeff() : T(0);
      r = (r == -std::numeric_limits<T>::infinity()).select(T(0), (r - mx).exp());
      if (!(mx > -std::numeric_limits<T>::infinity())) r.setConstant(std::numeric_limits<T>::quiet_NaN());
      r *= T(1) / r.sum();
    }
    blendfuse::detail::dense::MatMap<T> O(op, L, Dv);
    if (S > 0)
      O.noalias() = P * V;
    else
      O.setZero();
  }

  template <class T>
  static SdpaGrads<T, Backend> sdpa_backward(const TensorT<T>& q_in, const TensorT<T>& k_in,
                                             const TensorT<T>& v_in, const TensorT<T>& probs_in,
                                             const TensorT<T>& dout_in, const SdpaParams& p) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    check_sdpa<T>(q_in, k_in, v_in, "sdpa_backward");
    const Index N = q_in.dim(0), H = q_in.dim(1), L = q_in.dim(2), D = q_in.dim(3),
                S = k_in.dim(2), Dv = v_in.dim(3);
    BF_CHECK(probs_in.shape() == (Shape{N, H, L, S}), ShapeError, "sdpa_backward: probs ",
             probs_in.shape_string(), " should be ", shape_str({N, H, L, S}));
    BF_CHECK(dout_in.shape() == (Shape{N, H, L, Dv}), ShapeError, "sdpa_backward: dout ",
             dout_in.shape_string(), " should be ", shape_str({N, H, L, Dv}));
    const TensorT<T> q = blendfuse::detail::attn::unit_last_stride(q_in), k = blendfuse::detail::attn::unit_last_stride(k_in),
                     v = blendfuse::detail::attn::unit_last_stride(v_in), P = probs_in.contiguous(),
                     dO = dout_in.contiguous();
    const T scale = static_cast<T>(p.scale != 0.0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(D)));
    SdpaGrads<T, Backend> g{TensorT<T>(q_in.shape()), TensorT<T>(k_in.shape()),
                            TensorT<T>(v_in.shape())};
    blendfuse::detail::dense::RowMat<T> dS(L, S);
    for (Index n = 0; n < N; ++n)
      for (Index h = 0; h < H; ++h) {
        const Index b = n * H + h;
        blendfuse::detail::dense::ConstMatMap<T> Pm(P.data() + b * L * S, L, S);
        blendfuse::detail::dense::ConstMatMap<T> dOm(dO.data() + b * L * Dv, L, Dv);
        blendfuse::detail::dense::MatMap<T> dQ(g.dq.data() + b * L * D, L, D);
        blendfuse::detail::dense::MatMap<T> dK(g.dk.data() + b * S * D, S, D);
        blendfuse::detail::dense::MatMap<T> dV(g.dv.data() + b * S * Dv, S, Dv);
        if (L == 0 || S == 0) continue;
        dV.noalias() = Pm.transpose() * dOm;
        dS.noalias() = dOm * blendfuse::detail::attn::head_map(v, n, h).transpose();  // dP
        for (Index l = 0; l < L; ++l) {
          T dot = 0;
          for (Index s = 0; s < S; ++s) dot += Pm(l, s) * dS(l, s);
          for (Index s = 0; s < S; ++s) dS(l, s) = Pm(l, s) * (dS(l, s) - dot) * scale;
        }
        dQ.noalias() = dS * blendfuse::detail::attn::head_map(k, n, h);
        dK.noalias() = dS.transpose() * blendfuse::detail::attn::head_map(q, n, h);
      }
    return g;
  }

  /// (N, L, E) → (N, H, L, E/H), contiguous.
  template <class T>
  static TensorT<T> split_heads(const TensorT<T>& x, Index H) {
    BF_CHECK(x.ndim() == 3, ShapeError, "split_heads: expected (N, L, E), got ", x.shape_string());
    BF_CHECK(H > 0 && x.dim(2) % H == 0, ShapeError, "split_heads: embedding ", x.dim(2),
             " of ", x.shape_string(), " is not divisible by ", H, " heads");
    const Index N = x.dim(0), L = x.dim(1), D = x.dim(2) / H;
    return x.contiguous().reshape({N, L, H, D}).transpose(1, 2).clone();
  }

  /// (N, H, L, D) → (N, L, H·D), contiguous.
  template <class T>
  static TensorT<T> merge_heads(const TensorT<T>& x) {
    BF_CHECK(x.ndim() == 4, ShapeError, "merge_heads: expected (N, H, L, D), got ",
             x.shape_string());
    const Index N = x.dim(0), H = x.dim(1), L = x.dim(2), D = x.dim(3);
    return x.transpose(1, 2).clone().reshape({N, L, H * D});
  }

  template <class T>
  static Index check_mha(const TensorT<T>& query, const TensorT<T>& key, const TensorT<T>& value,
                         const MhaWeights<T, Backend>& w, const MhaParams& p, const char* op) {
    BF_CHECK(query.ndim() == 3 && key.ndim() == 3 && value.ndim() == 3, ShapeError, op,
             ": query, key, value must be (N, L, E), (N, S, E), (N, S, E); got ",
             query.shape_string(), ", ", key.shape_string(), ", ", value.shape_string());
    const Index N = query.dim(0), E = query.dim(2);
    BF_CHECK(key.dim(0) == N && key.dim(2) == E, ShapeError, op, ": key ", key.shape_string(),
             " does not match query ", query.shape_string());
    BF_CHECK(value.shape() == key.shape(), ShapeError, op, ": value ", value.shape_string(),
             " does not match key ", key.shape_string());
    BF_CHECK(p.num_heads > 0, ArgumentError, op, ": num_heads must be positive, got ",
             p.num_heads);
    BF_CHECK(E % p.num_heads == 0, ArgumentError, op, ": embed_dim ", E,
             " is not divisible by num_heads ", p.num_heads);
    check_shape(w.in_proj_weight, {3 * E, E}, std::string(op) + ": in_proj_weight");
    if (!w.in_proj_bias.empty()) check_shape(w.in_proj_bias, {3 * E}, std::string(op) + ": in_proj_bias");
    check_shape(w.out_proj_weight, {E, E}, std::string(op) + ": out_proj_weight");
    if (!w.out_proj_bias.empty()) check_shape(w.out_proj_bias, {E}, std::string(op) + ": out_proj_bias");
    return E;
  }

  template <class T>
  static MhaResult<T, Backend> mha_forward(const TensorT<T>& query, const TensorT<T>& key,
                                           const TensorT<T>& value,
                                           const MhaWeights<T, Backend>& w, const MhaParams& p,
                                           const TensorT<T>& mask) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    const Index E = check_mha<T>(query, key, value, w, p, "multi_head_attention");
    const Index H = p.num_heads;
    auto wpart = [&](Index i) { return w.in_proj_weight.slice(0, i * E, (i + 1) * E); };
    auto bpart = [&](Index i) {
      return w.in_proj_bias.empty() ? TensorT<T>() : w.in_proj_bias.slice(0, i * E, (i + 1) * E);
    };
    MhaResult<T, Backend> r;
    r.ctx.q = split_heads<T>(LinearOp<Backend>::template forward<T>(query, wpart(0), bpart(0)), H);
    r.ctx.k = split_heads<T>(LinearOp<Backend>::template forward<T>(key, wpart(1), bpart(1)), H);
    r.ctx.v = split_heads<T>(LinearOp<Backend>::template forward<T>(value, wpart(2), bpart(2)), H);
    SdpaResult<T, Backend> a = sdpa_forward<T>(r.ctx.q, r.ctx.k, r.ctx.v, mask, SdpaParams{}, true);
    r.ctx.probs = std::move(a.probs);
    r.ctx.attn = merge_heads<T>(a.out);
    r.output = LinearOp<Backend>::template forward<T>(r.ctx.attn, w.out_proj_weight, w.out_proj_bias);
    return r;
  }

  template <class T>
  static MhaGrads<T, Backend> mha_backward(const TensorT<T>& query, const TensorT<T>& key,
                                           const TensorT<T>& value,
                                           const MhaWeights<T, Backend>& w, const MhaParams& p,
                                           const MhaContext<T, Backend>& ctx,
                                           const TensorT<T>& dout) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    const Index E = check_mha<T>(query, key, value, w, p, "multi_head_attention_backward");
    BF_CHECK(dout.shape() == query.shape(), ShapeError,
             "multi_head_attention_backward: dout ", dout.shape_string(),
             " does not match output shape ", query.shape_string());
    const Index N = query.dim(0), L = query.dim(1), S = key.dim(1), H = p.num_heads;
    BF_CHECK(ctx.probs.shape() == (Shape{N, H, L, S}) && ctx.attn.shape() == query.shape(),
             ShapeError, "multi_head_attention_backward: context (probs ",
             ctx.probs.shape_string(), ", attn ", ctx.attn.shape_string(),
             ") does not belong to these inputs");
    MhaGrads<T, Backend> g;
    LinearGrads<T, Backend> go =
        LinearOp<Backend>::template backward<T>(ctx.attn, w.out_proj_weight, dout);
    g.dout_proj_weight = std::move(go.dw);
    g.dout_proj_bias = std::move(go.db);
    SdpaGrads<T, Backend> gs = sdpa_backward<T>(ctx.q, ctx.k, ctx.v, ctx.probs,
                                                split_heads<T>(go.dx, H), SdpaParams{});
    g.din_proj_weight = TensorT<T>({3 * E, E});
    g.din_proj_bias = TensorT<T>({3 * E});
    const TensorT<T>* inputs[3] = {&query, &key, &value};
    const TensorT<T>* dheads[3] = {&gs.dq, &gs.dk, &gs.dv};
    TensorT<T>* dinputs[3] = {&g.dquery, &g.dkey, &g.dvalue};
    for (Index i = 0; i < 3; ++i) {
      LinearGrads<T, Backend> gi = LinearOp<Backend>::template backward<T>(
          *inputs[i], w.in_proj_weight.slice(0, i * E, (i + 1) * E), merge_heads<T>(*dheads[i]));
      *dinputs[i] = std::move(gi.dx);
      g.din_proj_weight.slice(0, i * E, (i + 1) * E).assign(gi.dw);
      g.din_proj_bias.slice(0, i * E, (i + 1) * E).assign(gi.db);
    }
    return g;
  }
};

/// Inference attention on projected, not yet split tensors: q (N, L, E), k (N, S, E), v (N, S, E)
/// with H heads of D = E / H → merged heads (N, L, E), softmax(q kᵀ / sqrt(D)) v per head, no
/// mask, no probabilities kept. Reference: sdpa_forward on head views (a GEMM per head).
template <class Backend>
struct AttentionInferenceOp {
  template <class T>
  static void check(const Tensor<T, Backend>& q, const Tensor<T, Backend>& k,
                    const Tensor<T, Backend>& v, Index num_heads) {
    BF_CHECK(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, ShapeError,
             "attention_inference: q, k, v must be (N, L, E), (N, S, E), (N, S, E); got ",
             q.shape_string(), ", ", k.shape_string(), ", ", v.shape_string());
    BF_CHECK(k.shape() == v.shape() && k.dim(0) == q.dim(0) && k.dim(2) == q.dim(2), ShapeError,
             "attention_inference: key ", k.shape_string(), " / value ", v.shape_string(),
             " do not match query ", q.shape_string());
    BF_CHECK(num_heads > 0 && q.dim(2) % num_heads == 0, ArgumentError, "attention_inference: embedding ",
             q.dim(2), " of ", q.shape_string(), " is not divisible by ", num_heads, " heads");
  }

  template <class T>
  static Tensor<T, Backend> forward(const Tensor<T, Backend>& q, const Tensor<T, Backend>& k,
                                    const Tensor<T, Backend>& v, Index num_heads) {
    check(q, k, v, num_heads);
    const Index H = num_heads;
    auto heads = [H](const Tensor<T, Backend>& t) {  // (N, L, E) → (N, H, L, D) view
      return t.contiguous().reshape({t.dim(0), t.dim(1), H, t.dim(2) / H}).transpose(1, 2);
    };
    SdpaResult<T, Backend> sd = AttentionOp<Backend>::template sdpa_forward<T>(
        heads(q), heads(k), heads(v), Tensor<T, Backend>(), SdpaParams{}, false);
    return AttentionOp<Backend>::template merge_heads<T>(sd.out);
  }
};


/// Scaled dot-product attention; returns output and probabilities (for backward).
template <class T, class B>
SdpaResult<T, B> sdpa(const Tensor<T, B>& q, const Tensor<T, B>& k, const Tensor<T, B>& v,
                      const Tensor<T, B>& mask = {}, const SdpaParams& p = {}) {
  return AttentionOp<B>::template sdpa_forward<T>(q, k, v, mask, p, true);
}

/// Gradients of sdpa w.r.t. q, k, v from the saved probabilities and dout (N, H, L, Dv).
template <class T, class B>
SdpaGrads<T, B> sdpa_backward(const Tensor<T, B>& q, const Tensor<T, B>& k,
                              const Tensor<T, B>& v, const Tensor<T, B>& probs,
                              const Tensor<T, B>& dout, const SdpaParams& p = {}) {
  return AttentionOp<B>::template sdpa_backward<T>(q, k, v, probs, dout, p);
}

/// Inference attention against a key/value cache: attends q (N, H, L, D) (typically L = 1) to
/// the first `length` positions of k_cache (N, H, S_max, D) / v_cache (N, H, S_max, Dv) without
/// copying them and without storing probabilities. `mask` (empty or any mask form above) must
/// have S = length; slice a larger mask with Tensor::slice (strided views are fine).
template <class T, class B>
Tensor<T, B> sdpa_cached(const Tensor<T, B>& q, const Tensor<T, B>& k_cache,
                         const Tensor<T, B>& v_cache, Index length, const Tensor<T, B>& mask = {},
                         const SdpaParams& p = {}) {
  BF_CHECK(k_cache.ndim() == 4 && v_cache.ndim() == 4, ShapeError,
           "sdpa_cached: caches must be (N, H, S_max, D), got ", k_cache.shape_string(), " and ",
           v_cache.shape_string());
  BF_CHECK(length >= 0 && length <= k_cache.dim(2) && length <= v_cache.dim(2), ArgumentError,
           "sdpa_cached: length ", length, " exceeds cache ", k_cache.shape_string());
  return AttentionOp<B>::template sdpa_forward<T>(q, k_cache.slice(2, 0, length),
                                                  v_cache.slice(2, 0, length), mask, p, false)
      .out;
}

/// Inference multi-head attention core on projections q (N, L, E), k / v (N, S, E) with
/// `num_heads` heads: merged softmax(q kᵀ / sqrt(E / num_heads)) v, (N, L, E); no mask, nothing
/// saved for backward (see AttentionInferenceOp; backends may batch the heads).
template <class T, class B>
Tensor<T, B> attention_inference(const Tensor<T, B>& q, const Tensor<T, B>& k, const Tensor<T, B>& v,
                                 Index num_heads) {
  return AttentionInferenceOp<B>::template forward<T>(q, k, v, num_heads);
}

/// sdpa_cached without allocating: writes the attention output into `out` (N, H, L, Dv)
/// (contiguous, preallocated), using `scratch` (contiguous, at least L·length elements, e.g. a
/// (L, S_max) tensor) for the probabilities of one head. `mask` is empty or any mask form above
/// whose last dimension is `length`, or S_max (the cache size; then its first `length` columns are
/// used, so one mask buffer serves every length). q and the caches need a unit last stride.
/// Same arithmetic as sdpa / sdpa_cached.
template <class T, class B>
void sdpa_cached_into(Tensor<T, B>& out, const Tensor<T, B>& q, const Tensor<T, B>& k_cache,
                      const Tensor<T, B>& v_cache, Index length, const Tensor<T, B>& mask,
                      const SdpaParams& p, Tensor<T, B>& scratch) {
  AttentionOp<B>::template sdpa_cached_into<T>(out, q, k_cache, v_cache, length, mask, p, scratch);
}

/// (N, L, E) → (N, H, L, E/H) and back.
template <class T, class B>
Tensor<T, B> split_heads(const Tensor<T, B>& x, Index num_heads) {
  return AttentionOp<B>::template split_heads<T>(x, num_heads);
}
template <class T, class B>
Tensor<T, B> merge_heads(const Tensor<T, B>& x) {
  return AttentionOp<B>::template merge_heads<T>(x);
}

/// torch.nn.MultiheadAttention(batch_first=True) forward (eval); returns output and context.
template <class T, class B>
MhaResult<T, B> multi_head_attention(const Tensor<T, B>& query, const Tensor<T, B>& key,
                                     const Tensor<T, B>& value, const MhaWeights<T, B>& w,
                                     const MhaParams& p, const Tensor<T, B>& attn_mask = {}) {
  return AttentionOp<B>::template mha_forward<T>(query, key, value, w, p, attn_mask);
}

/// Gradients of multi_head_attention w.r.t. query, key, value and all weights.
template <class T, class B>
MhaGrads<T, B> multi_head_attention_backward(const Tensor<T, B>& query, const Tensor<T, B>& key,
                                             const Tensor<T, B>& value,
                                             const MhaWeights<T, B>& w, const MhaParams& p,
                                             const MhaContext<T, B>& ctx,
                                             const Tensor<T, B>& dout) {
  return AttentionOp<B>::template mha_backward<T>(query, key, value, w, p, ctx, dout);
}

}  // namespace ops
}  // namespace blendfuse
