// The deformation fusion module: whole-module backward against finite differences on a small
// config, save/load round trip, fusion semantics, and a short training run whose loss falls.
#include "test_util.hpp"

#include <filesystem>

#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/train/adam.hpp"
#include "blendfuse/train/fusion_trainer.hpp"

using namespace blendfuse;

namespace {

using Grid = bft::GridMesh;
constexpr auto make_grid = bft::grid_mesh;

nn::DfmConfig tiny_config(const std::string& variant) {
  nn::DfmConfig c;
  c.apply_variant(variant);
  c.map_size = 16;
  c.channels = {3, 4};
  c.k_a = 3;
  c.k_e = 2;
  c.mlp_hidden = 6;
  c.lambda_sparsity = 0.3;
  c.lambda_laplace = 0.5;
  c.lambda_reg = 0.01;
  if (variant != "paper") c.lambda_usage = 0.2;
  return c;
}

}  // namespace

TEST_CASE("DFM: gradients of the total loss match finite differences (every variant)") {
  const Grid g = make_grid(7);
  Rng rng(21);
  auto dv = bft::random_tensor({3, 49, 3}, rng);
  auto weights = Tensor<double>::full({49}, 1.0);
  weights[10] = 3.0;
  for (const char* variant : {"paper", "full", "no-map"}) {
    CAPTURE(variant);
    nn::DeformationFusionModule<double> m(tiny_config(variant), g.vertices, g.faces, 5);
    auto ps = m.parameters();
    for (nn::Domain d : {nn::Domain::Speech, nn::Domain::Expression}) {
      CAPTURE(nn::domain_name(d));
      nn::zero_grads(ps);
      const double total = m.train_batch(d, dv, weights).total;
      CHECK(total == doctest::Approx(m.evaluate_batch(d, dv, weights).total).epsilon(1e-12));
      Rng pick(8);
      for (auto* p : ps) {
        CAPTURE(p->name);
        double worst = 0, wa = 0, wn = 0;
        for (int k = 0; k < 6; ++k) {
          const Index i = static_cast<Index>(pick.below(static_cast<std::uint64_t>(p->value.numel())));
          const double orig = p->value[i], eps = 1e-6;
          p->value[i] = orig + eps;
          const double lp = m.evaluate_batch(d, dv, weights).total;
          p->value[i] = orig - eps;
          const double lm = m.evaluate_batch(d, dv, weights).total;
          p->value[i] = orig;
          const double num = (lp - lm) / (2 * eps);
          const double err = std::abs(num - p->grad[i]) / (1e-7 + 1e-4 * std::max(std::abs(num), std::abs(p->grad[i])));
          if (err > worst) { worst = err; wa = p->grad[i]; wn = num; }
        }
        CHECK_MESSAGE(worst <= 1.0, "analytic ", wa, " vs numeric ", wn);
      }
    }
  }
}

TEST_CASE("DFM: fuse takes speech weights from E_a and expression weights from E_e") {
  const Grid g = make_grid(7);
  nn::DeformationFusionModule<double> m(tiny_config("full"), g.vertices, g.faces, 6);
  Rng rng(4);
  auto a = bft::random_tensor({2, 49, 3}, rng), e = bft::random_tensor({2, 49, 3}, rng);
  auto wa = m.encode(nn::Domain::Speech, a), we = m.encode(nn::Domain::Expression, e);
  for (Index t = 0; t < 2; ++t)
    for (Index j = 3; j < 5; ++j) wa(t, j) = 0.5 * we(t, j);
  BFT_CHECK_CLOSE(m.fuse(a, e, 0.5), m.decode(wa), 1e-12, 1e-12);
  CHECK_THROWS_AS(m.fuse(a, bft::random_tensor({3, 49, 3}, rng)), ShapeError);
  CHECK_THROWS_AS(m.encode(nn::Domain::Speech, bft::random_tensor({2, 48, 3}, rng)), ShapeError);
}

