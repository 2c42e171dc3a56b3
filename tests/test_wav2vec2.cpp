// wav2vec 2.0 encoder (nn/wav2vec2.hpp): forward and backward against torchaudio (small config,
// tests/torch/gen_wav2vec2.py), gradient checks in double, Hugging Face / torchaudio names,
// checkpoint round trips and load errors.
#include "test_util.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <set>
#include <string>

#include "blendfuse/nn/wav2vec2.hpp"

using namespace blendfuse;
using nn::Wav2Vec2Config;
using nn::Wav2Vec2Model;
using nn::Wav2Vec2Names;

namespace {

std::filesystem::path temp_dir() {
  const auto dir = std::filesystem::temp_directory_path() / "blendfuse_tests_wav2vec2";
  std::filesystem::create_directories(dir);
  return dir;
}

const char* const kVectorNonWeights[] = {"audio", "features", "hidden"};

bool is_weight_key(const std::string& k) {
  if (k.rfind("grad.", 0) == 0) return false;
  for (const char* s : kVectorNonWeights)
    if (k == s) return false;
  return true;
}

/// The generator's projection of the hidden state: R[i] = sin(0.5 + 0.37 i).
template <class T>
Tensor<T> projection_R(const Shape& s) {
  Tensor<T> R(s);
  for (Index i = 0; i < R.numel(); ++i) R[i] = static_cast<T>(std::sin(0.5 + 0.37 * static_cast<double>(i)));
  return R;
}

template <class T>
nn::Parameter<T>* find_param(Wav2Vec2Model<T>& m, const std::string& name) {
  for (auto* p : m.parameters())
    if (p->name == name) return p;
  FAIL("no parameter ", name);
  return nullptr;
}

/// A tiny configuration for gradient checks.
Wav2Vec2Config tiny_config(Index pos_kernel) {
  Wav2Vec2Config c;
  c.conv_dim = {6, 6};
  c.conv_kernel = {4, 2};
  c.conv_stride = {2, 2};
  c.hidden_size = 8;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 12;
  c.num_conv_pos_embeddings = pos_kernel;
  c.num_conv_pos_embedding_groups = 2;
  return c;
}

/// Random init plus non-trivial norm affines and weight_g ≠ ‖weight_v‖.
template <class T>
void randomise(Wav2Vec2Model<T>& m, std::uint64_t seed) {
  Rng rng(seed);
  m.init(rng);
  for (auto* p : m.parameters()) {
    const bool norm = p->name.find("norm") != std::string::npos;
    if (norm && p->name.size() > 7 && p->name.compare(p->name.size() - 7, 7, ".weight") == 0) {
      for (Index i = 0; i < p->value.numel(); ++i) p->value[i] = static_cast<T>(1.0 + 0.2 * rng.normal());
    } else if (norm || p->name.find("weight_g") != std::string::npos) {
      for (Index i = 0; i < p->value.numel(); ++i) p->value[i] += static_cast<T>(0.3 * rng.normal());
    }
  }
}

template <class T>
double max_abs_diff(const Tensor<T>& a, const Tensor<T>& b) {
  REQUIRE(a.shape() == b.shape());
  const auto ca = a.contiguous(), cb = b.contiguous();
  double m = 0;
  for (Index i = 0; i < ca.numel(); ++i) m = std::max(m, std::abs(static_cast<double>(ca[i]) - static_cast<double>(cb[i])));
  return m;
}

}  // namespace

