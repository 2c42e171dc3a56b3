// blendfuse — dense layers: linear (torch.nn.Linear) and (batched) matrix multiplication.
//
// Dimension order:
//   linear:  x (..., in) of any rank >= 1, W (out, in) as torch.nn.Linear, bias (out,) or empty
//            → y (..., out) with y = x Wᵀ + b over the last dimension.
//   matmul:  A (..., M, K) @ B (..., K, N) → C (..., M, N). With `trans_a` A is stored as
//            (..., K, M), with `trans_b` B is stored as (..., N, K). The leading batch dimensions
//            broadcast as in torch.matmul (numpy rules; a 2-d operand is shared by every batch).
//            Both operands must have at least 2 dimensions.
//
// An absent bias is an empty (default-constructed) tensor. The reference implementation maps
// row-major buffers with Eigen::Map and lets Eigen do the GEMMs; inputs that are not contiguous
// are copied first.
#pragma once

#include <Eigen/Core>

#include <string>
#include <type_traits>
#include <vector>

#include "blendfuse/backend/backend.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse {

namespace detail::dense {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMatMap = Eigen::Map<const RowMat<T>>;
template <class T>
using MatMap = Eigen::Map<RowMat<T>>;

/// C (m, n) = [C +] op(A) op(B) with row-major buffers. A is stored (m, k), or (k, m) if `ta`;
/// B is stored (k, n), or (n, k) if `tb`.
template <class T>
void gemm(T* c, Index m, Index n, Index k, const T* a, bool ta, const T* b, bool tb,
          bool accumulate) {
  MatMap<T> C(c, m, n);
  if (k == 0) {
    if (!accumulate) C.setZero();
    return;
  }
  auto run = [&](const auto& pa, const auto& pb) {
    if (accumulate)
      C.noalias() += pa * pb;
    else
      C.noalias() = pa * pb;
  };
  if (!ta && !tb) run(ConstMatMap<T>(a, m, k), ConstMatMap<T>(b, k, n));
  else if (!ta && tb) run(ConstMatMap<T>(a, m, k), ConstMatMap<T>(b, n, k).transpose());
  else if (ta && !tb) run(ConstMatMap<T>(a, k, m).transpose(), ConstMatMap<T>(b, k, n));
  else run(ConstMatMap<T>(a, k, m).transpose(), ConstMatMap<T>(b, n, k).transpose());
}

template <class T, class Backend>
constexpr void require_host_backend() {
  static_assert(std::is_floating_point_v<T>, "blendfuse ops need a floating-point element type");
  static_assert(Backend::host_memory,
                "the reference op implementation needs a host-memory backend; this backend must "
                "specialise the op");
}

}  // namespace detail::dense
namespace ops {

// ---- linear ------------------------------------------------------------------------------------

template <class T, class Backend = Cpu>
struct LinearGrads {
  Tensor<T, Backend> dx;  ///< (..., in), like x
  Tensor<T, Backend> dw;  ///< (out, in)
  Tensor<T, Backend> db;  ///< (out,) — Σ dy over all leading dimensions; empty unless requested
};

/// Reference linear layer y = x Wᵀ + b (see the file comment for shapes).
template <class Backend>
struct LinearOp {
  template <class T>
  using TensorT = Tensor<T, Backend>;

  template <class T>
  static void check(const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>* b) {
    BF_CHECK(w.ndim() == 2, ShapeError, "linear: weight must be (out, in), got ",
             w.shape_string());
    BF_CHECK(x.ndim() >= 1 && x.dim(-1) == w.dim(1), ShapeError, "linear: input ",
             x.shape_string(), " does not end in in_features = ", w.dim(1), " of weight ",
             w.shape_string());
    if (b && !b->empty())
      BF_CHECK(b->ndim() == 1 && b->dim(0) == w.dim(0), ShapeError, "linear: bias ",
               b->shape_string(), " does not match weight ", w.shape_string());
  }

  template <class T>
  static TensorT<T> forward(const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    check(x, w, &b);
    const Index in = w.dim(1), out = w.dim(0);
    const Index rows = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
    Shape ys = x.shape();
    ys.back() = out;
    TensorT<T> y(ys);
    const TensorT<T> xc = x.contiguous(), wc = w.contiguous();
    const TensorT<T> bc = b.empty() ? TensorT<T>() : b.contiguous();
    gemm_bias(y.data(), rows, in, out, xc.data(), wc.data(), b.empty() ? nullptr : bc.data());
    return y;
  }

