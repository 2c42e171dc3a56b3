// blendfuse — rigs: named target shapes on a topology, optionally with a FLAME-style jaw joint.
//
// A Rig is what a downstream character understands: a neutral mesh (V, 3), S target shapes stored
// as offsets from it (S, V, 3), one name per shape (ARKit's "jawOpen", FLAME's "exp000", ...) and
// one flag word per shape (kUnsupported: "this face cannot show it" — such a shape is all zero and
// its weight is held at 0 by the solvers). A FLAME rig adds a jaw: the jaw joint's position, its
// linear-blend-skinning weight per vertex and the 9 pose-corrective directions ("posedirs") of the
// jaw's (R − I) entries, so that the jaw rotation (axis-angle, radians) is 3 more parameters.
//
// Parameters p = [w_0 … w_{S−1} | θ_x θ_y θ_z] (the θ only with a jaw). Exact evaluation:
//   v_posed = neutral + Σ_s w_s·shape_s + Σ_{k<9} (R(θ) − I)_k · posedir_k     (R − I row-major)
//   v       = v_posed + ω_jaw(v) · (R(θ) − I)(v_posed − J)                      (LBS, jaw only)
// i.e. FLAME's lbs() with every joint but the jaw at rest, and J fixed at the rig's jaw joint
// (FLAME regresses J from the shaped/expressed mesh; the converter takes it at the template).
// Linearisation (for the linear map L_G and the bounded solver): at θ = 0, R ≈ I + [θ]×, so
//   ∂v/∂θ_k = ω_jaw · (e_k × (v₀ − J)) + Σ_{ij} [e_k]×_{ij} · posedir_{3i+j},
// three columns next to the S shape columns (basis_mm). The error of this tangent is O(|θ|²);
// reconstruction errors are always measured with the exact evaluation (see solve.hpp).
//
// File format (safetensors, io/safetensors.hpp):
//   neutral (V, 3) F32, shapes (S, V, 3) F32 offsets, flags (S,) I32, optional faces (F, 3) I32,
//   optional jaw.joint (3,) F64, jaw.weights (V,) F32, jaw.posedirs (9, V, 3) F32 (all three or none);
//   __metadata__: format = "blendfuse.rig", version = "1", unit = "mm" | "cm" | "m" (the unit of
//   every coordinate in the file: neutral, shapes, posedirs, joint — always explicit, since FLAME
//   and VOCAset are in metres and the procedural face in mm), names = JSON array of S strings,
//   name = the rig's name ("arkit52", "flame"), source = free text.
// Every load error is IoError(path, what is wrong).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/data/dataset.hpp"
#include "blendfuse/io/safetensors.hpp"

namespace blendfuse::rig {

/// Per-shape flag bits.
enum ShapeFlag : std::int32_t {
  kUnsupported = 1,  // the face cannot show this shape: all zero, weight held at 0
};

inline constexpr const char* kRigFormat = "blendfuse.rig";
inline constexpr int kJawParams = 3;

/// FLAME-style jaw: joint, skinning weights, pose correctives (see the file comment).
struct Jaw {
  std::array<double, 3> joint{};  // jaw joint position, rig unit
  Tensor<float> weights;          // (V,) skinning weight of the jaw joint
  Tensor<float> posedirs;         // (9, V, 3) correctives per entry of (R − I), rig unit
};

/// Rodrigues: rotation matrix (row-major 3×3) of an axis-angle vector (radians).
inline std::array<double, 9> rodrigues(double rx, double ry, double rz) {
  const double a = std::sqrt(rx * rx + ry * ry + rz * rz);
  if (a < 1e-12) return {1, -rz, ry, rz, 1, -rx, -ry, rx, 1};  // first order
  const double x = rx / a, y = ry / a, z = rz / a, c = std::cos(a), s = std::sin(a), t = 1 - c;
  return {t * x * x + c,     t * x * y - s * z, t * x * z + s * y,
          t * x * y + s * z, t * y * y + c,     t * y * z - s * x,
          t * x * z - s * y, t * y * z + s * x, t * z * z + c};
}

struct Rig {
  std::string name;
  std::string source;
  double unit_mm = 1.0;             // millimetres per unit of every coordinate (1 mm, 1000 m)
  Tensor<float> neutral;            // (V, 3)
  Tensor<float> shapes;             // (S, V, 3) offsets from the neutral
  std::vector<std::string> names;   // S names
  std::vector<std::int32_t> flags;  // S flag words (ShapeFlag bits)
  Tensor<std::int32_t> faces;       // (F, 3) optional
  std::optional<Jaw> jaw;

