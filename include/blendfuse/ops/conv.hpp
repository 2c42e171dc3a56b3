// blendfuse — 2-d and 1-d convolution, forward and hand-written backward.
//
// Semantics are those of torch.nn.functional.conv2d / conv1d (cross-correlation, zero padding on
// both sides, dilation, grouped channels):
//   conv2d: x (N, C_in, H, W), weight (C_out, C_in/groups, kH, kW), bias (C_out,) or none
//           -> y (N, C_out, H_out, W_out), H_out = (H + 2·pH − dH·(kH − 1) − 1) / sH + 1
//   conv1d: x (N, C_in, L),    weight (C_out, C_in/groups, K),      bias (C_out,) or none
//           -> y (N, C_out, L_out)
// conv1d is conv2d with H = kH = 1.
//
// The reference (primary template of Conv2dOp / Conv1dOp) lowers each (image, group) pair to one
// GEMM with im2col: the column matrix cols (C_in/groups·kH·kW, H_out·W_out) holds the input
// patches, so  y_g = W_g · cols,  dW_g += dy_g · colsᵀ  and  dcols = W_gᵀ · dy_g  (scattered back
// into dx by col2im). Output positions are processed in chunks so the column buffer stays small
// for long signals (wav2vec 2.0 feature extractor on minutes of audio). 1×1 convolutions with
// stride 1 and no padding skip im2col and multiply the input in place.
#pragma once

#include <algorithm>
#include <array>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "blendfuse/backend/backend.hpp"
#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse::ops {

/// conv2d parameters, per spatial dimension {H, W}. Padding is zeros on both sides.
struct Conv2dParams {
  std::array<Index, 2> stride{1, 1};
  std::array<Index, 2> padding{0, 0};
  std::array<Index, 2> dilation{1, 1};
  Index groups = 1;
};

/// conv1d parameters. Padding is zeros on both sides.
struct Conv1dParams {
  Index stride = 1;
  Index padding = 0;
  Index dilation = 1;
  Index groups = 1;
};

/// Gradients of a convolution: dx like x, dw like the weight, db (C_out,) — empty when the bias
/// gradient was not requested.
template <class T, class Backend = Cpu>
struct ConvGrads {
  Tensor<T, Backend> dx, dw, db;
};

