// The inference pipeline (include/blendfuse/pipeline.hpp): animate() on a tiny audio model and a
// tiny fusion model gives exactly what the manual composition of the models gives (speech only,
// fused, naive, streaming, resampled input, expression in metres, another subject's neutral face),
// and every bad input is refused with an error naming the problem before any model runs.
#include "test_util.hpp"
#include "audio_test_util.hpp"

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "blendfuse/io/wav.hpp"
#include "blendfuse/metrics/fusion_eval.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/pipeline.hpp"

using namespace blendfuse;

namespace {

constexpr int kGrid = 5;             // 25-vertex grid mesh
constexpr Index kV = kGrid * kGrid;

struct Fixture {
  bft::GridMesh g = bft::grid_mesh(kGrid);
  nn::AudioModel<float> audio;
  nn::DeformationFusionModule<float> fusion;
  std::vector<float> samples;
  Tensor<float> expression;  // (7, V, 3) absolute positions of S1's face

  Fixture() : audio(bft::tiny_audio_config(kV, {"S0", "S1"})), fusion(fusion_config(), g.vertices, g.faces, 3) {
    audio.init();
    Rng rng(7);
    for (const char* s : {"S0", "S1"}) {
      Tensor<float> t = g.vertices.clone();
      for (Index i = 0; i < t.numel(); ++i) t[i] = 10.0f * t[i] + static_cast<float>(rng.normal(0, 0.1));
      audio.templates()[s] = t;
    }
    samples.resize(16000 / 2);  // 0.5 s: 15 frames at 30 fps
    for (std::size_t i = 0; i < samples.size(); ++i)
      samples[i] = static_cast<float>(0.3 * std::sin(0.07 * static_cast<double>(i)) + 0.01 * rng.normal());
    expression = Tensor<float>({7, kV, 3});
    const Tensor<float>& s1 = audio.templates().at("S1");
    for (Index f = 0; f < 7; ++f)
      for (Index i = 0; i < kV * 3; ++i) expression[f * kV * 3 + i] = s1[i] + static_cast<float>(rng.normal(0, 0.5));
  }

  static nn::DfmConfig fusion_config() {
    nn::DfmConfig c;
    c.apply_variant("full");
    c.map_size = 16;
    c.channels = {3, 4};
    c.k_a = 3;
    c.k_e = 2;
    return c;
  }