  /// y (rows, out) = x (rows, in) · wᵀ [+ b] on contiguous buffers.
  template <class T>
  static void gemm_bias(T* y, Index rows, Index in, Index out, const T* x, const T* w, const T* b) {
    blendfuse::detail::dense::gemm<T>(y, rows, out, in, x, false, w, true, false);
    if (b) {
      blendfuse::detail::dense::MatMap<T> Y(y, rows, out);
      Y.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(b, out);
    }
  }

  /// Checks y for forward_into (contiguous, x's shape with the last dim `out`, not x itself)
  /// without allocating on success; returns the number of rows.
  template <class T>
  static Index check_into(const TensorT<T>& y, const TensorT<T>& x, const TensorT<T>& w) {
    bool ok = y.ndim() == x.ndim() && y.is_contiguous() && y.dim(-1) == w.dim(0);
    for (Index d = 0; ok && d + 1 < x.ndim(); ++d) ok = y.dim(d) == x.dim(d);
    BF_CHECK(ok, ShapeError, "linear_into: output ", y.shape_string(), " must be contiguous and shaped like input ",
             x.shape_string(), " with last dimension out_features = ", w.dim(0));
    BF_CHECK(y.numel() == 0 || x.numel() == 0 || y.data() != x.data(), ArgumentError,
             "linear_into: the output must not alias the input");
    const Index in = w.dim(1);
    return in > 0 ? x.numel() / in : y.numel() / std::max<Index>(w.dim(0), 1);
  }

  /// Inference forward into a preallocated y (see ops::linear_into): the same arithmetic as
  /// forward(); allocates nothing when x, w and b are contiguous.
  template <class T>
  static void forward_into(TensorT<T>& y, const TensorT<T>& x, const TensorT<T>& w, const TensorT<T>& b) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    check(x, w, &b);
    const Index rows = check_into<T>(y, x, w), in = w.dim(1), out = w.dim(0);
    if (x.is_contiguous() && w.is_contiguous() &&
        (b.empty() || b.is_contiguous())) {
      gemm_bias(y.data(), rows, in, out, x.data(), w.data(), b.empty() ? nullptr : b.data());
      return;
    }
    const TensorT<T> xc = x.contiguous(), wc = w.contiguous();
    const TensorT<T> bc = b.empty() ? TensorT<T>() : b.contiguous();
    gemm_bias(y.data(), rows, in, out, xc.data(), wc.data(), b.empty() ? nullptr : bc.data());
  }

  template <class T>
  static LinearGrads<T, Backend> backward(const TensorT<T>& x, const TensorT<T>& w,
                                          const TensorT<T>& dy, bool need_bias_grad = true) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    check<T>(x, w, nullptr);
    const Index in = w.dim(1), out = w.dim(0);
    Shape ys = x.shape();
    ys.back() = out;
    BF_CHECK(dy.shape() == ys, ShapeError, "linear_backward: dy ", dy.shape_string(),
             " does not match output shape ", shape_str(ys), " of input ", x.shape_string(),
             " and weight ", w.shape_string());
    const Index rows = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
    const TensorT<T> xc = x.contiguous(), wc = w.contiguous(), dyc = dy.contiguous();
    LinearGrads<T, Backend> g{TensorT<T>(x.shape()), TensorT<T>(w.shape()),
                              need_bias_grad ? TensorT<T>({out}) : TensorT<T>()};
    blendfuse::detail::dense::gemm<T>(g.dx.data(), rows, in, out, dyc.data(), false, wc.data(), false, false);
    blendfuse::detail::dense::gemm<T>(g.dw.data(), out, in, rows, dyc.data(), true, xc.data(), false, false);
    if (need_bias_grad && rows > 0) {
      Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>>(g.db.data(), out) =
          blendfuse::detail::dense::ConstMatMap<T>(dyc.data(), rows, out).colwise().sum();
    }
    return g;
  }
};

// ---- matmul ------------------------------------------------------------------------------------

struct MatmulParams {
  bool trans_a = false;  ///< A is stored (..., K, M)
  bool trans_b = false;  ///< B is stored (..., N, K)
};

