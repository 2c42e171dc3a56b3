// blendfuse CUDA backend — element-wise activations (forward and backward) on device pointers.
// Kernels live in activation.cu (compiled by nvcc into blendfuse_cuda); instantiated for float
// and double. All functions are asynchronous on `stream` (0 = default stream).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace blendfuse::cuda {

/// y = max(x, 0)
template <class T>
void relu_forward(const T* x, T* y, std::int64_t n, cudaStream_t stream = nullptr);
/// dx = dy · [x > 0]
template <class T>
void relu_backward(const T* x, const T* dy, T* dx, std::int64_t n, cudaStream_t stream = nullptr);
/// y = x · Φ(x) (exact erf form, as PyTorch's default GELU)
template <class T>
void gelu_forward(const T* x, T* y, std::int64_t n, cudaStream_t stream = nullptr);
/// dx = dy · (Φ(x) + x·φ(x))
template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, std::int64_t n, cudaStream_t stream = nullptr);

}  // namespace blendfuse::cuda
