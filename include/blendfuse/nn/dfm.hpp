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
// Units: the model works in millimetres inside (its loss weights, the mask channel's scale, the
// fixed column norm √V — a weight reads as an RMS displacement in mm — are all tuned for mm).
// DfmConfig::data_unit_mm records the unit of the data it was trained on (1 = mm, 1000 = m; absent
// in a file = mm, so files from before units load unchanged); encode/decode/fuse take and return
// deformations in that unit by default, or in any unit passed as `unit_mm`, and convert at the
// boundary (x·unit_mm in, y/unit_mm out; skipped entirely for mm, so mm results are bit-identical
// to before). train_batch/evaluate_batch take data in data_unit_mm; their loss values are in mm².
// blendshapes() and encoded weights are internal (mm).
//
// Deformations are (B, V, 3). Encoder input is the geometry
// map (B, 3, S, S) plus, by default, the map's validity mask as a 4th channel: a bias-free conv
// followed by instance norm is exactly invariant to the input's scale (IN(c·x) = IN(x)), so
// without a constant channel the encoder could not tell a small deformation from a large one of
// the same shape. (docs/results.md measures the difference.)
//
// Variants (DfmConfig::variant), all selectable for the ablation:
//   "paper"  — free blendshape columns, L1 on ε (eq. 9), reconstruction, Laplacian, L2.
//   "full"   — ours: columns at fixed norm + a penalty on the overlap of the speech and expression
//              blendshape subspaces + L1 on ε, cheaper on the expression side (docs/fusion.md).
//   plus the ablations of Table 5 as λ or encoder switches ("no-sparsity", "no-laplace", "no-map")
//   and "symmetric", "usage-lasso" (METHOD-NOTES' recipe) — see DfmConfig::apply_variant.
//
// Backends: DeformationFusionModule<T, B> with B = Cpu (reference, the default) or OneDnn runs
// its convolutions, norms and linears on B; inputs and outputs are Tensor<T, B>, the parameters
// are host Tensor<T> (so optimisers, checkpoints and save/load are shared). The geometry map, the
// losses and the Laplacian are backend-independent host loops.
#pragma once

#include <cmath>
#include <memory>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/core/domain.hpp"
#include "blendfuse/geometry/geometry_map.hpp"
#include "blendfuse/geometry/mesh_topology.hpp"
#include "blendfuse/loss/losses.hpp"
#include "blendfuse/nn/blendshape_decoder.hpp"
#include "blendfuse/nn/encoders.hpp"

namespace blendfuse::nn {

// Domain (Speech = 0, Expression = 1: the index of the encoder) is blendfuse::Domain (core/domain.hpp).

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
  // loss weights (eq. 10, plus ours); the defaults are variant "full"
  double lambda_rec = 1.0;
  double lambda_sparsity = 0.2;     // L1 on ε_A (speech data's expression weights), eq. 9
  double lambda_sparsity_e = 0.02;  // L1 on ε_E (expression data's speech weights); < 0: lambda_sparsity
  double lambda_laplace = 1.0;
  double lambda_reg = 1e-4;
  double lambda_usage = 0.0;        // group lasso on latent usage (METHOD-NOTES)
  double lambda_overlap = 5.0;      // overlap of the speech and expression blendshape subspaces
  double data_unit_mm = 1.0;        // millimetres per unit of the training data (1 mm, 1000 m)

  Index k() const { return k_a + k_e; }
  double sparsity_weight(Domain d) const {
    return d == Domain::Expression && lambda_sparsity_e >= 0 ? lambda_sparsity_e : lambda_sparsity;
  }