template <class T, class Backend = Cpu>
struct MatmulGrads {
  Tensor<T, Backend> da;  ///< like A (stored layout, i.e. transposed if trans_a)
  Tensor<T, Backend> db;  ///< like B
};

}  // namespace ops
namespace detail::dense {

/// Shapes of a broadcast batched matmul: the common batch shape and, per batch entry, the
/// matrix offsets into A and B.
struct MatmulPlan {
  Index m = 0, n = 0, k = 0;
  Shape batch;                    // broadcast batch shape
  std::vector<Index> a_off, b_off;  // element offsets of each batch's matrix
  Shape out_shape;
};

inline MatmulPlan plan_matmul(const Shape& as, const Shape& bs, const ops::MatmulParams& p,
                              const char* op) {
  BF_CHECK(as.size() >= 2 && bs.size() >= 2, ShapeError, op,
           ": both operands need at least 2 dimensions, got A ", shape_str(as), " and B ",
           shape_str(bs));
  const Index ar = as[as.size() - 2], ac = as.back();
  const Index br = bs[bs.size() - 2], bc = bs.back();
  MatmulPlan pl;
  pl.m = p.trans_a ? ac : ar;
  const Index ka = p.trans_a ? ar : ac;
  const Index kb = p.trans_b ? bc : br;
  pl.n = p.trans_b ? br : bc;
  BF_CHECK(ka == kb, ShapeError, op, ": inner dimensions differ: A ", shape_str(as),
           p.trans_a ? " (transposed)" : "", " and B ", shape_str(bs),
           p.trans_b ? " (transposed)" : "");
  pl.k = ka;
  const std::size_t na = as.size() - 2, nb = bs.size() - 2, nd = std::max(na, nb);
  pl.batch.assign(nd, 1);
  for (std::size_t i = 0; i < nd; ++i) {
    const Index da = i + na >= nd ? as[i + na - nd] : 1;
    const Index db = i + nb >= nd ? bs[i + nb - nd] : 1;
    BF_CHECK(da == db || da == 1 || db == 1, ShapeError, op,
             ": batch dimensions do not broadcast: A ", shape_str(as), " and B ", shape_str(bs));
    pl.batch[i] = da == 1 ? db : da;
  }
  // Strides (in matrices) of A and B batch dims, 0 where broadcast.
  std::vector<Index> sa(nd, 0), sb(nd, 0);
  Index acc_a = 1, acc_b = 1;
  for (std::size_t i = nd; i-- > 0;) {
    if (i + na >= nd) {
      const Index d = as[i + na - nd];
      sa[i] = d == 1 ? 0 : acc_a;
      acc_a *= d;
    }
    if (i + nb >= nd) {
      const Index d = bs[i + nb - nd];
      sb[i] = d == 1 ? 0 : acc_b;
      acc_b *= d;
    }
  }
  const Index nbatch = shape_numel(pl.batch);
  pl.a_off.resize(static_cast<std::size_t>(nbatch));
  pl.b_off.resize(static_cast<std::size_t>(nbatch));
  std::vector<Index> idx(nd, 0);
  for (Index t = 0; t < nbatch; ++t) {
    Index oa = 0, ob = 0;
    for (std::size_t i = 0; i < nd; ++i) {
      oa += idx[i] * sa[i];
      ob += idx[i] * sb[i];
    }
    pl.a_off[static_cast<std::size_t>(t)] = oa * ar * ac;
    pl.b_off[static_cast<std::size_t>(t)] = ob * br * bc;
    for (std::size_t i = nd; i-- > 0;) {
      if (++idx[i] < pl.batch[i]) break;
      idx[i] = 0;
    }
  }
  pl.out_shape = pl.batch;
  pl.out_shape.push_back(pl.m);
  pl.out_shape.push_back(pl.n);
  return pl;
}

}  // namespace detail::dense
namespace ops {

/// Reference (batched, broadcasting) matrix multiplication.
template <class Backend>
struct MatmulOp {
  template <class T>
  using TensorT = Tensor<T, Backend>;

  template <class T>
  static TensorT<T> forward(const TensorT<T>& a, const TensorT<T>& b, const MatmulParams& p) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    const blendfuse::detail::dense::MatmulPlan pl = blendfuse::detail::dense::plan_matmul(a.shape(), b.shape(), p, "matmul");
    TensorT<T> c(pl.out_shape);
    const TensorT<T> ac = a.contiguous(), bc = b.contiguous();
    for (std::size_t t = 0; t < pl.a_off.size(); ++t)
      blendfuse::detail::dense::gemm<T>(c.data() + static_cast<Index>(t) * pl.m * pl.n, pl.m, pl.n, pl.k,
                      ac.data() + pl.a_off[t], p.trans_a, bc.data() + pl.b_off[t], p.trans_b,
                      false);
    return c;
  }

