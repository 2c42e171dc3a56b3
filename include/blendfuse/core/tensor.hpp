// blendfuse — Tensor<T, Backend>: an n-dimensional strided array.
//
// * Row-major (C order) by default, NCHW for images, (N, T, C) for sequences — the same order as
//   PyTorch and safetensors, so buffers load without transposition.
// * Owning tensors hold 64-byte aligned, zero-initialised storage shared between views
//   (std::shared_ptr); non-owning views wrap caller memory and never free it.
// * `Backend` is a compile-time tag (Cpu = portable reference, OneDnn, Cuda). The tag selects which
//   op implementation runs (see backend/backend.hpp) and owns the memory: storage is allocated and
//   freed through `Backend::allocate` / `Backend::deallocate`. Host backends (HostMemory) share
//   host memory — moving a tensor between them is a zero-copy `rebind`; a device backend's tensors
//   reach the host only through the explicit copies `to<Cpu>()` / `to_host()` / `from_host()`, and
//   host-only members (element access, fill, assign, ...) do not compile for them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "blendfuse/core/error.hpp"

namespace blendfuse {

/// Memory of the host backends: 64-byte aligned, zero-filled allocations; copies are memcpy.
/// Every backend tag provides the same five static functions (a device backend with its own
/// memory, e.g. Cuda, defines them in its library): allocate(bytes) → zeroed storage,
/// deallocate(p), copy_to_host(dst, src, bytes), copy_from_host(dst, src, bytes), copy(dst, src,
/// bytes) within the backend.
struct HostMemory {
  static constexpr bool host_memory = true;
  static constexpr std::size_t alignment = 64;
  static void* allocate(std::size_t bytes) {
    bytes = ((std::max<std::size_t>(bytes, 1) + alignment - 1) / alignment) * alignment;
    void* p = ::operator new(bytes, std::align_val_t(alignment));
    std::memset(p, 0, bytes);
    return p;
  }
  static void deallocate(void* p) noexcept { ::operator delete(p, std::align_val_t(alignment)); }
  static void copy_to_host(void* dst, const void* src, std::size_t bytes) { if (bytes) std::memcpy(dst, src, bytes); }
  static void copy_from_host(void* dst, const void* src, std::size_t bytes) { if (bytes) std::memcpy(dst, src, bytes); }
  static void copy(void* dst, const void* src, std::size_t bytes) { if (bytes) std::memcpy(dst, src, bytes); }
};

/// Portable reference backend: plain C++ loops and Eigen, the source of truth for every op.
struct Cpu : HostMemory {
  static constexpr const char* name = "cpu";
};

using Index = std::int64_t;
using Shape = std::vector<Index>;

inline std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  if (s.size() == 1) out += ",";
  return out + ")";
}

inline Index shape_numel(const Shape& s) {
  Index n = 1;
  for (Index d : s) n *= d;
  return n;
}

inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  Index acc = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

namespace detail {
/// Zero-filled storage for n elements, allocated and freed through the backend tag.
template <class T, class Backend = Cpu>
std::shared_ptr<T> backend_alloc_zeroed(std::size_t n) {
  void* p = Backend::allocate(std::max<std::size_t>(n, 1) * sizeof(T));
  return std::shared_ptr<T>(static_cast<T*>(p), [](T* q) { Backend::deallocate(q); });
}
}  // namespace detail

template <class T, class Backend = Cpu>
class Tensor {
  static_assert(std::is_arithmetic_v<T>, "Tensor element type must be arithmetic");

 public:
  using value_type = T;
  using backend_type = Backend;

  Tensor() = default;

  /// Owning, contiguous, zero-filled tensor of the given shape.
  explicit Tensor(Shape shape) : shape_(std::move(shape)) {
    for (Index d : shape_)
      BF_CHECK(d >= 0, ShapeError, "Tensor: negative dimension in shape ", shape_str(shape_));
    strides_ = contiguous_strides(shape_);
    storage_ = detail::backend_alloc_zeroed<T, Backend>(static_cast<std::size_t>(numel()));
    data_ = storage_.get();
  }

  Tensor(std::initializer_list<Index> shape) : Tensor(Shape(shape)) {}