TEST_CASE("DFM: save/load round trip keeps config, map and weights; bad files are rejected") {
  const Grid g = make_grid(7);
  const auto dir = std::filesystem::temp_directory_path() / "blendfuse_tests";
  std::filesystem::create_directories(dir);
  Rng rng(9);
  auto a = bft::random_tensor({2, 49, 3}, rng).cast<float>();
  for (const char* variant : {"full", "no-map"}) {
    CAPTURE(variant);
    nn::DeformationFusionModule<float> m(tiny_config(variant), g.vertices, g.faces, 7);
    const std::string path = (dir / (std::string("dfm_") + variant + ".safetensors")).string();
    m.save(path);
    auto m2 = nn::DeformationFusionModule<float>::load(path);
    CHECK(m2.config().to_json() == m.config().to_json());
    BFT_CHECK_CLOSE(m2.fuse(a, a), m.fuse(a, a), 0.0, 0.0);
  }
  // a weights file that is not a model
  io::SafeTensorsWriter w;
  w.add("x", Tensor<float>({2}));
  const std::string bad = (dir / "not_a_model.safetensors").string();
  w.save(bad);
  CHECK_THROWS_WITH_AS(nn::DeformationFusionModule<float>::load(bad), doctest::Contains("not_a_model.safetensors: not a blendfuse fusion model"), IoError);
  CHECK_THROWS_AS(nn::DfmConfig().apply_variant("bogus"), ArgumentError);
}

TEST_CASE("DFM: a short training run reduces the loss on a tiny two-domain dataset") {
  const Grid g = make_grid(9);
  const Index V = 81;
  Rng rng(33);
  // two rank-2 deformation families
  auto basis = bft::random_tensor({4, V, 3}, rng).cast<float>();
  auto make = [&](int first, int n) {
    Tensor<float> out({n, V, 3});
    for (int t = 0; t < n; ++t) {
      const double c0 = rng.normal(), c1 = rng.normal();
      for (Index i = 0; i < V * 3; ++i) out[t * V * 3 + i] = static_cast<float>(c0 * basis[first * V * 3 + i] + c1 * basis[(first + 1) * V * 3 + i]);
    }
    return out;
  };
  auto sa = make(0, 16), se = make(2, 16);
  nn::DfmConfig cfg = tiny_config("full");
  cfg.lambda_laplace = 0.01;
  cfg.k_a = 4;
  cfg.k_e = 4;
  nn::DeformationFusionModule<float> m(cfg, g.vertices, g.faces, 1);
  train::Adam<float> opt(m.parameters(), {3e-3});
  const Tensor<float> none;
  const double before = m.evaluate_batch(nn::Domain::Speech, sa, none).rec + m.evaluate_batch(nn::Domain::Expression, se, none).rec;
  for (int step = 0; step < 150; ++step) {
    nn::zero_grads(m.parameters());
    m.train_batch(nn::Domain::Speech, sa, none);
    m.train_batch(nn::Domain::Expression, se, none);
    opt.step();
  }
  const double after = m.evaluate_batch(nn::Domain::Speech, sa, none).rec + m.evaluate_batch(nn::Domain::Expression, se, none).rec;
  MESSAGE("reconstruction loss ", before, " -> ", after);
  CHECK(after < 0.3 * before);
}