TEST_CASE("Wav2Vec2Config: base defaults, frame counts and Hugging Face config.json") {
  const Wav2Vec2Config base;
  CHECK(base.num_frames(16000) == 49);
  CHECK(base.min_samples() == 400);
  CHECK(base.num_frames(399) == 0);
  CHECK(base.num_frames(400) == 1);
  // Keys of facebook/wav2vec2-base-960h's config.json (irrelevant ones ignored).
  const auto j = nlohmann::json::parse(R"({
    "architectures": ["Wav2Vec2ForCTC"], "model_type": "wav2vec2", "hidden_dropout": 0.1,
    "conv_bias": false, "conv_dim": [512,512,512,512,512,512,512],
    "conv_kernel": [10,3,3,3,3,2,2], "conv_stride": [5,2,2,2,2,2,2], "do_stable_layer_norm": false,
    "feat_extract_activation": "gelu", "feat_extract_norm": "group", "hidden_act": "gelu",
    "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
    "num_attention_heads": 12, "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128,
    "num_feat_extract_layers": 7, "num_hidden_layers": 12, "vocab_size": 32})");
  const Wav2Vec2Config c = Wav2Vec2Config::from_json(j);
  CHECK(c.to_json() == base.to_json());
  CHECK(Wav2Vec2Config::from_json(base.to_json()).to_json() == base.to_json());

  auto with = [&](const char* key, nlohmann::json v) {
    auto k = j;
    k[key] = std::move(v);
    return k;
  };
  CHECK_THROWS_AS(Wav2Vec2Config::from_json(with("feat_extract_norm", "layer")), ArgumentError);
  CHECK_THROWS_AS(Wav2Vec2Config::from_json(with("do_stable_layer_norm", true)), ArgumentError);
  CHECK_THROWS_AS(Wav2Vec2Config::from_json(with("conv_bias", true)), ArgumentError);
  CHECK_THROWS_AS(Wav2Vec2Config::from_json(with("num_attention_heads", 7)), ArgumentError);
  CHECK_THROWS_AS(Wav2Vec2Config::from_json(with("conv_kernel", nlohmann::json::array({10, 3}))), ArgumentError);
  CHECK_THROWS_AS(Wav2Vec2Config::from_json(with("hidden_size", "big")), ArgumentError);

  const auto dir = temp_dir();
  const std::string bad = (dir / "bad_config.json").string();
  io::write_file_atomic(bad, std::string("{ \"hidden_size\": "));
  try {
    (void)Wav2Vec2Config::from_file(bad);
    FAIL("no exception");
  } catch (const IoError& e) {
    CHECK(e.path() == bad);
  }
}

TEST_CASE("wav2vec2 names: Hugging Face <-> torchaudio mapping covers torchaudio's state_dict") {
  CHECK(nn::wav2vec2_torchaudio_name("feature_extractor.conv_layers.0.layer_norm.weight") ==
        "feature_extractor.conv_layers.0.layer_norm.weight");
  CHECK(nn::wav2vec2_torchaudio_name("feature_projection.projection.bias") ==
        "encoder.feature_projection.projection.bias");
  CHECK(nn::wav2vec2_torchaudio_name("encoder.pos_conv_embed.conv.weight_g") ==
        "encoder.transformer.pos_conv_embed.conv.weight_g");
  CHECK(nn::wav2vec2_torchaudio_name("encoder.layers.11.feed_forward.output_dense.weight") ==
        "encoder.transformer.layers.11.feed_forward.output_dense.weight");
  CHECK(nn::wav2vec2_hf_name("encoder.transformer.layer_norm.bias") == "encoder.layer_norm.bias");
  CHECK(nn::wav2vec2_hf_name("encoder.feature_projection.layer_norm.weight") == "feature_projection.layer_norm.weight");
  CHECK_THROWS_AS(nn::wav2vec2_torchaudio_name("lm_head.weight"), ArgumentError);
  CHECK_THROWS_AS(nn::wav2vec2_hf_name("aux.weight"), ArgumentError);

  // Every tensor of the torchaudio state_dict maps to exactly one parameter and back.
  const auto f = bft::vectors("wav2vec2");
  const auto cfg = Wav2Vec2Config::from_json(nlohmann::json::parse(f.meta("config")));
  Wav2Vec2Model<float> m(cfg);
  std::set<std::string> ours, theirs;
  for (auto* p : m.parameters()) {
    REQUIRE(p->name.rfind("wav2vec2.", 0) == 0);
    const std::string rel = p->name.substr(9);
    const std::string ta = nn::wav2vec2_torchaudio_name(rel);
    CHECK(nn::wav2vec2_hf_name(ta) == rel);
    ours.insert(ta);
  }
  for (const auto& k : f.names())
    if (is_weight_key(k)) theirs.insert(k);
  CHECK(ours == theirs);
  CHECK(m.parameters().size() == 3 + 2 + 4 + 3 + 2 + 16 * 2);
}

