// blendfuse — backend tags and the runtime list of compiled-in backends.
//
// Dispatch is compile-time: every op family defines a class template `XxxOp<Backend>` whose
// primary template is the portable reference implementation (valid for any host-memory backend);
// an accelerated backend specialises `XxxOp<OneDnn>` / `XxxOp<Cuda>` the way Eigen specialises
// TensorExecutor per device. A backend that lacks a specialisation for some op therefore falls
// back to the reference on host memory. Free functions `ops::xxx(tensor, ...)` deduce the backend
// from the tensor type.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "blendfuse/core/tensor.hpp"

namespace blendfuse {

/// oneDNN CPU backend (host memory; specialisations live in backends/onednn/).
struct OneDnn : HostMemory {
  static constexpr const char* name = "onednn";
};

/// Hand-written CUDA kernels (device memory; backends/cuda/). Its memory functions are defined
/// in the blendfuse_cuda library (backends/cuda/memory.cu: a caching arena over cudaMalloc), so
/// a program that creates Tensor<T, Cuda> links blendfuse::cuda.
struct Cuda {
  static constexpr const char* name = "cuda";
  static constexpr bool host_memory = false;
  static void* allocate(std::size_t bytes);                                // zero-filled
  static void deallocate(void* p) noexcept;                                // back to the arena
  static void copy_to_host(void* dst, const void* src, std::size_t bytes);  // synchronous
  static void copy_from_host(void* dst, const void* src, std::size_t bytes);
  static void copy(void* dst, const void* src, std::size_t bytes);
};

/// Names of the backends compiled into this build, reference first (ggml-style registry used by
/// tests and benchmarks to loop over all of them).
inline std::vector<std::string> compiled_backends() {
  std::vector<std::string> out{Cpu::name};
#ifdef BLENDFUSE_WITH_ONEDNN
  out.emplace_back(OneDnn::name);
#endif
#ifdef BLENDFUSE_WITH_CUDA
  out.emplace_back(Cuda::name);
#endif
  return out;
}

}  // namespace blendfuse
