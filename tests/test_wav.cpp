#include "test_util.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>

#include "blendfuse/io/wav.hpp"

using namespace blendfuse;
namespace fs = std::filesystem;

namespace {
std::string tmp_path(const std::string& name) {
  const auto dir = fs::temp_directory_path() / "blendfuse_tests_wav";
  fs::create_directories(dir);
  return (dir / name).string();
}
void write_bytes(const std::string& path, const std::vector<std::uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
std::string data(const std::string& name) { return bft::source_path("tests/data/" + name); }

std::vector<float> sine(double freq, double amp, int rate, std::size_t n) {
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i)
    x[i] = static_cast<float>(amp * std::sin(2 * std::numbers::pi * freq * static_cast<double>(i) / rate));
  return x;
}

/// Least-squares fit of a·sin + b·cos at `freq` over samples [lo, hi); returns amplitude and the
/// RMS of the residual.
std::pair<double, double> fit_sine(const std::vector<float>& y, double freq, int rate, std::size_t lo, std::size_t hi) {
  double ss = 0, sc = 0, cc = 0, ys = 0, yc = 0;
  for (std::size_t i = lo; i < hi; ++i) {
    const double ph = 2 * std::numbers::pi * freq * static_cast<double>(i) / rate;
    const double s = std::sin(ph), c = std::cos(ph);
    ss += s * s; sc += s * c; cc += c * c; ys += y[i] * s; yc += y[i] * c;
  }
  const double det = ss * cc - sc * sc;
  const double a = (ys * cc - yc * sc) / det, b = (yc * ss - ys * sc) / det;
  double r = 0;
  for (std::size_t i = lo; i < hi; ++i) {
    const double ph = 2 * std::numbers::pi * freq * static_cast<double>(i) / rate;
    const double e = y[i] - (a * std::sin(ph) + b * std::cos(ph));
    r += e * e;
  }
  return {std::hypot(a, b), std::sqrt(r / static_cast<double>(hi - lo))};
}
}  // namespace

TEST_CASE("wav: float round trip and every PCM/float encoding") {
  const auto x = sine(300.0, 0.6, 16000, 1600);
  const auto p = tmp_path("rt.wav");
  io::save_wav(p, x, 16000);
  auto a = io::load_wav(p);
  CHECK(a.sample_rate == 16000);
  CHECK(a.source_sample_rate == 16000);
  CHECK(a.source_channels == 1);
  CHECK(a.duration() == doctest::Approx(0.1));
  REQUIRE(a.samples.size() == x.size());
  CHECK(a.samples == x);  // same rate: no resampling, exact
  CHECK(a.tensor().shape() == Shape{1600});

  struct Case { io::WavFormat fmt; double tol; };
  for (const Case c : {Case{io::WavFormat::Pcm16, 1.0 / 32768}, Case{io::WavFormat::Pcm24, 1.0 / 8388608},
                       Case{io::WavFormat::Pcm32, 1e-7}, Case{io::WavFormat::Float64, 0.0}}) {
    CAPTURE(static_cast<int>(c.fmt));
    io::save_wav(p, x, 16000, 1, c.fmt);
    auto b = io::load_wav(p, 0);
    REQUIRE(b.samples.size() == x.size());
    double worst = 0;
    for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(double(b.samples[i]) - x[i]));
    CHECK(worst <= c.tol);
  }
}

TEST_CASE("wav: stereo PCM16 written by Python's wave module is down-mixed and resampled") {
  // Left 0.5·sin(440 Hz), right 0.25·sin(440 Hz), 2205 frames at 22.05 kHz.
  auto native = io::load_wav(data("stereo_pcm16_22050.wav"), 0);
  CHECK(native.source_channels == 2);
  CHECK(native.sample_rate == 22050);
  REQUIRE(native.samples.size() == 2205);
  const auto want = sine(440.0, 0.375, 22050, 2205);
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(native.samples[i] == doctest::Approx(want[i]).epsilon(1e-4));
  auto a = io::load_wav(data("stereo_pcm16_22050.wav"));
  CHECK(a.sample_rate == 16000);
  CHECK(a.samples.size() == 1600);
  const auto [amp, resid] = fit_sine(a.samples, 440.0, 16000, 100, 1500);
  CHECK(amp == doctest::Approx(0.375).epsilon(0.005));
  CHECK(resid < 1e-3);
}

TEST_CASE("wav: resampling keeps frequency, amplitude and the length ratio (libsoxr HQ)") {
  const auto x = sine(440.0, 0.8, 44100, 44100);
  const auto y = io::resample(x, 44100, 16000);
  REQUIRE(y.size() == 16000);
  // Away from the edges the output is the same 440 Hz sine sampled at 16 kHz.
  const auto [amp, resid] = fit_sine(y, 440.0, 16000, 500, 15500);
  CHECK(amp == doctest::Approx(0.8).epsilon(0.002));
  CHECK(resid < 1e-3);
  // A wrong frequency would not fit: at 441 Hz the residual is large.
  CHECK(fit_sine(y, 441.0, 16000, 500, 15500).second > 0.1);
  // Phase alignment: sample by sample against the ideal sine (no delay introduced).
  const auto ideal = sine(440.0, 0.8, 16000, 16000);
  double worst = 0;
  for (std::size_t i = 500; i < 15500; ++i) worst = std::max(worst, std::abs(double(y[i]) - ideal[i]));
  CHECK(worst < 5e-3);
  // Lengths follow round(n · to / from); deterministic; identity for equal rates.
  CHECK(io::resample(std::vector<float>(12345, 0.1f), 44100, 16000).size() == 4479);
  CHECK(io::resample(std::vector<float>(1000, 0.1f), 8000, 16000).size() == 2000);
  CHECK(io::resample(x, 44100, 16000) == y);
  CHECK(io::resample(x, 44100, 44100) == x);
  CHECK_THROWS_AS(io::resample(x, 0, 16000), ArgumentError);

  // Through a file at 44.1 kHz (PCM24) with the default 16 kHz target.
  const auto p = tmp_path("sine44k.wav");
  io::save_wav(p, x, 44100, 1, io::WavFormat::Pcm24);
  auto a = io::load_wav(p);
  CHECK(a.sample_rate == 16000);
  CHECK(a.samples.size() == 16000);
  CHECK(a.duration() == doctest::Approx(1.0));
  CHECK(fit_sine(a.samples, 440.0, 16000, 500, 15500).first == doctest::Approx(0.8).epsilon(0.002));
}

