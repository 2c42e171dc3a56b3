// blendfuse CUDA backend — element-wise activation kernels (grid-stride loops).
#include "cuda/activation.hpp"
#include "cuda/common.hpp"

namespace blendfuse::cuda {
namespace {

constexpr int kThreads = 256;

inline int blocks_for(std::int64_t n) {
  const std::int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

template <class T>
__global__ void relu_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    y[i] = x[i] > T(0) ? x[i] : T(0);
}

template <class T>
__global__ void relu_bwd_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                T* __restrict__ dx, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    dx[i] = x[i] > T(0) ? dy[i] : T(0);
}

template <class T>
__global__ void gelu_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const T v = x[i];
    y[i] = T(0.5) * v * (T(1) + erf(v * T(0.70710678118654752440)));
  }
}

template <class T>
__global__ void gelu_bwd_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                T* __restrict__ dx, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const T v = x[i];
    const T cdf = T(0.5) * (T(1) + erf(v * T(0.70710678118654752440)));
    const T pdf = T(0.39894228040143267794) * exp(T(-0.5) * v * v);
    dx[i] = dy[i] * (cdf + v * pdf);
  }
}

}  // namespace

template <class T>
void relu_forward(const T* x, T* y, std::int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  relu_fwd_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(x, y, n);
  BF_CUDA_CHECK(cudaGetLastError());
}
template <class T>
void relu_backward(const T* x, const T* dy, T* dx, std::int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  relu_bwd_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(x, dy, dx, n);
  BF_CUDA_CHECK(cudaGetLastError());
}
template <class T>
void gelu_forward(const T* x, T* y, std::int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  gelu_fwd_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(x, y, n);
  BF_CUDA_CHECK(cudaGetLastError());
}
template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, std::int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  gelu_bwd_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(x, dy, dx, n);
  BF_CUDA_CHECK(cudaGetLastError());
}

#define BF_INSTANTIATE(T)                                                              \
  template void relu_forward<T>(const T*, T*, std::int64_t, cudaStream_t);             \
  template void relu_backward<T>(const T*, const T*, T*, std::int64_t, cudaStream_t);  \
  template void gelu_forward<T>(const T*, T*, std::int64_t, cudaStream_t);             \
  template void gelu_backward<T>(const T*, const T*, T*, std::int64_t, cudaStream_t);
BF_INSTANTIATE(float)
BF_INSTANTIATE(double)
#undef BF_INSTANTIATE

}  // namespace blendfuse::cuda
