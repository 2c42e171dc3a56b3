// blendfuse — the deformation fusion module (paper §3.3, eq. 3–13).
//
//   ΔV_a ──mesh→map──► E_a ──► [w_A | ε_A] ─┐
//                                           ├─► decoder B = [B_A | B_E] ─► ΔV̂
//   ΔV_e ──mesh→map──► E_e ──► [ε_E | w_E] ─┘
//
// Training reconstructs each domain's input from its own encoder's full weight vector; inference
// fuses the speech weights of E_a with the expression weights of E_e (eq. 13):
//   ΔV_O = B_A w_A + B_E w_E,
// dropping the cross-domain parts ε, which carry the secondary deformations each dataset leaks.
//
// Deformations are (B, V, 3) in the mesh's units (mm for our data). Encoder input is the geometry
// map (B, 3, S, S) plus, by default, the map's validity mask as a 4th channel: a bias-free conv
// followed by instance norm is exactly invariant to the input's scale (IN(c·x) = IN(x)), so
// without a constant channel the encoder could not tell a small deformation from a large one of
// the same shape. (docs/results.md measures the difference.)
//
// Variants (DfmConfig::variant), all selectable for the ablation:
//   "paper"  — free blendshape columns, L1 on ε (eq. 9), reconstruction, Laplacian, L2.
//   "full"   — ours: columns at fixed norm + L1 on ε + group lasso on latent usage (METHOD-NOTES).
//   plus the ablations of Table 5 as λ or encoder switches ("no-sparsity", "no-laplace", "no-map").
#pragma once

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/geometry/geometry_map.hpp"
#include "blendfuse/geometry/mesh_topology.hpp"
#include "blendfuse/loss/losses.hpp"
#include "blendfuse/nn/blendshape_decoder.hpp"
#include "blendfuse/nn/encoders.hpp"

namespace blendfuse::nn {

enum class Domain { Speech = 0, Expression = 1 };
inline const char* domain_name(Domain d) { return d == Domain::Speech ? "speech" : "expression"; }

struct DfmConfig {
  std::string variant = "full";
  Index vertices = 0;
  Index map_size = 128;
  std::vector<Index> channels{16, 32, 64, 128, 128, 128};
  Index k_a = 64, k_e = 64;
  std::string encoder = "conv";  // "conv" (geometry map + CNN) or "mlp" (no geometric map)
  Index mlp_hidden = 256;
  bool mask_channel = true;
  double column_norm = -1;  // > 0 fixed column norm; 0 free columns; −1 → sqrt(V) (set in finalize)
  // loss weights (eq. 10, plus ours)
  double lambda_rec = 1.0;
  double lambda_sparsity = 0.05;
  double lambda_laplace = 1.0;
  double lambda_reg = 1e-4;
  double lambda_usage = 0.0;

  Index k() const { return k_a + k_e; }

  /// Applies the named variant's switches on top of the current values.
  void apply_variant(const std::string& v) {
    variant = v;
    if (v == "paper") {
      column_norm = 0;
      lambda_usage = 0;
    } else if (v == "full") {
      if (column_norm == 0) column_norm = -1;
      if (lambda_usage == 0) lambda_usage = 0.05;
    } else if (v == "no-sparsity") {
      apply_variant("full");
      variant = v;
      lambda_sparsity = 0;
      lambda_usage = 0;
    } else if (v == "no-laplace") {
      apply_variant("full");
      variant = v;
      lambda_laplace = 0;
    } else if (v == "no-map") {
      apply_variant("full");
      variant = v;
      encoder = "mlp";
    } else {
      throw ArgumentError("DfmConfig: unknown variant '" + v +
                          "' (paper, full, no-sparsity, no-laplace, no-map)");
    }
  }