TEST_CASE_TEMPLATE("Wav2Vec2Model matches torchaudio: features, hidden state, gradients", T, float, double) {
  const bool dbl = std::is_same_v<T, double>;
  const auto f = bft::vectors("wav2vec2");
  const auto cfg = Wav2Vec2Config::from_json(nlohmann::json::parse(f.meta("config")));
  CHECK(cfg.do_normalize);
  Wav2Vec2Model<T> m(cfg);
  m.load(f);  // torchaudio names, detected
  const auto audio = f.get<T>("audio");
  typename Wav2Vec2Model<T>::Context ctx;
  const auto out = m.forward(audio, &ctx);
  const auto feat_ref = f.get<double>("features"), hid_ref = f.get<double>("hidden");
  // The reference ran in float64 and was rounded to float32 (relative 6e-8); observed errors:
  // double ~5e-8, float ~5e-7 relative to the largest value.
  BFT_CHECK_CLOSE(out.features, feat_ref, dbl ? 1e-6 : 1e-5, dbl ? 2e-7 : 2e-6);
  BFT_CHECK_CLOSE(out.hidden, hid_ref, dbl ? 1e-6 : 1e-5, dbl ? 1e-6 : 1e-5);
  // Inference (no context) gives the same result (up to the vectorised softmax exp, whose
  // peeling depends on the row buffer's alignment).
  CHECK(max_abs_diff(m.forward(audio).hidden, out.hidden) <= (dbl ? 1e-13 : 1e-5));

  nn::zero_grads(m.parameters());
  const auto g = m.backward(ctx, projection_R<T>(out.hidden.shape()));
  BFT_CHECK_CLOSE(g.dprojected, f.get<double>("grad.projected"), dbl ? 1e-6 : 1e-5, dbl ? 1e-6 : 1e-5);
  int compared = 0;
  for (const auto& k : f.names()) {
    if (k.rfind("grad.encoder.", 0) != 0 || k.find(".out0_4") != std::string::npos) continue;
    CAPTURE(k);
    const std::string hf = "wav2vec2." + nn::wav2vec2_hf_name(k.substr(5));
    auto* p = find_param(m, hf);
    const auto ref = f.get<double>(k);
    double scale = 0;
    for (Index i = 0; i < ref.numel(); ++i) scale = std::max(scale, std::abs(ref[i]));
    BFT_CHECK_CLOSE(p->grad, ref, dbl ? 1e-6 : 1e-5, (dbl ? 1e-7 : 1e-5) * scale);
    ++compared;
  }
  CHECK(compared == 10);
  {
    auto* v = find_param(m, "wav2vec2.encoder.pos_conv_embed.conv.weight_v");
    const auto ref = f.get<double>("grad.encoder.transformer.pos_conv_embed.conv.weight_v.out0_4");
    double scale = 0;
    for (Index i = 0; i < ref.numel(); ++i) scale = std::max(scale, std::abs(ref[i]));
    BFT_CHECK_CLOSE(v->grad.slice(0, 0, 4), ref, dbl ? 1e-6 : 1e-5, (dbl ? 1e-7 : 1e-5) * scale);
  }
  // The feature extractor is frozen: no gradient reaches it.
  const auto frozen = m.frozen_parameters();
  CHECK(frozen.size() == 5);
  for (auto* p : frozen) {
    CHECK(m.is_frozen(*p));
    for (Index i = 0; i < p->grad.numel(); ++i) REQUIRE(p->grad[i] == T(0));
  }
  for (auto* p : m.trainable_parameters()) CHECK_FALSE(m.is_frozen(*p));
}

