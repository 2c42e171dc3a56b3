// blendfuse benchmarks — whole models per backend:
//   fusion/infer/b1, fusion/infer/b32   DeformationFusionModule::fuse on B frames, "frozen" =
//                                       cache_derived_weights() (paper scale:
//                                       V = 10857, 128×128 map, channels 32-64-128-256-256-256,
//                                       K = 64 + 64; 7.6 M parameters, 0.30 GFLOP per frame);
//                                       fusion/infer_unfrozen/b1: the same, not frozen (weights
//                                       re-derived every call, as during training)
//   fusion/train/b32                    one optimiser step as FusionTrainer takes it: zero grads,
//                                       train_batch(speech, 16) + train_batch(expression, 16), Adam
//   wav2vec2/base/1s, wav2vec2/base/10s wav2vec2-base forward (random weights) on 1 s / 10 s of
//                                       16 kHz audio, Wav2Vec2Model<float, B> per backend
//   faceformer/step/at:N/window:W       the FaceFormer decoder's streaming step (VOCASET sizes:
//                                       V = 5023, audio_dim 768, d 64) on 100 frames starting at
//                                       frame N of a sequence, attention window W (0 = unbounded):
//                                       per-frame cost over sequence length
//   pipeline/<audio>/10s/<backend>      the full pipeline on 10 s of audio (300 frames at 30 fps):
//                                       AudioModel::predict (wav2vec 2.0 encoder on the backend +
//                                       FaceFormer decoder, V = 10857) then the paper-scale fusion
//                                       module fusing every frame with an expression frame, in
//                                       batches of 32; <audio> = small (AudioModelConfig::small,
//                                       as shipped) or base (wav2vec2-base encoder, FaceFormer's)
//   audio/stream/Ns                     the small audio model (AudioModelConfig::small, V = 5023)
//                                       streaming N seconds of audio end to end (encoder windows +
//                                       decoder): fps must not fall with N
// Counters: fps (frames/s; audio seconds/s for wav2vec2) and GFLOP/s of the nominal FLOPs
// (bench/op_cases.hpp: 2·MACs of convs and GEMMs; training = 3× forward).
#include "bench_common.hpp"

#include <memory>
#include <type_traits>
#include <mutex>

#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/nn/faceformer.hpp"
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
void fusion_infer(benchmark::State& st, Index frames, bool frozen = true) {
  auto& m = fusion_model<B>();
  m.cache_derived_weights(frozen);  // "frozen": inference deployment (cached blocked weights and column norms)
  const auto a = deformations<B>(frames, 11), e = deformations<B>(frames, 12);
  benchmark::DoNotOptimize(m.fuse(a, e).data());  // warm-up (primitive cache, allocator)
  for (auto _ : st) benchmark::DoNotOptimize(m.fuse(a, e).data());
  set_rates(st, frames * bfbench::fusion_fuse_flops_per_frame(), static_cast<double>(frames));
}