  void finalize() {
    BF_CHECK(vertices > 0, ArgumentError, "DfmConfig: vertex count must be set");
    BF_CHECK(k_a > 0 && k_e > 0, ArgumentError, "DfmConfig: k_a and k_e must be positive");
    BF_CHECK(encoder == "conv" || encoder == "mlp", ArgumentError, "DfmConfig: encoder must be conv or mlp, got '", encoder, "'");
    if (column_norm < 0) column_norm = std::sqrt(static_cast<double>(vertices));
  }

  nlohmann::json to_json() const {
    return {{"variant", variant}, {"vertices", vertices}, {"map_size", map_size},
            {"channels", channels}, {"k_a", k_a}, {"k_e", k_e}, {"encoder", encoder},
            {"mlp_hidden", mlp_hidden}, {"mask_channel", mask_channel},
            {"column_norm", column_norm}, {"lambda_rec", lambda_rec},
            {"lambda_sparsity", lambda_sparsity}, {"lambda_laplace", lambda_laplace},
            {"lambda_reg", lambda_reg}, {"lambda_usage", lambda_usage}};
  }

  /// Reads the keys present in `j` over the current values; unknown keys are errors.
  void update_from_json(const nlohmann::json& j, const std::string& where) {
    BF_CHECK(j.is_object(), ArgumentError, where, ": config must be a JSON object");
    try {
      if (j.contains("variant")) apply_variant(j.at("variant").get<std::string>());
      for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& key = it.key();
        const auto& v = it.value();
        if (key == "variant") continue;
        else if (key == "vertices") vertices = v.get<Index>();
        else if (key == "map_size") map_size = v.get<Index>();
        else if (key == "channels") channels = v.get<std::vector<Index>>();
        else if (key == "k_a") k_a = v.get<Index>();
        else if (key == "k_e") k_e = v.get<Index>();
        else if (key == "encoder") encoder = v.get<std::string>();
        else if (key == "mlp_hidden") mlp_hidden = v.get<Index>();
        else if (key == "mask_channel") mask_channel = v.get<bool>();
        else if (key == "column_norm") column_norm = v.get<double>();
        else if (key == "lambda_rec") lambda_rec = v.get<double>();
        else if (key == "lambda_sparsity") lambda_sparsity = v.get<double>();
        else if (key == "lambda_laplace") lambda_laplace = v.get<double>();
        else if (key == "lambda_reg") lambda_reg = v.get<double>();
        else if (key == "lambda_usage") lambda_usage = v.get<double>();
        else throw ArgumentError(where + ": unknown config key '" + key + "'");
      }
    } catch (const nlohmann::json::exception& e) {
      throw ArgumentError(where + ": bad config value: " + e.what());
    }
  }
};

/// Loss terms of one training step (already weighted by λ and summed in `total`).
struct DfmLosses {
  double rec = 0, sparsity = 0, laplace = 0, reg = 0, usage = 0, total = 0;
  DfmLosses& operator+=(const DfmLosses& o) {
    rec += o.rec; sparsity += o.sparsity; laplace += o.laplace; reg += o.reg; usage += o.usage; total += o.total;
    return *this;
  }
};

template <class T>
class DeformationFusionModule {
 public:
  DeformationFusionModule() = default;

  /// A new model for the mesh (template vertices (V,3), faces (F,3)), randomly initialised.
  DeformationFusionModule(DfmConfig cfg, const Tensor<float>& template_vertices,
                          const Tensor<std::int32_t>& faces, std::uint64_t seed)
      : cfg_(std::move(cfg)) {
    cfg_.vertices = template_vertices.dim(0);
    cfg_.finalize();
    if (cfg_.encoder == "conv")
      map_ = geometry::GeometryMap::build(template_vertices, faces, cfg_.map_size, cfg_.map_size);
    topo_ = geometry::MeshTopology(faces, cfg_.vertices);
    build_modules();
    Rng rng(seed);
    for (auto& e : conv_) e.init(rng);
    for (auto& e : mlp_) e.init(rng);
    decoder_.init(rng);
  }