TEST_CASE("wav: bad files give errors that name the file and the problem") {
  const auto good = io::serialize_wav(sine(440.0, 0.5, 16000, 4000), 16000, 1, io::WavFormat::Pcm16);
  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(io::load_wav(tmp_path("nope.wav")), doctest::Contains("nope.wav: file not found"), IoError);
  }
  SUBCASE("truncated data chunk (libsndfile alone would read it silently)") {
    const auto p = tmp_path("trunc.wav");
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.end() - 1001));
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("trunc.wav: truncated WAV file: data chunk declares 8000 bytes but only 6999 are present"), IoError);
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.begin() + 44));  // header only
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("trunc.wav: truncated WAV file: data chunk declares 8000 bytes but only 0 are present"), IoError);
  }
  SUBCASE("truncated or corrupt header") {
    const auto p = tmp_path("trunc_header.wav");
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.begin() + 30));
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("trunc_header.wav: not a readable WAV/audio file (libsndfile:"), IoError);
    auto b = good;
    b[20] = 0x77;  // format tag: neither PCM nor float
    b[21] = 0x77;
    write_bytes(p, b);
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("trunc_header.wav: not a readable WAV/audio file (libsndfile:"), IoError);
  }
  SUBCASE("not a WAV file") {
    const auto p = tmp_path("text.wav");
    const std::string s = "this is a text file, not audio, but long enough to be probed by libsndfile\n";
    write_bytes(p, std::vector<std::uint8_t>(s.begin(), s.end()));
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("text.wav: not a readable WAV/audio file (libsndfile: Format not recognised"), IoError);
    write_bytes(p, {});
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("text.wav: empty file (0 bytes)"), IoError);
  }
  SUBCASE("zero-length audio") {
    const auto p = tmp_path("zero.wav");
    io::save_wav(p, std::vector<float>{}, 16000);
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("zero.wav: zero-length audio (no samples)"), IoError);
  }
  SUBCASE("NaN sample") {
    auto x = sine(440.0, 0.5, 16000, 100);
    x[42] = std::nanf("");
    const auto p = tmp_path("nan.wav");
    io::save_wav(p, x, 16000);
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("nan.wav: non-finite sample at frame 42"), IoError);
  }
  SUBCASE("implausible sample rates are refused before resampling (1 Hz would take ages)") {
    const auto p = tmp_path("rate1.wav");
    io::save_wav(p, std::vector<float>(100, 0.1f), 1, 1, io::WavFormat::Pcm16);
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("rate1.wav: implausible sample rate 1 Hz (supported: 4000 to 384000 Hz)"), IoError);
    io::save_wav(p, std::vector<float>(100, 0.1f), 3999, 1, io::WavFormat::Pcm16);
    CHECK_THROWS_WITH_AS(io::load_wav(p, 0), doctest::Contains("implausible sample rate 3999 Hz"), IoError);
    io::save_wav(p, std::vector<float>(100, 0.1f), 400000, 1, io::WavFormat::Pcm16);
    CHECK_THROWS_WITH_AS(io::load_wav(p), doctest::Contains("implausible sample rate 400000 Hz"), IoError);
    io::save_wav(p, std::vector<float>(100, 0.1f), 4000, 1, io::WavFormat::Pcm16);  // the bounds are accepted
    CHECK(io::load_wav(p).samples.size() == 400);
  }
  SUBCASE("silence and full-scale (clipped) audio load as they are") {
    const auto p = tmp_path("silence.wav");
    io::save_wav(p, std::vector<float>(1600, 0.0f), 16000, 1, io::WavFormat::Pcm16);
    const auto s = io::load_wav(p);
    CHECK(s.samples.size() == 1600);
    CHECK(*std::max_element(s.samples.begin(), s.samples.end()) == 0.0f);
    std::vector<float> clip(1600);
    for (std::size_t i = 0; i < clip.size(); ++i) clip[i] = i % 2 ? 1.0f : -1.0f;
    io::save_wav(p, clip, 16000, 1, io::WavFormat::Pcm16);
    const auto c = io::load_wav(p);
    CHECK(c.samples[0] == -1.0f);
    CHECK(c.samples[1] > 0.999f);
  }
  SUBCASE("failed write leaves no file behind") {
    CHECK_THROWS_AS(io::save_wav(tmp_path("no_such_dir/out.wav"), std::vector<float>(10), 16000), IoError);
    CHECK_FALSE(fs::exists(tmp_path("no_such_dir")));
  }
}