/// Output size of one spatial dimension: (in + 2·padding − dilation·(kernel − 1) − 1) / stride + 1.
inline Index conv_output_size(Index in, Index kernel, Index stride, Index padding, Index dilation) {
  return (in + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1;
}

namespace detail {

/// Validated geometry of one convolution in 2-d form (conv1d: h = kh = 1, sh = dh = 1, ph = 0).
struct ConvGeom {
  Index n = 0, c_in = 0, h = 1, w = 0;
  Index c_out = 0, kh = 1, kw = 0;
  Index h_out = 1, w_out = 0;
  Index sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  Index groups = 1;

  Index cin_g() const { return c_in / groups; }
  Index cout_g() const { return c_out / groups; }
  Index k() const { return cin_g() * kh * kw; }  // rows of the column matrix
  Index p() const { return h_out * w_out; }      // output positions per channel
  bool pointwise() const {
    return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
  }
  Shape out_shape(int nd) const {
    return nd == 2 ? Shape{n, c_out, h_out, w_out} : Shape{n, c_out, w_out};
  }
};

inline std::string index_list(const Index* v, int nd) {
  std::string s = "(";
  for (int i = 0; i < nd; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + ")";
}

/// Checks shapes and parameters of an nd-dimensional (1 or 2) convolution; `op` names it in errors.
inline ConvGeom conv_geometry(const char* op, int nd, const Shape& xs, const Shape& ws,
                              const Index* stride, const Index* padding, const Index* dilation,
                              Index groups) {
  const char* x_layout = nd == 2 ? "(N, C_in, H, W)" : "(N, C_in, L)";
  const char* w_layout = nd == 2 ? "(C_out, C_in/groups, kH, kW)" : "(C_out, C_in/groups, K)";
  const auto nds = static_cast<std::size_t>(nd + 2);
  BF_CHECK(xs.size() == nds, ShapeError, op, ": input must be ", nd + 2, "-d ", x_layout,
           ", got shape ", shape_str(xs), " (weight shape ", shape_str(ws), ")");
  BF_CHECK(ws.size() == nds, ShapeError, op, ": weight must be ", nd + 2, "-d ", w_layout,
           ", got shape ", shape_str(ws), " (input shape ", shape_str(xs), ")");
  for (int i = 0; i < nd; ++i) {
    BF_CHECK(stride[i] >= 1, ArgumentError, op, ": stride must be >= 1, got ",
             index_list(stride, nd));
    BF_CHECK(dilation[i] >= 1, ArgumentError, op, ": dilation must be >= 1, got ",
             index_list(dilation, nd));
    BF_CHECK(padding[i] >= 0, ArgumentError, op, ": padding must be >= 0, got ",
             index_list(padding, nd));
  }
  BF_CHECK(groups >= 1, ArgumentError, op, ": groups must be >= 1, got ", groups);
  const std::string shapes =
      "input shape " + shape_str(xs) + ", weight shape " + shape_str(ws) + ", groups " +
      std::to_string(groups);
  BF_CHECK(xs[1] % groups == 0 && ws[0] % groups == 0, ShapeError, op,
           ": groups must divide both C_in and C_out (", shapes, ")");
  BF_CHECK(ws[1] * groups == xs[1], ShapeError, op, ": weight dim 1 must be C_in/groups = ",
           xs[1] / groups, " (", shapes, ")");
  for (int i = 0; i < nd; ++i)
    BF_CHECK(ws[static_cast<std::size_t>(2 + i)] >= 1, ShapeError, op,
             ": kernel size must be >= 1 (", shapes, ")");

  Index out[2] = {1, 1};
  for (int i = 0; i < nd; ++i) {
    const Index in = xs[static_cast<std::size_t>(2 + i)], k = ws[static_cast<std::size_t>(2 + i)];
    const Index extent = dilation[i] * (k - 1) + 1;
    BF_CHECK(in + 2 * padding[i] >= extent, ShapeError, op, ": input shape ", shape_str(xs),
             " with padding ", index_list(padding, nd), " is smaller than the dilated kernel of weight shape ",
             shape_str(ws), " (dilation ", index_list(dilation, nd), ")");
    out[i] = conv_output_size(in, k, stride[i], padding[i], dilation[i]);
  }

  ConvGeom g;
  g.n = xs[0];
  g.c_in = xs[1];
  g.c_out = ws[0];
  g.groups = groups;
  if (nd == 2) {
    g.h = xs[2], g.w = xs[3], g.kh = ws[2], g.kw = ws[3];
    g.h_out = out[0], g.w_out = out[1];
    g.sh = stride[0], g.sw = stride[1], g.ph = padding[0], g.pw = padding[1];
    g.dh = dilation[0], g.dw = dilation[1];
  } else {
    g.w = xs[2], g.kw = ws[2], g.w_out = out[0];
    g.sw = stride[0], g.pw = padding[0], g.dw = dilation[0];
  }
  return g;
}

template <class T, class B>
void check_bias(const char* op, const Tensor<T, B>& b, const ConvGeom& g, const Shape& ws) {
  BF_CHECK(b.ndim() == 1 && b.dim(0) == g.c_out, ShapeError, op, ": bias shape ",
           b.shape_string(), " does not match C_out = ", g.c_out, " of weight shape ",
           shape_str(ws));
}

template <class T, class B>
void check_grad_output(const char* op, int nd, const Tensor<T, B>& dy, const ConvGeom& g,
                       const Shape& xs, const Shape& ws) {
  const Shape expected = g.out_shape(nd);
  BF_CHECK(dy.shape() == expected, ShapeError, op, ": grad_output shape ", dy.shape_string(),
           " does not match the output shape ", shape_str(expected), " of input shape ",
           shape_str(xs), " and weight shape ", shape_str(ws));
}

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatrixMap = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

/// Output positions per GEMM: keeps a column buffer at about 2M elements.
inline Index column_chunk(const ConvGeom& g) {
  constexpr Index kBudget = Index(1) << 21;
  return std::clamp<Index>(kBudget / std::max<Index>(g.k(), 1), 1, std::max<Index>(g.p(), 1));
}

/// Calls f(row, c, j, ih, iw) for every entry of the column matrix restricted to output positions
/// [p0, p1): row = (c·kh + ki)·kw + kj, column j = p − p0, input channel c of the group and input
/// pixel (ih, iw), which may lie in the padding.
template <class F>
void for_each_column_entry(const ConvGeom& g, Index p0, Index p1, F&& f) {
  for (Index c = 0; c < g.cin_g(); ++c)
    for (Index ki = 0; ki < g.kh; ++ki)
      for (Index kj = 0; kj < g.kw; ++kj) {
        const Index row = (c * g.kh + ki) * g.kw + kj;
        Index oh = p0 / g.w_out, ow = p0 % g.w_out;
        for (Index j = 0; j < p1 - p0; ++j) {
          f(row, c, j, oh * g.sh - g.ph + ki * g.dh, ow * g.sw - g.pw + kj * g.dw);
          if (++ow == g.w_out) ow = 0, ++oh;
        }
      }
}

/// cols (k × (p1 − p0), row-major) ← patches of one group of one image (xg: its first channel).
template <class T>
void im2col(const ConvGeom& g, const T* xg, Index p0, Index p1, T* cols) {
  const Index np = p1 - p0, hw = g.h * g.w;
  for_each_column_entry(g, p0, p1, [&](Index row, Index c, Index j, Index ih, Index iw) {
    const bool inside = ih >= 0 && ih < g.h && iw >= 0 && iw < g.w;
    cols[row * np + j] = inside ? xg[c * hw + ih * g.w + iw] : T(0);
  });
}

/// dxg += the column-matrix gradient scattered back onto the input pixels (padding dropped).
template <class T>
void col2im_add(const ConvGeom& g, const T* dcols, Index p0, Index p1, T* dxg) {
  const Index np = p1 - p0, hw = g.h * g.w;
  for_each_column_entry(g, p0, p1, [&](Index row, Index c, Index j, Index ih, Index iw) {
    if (ih >= 0 && ih < g.h && iw >= 0 && iw < g.w) dxg[c * hw + ih * g.w + iw] += dcols[row * np + j];
  });
}

/// y ← conv(x, w) + b on contiguous buffers (b may be null).
template <class T>
void conv_forward(const ConvGeom& g, const T* x, const T* w, const T* b, T* y) {
  const Index P = g.p(), K = g.k(), cig = g.cin_g(), cog = g.cout_g(), hw = g.h * g.w;
  const Index chunk = column_chunk(g);
  std::vector<T> cols(g.pointwise() ? 0 : static_cast<std::size_t>(K * chunk));
  for (Index n = 0; n < g.n; ++n)
    for (Index grp = 0; grp < g.groups; ++grp) {
      const T* xg = x + (n * g.c_in + grp * cig) * hw;
      T* yg = y + (n * g.c_out + grp * cog) * P;
      const ConstMatrixMap<T> W(w + grp * cog * K, cog, K, Eigen::OuterStride<>(K));
      for (Index p0 = 0; p0 < P; p0 += chunk) {
        const Index np = std::min(chunk, P - p0);
        MatrixMap<T> Y(yg + p0, cog, np, Eigen::OuterStride<>(P));
        if (g.pointwise()) {  // the input itself is the column matrix (K = cig, P = H·W)
          Y.noalias() = W * ConstMatrixMap<T>(xg + p0, K, np, Eigen::OuterStride<>(P));
        } else {
          im2col(g, xg, p0, p0 + np, cols.data());
          Y.noalias() = W * ConstMatrixMap<T>(cols.data(), K, np, Eigen::OuterStride<>(np));
        }
      }
    }
  if (b)
    for (Index n = 0; n < g.n; ++n)
      for (Index c = 0; c < g.c_out; ++c) {
        T* yc = y + (n * g.c_out + c) * P;
        for (Index i = 0; i < P; ++i) yc[i] += b[c];
      }
}

/// dx ← ∂L/∂x, dw ← ∂L/∂w, db ← ∂L/∂b (if non-null) for dy = ∂L/∂y; outputs must be zeroed.
template <class T>
void conv_backward(const ConvGeom& g, const T* x, const T* w, const T* dy, T* dx, T* dw, T* db) {
  const Index P = g.p(), K = g.k(), cig = g.cin_g(), cog = g.cout_g(), hw = g.h * g.w;
  const Index chunk = column_chunk(g);
  const std::size_t buf = g.pointwise() ? 0 : static_cast<std::size_t>(K * chunk);
  std::vector<T> cols(buf), dcols(buf);
  for (Index n = 0; n < g.n; ++n)
    for (Index grp = 0; grp < g.groups; ++grp) {
      const Index xoff = (n * g.c_in + grp * cig) * hw;
      const T* dyg = dy + (n * g.c_out + grp * cog) * P;
      const ConstMatrixMap<T> W(w + grp * cog * K, cog, K, Eigen::OuterStride<>(K));
      MatrixMap<T> dW(dw + grp * cog * K, cog, K, Eigen::OuterStride<>(K));
      for (Index p0 = 0; p0 < P; p0 += chunk) {
        const Index np = std::min(chunk, P - p0);
        const ConstMatrixMap<T> dY(dyg + p0, cog, np, Eigen::OuterStride<>(P));
        if (g.pointwise()) {
          dW.noalias() += dY * ConstMatrixMap<T>(x + xoff + p0, K, np, Eigen::OuterStride<>(P)).transpose();
          MatrixMap<T>(dx + xoff + p0, K, np, Eigen::OuterStride<>(P)).noalias() = W.transpose() * dY;
        } else {
          im2col(g, x + xoff, p0, p0 + np, cols.data());
          dW.noalias() += dY * ConstMatrixMap<T>(cols.data(), K, np, Eigen::OuterStride<>(np)).transpose();
          MatrixMap<T>(dcols.data(), K, np, Eigen::OuterStride<>(np)).noalias() = W.transpose() * dY;
          col2im_add(g, dcols.data(), p0, p0 + np, dx + xoff);
        }
      }
    }
  if (db)
    for (Index n = 0; n < g.n; ++n)
      for (Index c = 0; c < g.c_out; ++c) {
        const T* dyc = dy + (n * g.c_out + c) * P;
        T s = 0;
        for (Index i = 0; i < P; ++i) s += dyc[i];
        db[c] += s;
      }
}

template <class T, class Backend>
void check_element_and_backend() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "convolution: element type must be float or double");
  static_assert(Backend::host_memory,
                "convolution reference implementation needs a host-memory backend");
}

}  // namespace detail

