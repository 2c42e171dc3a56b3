// blendfuse CUDA backend — the caching device-memory arena behind Tensor<T, Cuda> (memory.hpp).
#include "cuda/memory.hpp"

#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "blendfuse/backend/backend.hpp"
#include "cuda/common.hpp"

namespace blendfuse::cuda {
namespace {

class Arena {
 public:
  void* allocate(std::size_t bytes) {
    const std::size_t size = arena_rounded_size(bytes);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        stats_.bytes_cached -= size;
        ++stats_.reuses;
      }
    }
    if (!p) {
      cudaError_t e = cudaMalloc(&p, size);
      if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        release_cached();
        e = cudaMalloc(&p, size);
      }
      if (e != cudaSuccess) {
        cudaGetLastError();
        throw Error("Cuda::allocate: cudaMalloc of " + std::to_string(size) + " bytes failed: " +
                    cudaGetErrorString(e));
      }
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.device_mallocs;
    }
    BF_CUDA_CHECK(cudaMemset(p, 0, size));
    std::lock_guard<std::mutex> lock(mu_);
    live_[p] = size;
    stats_.bytes_in_use += size;
    return p;
  }

  void deallocate(void* p) noexcept {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours: ignore rather than corrupt the free lists
    const std::size_t size = it->second;
    live_.erase(it);
    stats_.bytes_in_use -= size;
    stats_.bytes_cached += size;
    free_[size].push_back(p);
  }

  void release_cached() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, ptrs] : free_) {
      for (void* p : ptrs) cudaFree(p);
      stats_.bytes_cached -= size * ptrs.size();
      ptrs.clear();
    }
  }

  ArenaStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  std::mutex mu_;
  std::map<std::size_t, std::vector<void*>> free_;
  std::unordered_map<void*, std::size_t> live_;
  ArenaStats stats_;
};

// Never destroyed: tensors held in static objects may be freed after main returns, when a
// destroyed arena (or a torn-down CUDA context) must not be touched.
Arena& arena() {
  static Arena* a = new Arena;
  return *a;
}

}  // namespace

std::size_t arena_rounded_size(std::size_t bytes) {
  const std::size_t g = bytes < (std::size_t(1) << 20) ? 512 : (std::size_t(128) << 10);
  return ((bytes == 0 ? 1 : bytes) + g - 1) / g * g;
}
ArenaStats arena_stats() { return arena().stats(); }
void arena_release_cached() { arena().release_cached(); }

}  // namespace blendfuse::cuda

namespace blendfuse {

void* Cuda::allocate(std::size_t bytes) { return cuda::arena().allocate(bytes); }
void Cuda::deallocate(void* p) noexcept { cuda::arena().deallocate(p); }
void Cuda::copy_to_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes) BF_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void Cuda::copy_from_host(void* dst, const void* src, std::size_t bytes) {
  if (bytes) BF_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void Cuda::copy(void* dst, const void* src, std::size_t bytes) {
  if (bytes) BF_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}

}  // namespace blendfuse