  Index num_vertices() const { return neutral.empty() ? 0 : neutral.dim(0); }
  Index num_shapes() const { return static_cast<Index>(names.size()); }
  /// Shape weights plus, with a jaw, its 3 rotation parameters.
  Index num_params() const { return num_shapes() + (jaw ? kJawParams : 0); }
  bool supported(Index s) const { return (flags[static_cast<std::size_t>(s)] & kUnsupported) == 0; }
  std::string units() const { return data::unit_name(unit_mm); }

  /// Names of all parameters: the shape names, then jaw_rx, jaw_ry, jaw_rz (radians).
  std::vector<std::string> param_names() const {
    std::vector<std::string> n = names;
    if (jaw)
      for (const char* j : {"jaw_rx", "jaw_ry", "jaw_rz"}) n.emplace_back(j);
    return n;
  }

  /// Index of a parameter name, or -1.
  Index find(const std::string& n) const {
    const auto p = param_names();
    for (std::size_t i = 0; i < p.size(); ++i)
      if (p[i] == n) return static_cast<Index>(i);
    return -1;
  }

  /// Left/right partners among the shapes, from the names: xxxLeft/xxxRight, xxx_L/xxx_R,
  /// xxx_left/xxx_right, xxx.L/xxx.R. Each pair (left, right) once.
  std::vector<std::pair<Index, Index>> mirror_pairs() const {
    static const std::array<std::pair<const char*, const char*>, 4> suffixes = {
        std::pair{"Left", "Right"}, std::pair{"_L", "_R"}, std::pair{"_left", "_right"}, std::pair{".L", ".R"}};
    std::vector<std::pair<Index, Index>> out;
    for (Index i = 0; i < num_shapes(); ++i) {
      const std::string& a = names[static_cast<std::size_t>(i)];
      for (const auto& [l, r] : suffixes) {
        const std::string L(l), R(r);
        if (a.size() > L.size() && a.compare(a.size() - L.size(), L.size(), L) == 0) {
          const std::string partner = a.substr(0, a.size() - L.size()) + R;
          for (Index j = 0; j < num_shapes(); ++j)
            if (names[static_cast<std::size_t>(j)] == partner) out.emplace_back(i, j);
        }
      }
    }
    return out;
  }

  /// Throws IoError(where, ...) unless the rig is consistent (shapes, names, flags, finiteness).
  void validate(const std::string& where) const {
    auto fail = [&](const std::string& what) { throw IoError(where, what); };
    if (neutral.ndim() != 2 || neutral.dim(1) != 3 || neutral.dim(0) == 0)
      fail("neutral must have shape (V, 3), got " + neutral.shape_string());
    const Index V = neutral.dim(0), S = num_shapes();
    if (S == 0) fail("the rig has no shapes");
    if (shapes.ndim() != 3 || shapes.dim(0) != S || shapes.dim(1) != V || shapes.dim(2) != 3)
      fail("shapes must have shape (" + std::to_string(S) + ", " + std::to_string(V) + ", 3) for " +
           std::to_string(S) + " names and " + std::to_string(V) + " vertices, got " + shapes.shape_string());
    if (static_cast<Index>(flags.size()) != S)
      fail("flags has " + std::to_string(flags.size()) + " entries for " + std::to_string(S) + " shapes");
    if (!(unit_mm > 0) || !std::isfinite(unit_mm)) fail("unit must be positive");
    std::set<std::string> seen;
    for (Index s = 0; s < S; ++s) {
      const std::string& n = names[static_cast<std::size_t>(s)];
      if (n.empty()) fail("shape " + std::to_string(s) + " has an empty name");
      if (!seen.insert(n).second) fail("shape name '" + n + "' appears twice");
      const auto f = flags[static_cast<std::size_t>(s)];
      if (f & ~kUnsupported) fail("shape '" + n + "' has unknown flag bits " + std::to_string(f));
    }
    auto finite = [&](const Tensor<float>& t, const std::string& what) {
      for (Index i = 0; i < t.numel(); ++i)
        if (!std::isfinite(t[i])) fail(blendfuse::detail::concat("non-finite value ", t[i], " in ", what, " at flat index ", i));
    };
    finite(neutral, "neutral");
    finite(shapes, "shapes");
    for (Index s = 0; s < S; ++s) {
      if (supported(s)) continue;
      const float* p = shapes.data() + s * V * 3;
      for (Index i = 0; i < V * 3; ++i)
        if (p[i] != 0.0f)
          fail("shape '" + names[static_cast<std::size_t>(s)] + "' is flagged unsupported but is not all zero");
    }
    if (!faces.empty()) {
      if (faces.ndim() != 2 || faces.dim(1) != 3) fail("faces must have shape (F, 3), got " + faces.shape_string());
      for (Index i = 0; i < faces.numel(); ++i)
        if (faces[i] < 0 || faces[i] >= V)
          fail(blendfuse::detail::concat("face index ", faces[i], " out of range [0, ", V, ") at flat index ", i));
    }
    if (jaw) {
      if (jaw->weights.ndim() != 1 || jaw->weights.dim(0) != V)
        fail("jaw.weights must have shape (" + std::to_string(V) + ",), got " + jaw->weights.shape_string());
      if (jaw->posedirs.ndim() != 3 || jaw->posedirs.dim(0) != 9 || jaw->posedirs.dim(1) != V || jaw->posedirs.dim(2) != 3)
        fail("jaw.posedirs must have shape (9, " + std::to_string(V) + ", 3), got " + jaw->posedirs.shape_string());
      finite(jaw->weights, "jaw.weights");
      finite(jaw->posedirs, "jaw.posedirs");
      for (double j : jaw->joint)
        if (!std::isfinite(j)) fail("non-finite jaw.joint");
    }
  }