  /// Sets the named variant's switches (keys read after it in a config still override them).
  ///   full         ours: fixed-norm columns, subspace-overlap penalty, L1 on ε with the
  ///                expression side's ε (mouth leaks of emotions) cheaper than the speech side's
  ///   paper        the paper's loss: free columns, symmetric L1 on ε, no overlap term
  ///   no-sparsity  full without any L1 on ε          no-laplace  full without the Laplacian
  ///   no-map       full with MLP encoders on the flattened mesh (no geometry map)
  ///   symmetric    full with the same L1 weight on both ε
  ///   usage-lasso  METHOD-NOTES' probe recipe: fixed-norm columns, L1 on ε, usage group lasso
  void apply_variant(const std::string& v) {
    const auto base = [this] {
      encoder = "conv";
      column_norm = -1;
      lambda_sparsity = 0.2;
      lambda_sparsity_e = 0.02;
      lambda_laplace = 1.0;
      lambda_usage = 0;
      lambda_overlap = 5.0;
    };
    if (v == "full") {
      base();
    } else if (v == "paper") {
      base();
      column_norm = 0;
      lambda_sparsity_e = -1;
      lambda_overlap = 0;
    } else if (v == "no-sparsity") {
      base();
      lambda_sparsity = 0;
      lambda_sparsity_e = 0;
    } else if (v == "no-laplace") {
      base();
      lambda_laplace = 0;
    } else if (v == "no-map") {
      base();
      encoder = "mlp";
    } else if (v == "symmetric") {
      base();
      lambda_sparsity_e = -1;
    } else if (v == "usage-lasso") {
      base();
      lambda_overlap = 0;
      lambda_usage = 0.05;
      lambda_sparsity = 0.05;
      lambda_sparsity_e = -1;
    } else {
      throw ArgumentError("DfmConfig: unknown variant '" + v +
                          "' (full, paper, no-sparsity, no-laplace, no-map, symmetric, usage-lasso)");
    }
    variant = v;
  }

  /// Largest k_a / k_e accepted (the paper uses 64; far more only costs time and memory).
  static constexpr Index kMaxBlendshapes = 1024;

  /// Spatial size of the conv encoder's last block (3×3 stride-2 convolutions: ceil(s / 2) each).
  Index final_map_size() const {
    Index s = map_size;
    for (std::size_t i = 0; i < channels.size(); ++i) s = (s - 1) / 2 + 1;
    return s;
  }

  /// Checks every value that does not need the mesh; ArgumentError naming the key otherwise.
  /// A configuration that cannot work is refused with the reason: with a conv encoder whose last
  /// block is 1×1, instance norm over a single pixel outputs 0 for every input, so every code
  /// (and every fused frame) would be identical.
  void validate() const {
    BF_CHECK(k_a >= 1 && k_a <= kMaxBlendshapes && k_e >= 1 && k_e <= kMaxBlendshapes, ArgumentError,
             "DfmConfig: k_a and k_e must be integers in [1, ", kMaxBlendshapes, "], got k_a ", k_a, ", k_e ", k_e);
    BF_CHECK(encoder == "conv" || encoder == "mlp", ArgumentError, "DfmConfig: encoder must be conv or mlp, got '", encoder, "'");
    if (encoder == "conv") {
      BF_CHECK(!channels.empty() && channels.size() <= 12, ArgumentError,
               "DfmConfig: channels must list 1 to 12 conv blocks, got ", channels.size());
      for (Index c : channels)
        BF_CHECK(c >= 1 && c <= 4096, ArgumentError, "DfmConfig: channels entries must be in [1, 4096], got ", c);
      BF_CHECK(map_size >= 2 && map_size <= 4096, ArgumentError, "DfmConfig: map_size must be in [2, 4096], got ", map_size);
      BF_CHECK(final_map_size() >= 2, ArgumentError, "DfmConfig: map_size ", map_size, " with ", channels.size(),
               " stride-2 conv blocks leaves a 1x1 map after the last block; instance norm over one pixel "
               "outputs 0, so the encoder could not see its input (use map_size >= ",
               (Index(1) << channels.size()) + 1, " or fewer channels entries)");
    } else {
      BF_CHECK(mlp_hidden >= 1 && mlp_hidden <= 65536, ArgumentError, "DfmConfig: mlp_hidden must be in [1, 65536], got ", mlp_hidden);
    }
    BF_CHECK(std::isfinite(column_norm) && (column_norm >= 0 || column_norm == -1), ArgumentError,
             "DfmConfig: column_norm must be >= 0 (or -1 for sqrt(V)), got ", column_norm);
    const std::pair<const char*, double> lambdas[] = {
        {"lambda_rec", lambda_rec}, {"lambda_sparsity", lambda_sparsity}, {"lambda_laplace", lambda_laplace},
        {"lambda_reg", lambda_reg}, {"lambda_usage", lambda_usage}, {"lambda_overlap", lambda_overlap}};
    for (const auto& [name, v] : lambdas)
      BF_CHECK(std::isfinite(v) && v >= 0 && v <= 1e6, ArgumentError, "DfmConfig: ", name,
               " must be a finite number in [0, 1e6], got ", v);
    BF_CHECK(std::isfinite(lambda_sparsity_e) && lambda_sparsity_e <= 1e6, ArgumentError,
             "DfmConfig: lambda_sparsity_e must be finite and <= 1e6 (< 0: same as lambda_sparsity), got ",
             lambda_sparsity_e);
    BF_CHECK(data_unit_mm > 0 && std::isfinite(data_unit_mm), ArgumentError,
             "DfmConfig: data_unit_mm must be positive, got ", data_unit_mm);
  }

