// The audio model (nn/audio_model.hpp) and its trainer: end-to-end gradient check through the
// FaceFormer decoder and the wav2vec 2.0 transformer, a short training run whose loss falls,
// streaming == offline-windowed for any chunking with the stated latency, 2000+ frame generation,
// file round trip and load errors.
#include "test_util.hpp"
#include "audio_test_util.hpp"

#include <cmath>
#include <filesystem>
#include <string>

#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/train/audio_trainer.hpp"

using namespace blendfuse;
using nn::AudioModel;
using nn::AudioModelConfig;

namespace {

std::filesystem::path temp_dir() {
  const auto dir = std::filesystem::temp_directory_path() / "blendfuse_tests_audio_model";
  std::filesystem::create_directories(dir);
  return dir;
}

/// A tiny config: 2 conv layers (total stride 320 → 50 Hz), E = 8, one layer, 4 vertices.
AudioModelConfig tiny_config(Index n_subjects = 2) {
  std::vector<std::string> subjects;
  for (Index i = 0; i < n_subjects; ++i) subjects.push_back("S" + std::to_string(i));
  AudioModelConfig c = bft::tiny_audio_config(4, subjects);
  c.stream_left_context = 0.5;
  c.stream_block = 3;
  c.stream_lookahead = 0.1;
  return c;
}

/// A speech-like test signal: tones whose pitch changes every 0.15 s.
std::vector<float> test_audio(Index samples, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> a(static_cast<std::size_t>(samples));
  double f = 200, phase = 0;
  for (Index i = 0; i < samples; ++i) {
    if (i % 2400 == 0) f = rng.uniform(120, 900);
    phase += 2 * M_PI * f / 16000.0;
    a[static_cast<std::size_t>(i)] = static_cast<float>(0.3 * std::sin(phase) + 0.01 * rng.normal());
  }
  return a;
}

template <class T>
Tensor<T> to_tensor(const std::vector<float>& a) {
  Tensor<T> t({1, static_cast<Index>(a.size())});
  for (std::size_t i = 0; i < a.size(); ++i) t[static_cast<Index>(i)] = static_cast<T>(a[i]);
  return t;
}

}  // namespace

TEST_CASE("audio model: end-to-end gradient through decoder and wav2vec2 transformer (double)") {
  AudioModel<double> m(tiny_config());
  m.init();
  const Index Tn = 7, V3 = 12;
  const Tensor<double> feats = m.frame_features(to_tensor<double>(test_audio(4000, 3)), Tn);
  Rng rng(5);
  Tensor<double> inputs({1, Tn, V3}), R({1, Tn, V3});
  fill_uniform(inputs, rng, -1.0, 1.0);
  fill_uniform(R, rng, -1.0, 1.0);
  // vertice_map_r starts at zero (FaceFormer); give it values so that every path carries gradient.
  for (auto* p : m.trainable_parameters())
    if (p->name.find("vertice_map_r") != std::string::npos) fill_uniform(p->value, rng, -0.5, 0.5);
  auto loss = [&] {
    const Tensor<double> o = m.forward(feats, inputs, 1, nullptr);
    double s = 0;
    for (Index i = 0; i < o.numel(); ++i) s += o[i] * R[i];
    return s;
  };
  nn::zero_grads(m.trainable_parameters());
  AudioModel<double>::Context ctx;
  m.forward(feats, inputs, 1, &ctx);
  m.backward(ctx, R);
  Index checked = 0, encoder_checked = 0;
  for (auto* p : m.trainable_parameters()) {
    const Index n = p->value.numel();
    for (Index k = 0; k < std::min<Index>(n, 3); ++k) {
      const Index i = (k * 7919) % n;
      const double x0 = p->value[i], h = 1e-5;
      p->value[i] = x0 + h;
      const double lp = loss();
      p->value[i] = x0 - h;
      const double lm = loss();
      p->value[i] = x0;
      const double num = (lp - lm) / (2 * h), ana = p->grad[i];
      INFO(p->name << "[" << i << "] numeric " << num << " analytic " << ana);
      CHECK(std::abs(num - ana) <= 1e-6 + 1e-4 * std::abs(num));
      ++checked;
      if (p->name.rfind("audio_encoder.", 0) == 0 && std::abs(ana) > 1e-8) ++encoder_checked;
    }
  }
  CHECK(checked > 50);
  CHECK(encoder_checked > 20);  // gradients really reach the wav2vec2 transformer
}

