// blendfuse benchmarks — shared setup: thread count, counters, the paper-scale fusion mesh.
#pragma once

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "blendfuse/core/tensor.hpp"
#include "op_cases.hpp"

namespace bfbench {

/// Threads for every parallel region (oneDNN and Eigen run on OpenMP): OMP_NUM_THREADS, as the
/// peer's torch::set_num_threads. Recorded in the JSON context.
inline int threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline void add_context() {
  benchmark::AddCustomContext("omp_threads", std::to_string(threads()));
  benchmark::AddCustomContext("implementation", "blendfuse");
  const char* g = std::getenv("GLIBC_TUNABLES");
  benchmark::AddCustomContext("glibc_tunables", g ? g : "");
}

/// GFLOP/s and frames/s counters (per iteration amounts, reported as rates over real time).
inline void set_rates(benchmark::State& st, double flops_per_iter, double frames_per_iter = 0) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (frames_per_iter > 0)
    st.counters["fps"] = benchmark::Counter(frames_per_iter, benchmark::Counter::kIsIterationInvariantRate);
}
inline void set_bytes(benchmark::State& st, double bytes_per_iter) {
  st.counters["GB/s"] = benchmark::Counter(bytes_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

/// The benchmark face stand-in: a rows × cols vertex grid over an oval with a bump (a disk-like
/// open surface, so the geometry map parameterises it like a face), 141 × 77 = 10857 vertices.
struct GridMesh {
  blendfuse::Tensor<float> vertices;
  blendfuse::Tensor<std::int32_t> faces;
};
inline GridMesh grid_mesh(std::int64_t rows, std::int64_t cols) {
  using blendfuse::Index;
  GridMesh g{blendfuse::Tensor<float>({rows * cols, 3}),
             blendfuse::Tensor<std::int32_t>({2 * (rows - 1) * (cols - 1), 3})};
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j) {
      const float x = -1.0f + 2.0f * j / (cols - 1), y = -1.0f + 2.0f * i / (rows - 1);
      g.vertices(i * cols + j, 0) = x * 70;
      g.vertices(i * cols + j, 1) = y * 90;
      g.vertices(i * cols + j, 2) = 20 * std::exp(-(x * x + y * y));
    }
  Index f = 0;
  for (Index i = 0; i + 1 < rows; ++i)
    for (Index j = 0; j + 1 < cols; ++j) {
      const auto a = static_cast<std::int32_t>(i * cols + j), b = a + 1, c = static_cast<std::int32_t>(a + cols), d = c + 1;
      g.faces(f, 0) = a; g.faces(f, 1) = b; g.faces(f, 2) = d; ++f;
      g.faces(f, 0) = a; g.faces(f, 1) = d; g.faces(f, 2) = c; ++f;
    }
  return g;
}

}  // namespace bfbench

/// main() of our benchmark programs: `register_all()` registers the (dynamic) benchmarks.
#define BFBENCH_MAIN(register_all)                                        \
  int main(int argc, char** argv) {                                       \
    ::benchmark::Initialize(&argc, argv);                                 \
    if (::benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;   \
    bfbench::add_context();                                               \
    register_all();                                                       \
    ::benchmark::RunSpecifiedBenchmarks();                                \
    ::benchmark::Shutdown();                                              \
    return 0;                                                             \
  }