  const DfmConfig& config() const { return cfg_; }
  const geometry::MeshTopology& topology() const { return topo_; }
  Index vertices() const { return cfg_.vertices; }

  ParamList<T> parameters() {
    ParamList<T> ps;
    for (auto& e : conv_) for (auto* p : e.parameters()) ps.push_back(p);
    for (auto& e : mlp_) for (auto* p : e.parameters()) ps.push_back(p);
    for (auto* p : decoder_.parameters()) ps.push_back(p);
    return ps;
  }

  /// The learned blendshapes (V·3, K) = [B_A | B_E].
  Tensor<T> blendshapes() const { return decoder_.blendshapes(); }

  /// Encoder input for deformations dv (B, V, 3): the map (+ mask) or the flattened mesh.
  Tensor<T> encoder_input(const Tensor<T>& dv) const {
    check_shape(dv, {-1, cfg_.vertices, 3}, "DeformationFusionModule: deformations");
    if (cfg_.encoder == "mlp") return dv.contiguous().reshape({dv.dim(0), cfg_.vertices * 3});
    Tensor<T> m = map_.mesh_to_map(dv);  // (B, 3, S, S)
    if (!cfg_.mask_channel) return m;
    const Index b = dv.dim(0), S = cfg_.map_size, P = S * S;
    Tensor<T> x({b, 4, S, S});
    const Tensor<T> mask = map_.template mask_as<T>();
    for (Index i = 0; i < b; ++i) {
      std::copy(m.data() + i * 3 * P, m.data() + (i + 1) * 3 * P, x.data() + i * 4 * P);
      std::copy(mask.data(), mask.data() + P, x.data() + i * 4 * P + 3 * P);
    }
    return x;
  }

  /// Blendshape weights (B, K) of deformations dv (B, V, 3) from the encoder of `d`.
  Tensor<T> encode(Domain d, const Tensor<T>& dv) const {
    const Tensor<T> x = encoder_input(dv);
    const std::size_t i = static_cast<std::size_t>(d);
    return cfg_.encoder == "conv" ? conv_[i].forward(x) : mlp_[i].forward(x);
  }

  /// Deformations (B, V, 3) from weights (B, K).
  Tensor<T> decode(const Tensor<T>& w) const {
    return decoder_.forward(w).reshape({w.dim(0), cfg_.vertices, 3});
  }

  /// Eq. 13: B_A w_A(speech) + intensity · B_E w_E(expression); both (T, V, 3), same T.
  Tensor<T> fuse(const Tensor<T>& speech, const Tensor<T>& expression, double intensity = 1.0) const {
    BF_CHECK(speech.shape() == expression.shape(), ShapeError, "fuse: speech ", speech.shape_string(),
             " and expression ", expression.shape_string(), " must have the same shape");
    Tensor<T> wa = encode(Domain::Speech, speech);
    const Tensor<T> we = encode(Domain::Expression, expression);
    const Index n = wa.dim(0), K = cfg_.k();
    for (Index t = 0; t < n; ++t)
      for (Index j = cfg_.k_a; j < K; ++j) wa[t * K + j] = static_cast<T>(intensity * we[t * K + j]);
    return decode(wa);
  }