/// 2-d convolution. Reference implementation (primary template) for every host backend;
/// accelerated backends specialise Conv2dOp<Backend>.
///   x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW), b (C_out,) or null → (N, C_out, H_out, W_out)
template <class Backend>
struct Conv2dOp {
  template <class T>
  static Tensor<T, Backend> forward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& w,
                                    const Tensor<T, Backend>* b, const Conv2dParams& p) {
    detail::check_element_and_backend<T, Backend>();
    const auto g = detail::conv_geometry("conv2d", 2, x.shape(), w.shape(), p.stride.data(),
                                         p.padding.data(), p.dilation.data(), p.groups);
    if (b) detail::check_bias("conv2d", *b, g, w.shape());
    const auto xc = x.contiguous(), wc = w.contiguous();
    Tensor<T, Backend> bc;
    if (b) bc = b->contiguous();
    Tensor<T, Backend> y(g.out_shape(2));
    detail::conv_forward(g, xc.data(), wc.data(), b ? bc.data() : nullptr, y.data());
    return y;
  }

  /// Gradients of L given dy = ∂L/∂y (shape of the forward output); db only if need_bias_grad.
  template <class T>
  static ConvGrads<T, Backend> backward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& w,
                                        const Tensor<T, Backend>& dy, const Conv2dParams& p,
                                        bool need_bias_grad) {
    detail::check_element_and_backend<T, Backend>();
    const auto g = detail::conv_geometry("conv2d_backward", 2, x.shape(), w.shape(),
                                         p.stride.data(), p.padding.data(), p.dilation.data(),
                                         p.groups);
    detail::check_grad_output("conv2d_backward", 2, dy, g, x.shape(), w.shape());
    ConvGrads<T, Backend> r{Tensor<T, Backend>(x.shape()), Tensor<T, Backend>(w.shape()), {}};
    if (need_bias_grad) r.db = Tensor<T, Backend>(Shape{g.c_out});
    const auto xc = x.contiguous(), wc = w.contiguous(), dyc = dy.contiguous();
    detail::conv_backward(g, xc.data(), wc.data(), dyc.data(), r.dx.data(), r.dw.data(),
                          need_bias_grad ? r.db.data() : nullptr);
    return r;
  }
};