TEST_CASE("Wav2Vec2Model: do_normalize is the per-utterance normalisation of the input") {
  const auto f = bft::vectors("wav2vec2");
  auto cfg = Wav2Vec2Config::from_json(nlohmann::json::parse(f.meta("config")));
  Wav2Vec2Model<double> m(cfg);
  m.load(f);
  const auto audio = f.get<double>("audio");
  const auto xn = m.normalize(audio);
  double s = 0, ss = 0;
  for (Index i = 0; i < xn.numel(); ++i) s += xn[i], ss += xn[i] * xn[i];
  CHECK(std::abs(s / static_cast<double>(xn.numel())) < 1e-12);
  CHECK(std::abs(ss / static_cast<double>(xn.numel()) - 1.0) < 1e-5);
  // Without do_normalize the raw audio goes in: the result differs, unless it was normalised.
  cfg.do_normalize = false;
  Wav2Vec2Model<double> raw(cfg);
  raw.load(f);
  CHECK(max_abs_diff(raw.extract_features(audio), m.extract_features(audio)) > 1e-3);
  CHECK(max_abs_diff(raw.extract_features(xn), m.extract_features(audio)) < 1e-12);
}

TEST_CASE("Wav2Vec2Model: a batch gives the same results as its utterances one by one") {
  Wav2Vec2Config cfg = tiny_config(4);
  cfg.conv_dim = {16, 16, 16};
  cfg.conv_kernel = {10, 3, 2};
  cfg.conv_stride = {5, 2, 2};
  Wav2Vec2Model<double> m(cfg, "");
  randomise(m, 5);
  Rng rng(8);
  auto audio = bft::random_tensor({2, 700}, rng, 0.1);
  for (Index i = 0; i < 700; ++i) audio(1, i) = 3.0 * audio(1, i) + 0.5;  // different level per utterance
  const auto both = m.forward(audio);
  CHECK(both.hidden.shape() == Shape{2, cfg.num_frames(700), 8});
  CHECK(both.features.shape() == Shape{2, cfg.num_frames(700), 16});
  for (Index b = 0; b < 2; ++b) {
    const auto one = m.forward(audio.slice(0, b, b + 1).clone());
    CHECK(max_abs_diff(one.hidden, both.hidden.slice(0, b, b + 1)) < 1e-12);
    CHECK(max_abs_diff(one.features, both.features.slice(0, b, b + 1)) < 1e-12);
  }
  CHECK_THROWS_AS(m.forward(bft::random_tensor({1, cfg.min_samples() - 1}, rng)), ShapeError);
  CHECK_NOTHROW(m.forward(bft::random_tensor({1, cfg.min_samples()}, rng)));
  CHECK_THROWS_AS(m.encode(bft::random_tensor({1, 4, 15}, rng)), ShapeError);
  typename Wav2Vec2Model<double>::Context ctx;
  m.encode(bft::random_tensor({1, 4, 16}, rng), &ctx);
  CHECK_THROWS_AS(m.backward(ctx, bft::random_tensor({1, 5, 8}, rng)), ShapeError);
}

TEST_CASE("Wav2Vec2Model: backward matches central differences (tiny config, double)") {
  for (Index pos_kernel : {4, 3}) {  // even kernel (last frame dropped) and odd kernel
    CAPTURE(pos_kernel);
    Wav2Vec2Model<double> m(tiny_config(pos_kernel));
    randomise(m, 21 + static_cast<std::uint64_t>(pos_kernel));
    Rng rng(4);
    const auto params = m.trainable_parameters();
    std::vector<Tensor<double>> inputs{bft::random_tensor({2, 5, 6}, rng)};
    for (auto* p : params) inputs.push_back(p->value);  // shares storage: perturbations reach the model
    auto bind = [&](const std::vector<Tensor<double>>& in) {
      for (std::size_t k = 0; k < params.size(); ++k) params[k]->value = in[k + 1];
    };
    bft::gradcheck(
        inputs,
        [&](const std::vector<Tensor<double>>& in) {
          bind(in);
          return m.encode(in[0]);
        },
        [&](const std::vector<Tensor<double>>& in, const Tensor<double>& dout) {
          bind(in);
          nn::zero_grads(m.parameters());
          Wav2Vec2Model<double>::Context ctx;
          m.encode(in[0], &ctx);
          auto g = m.backward(ctx, dout);
          std::vector<Tensor<double>> grads{g.dfeatures};
          for (auto* p : params) grads.push_back(p->grad.clone());
          return grads;
        },
        bft::GradCheckOptions{1e-6, 1e-5, 1e-8, 20, 99});
  }
}

