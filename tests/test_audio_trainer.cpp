// The audio trainer's loss terms (train/audio_trainer.hpp, loss/losses.hpp): gradient checks of
// the lip-gap (pair difference, squared and pseudo-Huber), velocity and lip-weighted losses, the
// default loss being the plain MSE bit for bit, option checks, and exact resume (2 epochs == 1 epoch + resume 1 epoch,
// with every loss term, the lr schedule, scheduled sampling and augmentation on).
#include "test_util.hpp"
#include "audio_test_util.hpp"

#include <filesystem>
#include <string>

#include "blendfuse/loss/losses.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/train/audio_trainer.hpp"

using namespace blendfuse;
using nn::AudioModel;
using nn::AudioModelConfig;

namespace {

std::filesystem::path temp_dir() {
  const auto dir = std::filesystem::temp_directory_path() / "blendfuse_tests_audio_trainer";
  std::filesystem::create_directories(dir);
  return dir;
}

/// Scalar loss as a (1)-tensor output for bft::gradcheck: forward returns [value], backward
/// returns grad · dout[0].
Tensor<double> scalar(double v) {
  Tensor<double> t({1});
  t[0] = v;
  return t;
}
Tensor<double> scaled(const Tensor<double>& g, double s) {
  Tensor<double> o(g.shape());
  for (Index i = 0; i < g.numel(); ++i) o[i] = g[i] * s;
  return o;
}

const std::vector<std::array<std::int32_t, 2>> kPairs = {{0, 3}, {1, 4}, {2, 2}, {4, 1}};

/// Tiny model: 2 conv layers (stride 320), E = 8, one layer, 6 vertices.
AudioModelConfig tiny_config() {
  return bft::tiny_audio_config(6, {"S0", "S1"});
}

std::vector<train::AudioSample> random_samples(const AudioModel<float>& m, int n) {
  Rng rng(7);
  std::vector<train::AudioSample> out;
  for (int s = 0; s < n; ++s) {
    train::AudioSample x;
    x.name = "S" + std::to_string(s % 2) + "_seq" + std::to_string(s);
    x.subject = s % 2;
    const Index Tn = 12 + 3 * s;
    x.features = Tensor<float>({1, Tn, m.config().w2v.conv_channels()});
    fill_normal(x.features, rng, 1.0f);
    x.target = Tensor<float>({1, Tn, m.vertices() * 3});
    fill_normal(x.target, rng, 1.0f);
    out.push_back(std::move(x));
  }
  return out;
}

}  // namespace

TEST_CASE("audio losses: lip-gap (pair difference) loss gradient") {
  Rng rng(3);
  const Tensor<double> y = bft::random_tensor({7, 15}, rng);
  bft::gradcheck(
      {bft::random_tensor({7, 15}, rng)},
      [&](const std::vector<Tensor<double>>& in) { return scalar(loss::pair_difference_mse(in[0], y, kPairs).value); },
      [&](const std::vector<Tensor<double>>& in, const Tensor<double>& d) {
        return std::vector<Tensor<double>>{scaled(loss::pair_difference_mse(in[0], y, kPairs).grad, d[0])};
      });
  // Zero for a prediction that moves both vertices of every pair together with the truth.
  Tensor<double> p = y.clone();
  for (Index t = 0; t < 7; ++t)
    for (Index k = 0; k < 15; ++k) p[t * 15 + k] += 0.5 * static_cast<double>(t);
  CHECK(loss::pair_difference_mse(p, y, kPairs).value == doctest::Approx(0.0));
  // The value of a single pair opening: 1 frame, pair (0, 1), upper vertex 2 mm too high.
  Tensor<double> a({1, 6}), b({1, 6});
  a[1] = 2;
  CHECK(loss::pair_difference_mse(a, b, {{{0, 1}}}).value == doctest::Approx(4.0 / 3.0));
  CHECK_THROWS_AS(loss::pair_difference_mse(a, b, {{{0, 2}}}), ArgumentError);
  CHECK_THROWS_AS(loss::pair_difference_mse(a, b, {}), ArgumentError);
}