TEST_CASE("DFM config: configurations that cannot work are refused with the reason") {
  nn::DfmConfig c;  // default channels: 6 stride-2 blocks
  c.map_size = 64;  // 64 → 32 → 16 → 8 → 4 → 2 → 1: instance norm over one pixel is 0
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("map_size 64 with 6 stride-2 conv blocks leaves a 1x1 map"), ArgumentError);
  c.map_size = 65;
  CHECK_NOTHROW(c.validate());
  c.k_a = 100000;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("k_a and k_e must be integers in [1, 1024]"), ArgumentError);
  c.k_a = 64;
  c.lambda_laplace = -1;
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("lambda_laplace must be a finite number in [0, 1e6], got -1"), ArgumentError);
  c.lambda_laplace = std::nan("");
  CHECK_THROWS_AS(c.validate(), ArgumentError);
  c.lambda_laplace = 1;
  c.channels = {};
  CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("channels must list 1 to 12 conv blocks"), ArgumentError);
  c.channels = {4, 8};
  c.map_size = 16;
  for (double u : {0.0, -1000.0, std::nan(""), HUGE_VAL}) {
    c.data_unit_mm = u;  // the unit of the training data (units): checked with the rest
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("DfmConfig: data_unit_mm must be positive"), ArgumentError);
  }
  c.data_unit_mm = 1000;
  CHECK_NOTHROW(c.validate());
  nn::DfmConfig j;
  CHECK_THROWS_WITH_AS(j.update_from_json(nlohmann::json::parse(R"({"k_a": 2.5})"), "c.json"),
                       doctest::Contains("c.json: k_a must be an integer, got 2.5"), ArgumentError);
  j.update_from_json(nlohmann::json::parse(R"({"channels": [4, -8]})"), "c.json");
  CHECK_THROWS_WITH_AS(j.validate(), doctest::Contains("channels entries must be in [1, 4096], got -8"), ArgumentError);
}