  /// Owning tensor filled from `values` (row-major); sizes must agree.
  static Tensor from(Shape shape, const std::vector<T>& values)
    requires Backend::host_memory
  {
    Tensor t(std::move(shape));
    BF_CHECK(static_cast<Index>(values.size()) == t.numel(), ShapeError, "Tensor::from: ",
             values.size(), " values for shape ", shape_str(t.shape_));
    std::copy(values.begin(), values.end(), t.data_);
    return t;
  }

  static Tensor full(Shape shape, T value)
    requires Backend::host_memory
  {
    Tensor t(std::move(shape));
    t.fill(value);
    return t;
  }

  /// Non-owning view over caller memory (row-major unless strides are given).
  static Tensor view(T* data, Shape shape, Shape strides = {}) {
    Tensor t;
    t.data_ = data;
    t.shape_ = std::move(shape);
    t.strides_ = strides.empty() ? contiguous_strides(t.shape_) : std::move(strides);
    BF_CHECK(t.strides_.size() == t.shape_.size(), ShapeError, "Tensor::view: ",
             t.strides_.size(), " strides for shape ", shape_str(t.shape_));
    return t;
  }

  /// The same tensor — memory, shape, strides and shared ownership (none for a view) — under
  /// another host-memory backend's tag. No copy.
  template <class To>
  Tensor<T, To> rebind() const {
    static_assert(To::host_memory && Backend::host_memory, "Tensor::rebind: host-memory backends only");
    Tensor<T, To> t;
    t.storage_ = storage_;
    t.data_ = data_;
    t.shape_ = shape_;
    t.strides_ = strides_;
    return t;
  }

  /// This tensor under backend `To`: between host backends the same memory (rebind, no copy);
  /// otherwise an explicit copy of the (contiguous) data into storage allocated by `To`.
  template <class To>
  Tensor<T, To> to() const {
    if constexpr (To::host_memory && Backend::host_memory) {
      return rebind<To>();
    } else {
      const Tensor c = contiguous();
      Tensor<T, To> out(shape_);
      const std::size_t bytes = static_cast<std::size_t>(numel()) * sizeof(T);
      if constexpr (Backend::host_memory) {
        To::copy_from_host(out.data_, c.data_, bytes);
      } else if constexpr (To::host_memory) {
        Backend::copy_to_host(out.data_, c.data_, bytes);
      } else {  // device → device of another backend: through the host
        Tensor<T, Cpu> h = c.template to<Cpu>();
        To::copy_from_host(out.data_, h.data(), bytes);
      }
      return out;
    }
  }
  /// Explicit copy to host memory (a zero-copy view for host backends).
  Tensor<T, Cpu> to_host() const { return to<Cpu>(); }
  /// A host tensor on this backend (zero-copy for host backends, an upload otherwise).
  template <class From>
  static Tensor from_host(const Tensor<T, From>& h) {
    static_assert(From::host_memory, "Tensor::from_host: the source must be a host tensor");
    return h.template to<Backend>();
  }

  // ---- shape queries --------------------------------------------------------------------------
  const Shape& shape() const noexcept { return shape_; }
  const Shape& strides() const noexcept { return strides_; }
  Index ndim() const noexcept { return static_cast<Index>(shape_.size()); }
  Index numel() const noexcept { return shape_numel(shape_); }
  bool empty() const noexcept { return data_ == nullptr || numel() == 0; }
  /// Size of dimension `i`; negative `i` counts from the end.
  Index dim(Index i) const {
    const Index n = ndim();
    if (i < 0) i += n;
    BF_CHECK(i >= 0 && i < n, ShapeError, "Tensor::dim: index ", i, " out of range for shape ",
             shape_str(shape_));
    return shape_[static_cast<std::size_t>(i)];
  }
  Index stride(Index i) const {
    if (i < 0) i += ndim();
    BF_CHECK(i >= 0 && i < ndim(), ShapeError, "Tensor::stride: bad dim ", i);
    return strides_[static_cast<std::size_t>(i)];
  }
  /// Row-major strides exactly (what contiguous_strides(shape) gives). Allocation-free: the
  /// inference ops' output-argument and in-place forms check it on every warm step.
  bool is_contiguous() const noexcept {
    if (strides_.size() != shape_.size()) return false;
    Index acc = 1;
    for (std::size_t i = shape_.size(); i-- > 0;) {
      if (strides_[i] != acc) return false;
      acc *= shape_[i];
    }
    return true;
  }
  bool owns_storage() const noexcept { return static_cast<bool>(storage_); }
  std::string shape_string() const { return shape_str(shape_); }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  // Iteration and element access dereference host memory: host backends only (a device
  // backend's tensor goes through to_host() first).
  T* begin() requires Backend::host_memory { require_contiguous("begin"); return data_; }
  T* end() requires Backend::host_memory { require_contiguous("end"); return data_ + numel(); }
  const T* begin() const requires Backend::host_memory { require_contiguous("begin"); return data_; }
  const T* end() const requires Backend::host_memory { require_contiguous("end"); return data_ + numel(); }

