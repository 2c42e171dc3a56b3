// blendfuse CUDA backend — device memory for Tensor<T, Cuda>: a caching arena over cudaMalloc.
//
// Tensor<T, Cuda> allocates through Cuda::allocate / Cuda::deallocate (backend/backend.hpp),
// defined in memory.cpp. Freed blocks are kept in per-size free lists (sizes rounded up to
// 512 bytes below 1 MiB, to 128 KiB above) and reused by the next allocation of the same rounded
// size, so a steady inference loop stops calling cudaMalloc after its first step. When cudaMalloc
// runs out of memory the arena returns its cached blocks to the driver and tries once more.
#pragma once

#include <cstddef>

namespace blendfuse::cuda {

struct ArenaStats {
  std::size_t bytes_in_use = 0;   // handed out and not yet freed (rounded sizes)
  std::size_t bytes_cached = 0;   // freed, kept for reuse
  std::size_t device_mallocs = 0; // cudaMalloc calls so far
  std::size_t reuses = 0;         // allocations served from the cache
};

ArenaStats arena_stats();
/// Returns every cached (free) block to the driver.
void arena_release_cached();
/// The size the arena actually reserves for a request of `bytes`.
std::size_t arena_rounded_size(std::size_t bytes);

}  // namespace blendfuse::cuda
