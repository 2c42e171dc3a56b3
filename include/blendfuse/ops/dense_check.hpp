// blendfuse — allocation-free layout checks for the ops' inference forms (*_into, in-place ops),
// which must not allocate once warm: Tensor::is_contiguous() builds a stride vector to compare.
#pragma once

#include "blendfuse/core/tensor.hpp"

namespace blendfuse::detail {

/// Same answer as t.is_contiguous() (row-major strides exactly), without allocating.
template <class T, class B>
bool is_contiguous_noalloc(const Tensor<T, B>& t) noexcept {
  const Shape& s = t.shape();
  const Shape& st = t.strides();
  if (s.size() != st.size()) return false;
  Index acc = 1;
  for (std::size_t i = s.size(); i-- > 0;) {
    if (st[i] != acc) return false;
    acc *= s[i];
  }
  return true;
}

}  // namespace blendfuse::detail