template <class B>
void fusion_train(benchmark::State& st, Index frames) {
  auto& m = fusion_model<B>();
  m.cache_derived_weights(false);
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

template <class B>
const nn::Wav2Vec2Model<float, B>& wav2vec2() {
  static std::unique_ptr<nn::Wav2Vec2Model<float, B>> m;
  static std::once_flag once;
  std::call_once(once, [] {
    m = std::make_unique<nn::Wav2Vec2Model<float, B>>(nn::Wav2Vec2Config::base());
    Rng rng(5);
    m->init(rng);
  });
  return *m;
}

template <class B>
void wav2vec2_forward(benchmark::State& st, Index seconds) {
  const auto& m = wav2vec2<B>();
  const Index L = 16000 * seconds;
  Tensor<float, B> audio({1, L});
  Rng rng(6);
  fill_normal(audio, rng, 0.1);
  std::int64_t frames = 0;
  const double flops = bfbench::wav2vec2_base_flops(L, &frames);
  benchmark::DoNotOptimize(m.forward(audio).hidden.data());
  for (auto _ : st) benchmark::DoNotOptimize(m.forward(audio).hidden.data());
  set_rates(st, flops, static_cast<double>(seconds));
  st.counters["frames"] = static_cast<double>(frames);
}

// ---- decoder step cost over sequence length -----------------------------------------------------

void faceformer_step(benchmark::State& st, Index at, Index window) {
  nn::FaceFormerConfig c;  // VOCASET FaceFormer: V = 5023, d = 64, 4 heads, FFN 128, audio 768
  c.attention_window = window;
  nn::FaceFormer<float> m(c);
  Rng rng(7);
  for (auto* p : m.parameters()) fill_normal(p->value, rng, 0.02);
  const Index block = 100;
  Tensor<float> audio({block, c.audio_dim});
  fill_normal(audio, rng, 1.0);
  std::vector<float> out(static_cast<std::size_t>(c.vertex_dim()));
  auto base = m.stream();
  base.reserve(at + block);
  base.start(Index(0));
  for (Index t = 0; t < at; ++t) base.step(audio.data() + (t % block) * c.audio_dim, out.data());
  for (auto _ : st) {
    st.PauseTiming();
    auto s = base;  // the same state at frame `at` for every iteration
    st.ResumeTiming();
    for (Index t = 0; t < block; ++t) s.step(audio.data() + t * c.audio_dim, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["fps"] = benchmark::Counter(static_cast<double>(block), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["us_per_frame"] = benchmark::Counter(static_cast<double>(block) / 1e6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

const nn::AudioModel<float>& small_audio_model() {
  static std::unique_ptr<nn::AudioModel<float>> m;
  static std::once_flag once;
  std::call_once(once, [] {
    auto cfg = nn::AudioModelConfig::small(5023, {"A", "B"});
    m = std::make_unique<nn::AudioModel<float>>(cfg);
    m->init();
  });
  return *m;
}

void audio_stream(benchmark::State& st, Index seconds) {
  const auto& m = small_audio_model();
  std::vector<float> audio(static_cast<std::size_t>(16000 * seconds));
  Rng rng(8);
  for (auto& x : audio) x = static_cast<float>(0.1 * rng.normal());
  Index frames = 0;
  for (auto _ : st) {
    const Tensor<float> y = m.predict_streaming(audio, 0);
    frames = y.dim(0);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["fps"] = benchmark::Counter(static_cast<double>(frames), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["frames"] = static_cast<double>(frames);
}

template <class B>
const nn::AudioModel<float, B>& pipeline_audio_model(bool base) {
  static std::unique_ptr<nn::AudioModel<float, B>> m[2];
  static std::once_flag once[2];
  std::call_once(once[base ? 1 : 0], [base] {
    auto cfg = nn::AudioModelConfig::small(bfbench::FusionScale::vertices, {"A", "B"});
    if (base) {
      cfg.w2v = nn::Wav2Vec2Config::base();
      cfg.decoder.audio_dim = cfg.w2v.hidden_size;
    }
    auto& p = m[base ? 1 : 0];
    p = std::make_unique<nn::AudioModel<float, B>>(cfg);
    p->init();
  });
  return *m[base ? 1 : 0];
}

template <class B>
void pipeline(benchmark::State& st, bool base) {
  const auto& am = pipeline_audio_model<B>(base);
  auto& fm = fusion_model<B>();
  fm.cache_derived_weights(true);
  const Index seconds = 10, L = 16000 * seconds;
  Tensor<float> audio({1, L});
  Rng rng(9);
  fill_normal(audio, rng, 0.1);
  const Index frames = am.frames_for(L), chunk = 32;
  const auto expression = deformations<B>(frames, 15);
  Index done = 0;
  auto run = [&] {
    const Tensor<float> speech = am.predict(audio, 0);  // (T, V, 3)
    done = 0;
    for (Index t0 = 0; t0 < frames; t0 += chunk) {
      const Index n = std::min(chunk, frames - t0);
      const auto sp = nn::detail::host_view<B>(speech).slice(0, t0, t0 + n);
      const auto ex = expression.slice(0, t0, t0 + n);
      benchmark::DoNotOptimize(fm.fuse(sp, ex).data());
      done += n;
    }
  };
  run();
  for (auto _ : st) run();
  st.counters["fps"] = benchmark::Counter(static_cast<double>(done), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["frames"] = static_cast<double>(done);
}

template <class B>
void register_backend() {
  const std::string bn = B::name;
  benchmark::RegisterBenchmark(("fusion/infer/b1/" + bn).c_str(), [](benchmark::State& st) { fusion_infer<B>(st, 1); })
      ->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
  benchmark::RegisterBenchmark(("fusion/infer_unfrozen/b1/" + bn).c_str(), [](benchmark::State& st) { fusion_infer<B>(st, 1, false); })
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
  for (const bool base : {false, true})
    benchmark::RegisterBenchmark(("pipeline/" + std::string(base ? "base" : "small") + "/10s/" + bn).c_str(),
                                 [base](benchmark::State& st) { pipeline<B>(st, base); })
        ->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(std::is_same_v<B, Cpu> ? 1 : 2);
  benchmark::RegisterBenchmark(("wav2vec2/base/1s/" + bn).c_str(), [](benchmark::State& st) { wav2vec2_forward<B>(st, 1); })
      ->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RegisterBenchmark(("wav2vec2/base/10s/" + bn).c_str(), [](benchmark::State& st) { wav2vec2_forward<B>(st, 10); })
      ->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(std::is_same_v<B, Cpu> ? 1 : 3);
}

void register_all() {
  register_backend<Cpu>();
#ifdef BLENDFUSE_WITH_ONEDNN
  register_backend<OneDnn>();
#endif
  for (const Index w : {Index(600), Index(0)})
    for (const Index at : {Index(0), Index(600), Index(3000), Index(18000)})
      benchmark::RegisterBenchmark(("faceformer/step/at:" + std::to_string(at) + "/window:" + std::to_string(w)).c_str(),
                                   [at, w](benchmark::State& st) { faceformer_step(st, at, w); })
          ->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(0.5);
  for (const Index sec : {Index(10), Index(60)})
    benchmark::RegisterBenchmark(("audio/stream/" + std::to_string(sec) + "s").c_str(),
                                 [sec](benchmark::State& st) { audio_stream(st, sec); })
        ->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(1.0);
}

}  // namespace

BFBENCH_MAIN(register_all)