  /// Element access by full index (bounds checked in debug builds only).
  template <class... I>
  T& operator()(I... idx) requires Backend::host_memory {
    return data_[offset_of(idx...)];
  }
  template <class... I>
  const T& operator()(I... idx) const requires Backend::host_memory {
    return data_[offset_of(idx...)];
  }
  /// Flat access for contiguous tensors.
  T& operator[](Index i) noexcept requires Backend::host_memory { return data_[i]; }
  const T& operator[](Index i) const noexcept requires Backend::host_memory { return data_[i]; }

  // ---- views ----------------------------------------------------------------------------------
  /// View with a new shape (one dimension may be -1). Requires contiguity.
  Tensor reshape(Shape s) const {
    require_contiguous("reshape");
    Index known = 1, infer = -1;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == -1) {
        BF_CHECK(infer < 0, ShapeError, "Tensor::reshape: more than one -1 in ", shape_str(s));
        infer = static_cast<Index>(i);
      } else {
        known *= s[i];
      }
    }
    if (infer >= 0) {
      BF_CHECK(known > 0 && numel() % known == 0, ShapeError, "Tensor::reshape: cannot reshape ",
               shape_str(shape_), " to ", shape_str(s));
      s[static_cast<std::size_t>(infer)] = numel() / known;
    }
    BF_CHECK(shape_numel(s) == numel(), ShapeError, "Tensor::reshape: cannot reshape ",
             shape_str(shape_), " (", numel(), " elements) to ", shape_str(s));
    Tensor t = *this;
    t.shape_ = std::move(s);
    t.strides_ = contiguous_strides(t.shape_);
    return t;
  }

  /// View of the sub-range [start, end) along dimension `d`.
  Tensor slice(Index d, Index start, Index end) const {
    if (d < 0) d += ndim();
    BF_CHECK(d >= 0 && d < ndim(), ShapeError, "Tensor::slice: bad dim ", d);
    const auto du = static_cast<std::size_t>(d);
    BF_CHECK(0 <= start && start <= end && end <= shape_[du], ShapeError, "Tensor::slice: range [",
             start, ", ", end, ") out of bounds for dim ", d, " of ", shape_str(shape_));
    Tensor t = *this;
    t.data_ = data_ + start * strides_[du];
    t.shape_[du] = end - start;
    return t;
  }

  /// View with dimension 0 fixed at `i` (one dimension fewer).
  Tensor select(Index i) const {
    BF_CHECK(ndim() >= 1 && i >= 0 && i < shape_[0], ShapeError, "Tensor::select: index ", i,
             " out of range for ", shape_str(shape_));
    Tensor t = *this;
    t.data_ = data_ + i * strides_[0];
    t.shape_.erase(t.shape_.begin());
    t.strides_.erase(t.strides_.begin());
    return t;
  }

  /// View with dimensions `a` and `b` swapped (not contiguous in general).
  Tensor transpose(Index a, Index b) const {
    if (a < 0) a += ndim();
    if (b < 0) b += ndim();
    BF_CHECK(a >= 0 && b >= 0 && a < ndim() && b < ndim(), ShapeError,
             "Tensor::transpose: bad dims for ", shape_str(shape_));
    Tensor t = *this;
    std::swap(t.shape_[static_cast<std::size_t>(a)], t.shape_[static_cast<std::size_t>(b)]);
    std::swap(t.strides_[static_cast<std::size_t>(a)], t.strides_[static_cast<std::size_t>(b)]);
    return t;
  }

  // ---- copies ---------------------------------------------------------------------------------
  /// Owning contiguous deep copy (follows strides).
  Tensor clone() const {
    Tensor t(shape_);
    if constexpr (Backend::host_memory) {
      copy_strided_to(t.data_);
    } else {
      require_contiguous("clone");  // device tensors: contiguous copies within the backend
      Backend::copy(t.data_, data_, static_cast<std::size_t>(numel()) * sizeof(T));
    }
    return t;
  }
  /// `*this` if already contiguous, else a contiguous copy.
  Tensor contiguous() const { return is_contiguous() ? *this : clone(); }

  template <class U>
  Tensor<U, Backend> cast() const requires Backend::host_memory {
    Tensor<U, Backend> out(shape_);
    const Tensor c = contiguous();
    for (Index i = 0; i < numel(); ++i) out[i] = static_cast<U>(c.data_[i]);
    return out;
  }

  /// Copies `src` (same shape) element-wise into this tensor (which may be a strided view).
  void assign(const Tensor& src) requires Backend::host_memory {
    BF_CHECK(src.shape_ == shape_, ShapeError, "Tensor::assign: shape ", shape_str(src.shape_),
             " into ", shape_str(shape_));
    const Tensor c = src.contiguous();
    Index flat = 0;
    for_each_offset([&](Index off) { data_[off] = c.data_[flat++]; });
  }

  void fill(T v) requires Backend::host_memory {
    for_each_offset([&](Index off) { data_[off] = v; });
  }
  void zero() requires Backend::host_memory { fill(T(0)); }

  /// Calls f(offset) for each element in row-major logical order.
  template <class F>
  void for_each_offset(F&& f) const requires Backend::host_memory {
    const Index n = numel();
    if (n == 0) return;
    if (is_contiguous()) {
      for (Index i = 0; i < n; ++i) f(i);
      return;
    }
    const std::size_t nd = shape_.size();
    std::vector<Index> idx(nd, 0);
    Index off = 0;
    for (Index k = 0; k < n; ++k) {
      f(off);
      for (std::size_t d = nd; d-- > 0;) {
        if (++idx[d] < shape_[d]) {
          off += strides_[d];
          break;
        }
        off -= (shape_[d] - 1) * strides_[d];
        idx[d] = 0;
      }
    }
  }

 private:
  template <class... I>
  Index offset_of(I... idx) const {
    const Index ids[] = {static_cast<Index>(idx)...};
#ifndef NDEBUG
    if (sizeof...(I) != shape_.size())
      throw ShapeError(detail::concat("Tensor: ", sizeof...(I), " indices for shape ",
                                      shape_str(shape_)));
    for (std::size_t d = 0; d < sizeof...(I); ++d)
      if (ids[d] < 0 || ids[d] >= shape_[d])
        throw ShapeError(detail::concat("Tensor: index ", ids[d], " out of range in dim ", d,
                                        " of ", shape_str(shape_)));
#endif
    Index off = 0;
    for (std::size_t d = 0; d < sizeof...(I); ++d) off += ids[d] * strides_[d];
    return off;
  }

  void copy_strided_to(T* dst) const {
    Index flat = 0;
    for_each_offset([&](Index off) { dst[flat++] = data_[off]; });
  }

  void require_contiguous(const char* what) const {
    BF_CHECK(is_contiguous(), ShapeError, "Tensor::", what, ": tensor of shape ", shape_str(shape_),
             " is not contiguous (call contiguous() first)");
  }

  template <class, class>
  friend class Tensor;

  std::shared_ptr<T> storage_;
  T* data_ = nullptr;
  Shape shape_;
  Shape strides_;
};

/// Throws ShapeError naming `what` unless `t` has exactly shape `expected` (-1 = any size).
template <class T, class B>
void check_shape(const Tensor<T, B>& t, const Shape& expected, const std::string& what) {
  bool ok = t.ndim() == static_cast<Index>(expected.size());
  for (std::size_t i = 0; ok && i < expected.size(); ++i)
    ok = expected[i] < 0 || expected[i] == t.shape()[i];
  BF_CHECK(ok, ShapeError, what, ": expected shape ", shape_str(expected), ", got ",
           t.shape_string());
}

/// Throws ShapeError unless `t` has `n` dimensions.
template <class T, class B>
void check_ndim(const Tensor<T, B>& t, Index n, const std::string& what) {
  BF_CHECK(t.ndim() == n, ShapeError, what, ": expected a ", n, "-d tensor, got shape ",
           t.shape_string());
}

}  // namespace blendfuse