  /// Gradients of C = op(A) op(B) given dC; broadcast batch dimensions are summed.
  template <class T>
  static MatmulGrads<T, Backend> backward(const TensorT<T>& a, const TensorT<T>& b,
                                          const TensorT<T>& dc, const MatmulParams& p) {
    blendfuse::detail::dense::require_host_backend<T, Backend>();
    const blendfuse::detail::dense::MatmulPlan pl = blendfuse::detail::dense::plan_matmul(a.shape(), b.shape(), p, "matmul_backward");
    BF_CHECK(dc.shape() == pl.out_shape, ShapeError, "matmul_backward: dC ", dc.shape_string(),
             " does not match output shape ", shape_str(pl.out_shape), " of A ",
             a.shape_string(), " and B ", b.shape_string());
    const TensorT<T> ac = a.contiguous(), bc = b.contiguous(), dcc = dc.contiguous();
    MatmulGrads<T, Backend> g{TensorT<T>(a.shape()), TensorT<T>(b.shape())};
    const Index m = pl.m, n = pl.n, k = pl.k;
    for (std::size_t t = 0; t < pl.a_off.size(); ++t) {
      const T* dct = dcc.data() + static_cast<Index>(t) * m * n;
      const T* at = ac.data() + pl.a_off[t];
      const T* bt = bc.data() + pl.b_off[t];
      T* dat = g.da.data() + pl.a_off[t];
      T* dbt = g.db.data() + pl.b_off[t];
      // d op(A) = dC op(B)ᵀ (m, k);  d op(B) = op(A)ᵀ dC (k, n).
      if (!p.trans_a)
        blendfuse::detail::dense::gemm<T>(dat, m, k, n, dct, false, bt, !p.trans_b, true);
      else  // dA (k, m) = op(B) dCᵀ
        blendfuse::detail::dense::gemm<T>(dat, k, m, n, bt, p.trans_b, dct, true, true);
      if (!p.trans_b)
        blendfuse::detail::dense::gemm<T>(dbt, k, n, m, at, !p.trans_a, dct, false, true);
      else  // dB (n, k) = dCᵀ op(A)
        blendfuse::detail::dense::gemm<T>(dbt, n, k, m, dct, true, at, p.trans_a, true);
    }
    return g;
  }
};


/// y = x Wᵀ + b over the last dimension; x (..., in), w (out, in), b (out,) or empty.
template <class T, class B>
Tensor<T, B> linear(const Tensor<T, B>& x, const Tensor<T, B>& w, const Tensor<T, B>& b = {}) {
  return LinearOp<B>::template forward<T>(x, w, b);
}

/// linear(x, w, b) written into a preallocated contiguous y (..., out) (must not alias x): the
/// allocation-free inference form (no allocation when x, w and b are contiguous).
template <class T, class B>
void linear_into(Tensor<T, B>& y, const Tensor<T, B>& x, const Tensor<T, B>& w, const Tensor<T, B>& b = {}) {
  LinearOp<B>::template forward_into<T>(y, x, w, b);
}

/// Gradients {dx, dw, db} of linear given dy (..., out); db is empty unless need_bias_grad.
template <class T, class B>
LinearGrads<T, B> linear_backward(const Tensor<T, B>& x, const Tensor<T, B>& w,
                                  const Tensor<T, B>& dy, bool need_bias_grad = true) {
  return LinearOp<B>::template backward<T>(x, w, dy, need_bias_grad);
}

/// C = op(A) op(B); A (..., M, K), B (..., K, N) (stored transposed with trans_a / trans_b).
template <class T, class B>
Tensor<T, B> matmul(const Tensor<T, B>& a, const Tensor<T, B>& b, const MatmulParams& p = {}) {
  return MatmulOp<B>::template forward<T>(a, b, p);
}

template <class T, class B>
MatmulGrads<T, B> matmul_backward(const Tensor<T, B>& a, const Tensor<T, B>& b,
                                  const Tensor<T, B>& dc, const MatmulParams& p = {}) {
  return MatmulOp<B>::template backward<T>(a, b, dc, p);
}

}  // namespace ops
}  // namespace blendfuse
