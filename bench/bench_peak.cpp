// blendfuse benchmarks — the machine's measured FP32 peak: an FMA loop with enough independent
// accumulators to cover the FMA latency (12 × 8-wide AVX2 vectors, or 16-wide with AVX-512), run on
// 1 and 2 threads (OpenMP, one loop per thread). Every other figure in docs/performance.md is
// also given as a fraction of this number.
#include "bench_common.hpp"

#include <immintrin.h>

namespace {

#if defined(__AVX512F__)
using V = __m512;
constexpr int kWidth = 16;
inline V vset(float x) { return _mm512_set1_ps(x); }
inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
inline float vsum(V a) { return _mm512_reduce_add_ps(a); }
#elif defined(__AVX2__) && defined(__FMA__)
using V = __m256;
constexpr int kWidth = 8;
inline V vset(float x) { return _mm256_set1_ps(x); }
inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
inline float vsum(V a) {
  alignas(32) float t[8];
  _mm256_store_ps(t, a);
  float s = 0;
  for (float v : t) s += v;
  return s;
}
#else
#error "bench_peak needs AVX2+FMA (build with -march=native on an x86-64 with FMA)"
#endif

constexpr int kAcc = 12;
constexpr long kInner = 1 << 20;

/// kInner × kAcc FMAs of kWidth lanes; returns a sum so nothing is optimised away.
float fma_loop(float seed) {
  V acc[kAcc];
  for (int i = 0; i < kAcc; ++i) acc[i] = vset(seed + static_cast<float>(i));
  const V a = vset(0.999999f), b = vset(1e-7f);
  for (long n = 0; n < kInner; ++n) {
#pragma GCC unroll 12
    for (int i = 0; i < kAcc; ++i) acc[i] = vfma(acc[i], a, b);
  }
  V s = acc[0];
  for (int i = 1; i < kAcc; ++i) s = vadd(s, acc[i]);
  return vsum(s);
}

void peak(benchmark::State& st) {
  const int threads = static_cast<int>(st.range(0));
  float sink = 0;
  for (auto _ : st) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += fma_loop(1.0f);
  }
  benchmark::DoNotOptimize(sink);
  const double flops = 2.0 * kWidth * kAcc * static_cast<double>(kInner) * threads;
  bfbench::set_rates(st, flops);
  st.counters["threads"] = threads;
}

void register_all() {
  benchmark::RegisterBenchmark("peak/fma_fp32", peak)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace

BFBENCH_MAIN(register_all)