TEST_CASE("Wav2Vec2Model: Hugging Face / torchaudio save-load round trips") {
  const auto f = bft::vectors("wav2vec2");
  const auto cfg = Wav2Vec2Config::from_json(nlohmann::json::parse(f.meta("config")));
  Wav2Vec2Model<float> m(cfg);
  m.load(f, Wav2Vec2Names::Torchaudio);
  const auto audio = f.get<float>("audio");
  const auto ref = m.forward(audio).hidden;
  const auto dir = temp_dir();

  struct Case {
    Wav2Vec2Names names;
    std::optional<std::string> prefix;
    std::string expect_key;
  };
  const Case cases[] = {
      {Wav2Vec2Names::HuggingFace, std::nullopt, "wav2vec2.encoder.pos_conv_embed.conv.weight_g"},
      {Wav2Vec2Names::HuggingFace, std::string(""), "feature_extractor.conv_layers.0.layer_norm.weight"},
      {Wav2Vec2Names::HuggingFace, std::string("audio_encoder."), "audio_encoder.encoder.layers.1.final_layer_norm.bias"},
      {Wav2Vec2Names::Torchaudio, std::nullopt, "encoder.transformer.layers.0.attention.q_proj.weight"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.expect_key);
    const std::string path = (dir / "w2v_roundtrip.safetensors").string();
    m.save(path, c.names, c.prefix);
    const auto g = io::SafeTensorsFile::load(path);
    CHECK(g.contains(c.expect_key));
    CHECK(g.names().size() == m.parameters().size());
    CHECK(Wav2Vec2Config::from_json(nlohmann::json::parse(g.meta("wav2vec2_config"))).to_json() == cfg.to_json());
    Wav2Vec2Model<float> back(cfg);
    if (c.prefix && !c.prefix->empty())
      back.load(g, Wav2Vec2Names::HuggingFace, c.prefix);
    else
      back.load(g);  // detected
    auto a = m.parameters(), b = back.parameters();
    for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(max_abs_diff(a[i]->value, b[i]->value) == 0.0);
    CHECK(max_abs_diff(back.forward(audio).hidden, ref) == 0.0);
  }

  // A model with its own prefix finds its tensors; the parametrization names of newer
  // transformers/torch releases are accepted for weight_g / weight_v.
  io::SafeTensorsWriter w;
  m.add_to(w, Wav2Vec2Names::HuggingFace, std::string("w2v."));
  const auto all = io::SafeTensorsFile::parse(w.serialize(), "mem");
  io::SafeTensorsWriter w2;
  for (const auto& k : all.names()) {
    std::string name = k;
    for (const auto& [from, to] : {std::pair<std::string, std::string>{"conv.weight_g", "conv.parametrizations.weight.original0"},
                                   std::pair<std::string, std::string>{"conv.weight_v", "conv.parametrizations.weight.original1"}})
      if (name.size() > from.size() && name.compare(name.size() - from.size(), from.size(), from) == 0)
        name = name.substr(0, name.size() - from.size()) + to;
    w2.add(name, all.get<float>(k));
  }
  const std::string path = (dir / "w2v_param.safetensors").string();
  w2.save(path);
  Wav2Vec2Model<float> own(cfg, "w2v.");
  own.load(io::SafeTensorsFile::load(path));
  CHECK(max_abs_diff(own.forward(audio).hidden, ref) == 0.0);
  CHECK(own.parameters()[0]->name == "w2v.feature_extractor.conv_layers.0.conv.weight");

  // config.json + safetensors in one call.
  const std::string cfg_path = (dir / "w2v_config.json").string(), w_path = (dir / "w2v_hf.safetensors").string();
  io::write_file_atomic(cfg_path, cfg.to_json().dump(2));
  m.save(w_path);
  const auto loaded = Wav2Vec2Model<float>::from_files(cfg_path, w_path);
  CHECK(loaded.config().to_json() == cfg.to_json());
  CHECK(max_abs_diff(loaded.forward(audio).hidden, ref) == 0.0);
}