/// 1-d convolution. Reference implementation (primary template) for every host backend.
///   x (N, C_in, L), w (C_out, C_in/groups, K), b (C_out,) or null → (N, C_out, L_out)
template <class Backend>
struct Conv1dOp {
  template <class T>
  static Tensor<T, Backend> forward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& w,
                                    const Tensor<T, Backend>* b, const Conv1dParams& p) {
    detail::check_element_and_backend<T, Backend>();
    const auto g = detail::conv_geometry("conv1d", 1, x.shape(), w.shape(), &p.stride,
                                         &p.padding, &p.dilation, p.groups);
    if (b) detail::check_bias("conv1d", *b, g, w.shape());
    const auto xc = x.contiguous(), wc = w.contiguous();
    Tensor<T, Backend> bc;
    if (b) bc = b->contiguous();
    Tensor<T, Backend> y(g.out_shape(1));
    detail::conv_forward(g, xc.data(), wc.data(), b ? bc.data() : nullptr, y.data());
    return y;
  }

  template <class T>
  static ConvGrads<T, Backend> backward(const Tensor<T, Backend>& x, const Tensor<T, Backend>& w,
                                        const Tensor<T, Backend>& dy, const Conv1dParams& p,
                                        bool need_bias_grad) {
    detail::check_element_and_backend<T, Backend>();
    const auto g = detail::conv_geometry("conv1d_backward", 1, x.shape(), w.shape(), &p.stride,
                                         &p.padding, &p.dilation, p.groups);
    detail::check_grad_output("conv1d_backward", 1, dy, g, x.shape(), w.shape());
    ConvGrads<T, Backend> r{Tensor<T, Backend>(x.shape()), Tensor<T, Backend>(w.shape()), {}};
    if (need_bias_grad) r.db = Tensor<T, Backend>(Shape{g.c_out});
    const auto xc = x.contiguous(), wc = w.contiguous(), dyc = dy.contiguous();
    detail::conv_backward(g, xc.data(), wc.data(), dyc.data(), r.dx.data(), r.dw.data(),
                          need_bias_grad ? r.db.data() : nullptr);
    return r;
  }
};