  /// One training pass over a batch of one domain: forward, losses, backward (gradients are
  /// accumulated into the parameters). Returns the weighted loss terms.
  DfmLosses train_batch(Domain d, const Tensor<T>& dv, const Tensor<T>& vertex_weights) {
    const std::size_t di = static_cast<std::size_t>(d);
    const Tensor<T> x = encoder_input(dv);
    typename ConvInReluEncoder<T>::Context cctx;
    typename MlpEncoder<T>::Context mctx;
    const Tensor<T> w = cfg_.encoder == "conv" ? conv_[di].forward(x, &cctx) : mlp_[di].forward(x, &mctx);
    typename BlendshapeDecoder<T>::Context dctx;
    const Index b = dv.dim(0), V = cfg_.vertices, K = cfg_.k();
    Tensor<T> pred = decoder_.forward(w, &dctx).reshape({b, V, 3});
    const Tensor<T> target = dv.contiguous();

    DfmLosses L;
    auto rec = loss::weighted_mse(pred, target, vertex_weights);
    L.rec = cfg_.lambda_rec * rec.value;
    Tensor<T> dpred({b, V, 3});
    axpy(dpred, rec.grad, cfg_.lambda_rec);
    if (cfg_.lambda_laplace > 0) {
      auto lap = loss::mean_sq(geometry::laplacian(topo_, pred));
      L.laplace = cfg_.lambda_laplace * lap.value;
      axpy(dpred, geometry::laplacian_backward(topo_, lap.grad), cfg_.lambda_laplace);
    }
    if (cfg_.lambda_reg > 0) {
      auto reg = loss::mean_sq(pred);
      L.reg = cfg_.lambda_reg * reg.value;
      axpy(dpred, reg.grad, cfg_.lambda_reg);
    }
    Tensor<T> dw = decoder_.backward(dctx, dpred.reshape({b, V * 3}));
    // eq. 9: the cross-domain half is ε (B_E part of the speech encoder and vice versa)
    const Index c0 = d == Domain::Speech ? cfg_.k_a : 0, c1 = d == Domain::Speech ? K : cfg_.k_a;
    if (cfg_.lambda_sparsity > 0) {
      Tensor<T> eps = w.slice(1, c0, c1).clone();
      auto sp = loss::l1(eps);
      L.sparsity = cfg_.lambda_sparsity * sp.value;
      for (Index i = 0; i < b; ++i)
        for (Index j = c0; j < c1; ++j) dw[i * K + j] += static_cast<T>(cfg_.lambda_sparsity * sp.grad[i * (c1 - c0) + (j - c0)]);
    }
    if (cfg_.lambda_usage > 0) {
      auto us = loss::usage_group_lasso(w);
      L.usage = cfg_.lambda_usage * us.value;
      axpy(dw, us.grad, cfg_.lambda_usage);
    }
    if (cfg_.encoder == "conv") conv_[di].backward(cctx, dw);
    else mlp_[di].backward(mctx, dw);
    L.total = L.rec + L.sparsity + L.laplace + L.reg + L.usage;
    return L;
  }

  /// Loss terms without touching gradients (validation).
  DfmLosses evaluate_batch(Domain d, const Tensor<T>& dv, const Tensor<T>& vertex_weights) const {
    const Tensor<T> w = encode(d, dv);
    const Tensor<T> pred = decode(w);
    DfmLosses L;
    L.rec = cfg_.lambda_rec * loss::weighted_mse(pred, dv.contiguous(), vertex_weights).value;
    if (cfg_.lambda_laplace > 0) L.laplace = cfg_.lambda_laplace * loss::mean_sq(geometry::laplacian(topo_, pred)).value;
    if (cfg_.lambda_reg > 0) L.reg = cfg_.lambda_reg * loss::mean_sq(pred).value;
    const Index K = cfg_.k();
    const Index c0 = d == Domain::Speech ? cfg_.k_a : 0, c1 = d == Domain::Speech ? K : cfg_.k_a;
    if (cfg_.lambda_sparsity > 0) L.sparsity = cfg_.lambda_sparsity * loss::l1(w.slice(1, c0, c1).clone()).value;
    if (cfg_.lambda_usage > 0) L.usage = cfg_.lambda_usage * loss::usage_group_lasso(w).value;
    L.total = L.rec + L.sparsity + L.laplace + L.reg + L.usage;
    return L;
  }