  void finalize() {
    BF_CHECK(vertices > 0, ArgumentError, "DfmConfig: vertex count must be set");
    validate();
    BF_CHECK(k_a + k_e <= 3 * vertices, ArgumentError, "DfmConfig: k_a + k_e = ", k_a + k_e,
             " blendshapes exceed the ", 3 * vertices, " degrees of freedom of a ", vertices, "-vertex mesh");
    if (column_norm < 0) column_norm = std::sqrt(static_cast<double>(vertices));
  }

  /// The config as JSON; data_unit_mm only when it is not 1 (absent = mm), so that a model
  /// trained on mm data is byte-identical to one written before units existed.
  nlohmann::json to_json() const {
    nlohmann::json j = {{"variant", variant}, {"vertices", vertices}, {"map_size", map_size},
            {"channels", channels}, {"k_a", k_a}, {"k_e", k_e}, {"encoder", encoder},
            {"mlp_hidden", mlp_hidden}, {"mask_channel", mask_channel},
            {"column_norm", column_norm}, {"lambda_rec", lambda_rec},
            {"lambda_sparsity", lambda_sparsity}, {"lambda_laplace", lambda_laplace},
            {"lambda_reg", lambda_reg}, {"lambda_usage", lambda_usage},
            {"lambda_sparsity_e", lambda_sparsity_e}, {"lambda_overlap", lambda_overlap}};
    if (data_unit_mm != 1.0) j["data_unit_mm"] = data_unit_mm;
    return j;
  }

  /// An integer config value; 2.5 or "3" are errors (not silently truncated).
  static Index json_int(const nlohmann::json& v, const std::string& where, const std::string& key) {
    BF_CHECK(v.is_number_integer(), ArgumentError, where, ": ", key, " must be an integer, got ", v.dump());
    return v.get<Index>();
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
        else if (key == "vertices") vertices = json_int(v, where, key);
        else if (key == "map_size") map_size = json_int(v, where, key);
        else if (key == "channels") {
          BF_CHECK(v.is_array(), ArgumentError, where, ": channels must be an array of integers, got ", v.dump());
          channels.clear();
          for (const auto& c : v) channels.push_back(json_int(c, where, key));
        }
        else if (key == "k_a") k_a = json_int(v, where, key);
        else if (key == "k_e") k_e = json_int(v, where, key);
        else if (key == "encoder") encoder = v.get<std::string>();
        else if (key == "mlp_hidden") mlp_hidden = json_int(v, where, key);
        else if (key == "mask_channel") mask_channel = v.get<bool>();
        else if (key == "column_norm") column_norm = v.get<double>();
        else if (key == "lambda_rec") lambda_rec = v.get<double>();
        else if (key == "lambda_sparsity") lambda_sparsity = v.get<double>();
        else if (key == "lambda_laplace") lambda_laplace = v.get<double>();
        else if (key == "lambda_reg") lambda_reg = v.get<double>();
        else if (key == "lambda_usage") lambda_usage = v.get<double>();
        else if (key == "lambda_sparsity_e") lambda_sparsity_e = v.get<double>();
        else if (key == "lambda_overlap") lambda_overlap = v.get<double>();
        else if (key == "data_unit_mm") {
          data_unit_mm = v.get<double>();
          if (!(data_unit_mm > 0) || !std::isfinite(data_unit_mm))
            throw ArgumentError(where + ": data_unit_mm must be positive, got " + v.dump());
        }
        else throw ArgumentError(where + ": unknown config key '" + key + "'");
      }
    } catch (const nlohmann::json::exception& e) {
      throw ArgumentError(where + ": bad config value: " + e.what());
    }
  }
};

/// Loss terms of one training step (already weighted by λ and summed in `total`).
struct DfmLosses {
  double rec = 0, sparsity = 0, laplace = 0, reg = 0, usage = 0, overlap = 0, total = 0;
  DfmLosses& operator+=(const DfmLosses& o) {
    rec += o.rec; sparsity += o.sparsity; laplace += o.laplace; reg += o.reg; usage += o.usage;
    overlap += o.overlap; total += o.total;
    return *this;
  }
};