  /// The steps of animate() written out with the models' own calls.
  Tensor<float> manual(const std::vector<float>& audio16k, const std::string& style, const std::string& face,
                       const Tensor<float>* expr, const std::string& expr_subject, double intensity, bool naive,
                       bool stream) const {
    const Index st = audio.subject_index(style);
    Tensor<float> def = stream ? audio.predict_streaming(audio16k, st)
                               : audio.predict(Tensor<float>::from({static_cast<Index>(audio16k.size())}, audio16k), st);
    const Index T = def.dim(0);
    if (expr) {
      Tensor<float> e = expr->clone();
      const Tensor<float>& et = audio.templates().at(expr_subject);
      for (Index i = 0; i < e.numel(); ++i) e[i] -= et[i % (kV * 3)];
      e = metrics::stretch_to(e, T);
      if (naive)
        for (Index i = 0; i < def.numel(); ++i) def[i] += static_cast<float>(intensity) * e[i];
      else
        def = fusion.fuse(def, e, intensity, 1.0);
    }
    const Tensor<float>& t = audio.templates().at(face);
    for (Index i = 0; i < def.numel(); ++i) def[i] += t[i % (kV * 3)];
    return def;
  }
};

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  if (a.shape() != b.shape()) return false;
  for (Index i = 0; i < a.numel(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

}  // namespace

TEST_CASE("animate: speech only is the audio model's prediction plus the neutral face") {
  Fixture fx;
  const Tensor<float> got = animate(fx.audio, fx.samples, io::kSpeechSampleRate);
  CHECK(got.shape() == Shape{15, kV, 3});
  CHECK(same_bits(got, fx.manual(fx.samples, "S0", "S0", nullptr, "", 1, false, false)));
  AnimateOptions o;
  o.subject = "S1";
  o.template_subject = "S0";
  CHECK(same_bits(animate(fx.audio, fx.samples, io::kSpeechSampleRate, o),
                  fx.manual(fx.samples, "S1", "S0", nullptr, "", 1, false, false)));
  o.stream = true;
  const Tensor<float> st = animate(fx.audio, nullptr, fx.samples, io::kSpeechSampleRate, o);
  CHECK(st.dim(1) == kV);
  CHECK(same_bits(st, fx.manual(fx.samples, "S1", "S0", nullptr, "", 1, false, true)));
}

TEST_CASE("animate: audio at another rate is resampled to 16 kHz first") {
  Fixture fx;
  const std::vector<float> at8k = io::resample(fx.samples, 16000, 8000);
  const Tensor<float> got = animate(fx.audio, at8k, 8000);
  CHECK(same_bits(got, fx.manual(io::resample(at8k, 8000, 16000), "S0", "S0", nullptr, "", 1, false, false)));
}

TEST_CASE("animate: with a fusion model, the fused sequence of the manual composition") {
  Fixture fx;
  AnimateOptions o;
  o.expression = fx.expression;
  o.expression_subject = "S1_happy_01";  // a file stem: its subject's neutral face is subtracted
  o.intensity = 0.7;
  const Tensor<float> got = animate(fx.audio, &fx.fusion, fx.samples, io::kSpeechSampleRate, o);
  CHECK(got.shape() == Shape{15, kV, 3});
  const Tensor<float> want = fx.manual(fx.samples, "S0", "S0", &fx.expression, "S1", 0.7, false, false);
  CHECK(same_bits(got, want));
  // the expression changes the result; another expression subject changes it again
  CHECK(!same_bits(got, animate(fx.audio, fx.samples, io::kSpeechSampleRate)));
  o.expression_subject = "S0";
  CHECK(same_bits(animate(fx.audio, &fx.fusion, fx.samples, io::kSpeechSampleRate, o),
                  fx.manual(fx.samples, "S0", "S0", &fx.expression, "S0", 0.7, false, false)));
  // default expression subject: the face being animated
  o.expression_subject.clear();
  o.template_subject = "S1";
  CHECK(same_bits(animate(fx.audio, &fx.fusion, fx.samples, io::kSpeechSampleRate, o),
                  fx.manual(fx.samples, "S0", "S1", &fx.expression, "S1", 0.7, false, false)));
}

TEST_CASE("animate: naive sum and streaming") {
  Fixture fx;
  AnimateOptions o;
  o.expression = fx.expression;
  o.expression_subject = "S1";
  o.intensity = 2.0;
  o.naive = true;
  CHECK(same_bits(animate(fx.audio, fx.samples, io::kSpeechSampleRate, o),
                  fx.manual(fx.samples, "S0", "S0", &fx.expression, "S1", 2.0, true, false)));
  o.stream = true;
  CHECK(same_bits(animate(fx.audio, fx.samples, io::kSpeechSampleRate, o),
                  fx.manual(fx.samples, "S0", "S0", &fx.expression, "S1", 2.0, true, true)));
  o.naive = false;
  CHECK(same_bits(animate(fx.audio, &fx.fusion, fx.samples, io::kSpeechSampleRate, o),
                  fx.manual(fx.samples, "S0", "S0", &fx.expression, "S1", 2.0, false, true)));
}

TEST_CASE("animate: templates from elsewhere, an expression in metres") {
  Fixture fx;
  std::map<std::string, Tensor<float>> ts;
  ts["S0"] = fx.audio.templates().at("S1").clone();  // a 'dataset' whose S0 looks like the model's S1
  ts["S1"] = fx.audio.templates().at("S1").clone();
  AnimateOptions o;
  o.templates = &ts;
  const Tensor<float> got = animate(fx.audio, fx.samples, io::kSpeechSampleRate, o);
  CHECK(same_bits(got, fx.manual(fx.samples, "S0", "S1", nullptr, "", 1, false, false)));
  // the expression in metres: scaled to mm before its neutral face (in mm) is subtracted
  Tensor<float> metres = fx.expression.clone();
  for (Index i = 0; i < metres.numel(); ++i) metres[i] /= 1000.0f;
  o.templates = nullptr;
  o.expression = metres;
  o.expression_unit_mm = 1000.0;
  o.expression_subject = "S1";
  o.naive = true;
  const Tensor<float> m = animate(fx.audio, fx.samples, io::kSpeechSampleRate, o);
  o.expression = fx.expression;
  o.expression_unit_mm = 1.0;
  const Tensor<float> mm = animate(fx.audio, fx.samples, io::kSpeechSampleRate, o);
  CHECK(bft::closeness(m, mm, 1e-5, 1e-4) <= 1.0);
}

TEST_CASE("animate: bad input is refused with an error naming the problem") {
  Fixture fx;
  const int sr = io::kSpeechSampleRate;
  AnimateOptions o;
  o.subject = "Nobody";
  CHECK_THROWS_WITH_AS(animate(fx.audio, fx.samples, sr, o), doctest::Contains("unknown subject 'Nobody'"), ArgumentError);
  o = {};
  o.template_subject = "S9";
  CHECK_THROWS_WITH_AS(animate(fx.audio, fx.samples, sr, o),
                       doctest::Contains("no template for subject 'S9' in the audio model (it has: S0, S1)"), ArgumentError);
  std::map<std::string, Tensor<float>> ts{{"S0", Tensor<float>({kV + 1, 3})}};
  o = {};
  o.templates = &ts;
  o.templates_name = "the dataset d/";
  CHECK_THROWS_WITH_AS(animate(fx.audio, fx.samples, sr, o), doctest::Contains("template of subject 'S0' has shape (26, 3)"),
                       ShapeError);
  o.subject = "S1";
  CHECK_THROWS_WITH_AS(animate(fx.audio, fx.samples, sr, o),
                       doctest::Contains("no template for subject 'S1' in the dataset d/ (it has: S0)"), ArgumentError);
  o = {};
  o.expression = fx.expression;
  CHECK_THROWS_WITH_AS(animate(fx.audio, fx.samples, sr, o), doctest::Contains("an expression needs a fusion model"),
                       ArgumentError);
  o.naive = true;
  CHECK_THROWS_WITH_AS(animate(fx.audio, &fx.fusion, fx.samples, sr, o), doctest::Contains("naive is the sum without a fusion model"),
                       ArgumentError);
  o = {};
  CHECK_THROWS_WITH_AS(animate(fx.audio, &fx.fusion, fx.samples, sr, o), doctest::Contains("a fusion model needs an expression"),
                       ArgumentError);
  o.naive = true;
  CHECK_THROWS_WITH_AS(animate(fx.audio, fx.samples, sr, o), doctest::Contains("naive needs an expression"), ArgumentError);
  o = {};
  o.expression = Tensor<float>({4, kV - 1, 3});
  CHECK_THROWS_WITH_AS(animate(fx.audio, &fx.fusion, fx.samples, sr, o),
                       doctest::Contains("the expression has shape (4, 24, 3), expected (T', 25, 3)"), ShapeError);
  o.expression = fx.expression;
  o.expression_subject = "happy";
  CHECK_THROWS_WITH_AS(animate(fx.audio, &fx.fusion, fx.samples, sr, o),
                       doctest::Contains("sequence name 'happy' is not of the form <subject>_<sequence>"), ArgumentError);
  o.expression_subject = "S7_happy";  // parses, but S7 has no template
  CHECK_THROWS_WITH_AS(animate(fx.audio, &fx.fusion, fx.samples, sr, o), doctest::Contains("no template for subject 'S7'"),
                       ArgumentError);
  o.expression_subject.clear();
  for (const double bad : std::vector<double>{-0.5, std::nan(""), INFINITY}) {
    o.intensity = bad;
    CHECK_THROWS_WITH_AS(animate(fx.audio, &fx.fusion, fx.samples, sr, o), doctest::Contains("intensity must be a finite number >= 0"),
                         ArgumentError);
  }
  o.intensity = 1;
  o.expression_unit_mm = 0;
  CHECK_THROWS_WITH_AS(animate(fx.audio, &fx.fusion, fx.samples, sr, o), doctest::Contains("expression_unit_mm must be"),
                       ArgumentError);
  o.expression_unit_mm = 1;
  bft::GridMesh g4 = bft::grid_mesh(4);
  const nn::DeformationFusionModule<float> other(Fixture::fusion_config(), g4.vertices, g4.faces, 1);
  CHECK_THROWS_WITH_AS(animate(fx.audio, &other, fx.samples, sr, o),
                       doctest::Contains("the fusion model has 16 vertices, the audio model 25"), ArgumentError);
  const std::vector<float> tiny(100, 0.1f);
  CHECK_THROWS_WITH_AS(animate(fx.audio, tiny, sr), doctest::Contains("audio too short: 100 samples at 16 kHz"), ArgumentError);
  CHECK_THROWS_WITH_AS(animate(fx.audio, fx.samples, 0), doctest::Contains("sample rate 0 Hz is not positive"), ArgumentError);
}
