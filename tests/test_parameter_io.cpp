// Parameter loading and training checkpoints: nn::load_parameters is all-or-nothing (a missing
// tensor, a wrong shape, an integer dtype or a NaN anywhere leaves every parameter unchanged and
// the error names the file and the tensor), and train::load_checkpoint restores parameters and
// Adam moments by name — a model whose parameter order changed between versions still resumes
// correctly — and changes nothing when any part of the checkpoint is bad.
#include "test_util.hpp"

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/io/safetensors.hpp"
#include "blendfuse/nn/parameter.hpp"
#include "blendfuse/train/adam.hpp"
#include "blendfuse/train/checkpoint.hpp"

using namespace blendfuse;

namespace {

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "blendfuse_tests_parameter_io";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

Tensor<float> filled(const Shape& s, float start) {
  Tensor<float> t(s);
  for (Index i = 0; i < t.numel(); ++i) t[i] = start + static_cast<float>(i);
  return t;
}

/// A model with two same-shaped parameters whose order in parameters() can be flipped, as a
/// refactoring of a real model might reorder them (from_safetensors builds one in the default
/// order, so a flipped model restored by position would get its two parameters swapped).
struct TwoParams {
  bool flipped = false;
  nn::Parameter<float> a{"a", {2, 3}}, b{"b", {2, 3}};
  struct Config {
    nlohmann::json to_json() const { return {{"model", "two"}}; }
  };
  Config config() const { return {}; }
  nn::ParamList<float> parameters() { return flipped ? nn::ParamList<float>{&b, &a} : nn::ParamList<float>{&a, &b}; }
  void add_to(io::SafeTensorsWriter& w) { nn::add_parameters(w, parameters()); }
  static TwoParams from_safetensors(const io::SafeTensorsFile& f) {
    TwoParams m;
    nn::load_parameters(f, m.parameters());
    return m;
  }
};

}  // namespace

TEST_CASE("load_parameters: all or nothing, errors name the file and the tensor") {
  nn::Parameter<float> p{"p", {2, 2}}, q{"q", {3}};
  p.value = filled({2, 2}, 1);
  q.value = filled({3}, 10);
  const nn::ParamList<float> ps{&p, &q};
  const auto good = temp_path("good.safetensors");
  {
    io::SafeTensorsWriter w;
    w.add("m.p", filled({2, 2}, 100));
    w.add("m.q", filled({3}, 200));
    w.save(good);
  }
  auto expect_unchanged = [&] {
    CHECK(p.value[0] == 1.0f);
    CHECK(p.value[3] == 4.0f);
    CHECK(q.value[2] == 12.0f);
  };
  // q is the bad one: p (read first) must not have been written either
  struct Bad {
    const char* name;
    std::function<void(io::SafeTensorsWriter&)> q;
    const char* message;
  };
  const std::vector<Bad> bad = {
      {"missing", [](io::SafeTensorsWriter&) {}, "missing tensor 'm.q'"},
      {"shape", [](io::SafeTensorsWriter& w) { w.add("m.q", filled({4}, 0)); }, "tensor 'm.q' has shape (4,), expected (3,)"},
      {"dtype", [](io::SafeTensorsWriter& w) { w.add("m.q", Tensor<std::int32_t>({3})); }, "tensor 'm.q' has dtype I32"},
      {"nan",
       [](io::SafeTensorsWriter& w) {
         Tensor<float> t = filled({3}, 0);
         t[1] = NAN;
         w.add("m.q", t);
       },
       "tensor 'm.q' contains NaN or Inf at element 1"},
  };
  for (const auto& b : bad) {
    CAPTURE(b.name);
    const auto path = temp_path(std::string("bad_") + b.name + ".safetensors");
    io::SafeTensorsWriter w;
    w.add("m.p", filled({2, 2}, 100));
    b.q(w);
    w.save(path);
    const auto v0 = p.version;
    CHECK_THROWS_WITH_AS(nn::load_parameters(io::SafeTensorsFile::load(path), ps, "m."),
                         doctest::Contains((path + ": " + b.message).c_str()), IoError);
    expect_unchanged();
    CHECK(p.version == v0);
  }
  // a key function with a note for the errors
  CHECK_THROWS_WITH_AS(nn::load_parameters(io::SafeTensorsFile::load(good), ps,
                                           [](const nn::Parameter<float>& x) {
                                             return nn::ParameterKey{"x." + x.name, " (test parameter '" + x.name + "')"};
                                           }),
                       doctest::Contains("missing tensor 'x.p' (test parameter 'p')"), IoError);
  expect_unchanged();
  const auto v0 = q.version;
  nn::load_parameters(io::SafeTensorsFile::load(good), ps, "m.");
  CHECK(p.value[3] == 103.0f);
  CHECK(q.value[2] == 202.0f);
  CHECK(q.version == v0 + 1);  // touched: caches derived from the value refresh
}