template <class T, class B = Cpu>
class DeformationFusionModule {
 public:
  using TensorB = Tensor<T, B>;
  DeformationFusionModule() = default;

  /// A new model for the mesh (template vertices (V,3), faces (F,3)), randomly initialised.
  DeformationFusionModule(DfmConfig cfg, const Tensor<float>& template_vertices,
                          const Tensor<std::int32_t>& faces, std::uint64_t seed)
      : cfg_(std::move(cfg)) {
    cfg_.vertices = template_vertices.dim(0);
    cfg_.finalize();
    if (cfg_.encoder == "conv")  // built from the template in mm (absolute tolerances inside)
      map_ = geometry::GeometryMap::build(cfg_.data_unit_mm == 1.0 ? template_vertices
                                                                  : scaled(template_vertices, cfg_.data_unit_mm),
                                          faces, cfg_.map_size, cfg_.map_size);
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
  /// Millimetres per unit of the data the model was trained on (the default unit of its I/O).
  double data_unit_mm() const { return cfg_.data_unit_mm; }

  ParamList<T> parameters() {
    ParamList<T> ps;
    for (auto& e : conv_) for (auto* p : e.parameters()) ps.push_back(p);
    for (auto& e : mlp_) for (auto* p : e.parameters()) ps.push_back(p);
    for (auto* p : decoder_.parameters()) ps.push_back(p);
    return ps;
  }

  /// The learned blendshapes (V·3, K) = [B_A | B_E].
  Tensor<T> blendshapes() const { return decoder_.blendshapes(); }

  /// Cached derived weights, for inference: the encoders let the backend keep its copies of the
  /// conv weights (oneDNN: blocked layouts) and the decoder keeps its column norms between calls
  /// (batch 1: ≈ 25 % faster at paper scale on oneDNN). Each cached copy is checked against its
  /// parameter's pointer, Parameter::version and sampled elements on every call; code that writes
  /// parameters in place while this is on must call touch() on them. Training leaves it off.
  void cache_derived_weights(bool on = true) {
    for (auto& e : conv_) e.cache_derived_weights(on);
    decoder_.cache_derived_weights(on);
  }
  bool derived_weights_cached() const noexcept { return decoder_.derived_weights_cached(); }

  /// Multiply-adds of one frame of fuse(): both encoders and the decoder.
  double fuse_macs_per_frame() const {
    const double enc = cfg_.encoder == "conv" ? conv_[0].macs_per_sample() : mlp_[0].macs_per_sample();
    return 2 * enc + decoder_.macs_per_sample();
  }
  /// Multiply-adds of one sample's forward in train_batch (one encoder and the decoder).
  double train_forward_macs_per_sample() const {
    return (cfg_.encoder == "conv" ? conv_[0].macs_per_sample() : mlp_[0].macs_per_sample()) +
           decoder_.macs_per_sample();
  }

  /// Encoder input for deformations dv (B, V, 3) in mm (internal): the map (+ mask) or the
  /// flattened mesh.
  TensorB encoder_input(const TensorB& dv) const {
    check_shape(dv, {-1, cfg_.vertices, 3}, "DeformationFusionModule: deformations");
    if (cfg_.encoder == "mlp") return dv.contiguous().reshape({dv.dim(0), cfg_.vertices * 3});
    TensorB m = map_.mesh_to_map(dv);  // (B, 3, S, S)
    if (!cfg_.mask_channel) return m;
    const Index b = dv.dim(0), S = cfg_.map_size, P = S * S;
    TensorB x({b, 4, S, S});
    const Tensor<T>& mask = mask_;
    for (Index i = 0; i < b; ++i) {
      std::copy(m.data() + i * 3 * P, m.data() + (i + 1) * 3 * P, x.data() + i * 4 * P);
      std::copy(mask.data(), mask.data() + P, x.data() + i * 4 * P + 3 * P);
    }
    return x;
  }

  /// Blendshape weights (B, K) of deformations dv (B, V, 3) from the encoder of `d`. dv is in
  /// `unit_mm` millimetres per unit (0: the model's data unit); the weights are internal (mm).
  TensorB encode(Domain d, const TensorB& dv, double unit_mm = 0) const {
    const TensorB x = encoder_input(to_internal(dv, unit_mm));
    const std::size_t i = static_cast<std::size_t>(d);
    return cfg_.encoder == "conv" ? conv_[i].forward(x) : mlp_[i].forward(x);
  }

  /// Deformations (B, V, 3) from weights (B, K), in `unit_mm` (0: the model's data unit).
  TensorB decode(const TensorB& w, double unit_mm = 0) const {
    return from_internal(decoder_.forward(w).reshape({w.dim(0), cfg_.vertices, 3}), unit_mm);
  }

  /// Eq. 13: B_A w_A(speech) + intensity · B_E w_E(expression); both (T, V, 3), same T, in
  /// `unit_mm` millimetres per unit (0: the model's data unit); the result is in the same unit.
  TensorB fuse(const TensorB& speech, const TensorB& expression, double intensity = 1.0,
               double unit_mm = 0) const {
    BF_CHECK(speech.shape() == expression.shape(), ShapeError, "fuse: speech ", speech.shape_string(),
             " and expression ", expression.shape_string(), " must have the same shape");
    TensorB wa = encode(Domain::Speech, speech, unit_mm);
    const TensorB we = encode(Domain::Expression, expression, unit_mm);
    const Index n = wa.dim(0), K = cfg_.k();
    for (Index t = 0; t < n; ++t)
      for (Index j = cfg_.k_a; j < K; ++j) wa[t * K + j] = static_cast<T>(intensity * we[t * K + j]);
    return decode(wa, unit_mm);
  }

  /// dv (in `unit_mm`, 0: the data unit) in mm; the input itself when that is already mm.
  TensorB to_internal(const TensorB& dv, double unit_mm = 0) const {
    const double u = resolve_unit(unit_mm);
    return u == 1.0 ? dv : scaled(dv, u);
  }
  /// y (mm) in `unit_mm` (0: the data unit); y itself when that is mm.
  TensorB from_internal(const TensorB& y, double unit_mm = 0) const {
    const double u = resolve_unit(unit_mm);
    return u == 1.0 ? y : scaled(y, 1.0 / u);
  }

  /// One training pass over a batch of one domain (deformations in the model's data unit):
  /// forward, losses, backward (gradients are accumulated into the parameters). Returns the
  /// weighted loss terms (in mm, the internal unit).
  DfmLosses train_batch(Domain d, const TensorB& dv_data, const TensorB& vertex_weights_b) {
    const std::size_t di = static_cast<std::size_t>(d);
    const TensorB dv_b = to_internal(dv_data);
    const TensorB x = encoder_input(dv_b);
    typename ConvInReluEncoder<T, B>::Context cctx;
    typename MlpEncoder<T, B>::Context mctx;
    const TensorB w_b = cfg_.encoder == "conv" ? conv_[di].forward(x, &cctx) : mlp_[di].forward(x, &mctx);
    typename BlendshapeDecoder<T, B>::Context dctx;
    const Index b = dv_b.dim(0), V = cfg_.vertices, K = cfg_.k();
    const TensorB pred_b = decoder_.forward(w_b, &dctx).reshape({b, V, 3});
    // losses run on host views (same memory)
    const Tensor<T> pred = detail::host_view<Cpu>(pred_b), w = detail::host_view<Cpu>(w_b);
    const Tensor<T> vertex_weights = detail::host_view<Cpu>(vertex_weights_b);
    const Tensor<T> target = detail::host_view<Cpu>(dv_b).contiguous();

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
    TensorB dw_b = decoder_.backward(dctx, detail::host_view<B>(dpred).reshape({b, V * 3}));
    Tensor<T> dw = detail::host_view<Cpu>(dw_b);
    // eq. 9: the cross-domain half is ε (B_E part of the speech encoder and vice versa)
    const Index c0 = d == Domain::Speech ? cfg_.k_a : 0, c1 = d == Domain::Speech ? K : cfg_.k_a;
    const double lsp = cfg_.sparsity_weight(d);
    if (lsp > 0) {
      Tensor<T> eps = w.slice(1, c0, c1).clone();
      auto sp = loss::l1(eps);
      L.sparsity = lsp * sp.value;
      for (Index i = 0; i < b; ++i)
        for (Index j = c0; j < c1; ++j) dw[i * K + j] += static_cast<T>(lsp * sp.grad[i * (c1 - c0) + (j - c0)]);
    }
    if (cfg_.lambda_usage > 0) {
      auto us = loss::usage_group_lasso(w);
      L.usage = cfg_.lambda_usage * us.value;
      axpy(dw, us.grad, cfg_.lambda_usage);
    }
    if (cfg_.encoder == "conv") conv_[di].backward(cctx, dw_b);
    else mlp_[di].backward(mctx, dw_b);
    if (cfg_.lambda_overlap > 0 && d == Domain::Speech) {  // once per step: on the speech batch
      auto ov = loss::cross_domain_overlap(decoder_.blendshapes(), cfg_.k_a);
      L.overlap = cfg_.lambda_overlap * ov.value;
      T* og = ov.grad.data();  // (numel and the pointer hoisted: the loop vectorises)
      const Index on = ov.grad.numel();
      const double lo = cfg_.lambda_overlap;
      for (Index i = 0; i < on; ++i) og[i] = static_cast<T>(lo * og[i]);
      decoder_.accumulate_blendshape_grad(ov.grad);
    }
    L.total = L.rec + L.sparsity + L.laplace + L.reg + L.usage + L.overlap;
    return L;
  }

  /// Loss terms without touching gradients (validation); data in the model's data unit, losses
  /// in mm.
  DfmLosses evaluate_batch(Domain d, const TensorB& dv_data, const TensorB& vertex_weights_b) const {
    const TensorB dv_b = to_internal(dv_data);
    const TensorB w_b = encode(d, dv_b, 1.0);
    const TensorB pred_b = decode(w_b, 1.0);
    const Tensor<T> w = detail::host_view<Cpu>(w_b), pred = detail::host_view<Cpu>(pred_b);
    const Tensor<T> dv = detail::host_view<Cpu>(dv_b), vertex_weights = detail::host_view<Cpu>(vertex_weights_b);
    DfmLosses L;
    L.rec = cfg_.lambda_rec * loss::weighted_mse(pred, dv.contiguous(), vertex_weights).value;
    if (cfg_.lambda_laplace > 0) L.laplace = cfg_.lambda_laplace * loss::mean_sq(geometry::laplacian(topo_, pred)).value;
    if (cfg_.lambda_reg > 0) L.reg = cfg_.lambda_reg * loss::mean_sq(pred).value;
    const Index K = cfg_.k();
    const Index c0 = d == Domain::Speech ? cfg_.k_a : 0, c1 = d == Domain::Speech ? K : cfg_.k_a;
    if (cfg_.sparsity_weight(d) > 0) L.sparsity = cfg_.sparsity_weight(d) * loss::l1(w.slice(1, c0, c1).clone()).value;
    if (cfg_.lambda_usage > 0) L.usage = cfg_.lambda_usage * loss::usage_group_lasso(w).value;
    if (cfg_.lambda_overlap > 0 && d == Domain::Speech)
      L.overlap = cfg_.lambda_overlap * loss::cross_domain_overlap(decoder_.blendshapes(), cfg_.k_a).value;
    L.total = L.rec + L.sparsity + L.laplace + L.reg + L.usage + L.overlap;
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
  double resolve_unit(double unit_mm) const {
    const double u = unit_mm == 0 ? cfg_.data_unit_mm : unit_mm;
    BF_CHECK(u > 0 && std::isfinite(u), ArgumentError, "DeformationFusionModule: unit ", unit_mm,
             " mm is not positive");
    return u;
  }
  /// A new tensor c·x (host loop on the tensor's memory).
  template <class Tn>
  static Tn scaled(const Tn& x, double c) {
    const auto xc = x.contiguous();
    Tn out(x.shape());
    using E = std::remove_cv_t<std::remove_reference_t<decltype(*out.data())>>;
    const E* xp = xc.data();
    E* op = out.data();
    const Index n = out.numel();
    for (Index i = 0; i < n; ++i) op[i] = static_cast<E>(static_cast<double>(xp[i]) * c);
    return out;
  }

  static void axpy(Tensor<T>& y, const Tensor<T>& x, double a) {
    const auto c = x.contiguous();
    T* yp = y.data();
    const T* xp = c.data();
    const Index n = y.numel();
    for (Index i = 0; i < n; ++i) yp[i] += static_cast<T>(a * xp[i]);
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
    decoder_ = BlendshapeDecoder<T, B>(cfg_.vertices, cfg_.k(), cfg_.column_norm);
    mask_ = cfg_.encoder == "conv" ? map_.template mask_as<T>() : Tensor<T>();
  }

  DfmConfig cfg_;
  geometry::GeometryMap map_;
  geometry::MeshTopology topo_;
  std::vector<ConvInReluEncoder<T, B>> conv_;
  std::vector<MlpEncoder<T, B>> mlp_;
  BlendshapeDecoder<T, B> decoder_;
  Tensor<T> mask_;  // the map's validity mask as T (S, S), built with the modules
};

}  // namespace blendfuse::nn