  /// The linearised parameter basis (3V, P) in millimetres: the S shape columns, then (with a jaw)
  /// the three tangent columns ∂v/∂θ at θ = 0 (mm per radian). Unsupported columns are zero.
  Eigen::MatrixXd basis_mm() const {
    const Index V = num_vertices(), S = num_shapes();
    Eigen::MatrixXd A(3 * V, num_params());
    for (Index s = 0; s < S; ++s) {
      const float* p = shapes.data() + s * V * 3;
      for (Index i = 0; i < 3 * V; ++i) A(i, s) = unit_mm * p[i];
    }
    if (jaw) {
      for (int k = 0; k < kJawParams; ++k) {
        // [e_k]× row-major
        std::array<double, 9> K{};
        const double e[3] = {k == 0 ? 1.0 : 0.0, k == 1 ? 1.0 : 0.0, k == 2 ? 1.0 : 0.0};
        K = {0, -e[2], e[1], e[2], 0, -e[0], -e[1], e[0], 0};
        for (Index v = 0; v < V; ++v) {
          const double w = jaw->weights[v];
          const double r[3] = {neutral(v, 0) - jaw->joint[0], neutral(v, 1) - jaw->joint[1], neutral(v, 2) - jaw->joint[2]};
          for (int c = 0; c < 3; ++c) {
            double d = w * (K[3 * c + 0] * r[0] + K[3 * c + 1] * r[1] + K[3 * c + 2] * r[2]);
            for (int q = 0; q < 9; ++q)
              if (K[static_cast<std::size_t>(q)] != 0.0) d += K[static_cast<std::size_t>(q)] * jaw->posedirs(q, v, c);
            A(3 * v + c, S + k) = unit_mm * d;
          }
        }
      }
    }
    return A;
  }

  /// Exact offsets from the neutral (V·3 doubles, millimetres) of parameters p (num_params()).
  std::vector<double> offsets_mm(const double* p) const {
    const Index V = num_vertices(), S = num_shapes();
    std::vector<double> out(static_cast<std::size_t>(3 * V), 0.0);
    for (Index s = 0; s < S; ++s) {
      const double w = p[s];
      if (w == 0.0) continue;
      const float* b = shapes.data() + s * V * 3;
      for (Index i = 0; i < 3 * V; ++i) out[static_cast<std::size_t>(i)] += w * b[i];
    }
    if (jaw) {
      const auto R = rodrigues(p[S], p[S + 1], p[S + 2]);
      std::array<double, 9> D = R;
      for (int i = 0; i < 3; ++i) D[static_cast<std::size_t>(4 * i)] -= 1.0;
      for (Index v = 0; v < V; ++v) {
        double vp[3];
        for (int c = 0; c < 3; ++c) {
          double d = out[static_cast<std::size_t>(3 * v + c)];
          for (int q = 0; q < 9; ++q) d += D[static_cast<std::size_t>(q)] * jaw->posedirs(q, v, c);
          out[static_cast<std::size_t>(3 * v + c)] = d;
          vp[c] = neutral(v, c) + d - jaw->joint[static_cast<std::size_t>(c)];
        }
        const double w = jaw->weights[v];
        for (int c = 0; c < 3; ++c)
          out[static_cast<std::size_t>(3 * v + c)] +=
              w * (D[static_cast<std::size_t>(3 * c)] * vp[0] + D[static_cast<std::size_t>(3 * c + 1)] * vp[1] +
                   D[static_cast<std::size_t>(3 * c + 2)] * vp[2]);
      }
    }
    for (double& x : out) x *= unit_mm;
    return out;
  }

