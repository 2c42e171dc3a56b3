// blendfuse — oneDNN backend: linear (x Wᵀ + b) and batched, broadcasting matmul, forward and
// backward, on the oneDNN matmul primitive.
//
// Same semantics and shapes as ops/linear.hpp. Transposed operands are never copied: they are
// described to oneDNN as strided views (e.g. W (out, in) is the weights operand (in, out) with
// strides (1, in); trans_a / trans_b swap the last two strides). Batch dimensions are padded
// with leading 1s to a common rank and broadcast by the primitive itself. In the backward, a
// gradient of a broadcast operand is computed per full batch entry and then summed over the
// broadcast dimensions.
//
// A matmul primitive is created once per (shapes, strides, bias) and cached. If oneDNN refuses
// a combination (an exotic stride pattern), that is cached as well and the op runs the reference
// implementation on the same memory; zero-sized problems and double also use the reference.
//
// Layouts: operands are plain row-major (or transposed views). For repeated inference with fixed
// weights, format_tag::any for the weights plus one reorder at load would let oneDNN use its
// packed GEMM layout; not done in this first part.
#pragma once

#include <type_traits>
#include <vector>

#include "blendfuse/ops/linear.hpp"
#include "onednn/common.hpp"

namespace blendfuse {
namespace onednn::detail {

/// dims + strides of one matmul operand.
struct MatDesc {
  Shape dims, strides;
  dnnl::memory::desc md() const { return strided_md(dims_of(dims), dims_of(strides)); }
};

inline MatDesc plain_mat(const Shape& dims) { return {dims, contiguous_strides(dims)}; }

/// The operand stored row-major as `stored`, seen with its last two dims swapped if `trans`.
inline MatDesc mat_view(const Shape& stored, bool trans) {
  MatDesc d = plain_mat(stored);
  if (trans) {
    const std::size_t n = stored.size();
    std::swap(d.dims[n - 1], d.dims[n - 2]);
    std::swap(d.strides[n - 1], d.strides[n - 2]);
  }
  return d;
}

/// `s` with leading 1s up to rank `nd`.
inline Shape pad_rank(const Shape& s, std::size_t nd) {
  Shape out(nd - s.size(), 1);
  out.insert(out.end(), s.begin(), s.end());
  return out;
}

struct MatmulPrim {
  dnnl::matmul prim;
};

/// dst = src · wei [+ bias] with the given operand descriptions; false if oneDNN cannot do it.
inline bool matmul_exec(const MatDesc& src, const float* sp, const MatDesc& wei, const float* wp,
                        const MatDesc* bias, const float* bp, const MatDesc& dst, float* dp) {
  std::string key = make_key("matmul", src.dims, src.strides, wei.dims, wei.strides, dst.dims,
                             dst.strides);
  if (bias) key += make_key("bias", bias->dims, bias->strides);
  const auto e = PrimitiveCache::instance().get<MatmulPrim>(
      key, [&]() -> std::shared_ptr<MatmulPrim> {
        try {
          const dnnl::matmul::desc d = bias ? dnnl::matmul::desc(src.md(), wei.md(), bias->md(), dst.md())
                                            : dnnl::matmul::desc(src.md(), wei.md(), dst.md());
          return std::make_shared<MatmulPrim>(
              MatmulPrim{dnnl::matmul(dnnl::matmul::primitive_desc(d, scratch_attr(), engine()))});
        } catch (const dnnl::error&) {
          return nullptr;  // unsupported: callers use the reference
        }
      });
  if (!e) return false;
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, wrap(src.md(), sp)},
                                             {DNNL_ARG_WEIGHTS, wrap(wei.md(), wp)},
                                             {DNNL_ARG_DST, wrap(dst.md(), dp)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, wrap(bias->md(), bp));
  run(e->prim, args);
  return true;
}

template <class T>
ops::LinearGrads<T, OneDnn> linear_grads_back(const ops::LinearGrads<T, Cpu>& g) {
  return {to_onednn(g.dx), to_onednn(g.dw), to_onednn(g.db)};
}
template <class T>
ops::MatmulGrads<T, OneDnn> matmul_grads_back(const ops::MatmulGrads<T, Cpu>& g) {
  return {to_onednn(g.da), to_onednn(g.db)};
}

/// Adds the full-batch gradient `full` (nbatch matrices of `msize`) into `dst`, matrix t going
/// to offset `off[t]` (broadcast operands receive several).
inline void scatter_add(const std::vector<float>& full, Index msize, const std::vector<Index>& off,
                        float* dst) {
  for (std::size_t t = 0; t < off.size(); ++t) {
    const float* src = full.data() + static_cast<Index>(t) * msize;
    float* d = dst + off[t];
    for (Index i = 0; i < msize; ++i) d[i] += src[i];
  }
}

}  // namespace onednn::detail