TEST_CASE("audio losses: pseudo-Huber lip-gap loss gradient and limits") {
  Rng rng(8);
  const Tensor<double> y = bft::random_tensor({6, 15}, rng);
  for (double delta : {0.3, 2.0}) {
    bft::gradcheck(
        {bft::random_tensor({6, 15}, rng)},
        [&](const std::vector<Tensor<double>>& in) {
          return scalar(loss::pair_difference_huber(in[0], y, kPairs, delta).value);
        },
        [&](const std::vector<Tensor<double>>& in, const Tensor<double>& d) {
          return std::vector<Tensor<double>>{scaled(loss::pair_difference_huber(in[0], y, kPairs, delta).grad, d[0])};
        });
  }
  // Small errors: ≈ the squared loss; large errors: ≈ 2δ‖r‖ (linear).
  Tensor<double> a({1, 6}), b({1, 6});
  a[1] = 1e-3;
  CHECK(loss::pair_difference_huber(a, b, {{{0, 1}}}, 1.0).value ==
        doctest::Approx(loss::pair_difference_mse(a, b, {{{0, 1}}}).value).epsilon(1e-5));
  a[1] = 1e3;
  CHECK(loss::pair_difference_huber(a, b, {{{0, 1}}}, 0.5).value == doctest::Approx(2 * 0.5 * 1e3 / 3.0).epsilon(1e-3));
  CHECK_THROWS_AS(loss::pair_difference_huber(a, b, {{{0, 1}}}, 0.0), ArgumentError);
}

TEST_CASE("audio losses: velocity loss gradient") {
  Rng rng(4);
  const Tensor<double> y = bft::random_tensor({1, 9, 6}, rng);
  bft::gradcheck(
      {bft::random_tensor({1, 9, 6}, rng)},
      [&](const std::vector<Tensor<double>>& in) { return scalar(loss::velocity_mse(in[0], y).value); },
      [&](const std::vector<Tensor<double>>& in, const Tensor<double>& d) {
        return std::vector<Tensor<double>>{scaled(loss::velocity_mse(in[0], y).grad, d[0])};
      });
  // A constant offset has no velocity error; a single frame has none either.
  Tensor<double> p = y.clone();
  for (Index i = 0; i < p.numel(); ++i) p[i] += 3.0;
  CHECK(loss::velocity_mse(p, y).value == doctest::Approx(0.0));
  CHECK(loss::velocity_mse(bft::random_tensor({1, 6}, rng), Tensor<double>({1, 6})).value == 0.0);
}

TEST_CASE("audio trainer: the full sequence loss (lip weights + gap + velocity) gradient") {
  Rng rng(5);
  const Tensor<double> y = bft::random_tensor({1, 8, 15}, rng);
  train::AudioLossTerms terms;
  terms.vertex_weights = {1, 3, 1, 2.5, 1};
  terms.pairs = kPairs;
  terms.gap_weight = 0.7;
  terms.velocity_weight = 1.3;
  terms.gap_delta = 0.4;  // the pseudo-Huber gap loss
  bft::gradcheck(
      {bft::random_tensor({1, 8, 15}, rng)},
      [&](const std::vector<Tensor<double>>& in) { return scalar(train::audio_sequence_loss(in[0], y, terms, 20).value); },
      [&](const std::vector<Tensor<double>>& in, const Tensor<double>& d) {
        return std::vector<Tensor<double>>{scaled(train::audio_sequence_loss(in[0], y, terms, 20).grad, d[0])};
      });
  terms.gap_delta = 0;  // the squared gap loss
  bft::gradcheck(
      {bft::random_tensor({1, 8, 15}, rng)},
      [&](const std::vector<Tensor<double>>& in) { return scalar(train::audio_sequence_loss(in[0], y, terms, 20).value); },
      [&](const std::vector<Tensor<double>>& in, const Tensor<double>& d) {
        return std::vector<Tensor<double>>{scaled(train::audio_sequence_loss(in[0], y, terms, 20).grad, d[0])};
      });
  // Value = weighted MSE per batch frame + the extra terms per batch frame.
  const Tensor<double> p = bft::random_tensor({1, 8, 15}, rng);
  double wmse = 0;
  for (Index i = 0; i < p.numel(); ++i) {
    const double d = p[i] - y[i];
    wmse += terms.vertex_weights[static_cast<std::size_t>((i % 15) / 3)] * d * d;
  }
  const double expect = wmse / (20.0 * 15.0) + 8.0 / 20.0 * (0.7 * loss::pair_difference_mse(p, y, kPairs).value +
                                                           1.3 * loss::velocity_mse(p, y).value);
  CHECK(train::audio_sequence_loss(p, y, terms, 20).value == doctest::Approx(expect).epsilon(1e-12));
}

