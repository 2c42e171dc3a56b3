// blendfuse benchmarks — every benchmarked case of the op-case table (bench/op_cases.hpp: the
// shapes of the two models) on every compiled host backend (reference `cpu`, `onednn`), run by
// the same runners as the cross-backend op suite (bench/op_runners.hpp). Names:
// <op>_fwd|_bwd/<case>/<backend> (relu, gelu, softmax and matmul, timed forward only: <op>/<case>/
// <backend>); the LibTorch peer (bench/peers/) registers the same names with backend `torch`.
// Counters: GFLOP/s (nominal FLOPs of the op: 2·MACs for convs and GEMMs, backward = 2× forward)
// or GB/s (bytes read + written once) for the memory-bound ops.
// A backend that does not implement an op natively (backend_supports) is not timed on it.
#include "bench_common.hpp"

#include <memory>

#include "op_runners.hpp"

using namespace blendfuse;

namespace {

void set_work(benchmark::State& st, const bfbench::OpCase& c, bool backward) {
  const bfbench::Work w = bfbench::work(c, backward);
  if (w.flops > 0)
    bfbench::set_rates(st, w.flops);
  else
    bfbench::set_bytes(st, w.bytes);
}

template <class B>
void register_backend() {
  if constexpr (B::host_memory) {
    for (const bfbench::OpCase& c : bfbench::op_cases()) {
      if (c.bench == bfbench::Bench::None) continue;
      const auto kind = op_kind_from_name(c.op);
      if (!kind || !backend_supports<B>(*kind)) continue;
      benchmark::RegisterBenchmark(bfbench::bench_name(c, false, B::name).c_str(), [c](benchmark::State& st) {
        const auto run = bfops::make_run<float, B>(c);
        for (auto _ : st) run->forward();
        set_work(st, c, false);
      })->UseRealTime()->Unit(benchmark::kMillisecond);
      if (c.bench != bfbench::Bench::FwdBwd || !c.backward) continue;
      benchmark::RegisterBenchmark(bfbench::bench_name(c, true, B::name).c_str(), [c](benchmark::State& st) {
        const auto run = bfops::make_run<float, B>(c);
        run->forward();
        run->prepare_backward();
        for (auto _ : st) run->backward();
        set_work(st, c, true);
      })->UseRealTime()->Unit(benchmark::kMillisecond);
    }
  }
}

void register_all() {
  for_each_backend([]<class B>() { register_backend<B>(); });
}

}  // namespace

BFBENCH_MAIN(register_all)