/// linear on oneDNN's matmul (float); double falls back to the reference.
template <>
struct ops::LinearOp<OneDnn> {
  template <class T>
  using TensorT = Tensor<T, OneDnn>;

  template <class T>
  static TensorT<T> forward(const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      ops::LinearOp<Cpu>::check<float>(onednn::view_as_cpu(x), onednn::view_as_cpu(w), nullptr);
      if (!b.empty())
        BF_CHECK(b.ndim() == 1 && b.dim(0) == w.dim(0), ShapeError, "linear: bias ",
                 b.shape_string(), " does not match weight ", w.shape_string());
      const Index in = w.dim(1), out = w.dim(0), rows = x.numel() / std::max<Index>(in, 1);
      if (in > 0 && out > 0 && x.numel() > 0) {
        Shape ys = x.shape();
        ys.back() = out;
        TensorT<float> y(ys);
        const TensorT<float> xc = x.contiguous(), wc = w.contiguous();
        TensorT<float> bc;
        if (!b.empty()) bc = b.contiguous();
        const od::MatDesc bias = od::plain_mat({1, out});
        if (od::matmul_exec(od::plain_mat({rows, in}), xc.data(), od::mat_view({out, in}, true),
                            wc.data(), b.empty() ? nullptr : &bias, b.empty() ? nullptr : bc.data(),
                            od::plain_mat({rows, out}), y.data()))
          return y;
      }
    }
    return onednn::to_onednn(ops::LinearOp<Cpu>::template forward<T>(
        onednn::view_as_cpu(x), onednn::view_as_cpu(w), onednn::view_as_cpu(b)));
  }

  /// Inference forward into a preallocated contiguous y (float: one matmul primitive writing y;
  /// double or an unsupported shape: the reference on the same memory).
  template <class T>
  static void forward_into(TensorT<T>& y, const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      ops::LinearOp<Cpu>::check<float>(onednn::view_as_cpu(x), onednn::view_as_cpu(w), nullptr);
      if (!b.empty())
        BF_CHECK(b.ndim() == 1 && b.dim(0) == w.dim(0), ShapeError, "linear: bias ",
                 b.shape_string(), " does not match weight ", w.shape_string());
      const Index rows = ops::LinearOp<Cpu>::check_into<float>(onednn::view_as_cpu(y), onednn::view_as_cpu(x),
                                                          onednn::view_as_cpu(w));
      const Index in = w.dim(1), out = w.dim(0);
      if (in > 0 && out > 0 && rows > 0) {
        const TensorT<float> xc = x.contiguous(), wc = w.contiguous();
        TensorT<float> bc;
        if (!b.empty()) bc = b.contiguous();
        const od::MatDesc bias = od::plain_mat({1, out});
        if (od::matmul_exec(od::plain_mat({rows, in}), xc.data(), od::mat_view({out, in}, true),
                            wc.data(), b.empty() ? nullptr : &bias, b.empty() ? nullptr : bc.data(),
                            od::plain_mat({rows, out}), y.data()))
          return;
      }
    }
    Tensor<T, Cpu> yv = onednn::view_as_cpu(y);
    ops::LinearOp<Cpu>::template forward_into<T>(yv, onednn::view_as_cpu(x), onednn::view_as_cpu(w),
                                            onednn::view_as_cpu(b));
  }

  template <class T>
  static ops::LinearGrads<T, OneDnn> backward(const TensorT<T>& x, const TensorT<T>& w,
                                         const TensorT<T>& dy, bool need_bias_grad = true) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      ops::LinearOp<Cpu>::check<float>(onednn::view_as_cpu(x), onednn::view_as_cpu(w), nullptr);
      const Index in = w.dim(1), out = w.dim(0), rows = x.numel() / std::max<Index>(in, 1);
      Shape ys = x.shape();
      ys.back() = out;
      BF_CHECK(dy.shape() == ys, ShapeError, "linear_backward: dy ", dy.shape_string(),
               " does not match output shape ", shape_str(ys), " of input ", x.shape_string(),
               " and weight ", w.shape_string());
      if (in > 0 && out > 0 && rows > 0) {
        const TensorT<float> xc = x.contiguous(), wc = w.contiguous(), dyc = dy.contiguous();
        ops::LinearGrads<float, OneDnn> g{TensorT<float>(x.shape()), TensorT<float>(w.shape()),
                                     need_bias_grad ? TensorT<float>({out}) : TensorT<float>()};
        // dx (rows, in) = dy (rows, out) · W (out, in);  dW (out, in) = dyᵀ (out, rows) · x.
        const bool ok =
            od::matmul_exec(od::plain_mat({rows, out}), dyc.data(), od::plain_mat({out, in}),
                            wc.data(), nullptr, nullptr, od::plain_mat({rows, in}), g.dx.data()) &&
            od::matmul_exec(od::mat_view({rows, out}, true), dyc.data(), od::plain_mat({rows, in}),
                            xc.data(), nullptr, nullptr, od::plain_mat({out, in}), g.dw.data());
        if (ok) {
          if (need_bias_grad) {
            std::vector<double> acc(static_cast<std::size_t>(out), 0.0);
            for (Index r = 0; r < rows; ++r) {
              const float* dr = dyc.data() + r * out;
              for (Index o = 0; o < out; ++o) acc[static_cast<std::size_t>(o)] += dr[o];
            }
            for (Index o = 0; o < out; ++o) g.db[o] = static_cast<float>(acc[static_cast<std::size_t>(o)]);
          }
          return g;
        }
      }
    }
    return od::linear_grads_back(ops::LinearOp<Cpu>::template backward<T>(
        onednn::view_as_cpu(x), onednn::view_as_cpu(w), onednn::view_as_cpu(dy), need_bias_grad));
  }
};

