// The audio model's encoder on the oneDNN backend against the reference backend, end to end:
// Wav2Vec2Model<float, OneDnn> vs Wav2Vec2Model<float, Cpu> with the same weights — the conv
// feature extractor, the encoder's last hidden state, and every trainable parameter's gradient and
// the input gradients of backward(). Every output must be finite and within an NMSE bound
// (NMSE = Σ(a − b)² / Σb², b = reference), as in test_backend_onednn.cpp.
#include "test_util.hpp"

#ifdef BLENDFUSE_WITH_ONEDNN

#include <cmath>
#include <string>

#include "onednn/onednn.hpp"  // first: before any OneDnn instantiation (ODR)

#include <filesystem>
#include <unistd.h>

#include "audio_test_util.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/nn/wav2vec2.hpp"
#include "blendfuse/train/audio_trainer.hpp"

using namespace blendfuse;

namespace {

using CT = Tensor<float, Cpu>;
using DT = Tensor<float, OneDnn>;


void expect_match(const std::string& what, const CT& ref, const CT& got, double bound) {
  REQUIRE_MESSAGE(got.shape() == ref.shape(), what, ": shape ", got.shape_string(), " vs ", ref.shape_string());
  bool finite = true;
  for (Index i = 0; i < got.numel(); ++i) finite = finite && std::isfinite(got[i]) && std::isfinite(ref[i]);
  CHECK_MESSAGE(finite, what, ": NaN/Inf");
  double rms = 0, maxdiff = 0;
  for (Index i = 0; i < ref.numel(); ++i) {
    rms += static_cast<double>(ref[i]) * ref[i];
    maxdiff = std::max(maxdiff, std::abs(static_cast<double>(got[i]) - ref[i]));
  }
  rms = std::sqrt(rms / static_cast<double>(std::max<Index>(ref.numel(), 1)));
  if (rms < 1e-5) {  // an exactly-zero gradient in exact arithmetic (e.g. k_proj.bias): rounding noise
    CHECK_MESSAGE(maxdiff < 1e-5, what, ": reference ~0 (rms ", rms, "), max |diff| ", maxdiff);
    return;
  }
  const double e = bft::nmse(ref, got);
  CHECK_MESSAGE(e < bound, what, ": NMSE ", e, " >= ", bound);
}

nn::Wav2Vec2Config test_config() {
  nn::Wav2Vec2Config c;
  c.conv_dim = {32, 32, 32, 32};
  c.conv_kernel = {10, 3, 3, 2};
  c.conv_stride = {5, 2, 2, 2};
  c.hidden_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 96;
  c.num_conv_pos_embeddings = 8;
  c.num_conv_pos_embedding_groups = 4;
  return c;
}

template <class B>
void randomise(nn::Wav2Vec2Model<float, B>& m) {
  Rng rng(11);
  m.init(rng);
  Rng r2(12);
  for (auto* p : m.parameters())
    if (p->name.find("norm") != std::string::npos)  // non-trivial norm affines
      fill_normal(p->value, r2, 0.2, p->name.find("bias") != std::string::npos ? 0.0 : 1.0);
}

}  // namespace

TEST_CASE("onednn audio: Wav2Vec2Model<float, OneDnn> matches the reference, forward and backward") {
  for (const bool normalize : {true, false}) {
    CAPTURE(normalize);
    nn::Wav2Vec2Config cfg = test_config();
    cfg.do_normalize = normalize;
    nn::Wav2Vec2Model<float, Cpu> ref(cfg);
    nn::Wav2Vec2Model<float, OneDnn> dut(cfg);
    randomise(ref);
    randomise(dut);
    Rng rng(13);
    CT audio({2, 4000});
    fill_normal(audio, rng, 0.2);

    typename nn::Wav2Vec2Model<float, Cpu>::Context rc;
    typename nn::Wav2Vec2Model<float, OneDnn>::Context dc;
    const auto ro = ref.forward(audio, &rc);
    const auto dout = dut.forward(onednn::to_onednn(audio), &dc);
    expect_match("features", ro.features, onednn::to_cpu(dout.features), 1e-8);
    expect_match("hidden", ro.hidden, onednn::to_cpu(dout.hidden), 1e-8);

    CT dh(ro.hidden.shape());
    fill_normal(dh, rng, 1.0);
    nn::zero_grads(ref.parameters());
    nn::zero_grads(dut.parameters());
    const auto rg = ref.backward(rc, dh);
    const auto dg = dut.backward(dc, onednn::to_onednn(dh));
    expect_match("dprojected", rg.dprojected, onednn::to_cpu(dg.dprojected), 1e-8);
    expect_match("dfeatures", rg.dfeatures, onednn::to_cpu(dg.dfeatures), 1e-8);
    auto rp = ref.trainable_parameters();
    auto dp = dut.trainable_parameters();
    REQUIRE(rp.size() == dp.size());
    for (std::size_t i = 0; i < rp.size(); ++i) expect_match("grad " + rp[i]->name, rp[i]->grad, dp[i]->grad, 1e-7);
  }
}