/// y = conv2d(x, w) + b; `b` may be nullptr. x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW).
template <class T, class B>
Tensor<T, B> conv2d(const Tensor<T, B>& x, const Tensor<T, B>& w,
                    std::type_identity_t<const Tensor<T, B>*> b, const Conv2dParams& p = {}) {
  return Conv2dOp<B>::forward(x, w, b, p);
}

/// Gradients {dx, dw, db} of conv2d for dy = ∂L/∂y; db is left empty unless need_bias_grad.
template <class T, class B>
ConvGrads<T, B> conv2d_backward(const Tensor<T, B>& x, const Tensor<T, B>& w,
                                const std::type_identity_t<Tensor<T, B>>& dy,
                                const Conv2dParams& p = {}, bool need_bias_grad = true) {
  return Conv2dOp<B>::backward(x, w, dy, p, need_bias_grad);
}

/// y = conv1d(x, w) + b; `b` may be nullptr. x (N, C_in, L), w (C_out, C_in/groups, K).
template <class T, class B>
Tensor<T, B> conv1d(const Tensor<T, B>& x, const Tensor<T, B>& w,
                    std::type_identity_t<const Tensor<T, B>*> b, const Conv1dParams& p = {}) {
  return Conv1dOp<B>::forward(x, w, b, p);
}

/// Gradients {dx, dw, db} of conv1d for dy = ∂L/∂y; db is left empty unless need_bias_grad.
template <class T, class B>
ConvGrads<T, B> conv1d_backward(const Tensor<T, B>& x, const Tensor<T, B>& w,
                                const std::type_identity_t<Tensor<T, B>>& dy,
                                const Conv1dParams& p = {}, bool need_bias_grad = true) {
  return Conv1dOp<B>::backward(x, w, dy, p, need_bias_grad);
}

}  // namespace blendfuse::ops
