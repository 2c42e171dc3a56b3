// blendfuse benchmarks — each op on each compiled host backend (reference `cpu`, `onednn`), at the
// shapes of the two models (bench/op_cases.hpp). Names: <op>/<case>/<backend>; the LibTorch peer
// (bench/peers/) registers the same names with backend `torch`.
// Counters: GFLOP/s (nominal FLOPs of the op: 2·MACs for convs and GEMMs, backward = 2× forward)
// or GB/s (bytes read + written once) for the memory-bound ops.
#include "bench_common.hpp"

#include "blendfuse/ops/conv_in_relu.hpp"
#include "blendfuse/ops/activation.hpp"
#include "blendfuse/ops/conv.hpp"
#include "blendfuse/ops/linear.hpp"
#include "blendfuse/ops/norm.hpp"
#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"
#endif

using namespace blendfuse;
using bfbench::set_bytes;
using bfbench::set_rates;

namespace {

template <class B>
Tensor<float, B> rnd(const Shape& s, std::uint64_t seed, double sd = 1.0) {
  Tensor<float, Cpu> t(s);
  Rng rng(seed);
  fill_normal(t, rng, sd);
  Tensor<float, B> out(s);
  std::copy(t.data(), t.data() + t.numel(), out.data());
  return out;
}

Shape shape_of(const std::vector<std::int64_t>& v) { return Shape(v.begin(), v.end()); }

ops::Conv2dParams conv_p(const bfbench::Conv2dCase& c) {
  ops::Conv2dParams p;
  p.stride = {c.stride, c.stride};
  p.padding = {c.pad, c.pad};
  return p;
}

template <class B>
void register_backend() {
  const std::string bn = B::name;
  for (const auto& c : bfbench::conv2d_cases()) {
    benchmark::RegisterBenchmark(("conv2d_fwd/" + c.tag + "/" + bn).c_str(), [c](benchmark::State& st) {
      const auto x = rnd<B>({c.n, c.cin, c.h, c.w}, 1), w = rnd<B>({c.cout, c.cin, c.k, c.k}, 2, 0.1);
      const auto p = conv_p(c);
      for (auto _ : st) benchmark::DoNotOptimize(ops::conv2d(x, w, nullptr, p).data());
      set_rates(st, c.flops());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("conv2d_bwd/" + c.tag + "/" + bn).c_str(), [c](benchmark::State& st) {
      const auto x = rnd<B>({c.n, c.cin, c.h, c.w}, 1), w = rnd<B>({c.cout, c.cin, c.k, c.k}, 2, 0.1);
      const auto dy = rnd<B>({c.n, c.cout, c.hout(), c.wout()}, 3);
      const auto p = conv_p(c);
      for (auto _ : st) benchmark::DoNotOptimize(ops::conv2d_backward(x, w, dy, p, false).dw.data());
      set_rates(st, 2 * c.flops());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("conv_in_relu_fwd/" + c.tag + "/" + bn).c_str(), [c](benchmark::State& st) {
      const auto x = rnd<B>({c.n, c.cin, c.h, c.w}, 1), w = rnd<B>({c.cout, c.cin, c.k, c.k}, 2, 0.1);
      const auto g = rnd<B>({c.cout}, 4), b = rnd<B>({c.cout}, 5);
      const auto p = conv_p(c);
      for (auto _ : st) benchmark::DoNotOptimize(ops::conv_in_relu(x, w, g, b, 1e-5, p).data());
      set_rates(st, c.flops());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (const auto& c : bfbench::conv1d_cases()) {
    benchmark::RegisterBenchmark(("conv1d_fwd/" + c.tag + "/" + bn).c_str(), [c](benchmark::State& st) {
      const auto x = rnd<B>({c.n, c.cin, c.l}, 1), w = rnd<B>({c.cout, c.cin, c.k}, 2, 0.1);
      ops::Conv1dParams p;
      p.stride = c.stride;
      for (auto _ : st) benchmark::DoNotOptimize(ops::conv1d(x, w, nullptr, p).data());
      set_rates(st, c.flops());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (const auto& c : bfbench::linear_cases()) {
    benchmark::RegisterBenchmark(("linear_fwd/" + c.tag + "/" + bn).c_str(), [c](benchmark::State& st) {
      const auto x = rnd<B>({c.rows, c.in}, 1), w = rnd<B>({c.out, c.in}, 2, 0.05), b = rnd<B>({c.out}, 3);
      for (auto _ : st) benchmark::DoNotOptimize(ops::linear(x, w, b).data());
      set_rates(st, c.flops());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("linear_bwd/" + c.tag + "/" + bn).c_str(), [c](benchmark::State& st) {
      const auto x = rnd<B>({c.rows, c.in}, 1), w = rnd<B>({c.out, c.in}, 2, 0.05), dy = rnd<B>({c.rows, c.out}, 3);
      for (auto _ : st) benchmark::DoNotOptimize(ops::linear_backward(x, w, dy, true).dw.data());
      set_rates(st, 2 * c.flops());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (const auto& c : bfbench::matmul_cases()) {
    benchmark::RegisterBenchmark(("matmul/" + c.tag + "/" + bn).c_str(), [c](benchmark::State& st) {
      const auto a = rnd<B>({c.batch, c.m, c.k}, 1), b = rnd<B>({c.batch, c.k, c.n}, 2);
      for (auto _ : st) benchmark::DoNotOptimize(ops::matmul(a, b).data());
      set_rates(st, c.flops());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (const auto& c : bfbench::instance_norm_cases()) {
    const Shape s = shape_of(c.shape);
    benchmark::RegisterBenchmark(("instance_norm_fwd/" + c.tag + "/" + bn).c_str(), [c, s](benchmark::State& st) {
      const auto x = rnd<B>(s, 1), g = rnd<B>({s[1]}, 2), b = rnd<B>({s[1]}, 3);
      for (auto _ : st) benchmark::DoNotOptimize(ops::instance_norm(x, g, b, 1e-5).y.data());
      set_bytes(st, 8 * c.numel());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("instance_norm_bwd/" + c.tag + "/" + bn).c_str(), [c, s](benchmark::State& st) {
      const auto x = rnd<B>(s, 1), g = rnd<B>({s[1]}, 2), b = rnd<B>({s[1]}, 3), dy = rnd<B>(s, 4);
      const auto r = ops::instance_norm(x, g, b, 1e-5);
      for (auto _ : st) benchmark::DoNotOptimize(ops::instance_norm_backward(x, g, r.mean, r.rstd, dy).dx.data());
      set_bytes(st, 12 * c.numel());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (const auto& c : bfbench::relu_cases()) {
    const Shape s = shape_of(c.shape);
    benchmark::RegisterBenchmark(("relu/" + c.tag + "/" + bn).c_str(), [c, s](benchmark::State& st) {
      const auto x = rnd<B>(s, 1);
      for (auto _ : st) benchmark::DoNotOptimize(ops::relu(x).data());
      set_bytes(st, 8 * c.numel());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (const auto& c : bfbench::layer_norm_cases()) {
    const Shape s = shape_of(c.shape);
    benchmark::RegisterBenchmark(("layer_norm_fwd/" + c.tag + "/" + bn).c_str(), [c, s](benchmark::State& st) {
      const auto x = rnd<B>(s, 1), g = rnd<B>({s.back()}, 2), b = rnd<B>({s.back()}, 3);
      for (auto _ : st) benchmark::DoNotOptimize(ops::layer_norm(x, g, b, 1e-5).y.data());
      set_bytes(st, 8 * c.numel());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("layer_norm_bwd/" + c.tag + "/" + bn).c_str(), [c, s](benchmark::State& st) {
      const auto x = rnd<B>(s, 1), g = rnd<B>({s.back()}, 2), b = rnd<B>({s.back()}, 3), dy = rnd<B>(s, 4);
      const auto r = ops::layer_norm(x, g, b, 1e-5);
      for (auto _ : st) benchmark::DoNotOptimize(ops::layer_norm_backward(x, g, r.mean, r.rstd, dy).dx.data());
      set_bytes(st, 12 * c.numel());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (const auto& c : bfbench::gelu_cases()) {
    const Shape s = shape_of(c.shape);
    benchmark::RegisterBenchmark(("gelu/" + c.tag + "/" + bn).c_str(), [c, s](benchmark::State& st) {
      const auto x = rnd<B>(s, 1);
      for (auto _ : st) benchmark::DoNotOptimize(ops::gelu(x).data());
      set_bytes(st, 8 * c.numel());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  for (const auto& c : bfbench::softmax_cases()) {
    const Shape s = shape_of(c.shape);
    benchmark::RegisterBenchmark(("softmax/" + c.tag + "/" + bn).c_str(), [c, s](benchmark::State& st) {
      const auto x = rnd<B>(s, 1);
      for (auto _ : st) benchmark::DoNotOptimize(ops::softmax(x).data());
      set_bytes(st, 8 * c.numel());
    })->UseRealTime()->Unit(benchmark::kMillisecond);
  }
}

void register_all() {
  register_backend<Cpu>();
#ifdef BLENDFUSE_WITH_ONEDNN
  register_backend<OneDnn>();
#endif
}

}  // namespace

BFBENCH_MAIN(register_all)