TEST_CASE("onednn audio: AudioModel with a oneDNN encoder predicts what the reference does") {
  nn::AudioModelConfig cfg = nn::AudioModelConfig::small(30, {"A", "B"});
  cfg.w2v.conv_dim = {32, 32, 32, 32, 32, 32, 32};
  nn::AudioModel<float, Cpu> ref(cfg);
  nn::AudioModel<float, OneDnn> dut(cfg);
  ref.init();
  dut.init();
  Rng rng(21);
  auto rp = ref.parameters();
  auto dp = dut.parameters();
  REQUIRE(rp.size() == dp.size());
  for (std::size_t i = 0; i < rp.size(); ++i) {  // non-zero output map, the same weights
    const bool gain = rp[i]->name.find("norm") != std::string::npos && rp[i]->name.find("weight") != std::string::npos;
    fill_normal(rp[i]->value, rng, 0.1, gain ? 1.0 : 0.0);
    // No feedback of the output into the decoder: with random weights the autoregressive loop can
    // be chaotic and amplify rounding differences; the encoder is what differs between backends.
    if (rp[i]->name == "vertice_map.weight") rp[i]->value.zero();
    dp[i]->value.assign(rp[i]->value);
  }
  CT audio({1, 16000});
  fill_normal(audio, rng, 0.2);
  expect_match("frame_features", ref.frame_features(audio, 30), dut.frame_features(audio, 30), 1e-8);
  const CT r = ref.predict(audio, 1);
  const CT d = dut.predict(audio, 1);
  expect_match("predict", r, d, 1e-7);
  std::vector<float> a(audio.data(), audio.data() + audio.numel());
  expect_match("predict_streaming", ref.predict_streaming(a, 0), dut.predict_streaming(a, 0), 1e-7);
}

TEST_CASE("onednn audio: AudioTrainer<OneDnn> trains like the reference; its checkpoint resumes on the reference") {
  const nn::AudioModelConfig cfg = bft::tiny_audio_config(6, {"S0", "S1"});
  Rng rng(7);
  std::vector<train::AudioSample> samples;
  for (int s = 0; s < 4; ++s) {
    train::AudioSample x;
    x.name = "S" + std::to_string(s % 2) + "_seq" + std::to_string(s);
    x.subject = s % 2;
    const Index Tn = 12 + 3 * s;
    x.features = CT({1, Tn, cfg.w2v.conv_channels()});
    fill_normal(x.features, rng, 1.0f);
    x.target = CT({1, Tn, 18});
    fill_normal(x.target, rng, 1.0f);
    samples.push_back(std::move(x));
  }
  const auto dir = std::filesystem::temp_directory_path() / ("bf_onednn_audio_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto config = [&](const std::string& ckpt, int epochs) {
    train::AudioTrainConfig tc;
    tc.epochs = epochs;
    tc.batch = 2;
    tc.lr = 3e-3;
    tc.progress = false;
    tc.scheduled_sampling = 0.5;
    tc.checkpoint = (dir / ckpt).string();
    std::filesystem::remove(tc.checkpoint);
    return tc;
  };
  nn::AudioModel<float, Cpu> ref(cfg);
  nn::AudioModel<float, OneDnn> dut(cfg);
  ref.init();
  dut.init();
  train::AudioTrainer<Cpu> tr(ref, config("ref.ckpt", 2));
  train::AudioTrainer<OneDnn> td(dut, config("dut.ckpt", 1));
  const auto sr = tr.fit(samples, {});
  const auto sd = td.fit(samples, {});
  REQUIRE(sr.size() == 2u);
  REQUIRE(sd.size() == 1u);
  CHECK(std::abs(sd[0].train_mse - sr[0].train_mse) <= 1e-4 * sr[0].train_mse);  // epoch 1 on both backends
  // The oneDNN run's checkpoint (host tensors) resumes on the reference backend for epoch 2.
  nn::AudioModel<float, Cpu> resumed(cfg);
  resumed.init();
  auto tc = config("unused.ckpt", 2);
  tc.checkpoint = (dir / "dut.ckpt").string();
  tc.resume = true;
  train::AudioTrainer<Cpu> tres(resumed, tc);
  const auto s2 = tres.fit(samples, {});
  REQUIRE(s2.size() == 1u);
  CHECK(tres.epochs_done() == 2);
  CHECK(std::abs(s2[0].train_mse - sr[1].train_mse) <= 1e-3 * sr[1].train_mse);
  auto pr = ref.trainable_parameters(), pd = resumed.trainable_parameters();
  REQUIRE(pr.size() == pd.size());
  for (std::size_t i = 0; i < pr.size(); ++i) expect_match("trained " + pr[i]->name, pr[i]->value, pd[i]->value, 1e-6);
  std::filesystem::remove_all(dir);
}

#else  // !BLENDFUSE_WITH_ONEDNN

TEST_CASE("onednn audio backend") { MESSAGE("oneDNN not built"); }

#endif
