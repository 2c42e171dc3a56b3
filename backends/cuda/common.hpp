// blendfuse CUDA backend — host-side helpers shared by every kernel family: error checks that
// throw blendfuse::Error with the failing call and location, device discovery, and an RAII
// device buffer. Compiled by g++ or nvcc; needs only the CUDA runtime headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <vector>

#include "blendfuse/core/error.hpp"

#define BF_CUDA_CHECK(call)                                                                  \
  do {                                                                                       \
    const cudaError_t bf_err_ = (call);                                                      \
    if (bf_err_ != cudaSuccess)                                                              \
      throw ::blendfuse::Error(std::string("CUDA error in ") + #call + " at " + __FILE__ + ":" + \
                               std::to_string(__LINE__) + ": " + cudaGetErrorString(bf_err_)); \
  } while (0)

namespace blendfuse::cuda {

/// Number of usable CUDA devices; 0 (never an exception) when there is no driver or no GPU, so
/// callers and tests can skip cleanly on machines without one.
inline int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  return n;
}

inline bool available() noexcept { return device_count() > 0; }

/// Owning device allocation of `n` elements of T.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n_) BF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n_ * sizeof(T)));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), n_(o.n_) { o.ptr_ = nullptr; o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) { release(); ptr_ = o.ptr_; n_ = o.n_; o.ptr_ = nullptr; o.n_ = 0; }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  T* get() noexcept { return ptr_; }
  const T* get() const noexcept { return ptr_; }
  std::size_t size() const noexcept { return n_; }

  void upload(const T* host, std::size_t n) {
    BF_CHECK(n <= n_, ArgumentError, "DeviceBuffer::upload: ", n, " elements into ", n_);
    BF_CUDA_CHECK(cudaMemcpy(ptr_, host, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> out(n_);
    if (n_) BF_CUDA_CHECK(cudaMemcpy(out.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  void release() noexcept {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
  }
  T* ptr_ = nullptr;
  std::size_t n_ = 0;
};

}  // namespace blendfuse::cuda