TEST_CASE("audio model: a short training run lowers the loss") {
  AudioModelConfig cfg = tiny_config(1);
  AudioModel<float> m(cfg);
  m.init();
  // Target: a deformation that follows the tone's pitch (learnable from the audio alone).
  std::vector<train::AudioSample> samples;
  for (int s = 0; s < 4; ++s) {
    const auto a = test_audio(16000, 100 + static_cast<std::uint64_t>(s));
    train::AudioSample x;
    x.name = "seq" + std::to_string(s);
    x.subject = 0;
    const Index Tn = m.frames_for(static_cast<Index>(a.size()));
    x.features = m.frame_features(to_tensor<float>(a), Tn);
    x.target = Tensor<float>({1, Tn, 12});
    for (Index t = 0; t < Tn; ++t) {
      const Index c = std::min<Index>(static_cast<Index>(a.size()) - 1, t * 16000 / 30);
      Index zc = 0;  // zero crossings in the frame ~ pitch
      for (Index i = std::max<Index>(1, c - 266); i < std::min<Index>(static_cast<Index>(a.size()), c + 266); ++i)
        zc += (a[static_cast<std::size_t>(i - 1)] < 0) != (a[static_cast<std::size_t>(i)] < 0);
      for (Index k = 0; k < 12; ++k) x.target[t * 12 + k] = static_cast<float>((k % 3 == 1 ? 1.0 : 0.3) * zc / 10.0);
    }
    samples.push_back(std::move(x));
  }
  train::AudioTrainConfig tc;
  tc.epochs = 25;
  tc.batch = 2;
  tc.lr = 3e-3;
  tc.progress = false;
  tc.scheduled_sampling = 0.3;
  train::AudioTrainer tr(m, tc);
  const double before = tr.validate(samples);
  const auto stats = tr.fit(samples, samples);
  REQUIRE(stats.size() == 25u);
  const double after = tr.validate(samples);
  MESSAGE("autoregressive MSE " << before << " → " << after);
  CHECK(after < 0.5 * before);
  CHECK(stats.back().train_mse < stats.front().train_mse);
}

TEST_CASE("audio model: streaming output equals the offline windowed output for any chunking") {
  AudioModel<float> m(tiny_config());
  Rng rng(11);
  m.init();
  for (auto* p : m.trainable_parameters())
    if (p->name.find("vertice_map_r") != std::string::npos) fill_uniform(p->value, rng, -0.5, 0.5);
  const auto audio = test_audio(16000 * 3 + 123, 9);
  const Tensor<float> ref = m.predict_streaming(audio, 1);
  REQUIRE(ref.dim(0) == m.frames_for(static_cast<Index>(audio.size())));
  for (std::uint64_t trial = 0; trial < 3; ++trial) {
    auto st = m.stream(1);
    const double latency = st.latency_seconds();
    CHECK(latency <= 3.0 / 30 + 0.1 + 0.03 + 1e-9);
    Rng cr(trial);
    std::size_t pos = 0;
    std::vector<float> frame(12);
    Index got = 0;
    while (pos < audio.size()) {
      const std::size_t n = std::min(audio.size() - pos, static_cast<std::size_t>(1 + cr.below(trial == 0 ? 40 : 3000)));
      st.push(audio.data() + pos, n);
      pos += n;
      // Bounded latency: every frame whose time is at least `latency` in the past is out.
      const double now = static_cast<double>(pos) / 16000.0;
      CHECK(st.produced() >= static_cast<Index>(std::floor((now - latency) * 30.0)));
      while (st.pop(frame.data())) {
        REQUIRE(got < ref.dim(0));
        for (Index k = 0; k < 12; ++k) REQUIRE(frame[static_cast<std::size_t>(k)] == ref[got * 12 + k]);
        ++got;
      }
    }
    st.finish();
    while (st.pop(frame.data())) {
      for (Index k = 0; k < 12; ++k) REQUIRE(frame[static_cast<std::size_t>(k)] == ref[got * 12 + k]);
      ++got;
    }
    CHECK(got == ref.dim(0));
  }
  // The windowed stream is close to (not identical with) the whole-clip offline prediction.
  const Tensor<float> off = m.predict(Tensor<float>::from({static_cast<Index>(audio.size())}, audio), 1);
  REQUIRE(off.shape() == ref.shape());
  double diff = 0, mag = 0;
  for (Index i = 0; i < off.numel(); ++i) {
    diff += std::abs(off[i] - ref[i]);
    mag += std::abs(off[i]);
  }
  MESSAGE("streaming vs whole-clip offline: mean |diff| / mean |out| = " << diff / mag);
  CHECK(std::isfinite(diff));
}