TEST_CASE("FusionTrainer: a diverging run stops naming the step and saves no non-finite checkpoint") {
  const Grid g = make_grid(6);
  const Index V = g.vertices.dim(0);
  Tensor<float> pool({8, V, 3});
  for (Index i = 0; i < pool.numel(); ++i) pool[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  nn::DfmConfig cfg = tiny_config("full");
  nn::DeformationFusionModule<float> m(cfg, g.vertices, g.faces, 1);
  const auto ck = (std::filesystem::temp_directory_path() / "bf_diverge.ckpt").string();
  std::filesystem::remove(ck);
  train::FusionTrainConfig tc;
  tc.epochs = 3;
  tc.batch = 4;
  tc.lr = 1e30;  // the CLI refuses this; the trainer must still not save garbage
  tc.checkpoint = ck;
  tc.progress = false;
  train::FusionTrainer t(m, tc);
  CHECK_THROWS_WITH_AS(t.fit(pool, pool, Tensor<float>(), Tensor<float>(), Tensor<float>()),
                       doctest::Contains("train-fusion: at epoch 1, step"), ArgumentError);
  CHECK_FALSE(std::filesystem::exists(ck));
}

TEST_CASE("DFM units: the same data in metres and in millimetres train the same model (outputs × 1000)") {
  const Grid g = make_grid(9);
  const Index V = 81;
  Rng rng(34);
  auto basis = bft::random_tensor({4, V, 3}, rng).cast<float>();
  auto make = [&](int first, int n) {
    Tensor<float> out({n, V, 3});
    for (int t = 0; t < n; ++t) {
      const double c0 = rng.normal(), c1 = rng.normal();
      for (Index i = 0; i < V * 3; ++i) out[t * V * 3 + i] = static_cast<float>(c0 * basis[first * V * 3 + i] + c1 * basis[(first + 1) * V * 3 + i]);
    }
    return out;
  };
  auto to_m = [](const Tensor<float>& x) {  // what a dataset written in metres holds
    Tensor<float> y = x.clone();
    for (Index i = 0; i < y.numel(); ++i) y[i] = static_cast<float>(static_cast<double>(y[i]) / 1000.0);
    return y;
  };
  auto times = [](const Tensor<float>& x, double c) {
    Tensor<float> y = x.clone();
    for (Index i = 0; i < y.numel(); ++i) y[i] = static_cast<float>(y[i] * c);
    return y;
  };
  // relative max difference of two tensors
  auto rel = [](const Tensor<float>& a, const Tensor<float>& b) {
    double d = 0, m = 0;
    for (Index i = 0; i < a.numel(); ++i) {
      d = std::max(d, std::abs(double(a[i]) - double(b[i])));
      m = std::max(m, std::abs(double(b[i])));
    }
    return d / m;
  };
  const auto sa = make(0, 16), se = make(2, 16);
  const auto sa_m = to_m(sa), se_m = to_m(se);
  nn::DfmConfig cfg = tiny_config("full");
  cfg.lambda_laplace = 0.01;
  cfg.k_a = 4;
  cfg.k_e = 4;
  nn::DfmConfig cfg_m = cfg;
  cfg_m.data_unit_mm = 1000;
  nn::DeformationFusionModule<float> mm(cfg, g.vertices, g.faces, 1), m(cfg_m, to_m(g.vertices), g.faces, 1);
  CHECK(m.data_unit_mm() == 1000.0);
  CHECK(mm.data_unit_mm() == 1.0);
  train::Adam<float> opt_mm(mm.parameters(), {3e-3}), opt_m(m.parameters(), {3e-3});
  const Tensor<float> none;
  double loss_mm = 0, loss_m = 0;
  for (int step = 0; step < 60; ++step) {
    nn::zero_grads(mm.parameters());
    nn::zero_grads(m.parameters());
    loss_mm = mm.train_batch(nn::Domain::Speech, sa, none).total + mm.train_batch(nn::Domain::Expression, se, none).total;
    loss_m = m.train_batch(nn::Domain::Speech, sa_m, none).total + m.train_batch(nn::Domain::Expression, se_m, none).total;
    opt_mm.step();
    opt_m.step();
  }
  CHECK(loss_m == doctest::Approx(loss_mm).epsilon(1e-3));  // losses are in mm either way
  const Tensor<float> fused_mm = mm.fuse(sa, se), fused_m = m.fuse(sa_m, se_m);
  MESSAGE("fused: metres × 1000 vs mm, relative max difference ", rel(times(fused_m, 1000), fused_mm));
  CHECK(rel(times(fused_m, 1000), fused_mm) < 1e-3);
  // the unit follows the input: each model runs the other unit's data when told its unit
  CHECK(rel(times(mm.fuse(sa_m, se_m, 1.0, 1000), 1000), fused_mm) < 1e-5);
  CHECK(rel(m.fuse(sa, se, 1.0, 1), fused_mm) < 1e-3);
  CHECK(rel(times(m.decode(m.encode(nn::Domain::Speech, sa_m)), 1000), mm.decode(mm.encode(nn::Domain::Speech, sa))) < 1e-3);
  // and without the conversion (metres fed as if mm) the result is not a scaled copy: the check
  // above has teeth (the mask channel makes the encoder scale-dependent)
  CHECK(rel(times(mm.fuse(sa_m, se_m, 1.0, 1), 1000), fused_mm) > 0.05);

  // the unit is stored: a metres model reloads as one; a mm file has no key (files from before
  // units load as mm), and a bad value is rejected naming the file
  const auto dir = std::filesystem::temp_directory_path() / "blendfuse_tests";
  std::filesystem::create_directories(dir);
  const std::string pm = (dir / "dfm_units_m.safetensors").string(), pmm = (dir / "dfm_units_mm.safetensors").string();
  m.save(pm);
  mm.save(pmm);
  const auto m2 = nn::DeformationFusionModule<float>::load(pm);
  CHECK(m2.data_unit_mm() == 1000.0);
  BFT_CHECK_CLOSE(m2.fuse(sa_m, se_m), fused_m, 0.0, 0.0);
  CHECK(io::SafeTensorsFile::load(pm).meta("config").find("\"data_unit_mm\":1000") != std::string::npos);
  CHECK(io::SafeTensorsFile::load(pmm).meta("config").find("data_unit_mm") == std::string::npos);
  CHECK(nn::DeformationFusionModule<float>::load(pmm).data_unit_mm() == 1.0);
  nn::DfmConfig bad;
  CHECK_THROWS_WITH_AS(bad.update_from_json(nlohmann::json{{"data_unit_mm", -1}}, "cfg.json"),
                       doctest::Contains("cfg.json: data_unit_mm must be positive"), ArgumentError);
}