TEST_CASE("load_checkpoint: parameters and Adam moments by name, nothing changed on a bad checkpoint") {
  const auto ck = temp_path("two.ckpt");
  {
    TwoParams m;
    m.a.value = filled({2, 3}, 1);
    m.b.value = filled({2, 3}, 50);
    train::Adam<float> opt(m.parameters());
    for (Index i = 0; i < 6; ++i) {
      m.a.grad[i] = 1.0f;
      m.b.grad[i] = -2.0f;
    }
    opt.step();
    train::save_checkpoint(ck, m, opt, 3, 1);
  }
  const auto saved = io::SafeTensorsFile::load(ck);
  const Tensor<float> a_saved = saved.get<float>("a"), b_saved = saved.get<float>("b");
  const Tensor<float> am_saved = saved.get<float>("a.adam_m"), bm_saved = saved.get<float>("b.adam_m");
  CHECK(am_saved[0] != bm_saved[0]);  // the moments differ, so a mix-up would show

  // the same model with its parameters listed in the other order
  TwoParams m;
  m.flipped = true;
  train::Adam<float> opt(m.parameters());
  CHECK(train::load_checkpoint(ck, m, opt) == 3);
  for (Index i = 0; i < 6; ++i) {
    CHECK(m.a.value[i] == a_saved[i]);
    CHECK(m.b.value[i] == b_saved[i]);
  }
  // the moments went to the right parameters: a fresh save writes them back under the same names
  const auto ck2 = temp_path("two_again.ckpt");
  train::save_checkpoint(ck2, m, opt, 3, 1);
  const auto again = io::SafeTensorsFile::load(ck2);
  CHECK(again.get<float>("a.adam_m")[0] == am_saved[0]);
  CHECK(again.get<float>("b.adam_m")[0] == bm_saved[0]);

  // a bad epoch: the model and the optimiser are unchanged
  const auto bad = temp_path("bad_epoch.ckpt");
  {
    TwoParams w;
    w.a.value = filled({2, 3}, 1000);
    w.b.value = filled({2, 3}, 2000);
    train::Adam<float> o(w.parameters());
    train::save_checkpoint(bad, w, o, 0, 1);
    // rewrite with a bad epoch
    io::SafeTensorsWriter wr;
    w.add_to(wr);
    o.save_state(wr);
    wr.set_metadata("train.epoch", "seven");
    wr.save(bad);
  }
  TwoParams fresh;
  fresh.a.value = filled({2, 3}, -1);
  train::Adam<float> fopt(fresh.parameters());
  CHECK_THROWS_WITH_AS(train::load_checkpoint(bad, fresh, fopt), doctest::Contains("metadata 'train.epoch' is not an integer"),
                       IoError);
  CHECK(fresh.a.value[0] == -1.0f);
  CHECK(fopt.step_count() == 0);
  // a checkpoint without a parameter's Adam moment: an error naming it, the model unchanged
  const auto no_m = temp_path("no_moment.ckpt");
  {
    io::SafeTensorsWriter wr;
    wr.add("a", filled({2, 3}, 7));
    wr.add("b", filled({2, 3}, 8));
    wr.add("a.adam_m", Tensor<float>({2, 3}));
    wr.add("a.adam_v", Tensor<float>({2, 3}));
    wr.set_metadata("train.epoch", "1");
    wr.save(no_m);
  }
  CHECK_THROWS_WITH_AS(train::load_checkpoint(no_m, fresh, fopt), doctest::Contains("b.adam_m"), IoError);
  CHECK(fresh.a.value[0] == -1.0f);
}