  /// Absolute positions (V, 3) in the rig's unit for parameters p (exact, see the file comment).
  Tensor<float> evaluate(const double* p) const {
    const auto d = offsets_mm(p);
    Tensor<float> out({num_vertices(), 3});
    for (Index i = 0; i < out.numel(); ++i)
      out[i] = static_cast<float>(neutral[i] + d[static_cast<std::size_t>(i)] / unit_mm);
    return out;
  }

  /// Writes the rig as safetensors (atomically); validates first.
  void save(const std::string& path) const {
    validate(path);
    io::SafeTensorsWriter w;
    w.add("neutral", neutral);
    w.add("shapes", shapes);
    w.add("flags", Tensor<std::int32_t>::from({num_shapes()}, flags));
    if (!faces.empty()) w.add("faces", faces);
    if (jaw) {
      w.add("jaw.joint", Tensor<double>::from({3}, {jaw->joint[0], jaw->joint[1], jaw->joint[2]}));
      w.add("jaw.weights", jaw->weights);
      w.add("jaw.posedirs", jaw->posedirs);
    }
    w.set_metadata("format", kRigFormat);
    w.set_metadata("version", "1");
    w.set_metadata("unit", units());
    w.set_metadata("names", nlohmann::json(names).dump());
    w.set_metadata("name", name);
    if (!source.empty()) w.set_metadata("source", source);
    w.save(path);
  }

  /// Reads and validates a rig file; IoError(path, ...) on any problem.
  static Rig load(const std::string& path) {
    const auto f = io::SafeTensorsFile::load(path);
    if (f.meta("format") != kRigFormat)
      throw IoError(path, "not a blendfuse rig (metadata format is '" + f.meta("format", "<missing>") +
                              "', expected '" + kRigFormat + "')");
    if (f.meta("version") != "1") throw IoError(path, "unsupported rig version '" + f.meta("version") + "'");
    Rig r;
    r.name = f.meta("name");
    r.source = f.meta("source");
    const std::string unit = f.meta("unit");
    if (unit.empty()) throw IoError(path, "rig metadata lacks 'unit' (mm, cm or m)");
    try {
      r.unit_mm = data::unit_mm_from_name(unit);
    } catch (const ArgumentError& e) {
      throw IoError(path, e.what());
    }
    nlohmann::json names;
    try {
      names = nlohmann::json::parse(f.meta("names"));
    } catch (const nlohmann::json::exception& e) {
      throw IoError(path, std::string("rig metadata 'names' is not valid JSON: ") + e.what());
    }
    if (!names.is_array()) throw IoError(path, "rig metadata 'names' must be a JSON array of strings");
    for (const auto& n : names) {
      if (!n.is_string()) throw IoError(path, "rig metadata 'names' holds a non-string: " + n.dump());
      r.names.push_back(n.get<std::string>());
    }
    for (const char* t : {"neutral", "shapes", "flags"})
      if (!f.contains(t)) throw IoError(path, std::string("rig file lacks tensor '") + t + "'");
    r.neutral = f.get<float>("neutral");
    r.shapes = f.get<float>("shapes");
    const auto fl = f.get<std::int32_t>("flags");
    r.flags.assign(fl.data(), fl.data() + fl.numel());
    if (f.contains("faces")) r.faces = f.get<std::int32_t>("faces");
    const int jaw_parts = f.contains("jaw.joint") + f.contains("jaw.weights") + f.contains("jaw.posedirs");
    if (jaw_parts != 0 && jaw_parts != 3)
      throw IoError(path, "a jaw needs all of jaw.joint, jaw.weights and jaw.posedirs");
    if (jaw_parts == 3) {
      Jaw j;
      const auto J = f.get<double>("jaw.joint", {3});
      j.joint = {J[0], J[1], J[2]};
      j.weights = f.get<float>("jaw.weights");
      j.posedirs = f.get<float>("jaw.posedirs");
      r.jaw = std::move(j);
    }
    r.validate(path);
    return r;
  }
};

}  // namespace blendfuse::rig