  // ---- persistence: one safetensors file with weights, geometry map, faces and config --------
  void add_to(io::SafeTensorsWriter& w) {
    add_parameters(w, parameters());
    w.set_metadata("blendfuse.model", "dfm");
    w.set_metadata("config", cfg_.to_json().dump());
    if (cfg_.encoder == "conv") map_.add_to(w);
    else {
      const auto& f = topo_.faces();
      Tensor<std::int32_t> faces({static_cast<Index>(f.size()), 3});
      for (std::size_t i = 0; i < f.size(); ++i)
        for (int c = 0; c < 3; ++c) faces[static_cast<Index>(3 * i + c)] = f[i][static_cast<std::size_t>(c)];
      w.add("faces", faces);
    }
  }

  void save(const std::string& path) {
    io::SafeTensorsWriter w;
    add_to(w);
    w.save(path);
  }

  static DeformationFusionModule from_safetensors(const io::SafeTensorsFile& f) {
    if (f.meta("blendfuse.model") != "dfm")
      throw IoError(f.path(), "not a blendfuse fusion model (metadata 'blendfuse.model' is '" +
                                  f.meta("blendfuse.model") + "', expected 'dfm')");
    DeformationFusionModule m;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(f.meta("config"));
    } catch (const nlohmann::json::exception& e) {
      throw IoError(f.path(), std::string("metadata 'config' is not valid JSON: ") + e.what());
    }
    try {
      m.cfg_.update_from_json(j, f.path());
      m.cfg_.finalize();
    } catch (const ArgumentError& e) {
      throw IoError(f.path(), e.what());
    }
    Tensor<std::int32_t> faces;
    if (m.cfg_.encoder == "conv") {
      m.map_ = geometry::GeometryMap::from_safetensors(f);
      if (m.map_.num_vertices() != m.cfg_.vertices || m.map_.height() != m.cfg_.map_size)
        throw IoError(f.path(), "geometry map does not match the config (vertices or map size)");
      faces = f.get<std::int32_t>("geometry_map.faces", {-1, 3});
    } else {
      if (!f.contains("faces")) throw IoError(f.path(), "missing tensor 'faces'");
      faces = f.get<std::int32_t>("faces", {-1, 3});
    }
    try {
      m.topo_ = geometry::MeshTopology(faces, m.cfg_.vertices);
    } catch (const Error& e) {
      throw IoError(f.path(), std::string("bad faces: ") + e.what());
    }
    m.build_modules();
    load_parameters(f, m.parameters());
    return m;
  }

  static DeformationFusionModule load(const std::string& path) {
    return from_safetensors(io::SafeTensorsFile::load(path));
  }

 private:
  static void axpy(Tensor<T>& y, const Tensor<T>& x, double a) {
    const auto c = x.contiguous();
    for (Index i = 0; i < y.numel(); ++i) y[i] += static_cast<T>(a * c[i]);
  }

  void build_modules() {
    conv_.clear();
    mlp_.clear();
    const char* prefixes[2] = {"encoder_a.", "encoder_e."};
    for (const char* p : prefixes) {
      if (cfg_.encoder == "conv") {
        ConvEncoderConfig ec;
        ec.in_channels = cfg_.mask_channel ? 4 : 3;
        ec.channels = cfg_.channels;
        ec.map_size = cfg_.map_size;
        ec.out_features = cfg_.k();
        conv_.emplace_back(ec, p);
      } else {
        mlp_.emplace_back(MlpEncoderConfig{cfg_.vertices * 3, cfg_.mlp_hidden, cfg_.k()}, p);
      }
    }
    decoder_ = BlendshapeDecoder<T>(cfg_.vertices, cfg_.k(), cfg_.column_norm);
  }

  DfmConfig cfg_;
  geometry::GeometryMap map_;
  geometry::MeshTopology topo_;
  std::vector<ConvInReluEncoder<T>> conv_;
  std::vector<MlpEncoder<T>> mlp_;
  BlendshapeDecoder<T> decoder_;
};

}  // namespace blendfuse::nn