TEST_CASE("audio trainer: without extra terms the loss gradient is the old plain MSE, bit for bit") {
  Rng rng(6);
  Tensor<float> out({1, 5, 12}), y({1, 5, 12});
  fill_normal(out, rng, 1.0f);
  fill_normal(y, rng, 1.0f);
  const Index batch_frames = 17;
  const auto g = train::audio_sequence_loss(out, y, train::AudioLossTerms{}, batch_frames).grad;
  const double norm = 1.0 / static_cast<double>(batch_frames * 12);
  for (Index i = 0; i < out.numel(); ++i) {
    const double d = static_cast<double>(out[i]) - static_cast<double>(y[i]);
    CHECK(g[i] == static_cast<float>(2.0 * d * norm));
  }
}

TEST_CASE("audio trainer: options are validated") {
  AudioModel<float> m(tiny_config());
  m.init();
  train::AudioTrainConfig tc;
  tc.progress = false;
  tc.gap_weight = 1;  // no pairs
  CHECK_THROWS_AS(train::AudioTrainer(m, tc), ArgumentError);
  tc.gap_weight = 0;
  tc.lip_weight = 1;  // no lip vertices
  CHECK_THROWS_AS(train::AudioTrainer(m, tc), ArgumentError);
  tc.lip_vertices = {0, 9};  // out of range (6 vertices)
  CHECK_THROWS_AS(train::AudioTrainer(m, tc), ArgumentError);
  tc.lip_vertices = {0, 5};
  tc.sampling_ramp = 1.5;
  CHECK_THROWS_AS(train::AudioTrainer(m, tc), ArgumentError);
  tc.sampling_ramp = 0.5;
  tc.velocity_weight = -1;
  CHECK_THROWS_AS(train::AudioTrainer(m, tc), ArgumentError);
  tc.velocity_weight = 0;
  tc.augment_speed = 0.6;
  CHECK_THROWS_AS(train::AudioTrainer(m, tc), ArgumentError);
}

TEST_CASE("audio trainer: resume is exact (2 epochs == 1 epoch + resume 1 epoch)") {
  const auto dir = temp_dir();
  const AudioModelConfig cfg = tiny_config();
  auto fresh = [&] {
    AudioModel<float> m(cfg);
    m.init();
    return m;
  };
  AudioModel<float> probe = fresh();
  const auto samples = random_samples(probe, 5);
  auto config = [&](const std::string& ckpt) {
    train::AudioTrainConfig tc;
    tc.epochs = 2;
    tc.batch = 2;
    tc.lr = 3e-3;
    tc.lr_final = 1e-3;
    tc.progress = false;
    tc.scheduled_sampling = 0.8;
    tc.sampling_ramp = 0.5;
    tc.lip_weight = 2;
    tc.lip_vertices = {1, 4};
    tc.gap_weight = 0.5;
    tc.gap_delta = 0.5;
    tc.lip_pairs = kPairs;
    tc.velocity_weight = 0.5;
    tc.augment_speed = 0.2;
    tc.augment_gain = 0.1;
    tc.checkpoint = (dir / ckpt).string();
    std::filesystem::remove(tc.checkpoint);
    return tc;
  };
  // Straight: 2 epochs.
  AudioModel<float> a = fresh();
  train::AudioTrainer ta(a, config("straight.ckpt"));
  REQUIRE(ta.fit(samples, {}).size() == 2u);
  // Interrupted after 1 epoch (max_seconds tiny: stops after the first epoch), then resumed.
  AudioModel<float> b = fresh();
  auto tc1 = config("resumed.ckpt");
  tc1.max_seconds = 1e-9;
  train::AudioTrainer tb(b, tc1);
  REQUIRE(tb.fit(samples, {}).size() == 1u);
  REQUIRE(tb.epochs_done() == 1);
  AudioModel<float> c = fresh();  // a new process: fresh model, state from the checkpoint
  auto tc2 = tc1;
  tc2.max_seconds = 0;
  tc2.resume = true;
  train::AudioTrainer tcr(c, tc2);
  REQUIRE(tcr.fit(samples, {}).size() == 1u);
  CHECK(tcr.epochs_done() == 2);
  const auto pa = a.trainable_parameters(), pc = c.trainable_parameters();
  REQUIRE(pa.size() == pc.size());
  Index differing = 0;
  for (std::size_t k = 0; k < pa.size(); ++k)
    for (Index i = 0; i < pa[k]->value.numel(); ++i) differing += pa[k]->value[i] != pc[k]->value[i];
  CHECK(differing == 0);
  // And the training did move the weights (the comparison is not vacuous).
  const auto p0 = probe.trainable_parameters();
  Index moved = 0;
  for (std::size_t k = 0; k < pa.size(); ++k)
    for (Index i = 0; i < pa[k]->value.numel(); ++i) moved += pa[k]->value[i] != p0[k]->value[i];
  CHECK(moved > 0);
}