TEST_CASE("audio model: 2000+ frame generation (no 600-frame cap), offline and streaming") {
  AudioModel<float> m(tiny_config());
  m.init();
  Rng rng(2);
  for (auto* p : m.trainable_parameters())
    if (p->name.find("vertice_map_r") != std::string::npos) fill_uniform(p->value, rng, -0.5, 0.5);
  const Index samples = 2050 * 16000 / 30;
  const auto audio = test_audio(samples, 4);
  const Tensor<float> off = m.predict(Tensor<float>::from({samples}, audio), 0);
  CHECK(off.dim(0) == m.frames_for(samples));
  CHECK(off.dim(0) >= 2000);
  const Tensor<float> str = m.predict_streaming(audio, 0);
  CHECK(str.dim(0) == off.dim(0));
  bool finite = true;
  for (Index i = 0; i < str.numel(); ++i) finite = finite && std::isfinite(str[i]) && std::isfinite(off[i]);
  CHECK(finite);
}

TEST_CASE("audio model: save/load round trip, templates, and clear load errors") {
  AudioModel<float> m(tiny_config());
  m.init();
  m.templates()["S0"] = Tensor<float>::full({4, 3}, 1.5f);
  const auto path = (temp_dir() / "tiny_audio.safetensors").string();
  m.save(path);
  const AudioModel<float> r = AudioModel<float>::load(path);
  CHECK(r.config().to_json() == m.config().to_json());
  REQUIRE(r.templates().count("S0") == 1);
  CHECK(r.templates().at("S0")[5] == 1.5f);
  const auto audio = test_audio(9000, 1);
  const Tensor<float> a = m.predict(Tensor<float>::from({9000}, audio), 1);
  const Tensor<float> b = r.predict(Tensor<float>::from({9000}, audio), 1);
  for (Index i = 0; i < a.numel(); ++i) REQUIRE(a[i] == b[i]);

  CHECK(r.subject_index("S1") == 1);
  try {
    (void)r.subject_index("nobody");
    FAIL("no error for an unknown subject");
  } catch (const ArgumentError& e) {
    CHECK(std::string(e.what()).find("unknown subject 'nobody'") != std::string::npos);
    CHECK(std::string(e.what()).find("S0, S1") != std::string::npos);
  }
  const auto missing = (temp_dir() / "missing.safetensors").string();
  std::filesystem::remove(missing);
  CHECK_THROWS_WITH_AS(AudioModel<float>::load(missing), doctest::Contains("missing.safetensors"), IoError);
  // A wav2vec2-only file is not an audio model.
  const auto w2v_path = (temp_dir() / "w2v_only.safetensors").string();
  m.encoder().save(w2v_path);
  CHECK_THROWS_WITH_AS(AudioModel<float>::load(w2v_path), doctest::Contains("w2v_only.safetensors: not a blendfuse audio model"), IoError);
  // Truncated file.
  const auto bytes = io::read_file_bytes(path);
  const auto trunc = (temp_dir() / "trunc.safetensors").string();
  io::write_file_atomic(trunc, [&](std::ostream& os) { os.write(reinterpret_cast<const char*>(bytes.data()), 200); });
  CHECK_THROWS_WITH_AS(AudioModel<float>::load(trunc), doctest::Contains("trunc.safetensors"), IoError);
  // Too-short audio.
  CHECK_THROWS_AS(m.predict(Tensor<float>({1, 100}), 0), ArgumentError);
}