/// Batched, broadcasting matmul on oneDNN (float); double falls back to the reference.
template <>
struct ops::MatmulOp<OneDnn> {
  template <class T>
  using TensorT = Tensor<T, OneDnn>;

  template <class T>
  static TensorT<T> forward(const TensorT<T>& a, const TensorT<T>& b, const ops::MatmulParams& p) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      const auto pl = blendfuse::detail::dense::plan_matmul(a.shape(), b.shape(), p, "matmul");
      if (!od::has_zero(pl.out_shape) && pl.k > 0) {
        const std::size_t nd = pl.out_shape.size();
        TensorT<float> c(pl.out_shape);
        const TensorT<float> ac = a.contiguous(), bc = b.contiguous();
        if (od::matmul_exec(od::mat_view(od::pad_rank(a.shape(), nd), p.trans_a), ac.data(),
                            od::mat_view(od::pad_rank(b.shape(), nd), p.trans_b), bc.data(),
                            nullptr, nullptr, od::plain_mat(pl.out_shape), c.data()))
          return c;
      }
    }
    return onednn::to_onednn(ops::MatmulOp<Cpu>::template forward<T>(onednn::view_as_cpu(a),
                                                                onednn::view_as_cpu(b), p));
  }

  template <class T>
  static ops::MatmulGrads<T, OneDnn> backward(const TensorT<T>& a, const TensorT<T>& b,
                                         const TensorT<T>& dc, const ops::MatmulParams& p) {
    namespace od = onednn::detail;
    if constexpr (std::is_same_v<T, float>) {
      const auto pl = blendfuse::detail::dense::plan_matmul(a.shape(), b.shape(), p, "matmul_backward");
      BF_CHECK(dc.shape() == pl.out_shape, ShapeError, "matmul_backward: dC ", dc.shape_string(),
               " does not match output shape ", shape_str(pl.out_shape), " of A ",
               a.shape_string(), " and B ", b.shape_string());
      if (!od::has_zero(pl.out_shape) && pl.k > 0) {
        const std::size_t nd = pl.out_shape.size();
        const Shape ap = od::pad_rank(a.shape(), nd), bp = od::pad_rank(b.shape(), nd);
        const Index nbatch = shape_numel(pl.batch);
        const TensorT<float> ac = a.contiguous(), bc = b.contiguous(), dcc = dc.contiguous();
        ops::MatmulGrads<float, OneDnn> g{TensorT<float>(a.shape()), TensorT<float>(b.shape())};
        auto batched = [&](Index r, Index c) {
          Shape s = pl.batch;
          s.push_back(r);
          s.push_back(c);
          return s;
        };
        const bool a_full = Shape(ap.begin(), ap.end() - 2) == pl.batch;
        const bool b_full = Shape(bp.begin(), bp.end() - 2) == pl.batch;
        const Index m = pl.m, n = pl.n, k = pl.k;
        // Gradient of A (stored layout): (M, K) = dC · op(B)ᵀ, or (K, M) = op(B) · dCᵀ.
        std::vector<float> tmp_a(a_full ? 0 : static_cast<std::size_t>(nbatch * m * k));
        float* da = a_full ? g.da.data() : tmp_a.data();
        const Shape da_shape = p.trans_a ? batched(k, m) : batched(m, k);
        bool ok = p.trans_a
                      ? od::matmul_exec(od::mat_view(bp, p.trans_b), bc.data(),
                                        od::mat_view(pl.out_shape, true), dcc.data(), nullptr,
                                        nullptr, od::plain_mat(da_shape), da)
                      : od::matmul_exec(od::plain_mat(pl.out_shape), dcc.data(),
                                        od::mat_view(bp, !p.trans_b), bc.data(), nullptr, nullptr,
                                        od::plain_mat(da_shape), da);
        // Gradient of B (stored layout): (K, N) = op(A)ᵀ · dC, or (N, K) = dCᵀ · op(A).
        std::vector<float> tmp_b(b_full ? 0 : static_cast<std::size_t>(nbatch * k * n));
        float* db = b_full ? g.db.data() : tmp_b.data();
        const Shape db_shape = p.trans_b ? batched(n, k) : batched(k, n);
        ok = ok && (p.trans_b
                        ? od::matmul_exec(od::mat_view(pl.out_shape, true), dcc.data(),
                                          od::mat_view(ap, p.trans_a), ac.data(), nullptr, nullptr,
                                          od::plain_mat(db_shape), db)
                        : od::matmul_exec(od::mat_view(ap, !p.trans_a), ac.data(),
                                          od::plain_mat(pl.out_shape), dcc.data(), nullptr,
                                          nullptr, od::plain_mat(db_shape), db));
        if (ok) {
          if (!a_full) od::scatter_add(tmp_a, m * k, pl.a_off, g.da.data());
          if (!b_full) od::scatter_add(tmp_b, k * n, pl.b_off, g.db.data());
          return g;
        }
      }
    }
    return od::matmul_grads_back(ops::MatmulOp<Cpu>::template backward<T>(
        onednn::view_as_cpu(a), onednn::view_as_cpu(b), onednn::view_as_cpu(dc), p));
  }
};

}  // namespace blendfuse
