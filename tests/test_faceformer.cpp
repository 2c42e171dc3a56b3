// Tests of the FaceFormer decoder (include/blendfuse/nn/faceformer.hpp): PyTorch vectors
// (tests/torch/gen_faceformer.py), gradient check in double, KV-cache streaming against the full
// recomputation, long sequences, allocation-free steps and checkpoints.

// Every Eigen assertion throws (in this test only) so that Eigen heap allocations inside a step
// are caught by EIGEN_RUNTIME_NO_MALLOC even in Release builds.
#include <stdexcept>
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) \
  do {                  \
    if (!(x)) throw std::logic_error("Eigen assertion failed: " #x); \
  } while (0)

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>

#include <unistd.h>

#include "blendfuse/nn/faceformer.hpp"
#include "test_util.hpp"

// ---- allocation counter (global operator new of this test executable) -------------------------
namespace {
std::atomic<long> g_allocations{0};
}
void* operator new(std::size_t n) {
  ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t al) {
  ++g_allocations;
  const std::size_t a = static_cast<std::size_t>(al);
  const std::size_t bytes = ((n + a - 1) / a) * a;
  if (void* p = std::aligned_alloc(a, bytes ? bytes : a)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using namespace blendfuse;
using blendfuse::nn::FaceFormer;
using blendfuse::nn::FaceFormerConfig;

namespace {

FaceFormerConfig small_config() {
  FaceFormerConfig c;
  c.vertices = 3;
  c.feature_dim = 8;
  c.num_heads = 2;
  c.dim_feedforward = 12;
  c.period = 3;
  c.n_subjects = 2;
  c.audio_dim = 5;
  return c;
}

/// Random weights (not FaceFormer's init, whose zero vertice_map_r would hide everything).
template <class T>
void randomize(FaceFormer<T>& m, std::uint64_t seed) {
  Rng rng(seed);
  for (auto* p : m.parameters()) {
    const bool norm = p->name.find("norm") != std::string::npos;
    const bool weight = p->name.size() >= 6 && p->name.compare(p->name.size() - 6, 6, "weight") == 0;
    if (norm && weight) fill_normal(p->value, rng, 0.3, 1.0);
    else if (norm) fill_normal(p->value, rng, 0.2);
    else fill_normal(p->value, rng, 1.0 / std::sqrt(static_cast<double>(p->value.dim(-1))));
  }
}

template <class T>
Tensor<T> random_t(Shape s, Rng& rng, double sd = 1.0) {
  Tensor<T> t(std::move(s));
  fill_normal(t, rng, sd);
  return t;
}

template <class T>
Tensor<T> one_hots(Index B, Index n) {
  Tensor<T> s({B, n});
  for (Index b = 0; b < B; ++b) s(b, (b + 1) % n) = T(1);
  return s;
}

FaceFormerConfig case_config(const io::SafeTensorsFile& f, const std::string& c) {
  return FaceFormerConfig::from_json(nlohmann::json::parse(f.meta("cases")).at(c));
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("bf_faceformer_" + std::to_string(::getpid()) + "_" + name)).string();
}

template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("faceformer: ALiBi slopes, biased mask, alignment mask and PPE") {
  const std::vector<double> s4 = nn::faceformer_alibi_slopes(4);
  REQUIRE(s4.size() == 4);
  CHECK(s4[0] == doctest::Approx(0.25));
  CHECK(s4[1] == doctest::Approx(0.0625));
  CHECK(s4[2] == doctest::Approx(0.015625));
  CHECK(s4[3] == doctest::Approx(0.00390625));
  // Not a power of two: slopes(4) followed by every other of slopes(8) = 0.5, 0.125.
  const std::vector<double> s6 = nn::faceformer_alibi_slopes(6);
  REQUIRE(s6.size() == 6);
  CHECK(s6[4] == doctest::Approx(0.5));
  CHECK(s6[5] == doctest::Approx(0.125));
  CHECK(nn::faceformer_alibi_slopes(1)[0] == doctest::Approx(std::pow(2.0, -8.0)));

  // Period 2, 2 heads (slopes 1/16, 1/256): bias −slope·floor((i − j)/2) for j <= i.
  const Tensor<double> m = nn::faceformer_biased_mask<double>(2, 6, 2);
  CHECK(m.shape() == Shape{2, 6, 6});
  CHECK(m(0, 0, 0) == 0.0);
  CHECK(m(0, 1, 0) == 0.0);
  CHECK(m(0, 2, 0) == doctest::Approx(-0.0625));
  CHECK(m(0, 5, 0) == doctest::Approx(-0.125));
  CHECK(m(1, 5, 0) == doctest::Approx(-2.0 / 256));
  CHECK(m(1, 5, 1) == doctest::Approx(-2.0 / 256));
  CHECK(m(1, 5, 2) == doctest::Approx(-1.0 / 256));
  CHECK(std::isinf(m(0, 2, 3)));
  CHECK(m(0, 2, 3) < 0);

  // Window 3: frame i sees i − 3 < j ≤ i; the bias is unchanged inside the window.
  const Tensor<double> w = nn::faceformer_biased_mask<double>(2, 6, 2, 3);
  for (Index h = 0; h < 2; ++h)
    for (Index i = 0; i < 6; ++i)
      for (Index j = 0; j < 6; ++j) {
        const bool inside = j <= i && i - j < 3;
        CHECK((inside ? w(h, i, j) == m(h, i, j) : std::isinf(w(h, i, j)) && w(h, i, j) < 0));
      }
  CHECK_THROWS_AS(nn::faceformer_biased_mask<double>(2, 6, 2, -1), ArgumentError);

  const Tensor<float> a = nn::faceformer_alignment_mask<float>(3, 4);
  for (Index i = 0; i < 3; ++i)
    for (Index j = 0; j < 4; ++j) CHECK((i == j ? a(i, j) == 0.f : std::isinf(a(i, j))));

  const Tensor<double> pe = nn::faceformer_ppe_table<double>(6, 5);
  CHECK(pe(0, 0) == 0.0);
  CHECK(pe(0, 1) == 1.0);
  CHECK(pe(3, 0) == doctest::Approx(std::sin(3.0)));
  CHECK(pe(3, 3) == doctest::Approx(std::cos(3.0 * std::pow(10000.0, -2.0 / 6))));
  CHECK_THROWS_AS(nn::faceformer_ppe_table<double>(5, 5), ArgumentError);
}

TEST_CASE_TEMPLATE("faceformer: matches PyTorch (teacher forcing, autoregressive, gradients)", T, float, double) {
  const auto f = bft::vectors("faceformer");
  const bool dbl = std::is_same_v<T, double>;
  // float: the reference is float64 (observed errors ~1e-6, outputs up to ~5); the
  // autoregressive loop feeds its outputs back up to 40 times.
  const double rtol = dbl ? 1e-10 : 2e-5, atol = dbl ? 1e-11 : 2e-5;
  for (const std::string c : {"short", "long"}) {
    CAPTURE(c);
    FaceFormer<T> m(case_config(f, c));
    m.load(f, c + ".");
    const Tensor<T> audio = f.get<T>(c + ".audio"), verts = f.get<T>(c + ".vertices"),
                    style = f.get<T>(c + ".style");
    typename FaceFormer<T>::Context ctx;
    const Tensor<T> tf = m.forward(audio, verts, style, &ctx);
    BFT_CHECK_CLOSE(tf, f.get<double>(c + ".tf"), rtol, atol);
    BFT_CHECK_CLOSE(m.forward(audio, verts, style, nullptr, true), f.get<double>(c + ".tf_orig"), rtol, atol);
    BFT_CHECK_CLOSE(m.predict(audio, style), f.get<double>(c + ".ar"), rtol, atol);

    nn::zero_grads(m.parameters());
    const auto g = m.backward(ctx, f.get<T>(c + ".r"));
    const double grtol = dbl ? 1e-9 : 1e-4, gatol = dbl ? 1e-10 : 1e-4;  // gradients up to ~30
    BFT_CHECK_CLOSE(g.daudio, f.get<double>(c + ".grad.audio"), grtol, gatol);
    BFT_CHECK_CLOSE(g.ddeformations, f.get<double>(c + ".grad.vertices"), grtol, gatol);
    BFT_CHECK_CLOSE(g.dstyle, f.get<double>(c + ".grad.style"), grtol, gatol);
    for (auto* p : m.parameters()) {
      CAPTURE(p->name);
      BFT_CHECK_CLOSE(p->grad, f.get<double>(c + ".grad." + p->name), grtol, gatol);
    }
  }
}

TEST_CASE("faceformer: gradient check in double") {
  for (const bool orig_first : {false, true}) {
    CAPTURE(orig_first);
    FaceFormer<double> m(small_config());
    randomize(m, 5);
    const auto ps = m.parameters();
    Rng rng(17);
    const Index B = 2, Tn = 7;
    std::vector<Tensor<double>> inputs{bft::random_tensor({B, Tn, 5}, rng), bft::random_tensor({B, Tn, 9}, rng, 0.5),
                                       bft::random_tensor({B, 2}, rng)};
    for (auto* p : ps) inputs.push_back(p->value.clone());
    auto load = [&](const std::vector<Tensor<double>>& in) {
      for (std::size_t i = 0; i < ps.size(); ++i) ps[i]->value.assign(in[3 + i]);
    };
    bft::GradCheckOptions opt;
    opt.max_checks = 25;
    bft::gradcheck(
        inputs,
        [&](const std::vector<Tensor<double>>& in) {
          load(in);
          return m.forward(in[0], in[1], in[2], nullptr, orig_first);
        },
        [&](const std::vector<Tensor<double>>& in, const Tensor<double>& dout) {
          load(in);
          FaceFormer<double>::Context ctx;
          m.forward(in[0], in[1], in[2], &ctx, orig_first);
          nn::zero_grads(ps);
          auto g = m.backward(ctx, dout);
          std::vector<Tensor<double>> out{g.daudio, g.ddeformations, g.dstyle};
          for (auto* p : ps) out.push_back(p->grad.clone());
          return out;
        },
        opt);
  }
}

TEST_CASE("faceformer: backward accumulates and the last frame is not an input") {
  FaceFormer<double> m(small_config());
  randomize(m, 3);
  Rng rng(4);
  const auto audio = random_t<double>({1, 6, 5}, rng), verts = random_t<double>({1, 6, 9}, rng);
  const auto style = one_hots<double>(1, 2), dout = random_t<double>({1, 6, 9}, rng);
  FaceFormer<double>::Context ctx;
  m.forward(audio, verts, style, &ctx);
  nn::zero_grads(m.parameters());
  const auto g = m.backward(ctx, dout);
  std::vector<Tensor<double>> once;
  for (auto* p : m.parameters()) once.push_back(p->grad.clone());
  m.backward(ctx, dout);
  const auto ps = m.parameters();
  for (std::size_t i = 0; i < ps.size(); ++i)
    for (Index k = 0; k < once[i].numel(); ++k) CHECK(ps[i]->grad[k] == doctest::Approx(2 * once[i][k]));
  double last = 0, rest = 0;
  for (Index k = 0; k < 9; ++k) {
    last += std::abs(g.ddeformations(0, 5, k));
    rest += std::abs(g.ddeformations(0, 4, k));
  }
  CHECK(last == 0.0);
  CHECK(rest > 0.0);
  // The alignment mask makes the cross-attention independent of its queries and keys.
  for (auto* p : ps)
    if (p->name.find("multihead_attn.in_proj") != std::string::npos)
      for (Index k = 0; k < 2 * 8 * (p->value.ndim() == 2 ? 8 : 1); ++k) CHECK(p->grad[k] == 0.0);
}

TEST_CASE_TEMPLATE("faceformer: KV-cache steps equal the full recomputation", T, float, double) {
  FaceFormerConfig c = small_config();
  c.vertices = 6;
  c.feature_dim = 16;
  c.num_heads = 4;
  c.period = 4;
  c.n_subjects = 3;
  FaceFormer<T> m(c);
  randomize(m, 11);
  Rng rng(12);
  const Index Tn = 37;
  const Tensor<T> audio = random_t<T>({2, Tn, 5}, rng);
  const Tensor<T> style = one_hots<T>(2, 3);
  const Tensor<T> pred = m.predict(audio, style);
  // Teacher forcing on the model's own outputs recomputes every frame from scratch.
  const Tensor<T> full = m.forward(audio, pred, style);
  const double tol = std::is_same_v<T, double> ? 1e-11 : 1e-4;
  BFT_CHECK_CLOSE(pred, full, tol, tol);
  double spread = 0;
  for (Index i = 1; i < pred.numel(); ++i) spread = std::max(spread, std::abs(double(pred[i] - pred[0])));
  CHECK(spread > 0.1);

  // The model's own stream, driven frame by frame (tensor API), gives the same frames.
  m.start(style.select(1));
  CHECK(m.frames() == 0);
  for (Index t = 0; t < Tn; ++t) {
    const Tensor<T> o = m.step(audio.select(1).select(t));
    REQUIRE(o.shape() == Shape{18});
    for (Index k = 0; k < 18; ++k) CHECK(double(o[k]) == doctest::Approx(double(pred(1, t, k))).epsilon(1e-12));
  }
  CHECK(m.frames() == Tn);
  // A restart reuses the caches and starts a fresh sequence; a subject index is the one-hot code.
  m.start(Index(2));
  const Tensor<T> o0 = m.step(audio.select(1).select(0));
  for (Index k = 0; k < 18; ++k) CHECK(o0[k] == pred(1, 0, k));
  // Independent streams do not interfere.
  auto s1 = m.stream(), s2 = m.stream();
  s1.start(style.select(0));
  s2.start(style.select(1));
  for (Index t = 0; t < 5; ++t) {
    const auto a = s1.step(audio.select(0).select(t)), b = s2.step(audio.select(1).select(t));
    CHECK(a[0] == pred(0, t, 0));
    CHECK(b[0] == pred(1, t, 0));
  }
}

TEST_CASE("faceformer: steps do not allocate once the caches are warm") {
  FaceFormerConfig c = small_config();
  c.feature_dim = 16;
  c.num_heads = 4;
  c.vertices = 40;
  FaceFormer<float> m(c);
  randomize(m, 2);
  Rng rng(3);
  const Tensor<float> audio = random_t<float>({1, 100, 5}, rng);
  std::vector<float> out(static_cast<std::size_t>(100 * c.vertex_dim()));
  auto s = m.stream();
  s.reserve(60);
  CHECK(s.capacity() >= 60);
  s.start(Index(1));
  const long before = g_allocations.load();
  {
    struct NoEigenMalloc {  // restored even if a step throws
      NoEigenMalloc() { Eigen::internal::set_is_malloc_allowed(false); }
      ~NoEigenMalloc() { Eigen::internal::set_is_malloc_allowed(true); }
    } guard;
    for (Index t = 0; t < 60; ++t) s.step(audio.data() + t * 5, out.data() + t * c.vertex_dim());
  }
  CHECK(g_allocations.load() - before == 0);
  // Past the reservation the caches grow geometrically (a few allocations, not one per frame).
  const long mid = g_allocations.load();
  for (Index t = 60; t < 100; ++t) s.step(audio.data() + t * 5, out.data() + t * c.vertex_dim());
  CHECK(g_allocations.load() - mid <= 3 * 2);
  CHECK(s.capacity() >= 100);
  // Still the same frames as predict().
  const Tensor<float> pred = m.predict(audio, m.one_hot(1));
  for (Index i = 0; i < pred.numel(); ++i) REQUIRE(out[static_cast<std::size_t>(i)] == pred[i]);
}

TEST_CASE("faceformer: a 2000-frame sequence (longer than FaceFormer's 600-frame cap)") {
  FaceFormerConfig c;
  c.vertices = 50;
  c.audio_dim = 32;
  c.n_subjects = 4;  // d = 64, 4 heads, ff 128, period 30 (FaceFormer's sizes)
  FaceFormer<float> m(c);
  randomize(m, 21);
  Rng rng(22);
  const Index Tn = 2000;
  const Tensor<float> audio = random_t<float>({1, Tn, 32}, rng);
  const Tensor<float> style = m.one_hot(3);
  const Tensor<float> pred = m.predict(audio, style);
  REQUIRE(pred.shape() == Shape{1, Tn, 150});
  for (Index i = 0; i < pred.numel(); ++i) REQUIRE(std::isfinite(pred[i]));
  // The whole sequence recomputed in one teacher-forcing pass (full (4, 2000, 2000) bias mask).
  const Tensor<float> full = m.forward(audio, pred, style);
  BFT_CHECK_CLOSE(pred, full, 1e-3, 1e-3);
  // The late frames differ from the early ones (the bias and PPE keep working past 600).
  double diff = 0;
  for (Index k = 0; k < 150; ++k) diff += std::abs(pred(0, 1999, k) - pred(0, 1998, k));
  CHECK(diff > 1e-3);
}

TEST_CASE("faceformer: attention window — ring KV cache equals the windowed teacher-forcing pass") {
  // Default window: FaceFormer's 600 frames.
  CHECK(FaceFormerConfig{}.attention_window == 600);
  for (const Index W : {Index(0), Index(1), Index(5), Index(12)}) {
    CAPTURE(W);
    FaceFormerConfig c = small_config();
    c.attention_window = W;
    c.period = 2;  // the bias changes every 2 frames: ages inside the ring matter
    FaceFormer<double> m(c);
    randomize(m, 31);
    Rng rng(32);
    const Index Tn = 40;
    const Tensor<double> audio = random_t<double>({1, Tn, 5}, rng);
    const Tensor<double> style = m.one_hot(1);
    const Tensor<double> pred = m.predict(audio, style);
    // Feeding the predictions back in one teacher-forcing pass (windowed mask) gives the same.
    BFT_CHECK_CLOSE(pred, m.forward(audio, pred, style), 1e-10, 1e-10);
    if (W > 0) {
      FaceFormerConfig u = c;
      u.attention_window = 0;
      FaceFormer<double> mu(u);
      randomize(mu, 31);  // the same weights
      const Tensor<double> unb = mu.predict(audio, style);
      // Identical while the sequence fits the window, different after.
      for (Index i = 0; i < std::min(W, Tn) * c.vertex_dim(); ++i)
        REQUIRE(unb[i] == doctest::Approx(pred[i]).epsilon(1e-12));
      double diff = 0;
      for (Index i = W * c.vertex_dim(); i < pred.numel(); ++i) diff += std::abs(unb[i] - pred[i]);
      CHECK(diff > 1e-6);
    }
  }
}

TEST_CASE("faceformer: with a window, steps never allocate, however long the sequence") {
  FaceFormerConfig c = small_config();
  c.attention_window = 16;
  FaceFormer<float> m(c);
  randomize(m, 4);
  auto s = m.stream();
  s.reserve(1);
  CHECK(s.capacity() == 16);
  s.start(Index(0));
  std::vector<float> a(5, 0.25f), out(static_cast<std::size_t>(c.vertex_dim()));
  const long before = g_allocations.load();
  {
    struct NoEigenMalloc {
      NoEigenMalloc() { Eigen::internal::set_is_malloc_allowed(false); }
      ~NoEigenMalloc() { Eigen::internal::set_is_malloc_allowed(true); }
    } guard;
    for (Index t = 0; t < 500; ++t) s.step(a.data(), out.data());
  }
  CHECK(g_allocations.load() - before == 0);
  CHECK(s.capacity() == 16);
  for (float v : out) CHECK(std::isfinite(v));
}

TEST_CASE("faceformer: a copied stream is independent (deep copy of caches and state)") {
  FaceFormerConfig c = small_config();
  c.attention_window = 6;
  FaceFormer<double> m(c);
  randomize(m, 5);
  Rng rng(6);
  const Tensor<double> audio = random_t<double>({1, 20, 5}, rng);
  auto a = m.stream();
  a.start(Index(1));
  for (Index t = 0; t < 9; ++t) a.step(audio.select(0).select(t));
  auto b = a;  // copy mid-sequence (ring already wrapped)
  CHECK(b.frames() == a.frames());
  // Stepping the copy must not disturb the original: both continue identically.
  const Tensor<double> ob = b.step(audio.select(0).select(9));
  const Tensor<double> oa = a.step(audio.select(0).select(9));
  for (Index k = 0; k < oa.numel(); ++k) CHECK(oa[k] == ob[k]);
  auto d = m.stream();
  d = b;  // copy assignment
  for (Index t = 10; t < 14; ++t) {
    const Tensor<double> x = b.step(audio.select(0).select(t)), y = d.step(audio.select(0).select(t));
    for (Index k = 0; k < x.numel(); ++k) CHECK(x[k] == y[k]);
  }
  // And the stream equals the whole-sequence prediction.
  const Tensor<double> pred = m.predict(audio, m.one_hot(1));
  for (Index k = 0; k < oa.numel(); ++k) CHECK(oa[k] == doctest::Approx(pred(0, 9, k)).epsilon(1e-12));
}

TEST_CASE("faceformer: config JSON and validation") {
  FaceFormerConfig c = small_config();
  const auto back = FaceFormerConfig::from_json(c.to_json());
  CHECK(back == c);
  CHECK(FaceFormerConfig::from_json(nlohmann::json::object()) == FaceFormerConfig{});
  auto bad = [&](const char* key, nlohmann::json v) {
    auto j = c.to_json();
    j[key] = v;
    return error_message([&] { FaceFormerConfig::from_json(j); });
  };
  CHECK(bad("feature_dim", 7).find("even") != std::string::npos);
  CHECK(bad("num_heads", 3).find("divisible") != std::string::npos);
  CHECK(bad("period", 0).find("positive") != std::string::npos);
  CHECK(bad("vertices", "many").find("bad config value") != std::string::npos);
  CHECK(bad("model_type", "wav2vec2").find("faceformer") != std::string::npos);
  CHECK_THROWS_AS(FaceFormerConfig::from_json(nlohmann::json::array()), ArgumentError);
  c.num_heads = 3;
  CHECK_THROWS_AS(FaceFormer<float>{c}, ArgumentError);
}

TEST_CASE("faceformer: shape and state errors") {
  FaceFormer<float> m(small_config());
  Rng rng(1);
  const auto audio = random_t<float>({1, 4, 5}, rng), verts = random_t<float>({1, 4, 9}, rng);
  const auto style = m.one_hot(0);
  CHECK_NOTHROW(m.forward(audio, verts, style));
  CHECK_THROWS_AS(m.forward(random_t<float>({1, 4, 6}, rng), verts, style), ShapeError);
  CHECK_THROWS_AS(m.forward(audio, random_t<float>({1, 5, 9}, rng), style), ShapeError);
  CHECK_THROWS_AS(m.forward(audio, verts, Tensor<float>({1, 3})), ShapeError);
  CHECK_THROWS_AS(m.predict(audio, Tensor<float>({2, 2})), ShapeError);
  CHECK_THROWS_AS(m.one_hot(2), ArgumentError);
  CHECK(error_message([&] { m.step(audio.select(0).select(0)); }).find("start") != std::string::npos);
  m.start(style);
  CHECK_THROWS_AS(m.step(Tensor<float>({4})), ShapeError);
  CHECK_THROWS_AS(m.start(Tensor<float>({3})), ShapeError);
  nn::FaceFormer<float>::Stream unbound;
  CHECK_THROWS_AS(unbound.start(Index(0)), ArgumentError);
  FaceFormer<float>::Context empty;
  CHECK_THROWS_AS(m.backward(empty, verts), ArgumentError);
}

TEST_CASE("faceformer: save / load round trip and bad files") {
  const FaceFormerConfig c = small_config();
  FaceFormer<float> m(c);
  Rng rng(9);
  m.init(rng);
  randomize(m, 10);  // also vertice_map_r, which init() zeroes
  const std::string path = temp_path("model.safetensors");
  m.save(path);
  FaceFormer<float> back = FaceFormer<float>::from_file(path);
  CHECK(back.config() == c);
  const auto pa = m.parameters(), pb = back.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CHECK(pa[i]->name == pb[i]->name);
    BFT_CHECK_CLOSE(pb[i]->value, pa[i]->value, 0, 0);
  }
  const auto audio = random_t<float>({1, 9, 5}, rng);
  BFT_CHECK_CLOSE(back.predict(audio, m.one_hot(1)), m.predict(audio, m.one_hot(1)), 0, 0);

  // Loading under a prefix (a FaceFormer inside a larger checkpoint).
  {
    io::SafeTensorsWriter w;
    m.add_to(w, "decoder.");
    const std::string p2 = temp_path("prefixed.safetensors");
    w.save(p2);
    FaceFormer<double> d(c, "faceformer.");
    CHECK(d.parameters()[0]->name == "faceformer.audio_feature_map.weight");
    d.load(io::SafeTensorsFile::load(p2), "decoder.");
    CHECK(d.parameters()[0]->value[3] == doctest::Approx(pa[0]->value[3]));
    std::remove(p2.c_str());
  }

  auto write = [&](const std::string& name, auto&& edit) {
    io::SafeTensorsWriter w;
    edit(w);
    const std::string p = temp_path(name);
    w.save(p);
    return p;
  };
  // No config metadata: from_file refuses, load() into a configured model works.
  const std::string nometa = write("nometa.safetensors", [&](io::SafeTensorsWriter& w) {
    for (auto* p : pa) w.add(p->name, p->value);
  });
  {
    const std::string msg = error_message([&] { FaceFormer<float>::from_file(nometa); });
    CHECK(msg.find(nometa) == 0);
    CHECK(msg.find("faceformer_config") != std::string::npos);
    FaceFormer<float> x(c);
    CHECK_NOTHROW(x.load(io::SafeTensorsFile::load(nometa)));
  }
  // Bad JSON, a config that differs from the model's, a missing tensor, a wrong shape, a NaN.
  const std::string badjson = write("badjson.safetensors", [&](io::SafeTensorsWriter& w) {
    m.add_to(w);
    w.set_metadata("faceformer_config", "{not json");
  });
  CHECK(error_message([&] { FaceFormer<float>::from_file(badjson); }).find("not valid JSON") != std::string::npos);
  const std::string other = write("other.safetensors", [&](io::SafeTensorsWriter& w) {
    m.add_to(w);
    auto j = c.to_json();
    j["period"] = 5;
    w.set_metadata("faceformer_config", j.dump());
  });
  {
    FaceFormer<float> x(c);
    const std::string msg = error_message([&] { x.load(io::SafeTensorsFile::load(other)); });
    CHECK(msg.find(other) == 0);
    CHECK(msg.find("does not match") != std::string::npos);
  }
  const std::string missing = write("missing.safetensors", [&](io::SafeTensorsWriter& w) {
    for (auto* p : pa)
      if (p->name != "transformer_decoder.layers.0.norm2.bias") w.add(p->name, p->value);
    w.set_metadata("faceformer_config", c.to_json().dump());
  });
  CHECK(error_message([&] { FaceFormer<float>::from_file(missing); })
            .find("missing tensor 'transformer_decoder.layers.0.norm2.bias'") != std::string::npos);
  const std::string shape = write("shape.safetensors", [&](io::SafeTensorsWriter& w) {
    for (auto* p : pa) w.add(p->name, p->name == "vertice_map.weight" ? Tensor<float>({8, 10}) : p->value);
    w.set_metadata("faceformer_config", c.to_json().dump());
  });
  CHECK(error_message([&] { FaceFormer<float>::from_file(shape); }).find("'vertice_map.weight' has shape (8, 10)") !=
        std::string::npos);
  const std::string nan = write("nan.safetensors", [&](io::SafeTensorsWriter& w) {
    for (auto* p : pa) {
      Tensor<float> v = p->value.clone();
      if (p->name == "obj_vector.weight") v[1] = std::nanf("");
      w.add(p->name, v);
    }
    w.set_metadata("faceformer_config", c.to_json().dump());
  });
  {
    FaceFormer<float> x(c);
    randomize(x, 77);
    const float keep = x.parameters()[0]->value[0];
    CHECK(error_message([&] { x.load(io::SafeTensorsFile::load(nan)); }).find("NaN") != std::string::npos);
    CHECK(x.parameters()[0]->value[0] == keep);  // a failed load changes nothing
  }
  // Truncated file and absent file.
  {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string cut = temp_path("cut.safetensors");
    std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
    CHECK_THROWS_AS(FaceFormer<float>::from_file(cut), IoError);
    std::remove(cut.c_str());
  }
  CHECK_THROWS_AS(FaceFormer<float>::from_file(temp_path("absent.safetensors")), IoError);
  for (const auto& p : {path, nometa, badjson, other, missing, shape, nan}) std::remove(p.c_str());
}