TEST_CASE("Wav2Vec2Model: load errors name the file and the tensor") {
  const auto f = bft::vectors("wav2vec2");
  const auto cfg = Wav2Vec2Config::from_json(nlohmann::json::parse(f.meta("config")));
  Wav2Vec2Model<float> src(cfg);
  src.load(f);
  const auto dir = temp_dir();
  auto write_without = [&](const std::string& drop, const std::string& reshape_key, const std::string& name) {
    io::SafeTensorsWriter w;
    src.add_to(w);
    const auto all = io::SafeTensorsFile::parse(w.serialize(), "mem");
    io::SafeTensorsWriter out;
    for (const auto& k : all.names()) {
      if (k == drop) continue;
      auto t = all.get<float>(k);
      if (k == reshape_key) t = t.reshape({t.numel() / 2, 2}).clone();
      out.add(k, t);
    }
    const std::string path = (dir / name).string();
    out.save(path);
    return path;
  };
  auto expect_error = [&](const std::string& path, std::initializer_list<std::string> parts) {
    Wav2Vec2Model<float> m(cfg);
    Rng rng(1);
    m.init(rng);
    const auto before = m.parameters()[0]->value.clone();
    try {
      m.load(io::SafeTensorsFile::load(path));
      FAIL("no exception");
    } catch (const IoError& e) {
      CHECK(e.path() == path);
      const std::string msg = e.what();
      for (const auto& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, msg, " lacks ", p);
    }
    CHECK(max_abs_diff(m.parameters()[0]->value, before) == 0.0);  // unchanged on failure
  };
  const std::string missing = "wav2vec2.encoder.layers.1.attention.v_proj.bias";
  expect_error(write_without(missing, "", "w2v_missing.safetensors"),
               {"w2v_missing.safetensors", "missing tensor", missing});
  const std::string bad = "wav2vec2.encoder.layers.0.feed_forward.output_dense.weight";
  expect_error(write_without("", bad, "w2v_shape.safetensors"),
               {"w2v_shape.safetensors", bad, "(48, 96)", "(2304, 2)"});
  // Not a wav2vec2 checkpoint at all.
  io::SafeTensorsWriter other;
  other.add("something.else", Tensor<float>({2}));
  const std::string path = (dir / "w2v_other.safetensors").string();
  other.save(path);
  expect_error(path, {"w2v_other.safetensors", "no wav2vec2 encoder"});
}

TEST_CASE("Wav2Vec2Model: base size on 1 s of audio (shapes, timing)") {
  Wav2Vec2Model<float> m(Wav2Vec2Config::base());
  Rng rng(2);
  m.init(rng);
  CHECK(nn::count_parameters(m.parameters()) == 94370944);  // torchaudio.models.wav2vec2_base()
  Tensor<float> audio({1, 16000});
  for (Index i = 0; i < 16000; ++i) audio[i] = static_cast<float>(0.1 * std::sin(0.05 * static_cast<double>(i)) + 0.01 * rng.normal());
  const auto t0 = std::chrono::steady_clock::now();
  const auto out = m.forward(audio);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("wav2vec2-base forward on 1 s of audio: ", secs, " s");
  CHECK(out.hidden.shape() == Shape{1, 49, 768});
  CHECK(out.features.shape() == Shape{1, 49, 512});
  for (Index i = 0; i < out.hidden.numel(); ++i) REQUIRE(std::isfinite(out.hidden[i]));
}
