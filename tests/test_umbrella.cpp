// The umbrella header compiles on its own and exposes the main types (ODR / include hygiene).
#include "blendfuse/blendfuse.hpp"

#include "test_util.hpp"

TEST_CASE("umbrella header: core, ops, io, model types are reachable") {
  using namespace blendfuse;
  Tensor<float> x({1, 3, 8, 8});
  Tensor<float> w({2, 3, 3, 3});
  auto y = ops::conv2d(x, w, nullptr, ops::Conv2dParams{});
  CHECK(y.shape() == Shape{1, 2, 6, 6});
  nn::DfmConfig cfg;
  CHECK_NOTHROW(cfg.apply_variant("paper"));
  CHECK(!compiled_backends().empty());
}

// The audio model on the shipped weights (a generated WAV), directly and through animate().
TEST_CASE("umbrella header: the README's audio-model snippet") {
  using namespace blendfuse;
  const std::string wav_path = "umbrella_readme_test.wav";
  std::vector<float> tone(16000);
  for (std::size_t i = 0; i < tone.size(); ++i) tone[i] = 0.1f * static_cast<float>(std::sin(0.05 * static_cast<double>(i)));
  io::save_wav(wav_path, tone, 16000);
  auto speech_model = nn::AudioModel<float>::load(bft::source_path("weights/audio_small.safetensors"));
  Tensor<float> wav = io::load_wav(wav_path).tensor();
  Tensor<float> speech = speech_model.predict(wav, speech_model.subject_index("P01"));
  CHECK(speech.shape() == Shape{30, speech_model.vertices(), 3});
  // the pipeline (pipeline.hpp, in the umbrella): the same prediction on the neutral face
  const Tensor<float> face = animate(speech_model, io::load_wav(wav_path).samples, 16000);
  REQUIRE(face.shape() == speech.shape());
  const Tensor<float>& neutral = speech_model.templates().at("P01");
  for (Index i = 0; i < face.numel(); i += 997)
    CHECK(face[i] == speech[i] + neutral[i % (speech_model.vertices() * 3)]);
  std::remove(wav_path.c_str());
}
