// blendfuse benchmarks — whole models per backend:
//   fusion/infer/b1, fusion/infer/b32   DeformationFusionModule::fuse on B frames (paper scale:
//                                       V = 10857, 128×128 map, channels 32-64-128-256-256-256,
//                                       K = 64 + 64; 7.6 M parameters, 0.30 GFLOP per frame)
//   fusion/train/b32                    one optimiser step as FusionTrainer takes it: zero grads,
//                                       train_batch(speech, 16) + train_batch(expression, 16), Adam
//   wav2vec2/base/1s, wav2vec2/base/10s wav2vec2-base forward (random weights) on 1 s / 10 s of
//                                       16 kHz audio (the model is reference-only: nn/wav2vec2.hpp
//                                       is templated on T alone, so it runs as `cpu`)
// Counters: fps (frames/s; audio seconds/s for wav2vec2) and GFLOP/s of the nominal FLOPs
// (bench/op_cases.hpp: 2·MACs of convs and GEMMs; training = 3× forward).
#include "bench_common.hpp"

#include <memory>
#include <type_traits>
#include <mutex>

#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/nn/wav2vec2.hpp"
#include "blendfuse/train/adam.hpp"
#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"
#endif

using namespace blendfuse;
using bfbench::set_rates;

namespace {

nn::DfmConfig paper_config() {
  nn::DfmConfig c;
  c.apply_variant("full");
  c.map_size = bfbench::FusionScale::map_size;
  const auto ch = bfbench::FusionScale::channels();
  c.channels.assign(ch.begin(), ch.end());
  c.k_a = bfbench::FusionScale::k_a;
  c.k_e = bfbench::FusionScale::k_e;
  return c;
}

const bfbench::GridMesh& mesh() {
  static const bfbench::GridMesh m = bfbench::grid_mesh(bfbench::FusionScale::grid_rows, bfbench::FusionScale::grid_cols);
  return m;
}

template <class B>
nn::DeformationFusionModule<float, B>& fusion_model() {
  static std::unique_ptr<nn::DeformationFusionModule<float, B>> m;
  static std::once_flag once;
  std::call_once(once, [] {
    m = std::make_unique<nn::DeformationFusionModule<float, B>>(paper_config(), mesh().vertices, mesh().faces, 1);
    const Index n = count_parameters(m->parameters());
    benchmark::AddCustomContext("fusion_parameters", std::to_string(n));
  });
  return *m;
}

template <class B>
Tensor<float, B> deformations(Index frames, std::uint64_t seed) {
  Tensor<float, B> t({frames, bfbench::FusionScale::vertices, 3});
  Tensor<float> h({frames, bfbench::FusionScale::vertices, 3});
  Rng rng(seed);
  fill_normal(h, rng, 1.0);
  std::copy(h.data(), h.data() + h.numel(), t.data());
  return t;
}

template <class B>
void fusion_infer(benchmark::State& st, Index frames) {
  auto& m = fusion_model<B>();
  const auto a = deformations<B>(frames, 11), e = deformations<B>(frames, 12);
  benchmark::DoNotOptimize(m.fuse(a, e).data());  // warm-up (primitive cache, allocator)
  for (auto _ : st) benchmark::DoNotOptimize(m.fuse(a, e).data());
  set_rates(st, frames * bfbench::fusion_fuse_flops_per_frame(), static_cast<double>(frames));
}

template <class B>
void fusion_train(benchmark::State& st, Index frames) {
  auto& m = fusion_model<B>();
  const auto a = deformations<B>(frames / 2, 13), e = deformations<B>(frames / 2, 14);
  const Tensor<float, B> none;
  train::Adam<float> opt(m.parameters(), {3e-4});
  auto step = [&] {
    nn::zero_grads(m.parameters());
    m.train_batch(nn::Domain::Speech, a, none);
    m.train_batch(nn::Domain::Expression, e, none);
    opt.step();
  };
  step();
  for (auto _ : st) step();
  set_rates(st, frames * bfbench::fusion_train_flops_per_frame(), static_cast<double>(frames));
}

const nn::Wav2Vec2Model<float>& wav2vec2() {
  static std::unique_ptr<nn::Wav2Vec2Model<float>> m;
  static std::once_flag once;
  std::call_once(once, [] {
    m = std::make_unique<nn::Wav2Vec2Model<float>>(nn::Wav2Vec2Config::base());
    Rng rng(5);
    m->init(rng);
  });
  return *m;
}

void wav2vec2_forward(benchmark::State& st, Index seconds) {
  const auto& m = wav2vec2();
  const Index L = 16000 * seconds;
  Tensor<float> audio({1, L});
  Rng rng(6);
  fill_normal(audio, rng, 0.1);
  std::int64_t frames = 0;
  const double flops = bfbench::wav2vec2_base_flops(L, &frames);
  benchmark::DoNotOptimize(m.forward(audio).hidden.data());
  for (auto _ : st) benchmark::DoNotOptimize(m.forward(audio).hidden.data());
  set_rates(st, flops, static_cast<double>(seconds));
  st.counters["frames"] = static_cast<double>(frames);
}

template <class B>
void register_backend() {
  const std::string bn = B::name;
  benchmark::RegisterBenchmark(("fusion/infer/b1/" + bn).c_str(), [](benchmark::State& st) { fusion_infer<B>(st, 1); })
      ->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
  // the reference backend takes seconds per batch: one iteration per repetition there
  auto* b32 = benchmark::RegisterBenchmark(("fusion/infer/b32/" + bn).c_str(), [](benchmark::State& st) { fusion_infer<B>(st, 32); })
      ->UseRealTime()->Unit(benchmark::kMillisecond);
  auto* tr = benchmark::RegisterBenchmark(("fusion/train/b32/" + bn).c_str(), [](benchmark::State& st) { fusion_train<B>(st, 32); })
      ->UseRealTime()->Unit(benchmark::kMillisecond);
  if (std::is_same_v<B, Cpu>) {
    b32->Iterations(1);
    tr->Iterations(1);
  } else {
    b32->MinTime(2.0);
    tr->MinTime(2.0);
  }
}

void register_all() {
  register_backend<Cpu>();
#ifdef BLENDFUSE_WITH_ONEDNN
  register_backend<OneDnn>();
#endif
  benchmark::RegisterBenchmark("wav2vec2/base/1s/cpu", [](benchmark::State& st) { wav2vec2_forward(st, 1); })
      ->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark("wav2vec2/base/10s/cpu", [](benchmark::State& st) { wav2vec2_forward(st, 10); })
      ->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(1);
}

}  // namespace

BFBENCH_MAIN(register_all)
