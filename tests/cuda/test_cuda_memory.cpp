// Tensor<T, Cuda> storage: allocated through the caching arena (backends/cuda/memory.cpp),
// zero-filled, explicit host <-> device copies, and parameters mirrored on the device.
// Without a CUDA device the executable reports "skipped" (exit code 77) to ctest.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "blendfuse/backend/backend.hpp"
#include "blendfuse/nn/parameter.hpp"
#include "cuda/common.hpp"
#include "cuda/memory.hpp"

using namespace blendfuse;

TEST_CASE("cuda memory: tensors round-trip through device memory, zero-filled, views share it") {
  Tensor<float> h({3, 1000});
  for (Index i = 0; i < h.numel(); ++i) h[i] = static_cast<float>(i) * 0.5f - 7;
  const auto before = cuda::arena_stats();
  {
    Tensor<float, Cuda> d = h.to<Cuda>();
    CHECK(cuda::arena_stats().bytes_in_use == before.bytes_in_use + cuda::arena_rounded_size(3000 * sizeof(float)));
    const Tensor<float> back = d.to_host();
    for (Index i = 0; i < h.numel(); ++i) REQUIRE(back[i] == h[i]);
    const Tensor<float> row = d.select(1).contiguous().to_host();
    CHECK(row[0] == h(1, 0));
    const Tensor<float> z = Tensor<float, Cuda>({7, 9}).to_host();
    for (Index i = 0; i < z.numel(); ++i) REQUIRE(z[i] == 0.0f);
    CHECK(d.clone().to_host()[2999] == h[2999]);
  }
  CHECK(cuda::arena_stats().bytes_in_use == before.bytes_in_use);
}

TEST_CASE("cuda memory: a freed block is reused by the next allocation of the same size") {
  { Tensor<double, Cuda> warm({12345}); }
  const auto s0 = cuda::arena_stats();
  for (int i = 0; i < 10; ++i) Tensor<double, Cuda> t({12345});
  const auto s1 = cuda::arena_stats();
  CHECK(s1.device_mallocs == s0.device_mallocs);
  CHECK(s1.reuses == s0.reuses + 10);
  cuda::arena_release_cached();
  CHECK(cuda::arena_stats().bytes_cached == 0);
}

TEST_CASE("cuda memory: parameters are mirrored on the device and re-uploaded after touch()") {
  nn::Parameter<float> p("w", {5});
  p.value.fill(3.0f);
  CHECK(p.on<Cuda>().to_host()[4] == 3.0f);
  p.value[4] = -1.0f;
  p.touch();
  CHECK(p.on<Cuda>().to_host()[4] == -1.0f);
  CHECK(p.mirror_uploads() == 2);
}

int main(int argc, char** argv) {
  if (!cuda::available()) {
    std::printf("no CUDA device: CUDA memory tests skipped\n");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
