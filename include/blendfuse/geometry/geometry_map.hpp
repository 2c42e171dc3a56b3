// blendfuse — geometry maps (paper §3.1, eq. 1): a square H×W image whose pixel (i, j) holds the
// barycentric interpolation of the three vertices of the mesh triangle covering it,
//     D_{i,j} = w_{i,j,1} V_{I_{i,j,1}} + w_{i,j,2} V_{I_{i,j,2}} + w_{i,j,3} V_{I_{i,j,3}}.
//
// Building a map (GeometryMap::build) for a fixed-topology face mesh that is a topological disk,
// possibly with inner holes (mouth slit, eyes):
//  1. Outer boundary = the longest boundary loop (3-d arc length); every other loop is a hole.
//  2. The outer loop is oriented counter-clockwise in the (x, y) plane (y up) and mapped onto the
//     border of the unit square by arc length. Its start is the lowest (smallest y) crossing of
//     the loop with the symmetry plane x = x_s (x_s = centre of the loop's x-range unless given),
//     which lands at the middle of the square's bottom edge; the four square corners are pinned
//     to the loop vertices nearest to 1/8, 3/8, 5/8, 7/8 of the perimeter from the start, and each
//     side is parameterised by arc length between its corners. A mesh symmetric about x = x_s
//     therefore gets a map symmetric under u ↦ 1 − u, and the face appears upright (x → u to the
//     right, y → v upwards in the picture, i.e. smaller row index).
//  3. Every other vertex (hole boundaries included: they are not pinned) solves the discrete
//     harmonic equation Σ_j w_ij (uv_i − uv_j) = 0 with positive weights (uniform Tutte,
//     cotangent clamped to positive, or Floater mean-value, the default). With `fill_holes`
//     (default) each hole is temporarily closed by a virtual vertex at the centroid of its loop,
//     fanned to the loop, so the solve is on a disk: by Tutte/Floater the map is then a
//     fold-free embedding (no flipped triangles), and holes keep roughly their 3-d shape in the
//     map (left free, a hole-boundary vertex averages neighbours on one side only, so holes get
//     pulled open and inflated). Virtual vertices are discarded after the solve. Symmetric weights (uniform,
//     cotangent) use Eigen::SimplicialLDLT, mean-value weights Eigen::SparseLU.
//  4. Rasterisation: for every pixel centre the covering triangle is found in UV space with a
//     uniform grid over triangle bounding boxes (ties on shared edges go to the triangle where
//     the point is most interior). The pixel stores the triangle's three vertex indices (int32,
//     in the face's order) and barycentric weights (float, ≥ 0, summing to 1). Pixels covered by
//     no triangle (holes, i.e. mouth/eyes) are masked: vertex indices 0, weights 0, face −1.
//
// Conventions:
//  * Pixel (i, j) = row i (top to bottom), column j (left to right); its centre has
//      u = (j + 0.5) / W,  v = (i + 0.5) / H      (half-pixel / align_corners=False convention).
//  * Per-vertex UVs are (V, 2) = (u, v) in [0, 1]², v growing downwards (towards higher rows).
//  * Maps are NCHW: (B, C, H, W); for vertex offsets C = 3 with channels (x, y, z). Meshes are
//    (B, V, C). Any C ≥ 1 is accepted.
//  * mesh_to_map (eq. 1) writes 0 into masked pixels. mesh_to_map_backward is its exact adjoint.
//  * map_to_mesh samples the map bilinearly at each vertex's UV: continuous pixel coordinates
//    x = u·W − 0.5, y = v·H − 0.5, clamped to [0, W−1] × [0, H−1] (border clamp, like
//    grid_sample(align_corners=False, padding_mode="border")). Of the four taps, those on masked
//    pixels are dropped and the remaining bilinear weights renormalised to sum to 1, so masked
//    pixels never influence the mesh and a constant map gives that constant at every vertex. If
//    all taps with non-zero weight are masked, the vertex takes the nearest valid pixel (by
//    distance to (x, y)). The taps and weights are precomputed, so map_to_mesh is a fixed sparse
//    linear operator and map_to_mesh_backward is exactly its adjoint.
//  * Data paths are generic over float and double (weights are cast to T).
//
// Storage (save / add_to): tensors <prefix>pixel_vertices (H, W, 3) I32, <prefix>pixel_weights
// (H, W, 3) F32, <prefix>pixel_face (H, W) I32 (−1 = masked), <prefix>vertex_uv (V, 2) F64 and
// <prefix>faces (F, 3) I32; metadata <prefix>format = "blendfuse.geometry_map.v1". The default
// prefix is "geometry_map." so the map can sit in a model file next to the weights.
#pragma once

#include <Eigen/Core>
#include <Eigen/SparseCholesky>
#include <Eigen/SparseCore>
#include <Eigen/SparseLU>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/geometry/mesh_topology.hpp"
#include "blendfuse/io/safetensors.hpp"

namespace blendfuse::geometry {

/// Edge weights of the harmonic UV solve (all positive, so the map is fold-free).
enum class UvWeights {
  Uniform,    ///< Tutte: w_ij = 1
  Cotangent,  ///< (cot α + cot β) / 2, clamped below at 1e-3 × the mean weight
  MeanValue,  ///< Floater: (tan(θ/2) + tan(θ'/2)) / |v_i − v_j| (not symmetric)
};

inline const char* uv_weights_name(UvWeights w) {
  switch (w) {
    case UvWeights::Uniform: return "uniform";
    case UvWeights::Cotangent: return "cotangent";
    case UvWeights::MeanValue: return "mean_value";
  }
  return "?";
}

struct GeometryMapOptions {
  UvWeights weights = UvWeights::MeanValue;
  /// Close holes with a virtual centroid vertex during the solve (see the file comment).
  bool fill_holes = true;
  /// x of the mirror plane; default: centre of the outer boundary's x-range.
  std::optional<double> symmetry_x;
};

/// Facts about a built map (informational).
struct GeometryMapStats {
  Index valid_pixels = 0;      ///< pixels covered by a triangle
  Index num_holes = 0;         ///< boundary loops other than the outer one
  Index flipped_faces = 0;     ///< UV triangles with the wrong orientation (0 for a valid map)
  Index degenerate_faces = 0;  ///< UV triangles with (near) zero area
  Index outer_loop_vertices = 0;
};

namespace detail::gmap {

using Face = MeshTopology::Face;

inline double dist3(const double* a, const double* b) {
  const double dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
  return std::sqrt(dx * dx + dy * dy + dz * dz);
}

/// Uniform grid over UV triangle bounding boxes for point location in [0, 1]².
class UvTriangleGrid {
 public:
  UvTriangleGrid(const std::vector<double>& uv, const std::vector<Face>& faces) : uv_(uv), faces_(faces) {
    const auto nf = faces.size();
    n_ = static_cast<int>(std::clamp<double>(std::ceil(std::sqrt(static_cast<double>(nf))), 1.0, 2048.0));
    inv_.resize(nf);
    std::vector<std::array<int, 4>> box(nf);
    std::vector<std::int64_t> count(static_cast<std::size_t>(n_) * n_ + 1, 0);
    for (std::size_t f = 0; f < nf; ++f) {
      const double* a = &uv[2 * static_cast<std::size_t>(faces[f][0])];
      const double* b = &uv[2 * static_cast<std::size_t>(faces[f][1])];
      const double* c = &uv[2 * static_cast<std::size_t>(faces[f][2])];
      const double e1x = b[0] - a[0], e1y = b[1] - a[1], e2x = c[0] - a[0], e2y = c[1] - a[1];
      const double det = e1x * e2y - e2x * e1y;
      Inv& in = inv_[f];
      in.ok = std::abs(det) > 1e-300 && std::isfinite(det);
      if (in.ok) {
        in.ax = a[0];
        in.ay = a[1];
        in.m00 = e2y / det;
        in.m01 = -e2x / det;
        in.m10 = -e1y / det;
        in.m11 = e1x / det;
      }
      const double lo_u = std::min({a[0], b[0], c[0]}), hi_u = std::max({a[0], b[0], c[0]});
      const double lo_v = std::min({a[1], b[1], c[1]}), hi_v = std::max({a[1], b[1], c[1]});
      box[f] = {cell(lo_u), cell(hi_u), cell(lo_v), cell(hi_v)};
      if (!in.ok) continue;
      for (int cy = box[f][2]; cy <= box[f][3]; ++cy)
        for (int cx = box[f][0]; cx <= box[f][1]; ++cx) ++count[static_cast<std::size_t>(cy * n_ + cx) + 1];
    }
    for (std::size_t k = 1; k < count.size(); ++k) count[k] += count[k - 1];
    off_ = count;
    ids_.resize(static_cast<std::size_t>(off_.back()));
    for (std::size_t f = 0; f < nf; ++f) {
      if (!inv_[f].ok) continue;
      for (int cy = box[f][2]; cy <= box[f][3]; ++cy)
        for (int cx = box[f][0]; cx <= box[f][1]; ++cx)
          ids_[static_cast<std::size_t>(count[static_cast<std::size_t>(cy * n_ + cx)]++)] = static_cast<std::int32_t>(f);
    }
  }

  /// Face containing (u, v) (−1 if none) and its barycentric weights (clamped ≥ 0, sum 1).
  std::int32_t locate(double u, double v, std::array<double, 3>& w) const {
    const std::size_t c = static_cast<std::size_t>(cell(v) * n_ + cell(u));
    std::int32_t best = -1;
    double best_min = -kInsideTol;
    for (std::int64_t k = off_[c]; k < off_[c + 1]; ++k) {
      const auto f = static_cast<std::size_t>(ids_[static_cast<std::size_t>(k)]);
      const Inv& in = inv_[f];
      const double dx = u - in.ax, dy = v - in.ay;
      const double s = in.m00 * dx + in.m01 * dy, t = in.m10 * dx + in.m11 * dy;
      const double r = 1.0 - s - t;
      const double mn = std::min({r, s, t});
      if (mn >= best_min) {
        if (mn == best_min && best >= 0 && static_cast<std::int32_t>(f) > best) continue;
        best_min = mn;
        best = static_cast<std::int32_t>(f);
        w = {r, s, t};
      }
    }
    if (best >= 0) {
      double sum = 0;
      for (double& x : w) sum += (x = std::max(x, 0.0));
      for (double& x : w) x /= sum;
    }
    return best;
  }

 private:
  static constexpr double kInsideTol = 1e-9;
  struct Inv {
    bool ok = false;
    double ax = 0, ay = 0, m00 = 0, m01 = 0, m10 = 0, m11 = 0;
  };
  int cell(double x) const {
    const double c = std::floor(x * n_);
    if (!(c > 0)) return 0;
    return c >= n_ - 1 ? n_ - 1 : static_cast<int>(c);
  }
  const std::vector<double>& uv_;
  const std::vector<Face>& faces_;
  int n_ = 1;
  std::vector<Inv> inv_;
  std::vector<std::int64_t> off_;
  std::vector<std::int32_t> ids_;
};

}  // namespace detail::gmap

class GeometryMap {
 public:
  using Face = MeshTopology::Face;

  GeometryMap() = default;

  /// Builds the map of `vertices` (V, 3) with `faces` (F, 3) at resolution height × width (see the
  /// file comment). Throws ShapeError for wrong shapes and ArgumentError for meshes that are not
  /// a single oriented manifold disk (optionally with holes), for faces out of range, unused
  /// vertices, non-finite coordinates or a degenerate outer boundary.
  template <class T, class I, class B1, class B2>
  static GeometryMap build(const Tensor<T, B1>& vertices, const Tensor<I, B2>& faces,
                           Index height = 128, Index width = 128,
                           const GeometryMapOptions& opt = {}) {
    static_assert(std::is_floating_point_v<T>, "GeometryMap::build: vertices must be float or double");
    check_shape(vertices, {-1, 3}, "GeometryMap::build: vertices");
    BF_CHECK(height >= 2 && width >= 2 && height <= 16384 && width <= 16384, ArgumentError,
             "GeometryMap::build: map size ", height, "x", width, " must be between 2 and 16384");
    const Index V = vertices.dim(0);
    std::vector<double> pos(static_cast<std::size_t>(3 * V));
    {
      const Tensor<T, B1> c = vertices.contiguous();
      for (Index i = 0; i < 3 * V; ++i) {
        pos[static_cast<std::size_t>(i)] = static_cast<double>(c[i]);
        BF_CHECK(std::isfinite(pos[static_cast<std::size_t>(i)]), ArgumentError,
                 "GeometryMap::build: vertex ", i / 3, " has a non-finite coordinate");
      }
    }
    MeshTopology topo(faces, V);
    GeometryMap m;
    m.build_impl(pos, topo, height, width, opt);
    return m;
  }

  bool built() const noexcept { return H_ > 0; }
  Index height() const noexcept { return H_; }
  Index width() const noexcept { return W_; }
  Index num_vertices() const noexcept { return V_; }
  Index num_faces() const noexcept { return static_cast<Index>(faces_.size()); }
  const std::vector<Face>& faces() const noexcept { return faces_; }
  const GeometryMapStats& stats() const noexcept { return stats_; }
  const std::string& weights_scheme() const noexcept { return scheme_; }

  /// Per-vertex UV (V, 2) as (u, v).
  Tensor<double> uv() const { return Tensor<double>::from({V_, 2}, uv_); }
  /// I_{i,j,k}: (H, W, 3) vertex indices (0 at masked pixels).
  Tensor<std::int32_t> pixel_vertices() const { return Tensor<std::int32_t>::from({H_, W_, 3}, pix_idx_); }
  /// w_{i,j,k}: (H, W, 3) barycentric weights (0 at masked pixels).
  Tensor<float> pixel_weights() const { return Tensor<float>::from({H_, W_, 3}, pix_w_); }
  /// Covering face per pixel (H, W), −1 where masked.
  Tensor<std::int32_t> pixel_face() const { return Tensor<std::int32_t>::from({H_, W_}, pix_face_); }
  /// (H, W): 1 where a triangle covers the pixel centre, 0 where masked (holes).
  Tensor<std::uint8_t> valid_mask() const { return mask_as<std::uint8_t>(); }
  /// valid_mask() as 1/0 in type T, e.g. for masking a loss.
  template <class T>
  Tensor<T> mask_as() const {
    Tensor<T> t({H_, W_});
    for (Index p = 0; p < H_ * W_; ++p) t[p] = pix_face_[static_cast<std::size_t>(p)] >= 0 ? T(1) : T(0);
    return t;
  }
  bool pixel_valid(Index i, Index j) const {
    BF_CHECK(i >= 0 && i < H_ && j >= 0 && j < W_, ArgumentError, "GeometryMap::pixel_valid: pixel (",
             i, ", ", j, ") outside ", H_, "x", W_);
    return pix_face_[static_cast<std::size_t>(i * W_ + j)] >= 0;
  }
  Index num_valid_pixels() const noexcept { return stats_.valid_pixels; }

  /// map_to_mesh taps: (V, 4) flat pixel indices i·W + j and (V, 4) weights (masked taps have
  /// weight 0; each row sums to 1).
  Tensor<std::int32_t> vertex_sample_pixels() const { return Tensor<std::int32_t>::from({V_, 4}, tap_idx_); }
  Tensor<double> vertex_sample_weights() const { return Tensor<double>::from({V_, 4}, tap_w_); }
  /// True when no bilinear tap of vertex v with non-zero weight falls on a masked pixel (so the
  /// sample is plain bilinear interpolation, no renormalisation).
  bool vertex_footprint_complete(Index v) const {
    BF_CHECK(v >= 0 && v < V_, ArgumentError, "GeometryMap: vertex ", v, " outside [0, ", V_, ")");
    return tap_complete_[static_cast<std::size_t>(v)] != 0;
  }

  // ---- data paths -----------------------------------------------------------------------------

  /// Eq. 1: dV (B, V, C) → D (B, C, H, W); masked pixels are 0.
  template <class T, class B>
  Tensor<T, B> mesh_to_map(const Tensor<T, B>& dv) const {
    check_mesh_input(dv, "GeometryMap::mesh_to_map");
    const Tensor<T, B> x = dv.contiguous();
    const Index nb = dv.dim(0), C = dv.dim(2), P = H_ * W_;
    Tensor<T, B> out({nb, C, H_, W_});
    for (Index b = 0; b < nb; ++b) {
      const T* xb = x.data() + b * V_ * C;
      T* ob = out.data() + b * C * P;
      for (Index p = 0; p < P; ++p) {
        if (pix_face_[static_cast<std::size_t>(p)] < 0) continue;
        const std::int32_t* id = &pix_idx_[static_cast<std::size_t>(3 * p)];
        const float* w = &pix_w_[static_cast<std::size_t>(3 * p)];
        const T w0 = static_cast<T>(w[0]), w1 = static_cast<T>(w[1]), w2 = static_cast<T>(w[2]);
        const T* x0 = xb + id[0] * C;
        const T* x1 = xb + id[1] * C;
        const T* x2 = xb + id[2] * C;
        for (Index c = 0; c < C; ++c) ob[c * P + p] = w0 * x0[c] + w1 * x1[c] + w2 * x2[c];
      }
    }
    return out;
  }

  /// Adjoint of mesh_to_map: dD (B, C, H, W) → dV (B, V, C).
  template <class T, class B>
  Tensor<T, B> mesh_to_map_backward(const Tensor<T, B>& dmap) const {
    check_map_input(dmap, "GeometryMap::mesh_to_map_backward");
    const Tensor<T, B> g = dmap.contiguous();
    const Index nb = dmap.dim(0), C = dmap.dim(1), P = H_ * W_;
    Tensor<T, B> out({nb, V_, C});
    for (Index b = 0; b < nb; ++b) {
      const T* gb = g.data() + b * C * P;
      T* ob = out.data() + b * V_ * C;
      for (Index p = 0; p < P; ++p) {
        if (pix_face_[static_cast<std::size_t>(p)] < 0) continue;
        const std::int32_t* id = &pix_idx_[static_cast<std::size_t>(3 * p)];
        const float* w = &pix_w_[static_cast<std::size_t>(3 * p)];
        const T w0 = static_cast<T>(w[0]), w1 = static_cast<T>(w[1]), w2 = static_cast<T>(w[2]);
        T* o0 = ob + id[0] * C;
        T* o1 = ob + id[1] * C;
        T* o2 = ob + id[2] * C;
        for (Index c = 0; c < C; ++c) {
          const T gv = gb[c * P + p];
          o0[c] += w0 * gv;
          o1[c] += w1 * gv;
          o2[c] += w2 * gv;
        }
      }
    }
    return out;
  }

  /// Bilinear sampling of D (B, C, H, W) at the vertex UVs → (B, V, C) (see the file comment).
  template <class T, class B>
  Tensor<T, B> map_to_mesh(const Tensor<T, B>& dmap) const {
    check_map_input(dmap, "GeometryMap::map_to_mesh");
    const Tensor<T, B> d = dmap.contiguous();
    const Index nb = dmap.dim(0), C = dmap.dim(1), P = H_ * W_;
    Tensor<T, B> out({nb, V_, C});
    for (Index b = 0; b < nb; ++b) {
      const T* db = d.data() + b * C * P;
      T* ob = out.data() + b * V_ * C;
      for (Index v = 0; v < V_; ++v) {
        const std::int32_t* id = &tap_idx_[static_cast<std::size_t>(4 * v)];
        const double* w = &tap_w_[static_cast<std::size_t>(4 * v)];
        for (Index c = 0; c < C; ++c) {
          const T* dc = db + c * P;
          T acc = 0;
          for (int k = 0; k < 4; ++k)
            if (w[k] != 0) acc += static_cast<T>(w[k]) * dc[id[k]];
          ob[v * C + c] = acc;
        }
      }
    }
    return out;
  }

  /// Adjoint of map_to_mesh: dV (B, V, C) → dD (B, C, H, W).
  template <class T, class B>
  Tensor<T, B> map_to_mesh_backward(const Tensor<T, B>& dverts) const {
    check_mesh_input(dverts, "GeometryMap::map_to_mesh_backward");
    const Tensor<T, B> g = dverts.contiguous();
    const Index nb = dverts.dim(0), C = dverts.dim(2), P = H_ * W_;
    Tensor<T, B> out({nb, C, H_, W_});
    for (Index b = 0; b < nb; ++b) {
      const T* gb = g.data() + b * V_ * C;
      T* ob = out.data() + b * C * P;
      for (Index v = 0; v < V_; ++v) {
        const std::int32_t* id = &tap_idx_[static_cast<std::size_t>(4 * v)];
        const double* w = &tap_w_[static_cast<std::size_t>(4 * v)];
        for (Index c = 0; c < C; ++c) {
          const T gv = gb[v * C + c];
          T* oc = ob + c * P;
          for (int k = 0; k < 4; ++k)
            if (w[k] != 0) oc[id[k]] += static_cast<T>(w[k]) * gv;
        }
      }
    }
    return out;
  }

  // ---- storage --------------------------------------------------------------------------------

  static constexpr const char* kFormat = "blendfuse.geometry_map.v1";

  /// Adds the map's tensors (names prefixed by `prefix`) to a safetensors writer.
  void add_to(io::SafeTensorsWriter& w, const std::string& prefix = "geometry_map.") const {
    require_built("GeometryMap::add_to");
    w.add(prefix + "pixel_vertices", pixel_vertices());
    w.add(prefix + "pixel_weights", pixel_weights());
    w.add(prefix + "pixel_face", pixel_face());
    w.add(prefix + "vertex_uv", uv());
    Tensor<std::int32_t> f({num_faces(), 3});
    for (std::size_t i = 0; i < faces_.size(); ++i)
      for (int k = 0; k < 3; ++k) f[static_cast<Index>(3 * i + k)] = faces_[i][k];
    w.add(prefix + "faces", f);
    w.set_metadata(prefix + "format", kFormat);
    w.set_metadata(prefix + "uv_weights", scheme_);
  }

  /// Writes the map alone to a safetensors file (atomically).
  void save(const std::string& path, const std::string& prefix = "geometry_map.") const {
    io::SafeTensorsWriter w;
    add_to(w, prefix);
    w.save(path);
  }

  /// Reads a map written by add_to/save; validates it and throws IoError naming the file.
  static GeometryMap from_safetensors(const io::SafeTensorsFile& f,
                                      const std::string& prefix = "geometry_map.") {
    const std::string& path = f.path();
    auto fail = [&](const std::string& what) { return IoError(path, "geometry map '" + prefix + "': " + what); };
    for (const char* n : {"pixel_vertices", "pixel_weights", "pixel_face", "vertex_uv", "faces"})
      if (!f.contains(prefix + n)) throw fail(std::string("missing tensor '") + prefix + n + "'");
    const std::string fmt = f.meta(prefix + "format");
    if (!fmt.empty() && fmt != kFormat) throw fail("unsupported format '" + fmt + "'");
    const Tensor<std::int32_t> pf = f.get<std::int32_t>(prefix + "pixel_face", {-1, -1});
    const Index H = pf.dim(0), W = pf.dim(1);
    if (H < 2 || W < 2) throw fail("map size " + std::to_string(H) + "x" + std::to_string(W) + " is below 2x2");
    const Tensor<std::int32_t> pv = f.get<std::int32_t>(prefix + "pixel_vertices", {H, W, 3});
    const Tensor<float> pw = f.get_weights<float>(prefix + "pixel_weights", {H, W, 3});
    const Tensor<double> uv = f.get<double>(prefix + "vertex_uv", {-1, 2});
    const Tensor<std::int32_t> faces = f.get<std::int32_t>(prefix + "faces", {-1, 3});
    const Index V = uv.dim(0);
    GeometryMap m;
    try {
      MeshTopology topo(faces, V);
      m.faces_ = topo.faces();
    } catch (const Error& e) {
      throw fail(std::string("invalid faces: ") + e.what());
    }
    m.H_ = H;
    m.W_ = W;
    m.V_ = V;
    m.scheme_ = f.meta(prefix + "uv_weights", "unknown");
    m.uv_.assign(uv.begin(), uv.end());
    for (Index i = 0; i < 2 * V; ++i) {
      const double x = m.uv_[static_cast<std::size_t>(i)];
      if (!(x >= 0.0 && x <= 1.0)) throw fail("vertex_uv of vertex " + std::to_string(i / 2) + " is outside [0, 1]");
    }
    m.pix_idx_.assign(pv.begin(), pv.end());
    m.pix_w_.assign(pw.begin(), pw.end());
    m.pix_face_.assign(pf.begin(), pf.end());
    const Index F = m.num_faces();
    for (Index p = 0; p < H * W; ++p) {
      const std::int32_t fc = m.pix_face_[static_cast<std::size_t>(p)];
      const std::string where = "pixel (" + std::to_string(p / W) + ", " + std::to_string(p % W) + ")";
      if (fc < -1 || fc >= F) throw fail(where + " names face " + std::to_string(fc) + " outside [-1, " + std::to_string(F) + ")");
      double sum = 0;
      for (int k = 0; k < 3; ++k) {
        const float w = m.pix_w_[static_cast<std::size_t>(3 * p + k)];
        const std::int32_t id = m.pix_idx_[static_cast<std::size_t>(3 * p + k)];
        if (!(w >= 0.0f && w <= 1.0f)) throw fail(where + " has a weight outside [0, 1]");
        if (fc >= 0 && id != m.faces_[static_cast<std::size_t>(fc)][k])
          throw fail(where + ": vertex indices do not match its face " + std::to_string(fc));
        if (fc < 0 && (w != 0.0f || id != 0)) throw fail(where + " is masked but has non-zero weights or indices");
        sum += w;
      }
      if (fc >= 0) {
        ++m.stats_.valid_pixels;
        if (std::abs(sum - 1.0) > 1e-4) throw fail(where + " has weights summing to " + std::to_string(sum));
      }
    }
    if (m.stats_.valid_pixels == 0) throw fail("no valid pixel");
    m.compute_taps();
    return m;
  }

  static GeometryMap load(const std::string& path, const std::string& prefix = "geometry_map.") {
    return from_safetensors(io::SafeTensorsFile::load(path), prefix);
  }

 private:
  void require_built(const char* op) const {
    BF_CHECK(built(), ArgumentError, op, ": the geometry map has not been built or loaded");
  }
  template <class T, class B>
  void check_mesh_input(const Tensor<T, B>& x, const char* op) const {
    static_assert(std::is_floating_point_v<T>, "GeometryMap: data must be float or double");
    static_assert(B::host_memory, "GeometryMap: the reference implementation needs host memory");
    require_built(op);
    BF_CHECK(x.ndim() == 3 && x.dim(1) == V_ && x.dim(2) >= 1, ShapeError, op, ": expected (B, ", V_,
             ", C), got ", x.shape_string());
  }
  template <class T, class B>
  void check_map_input(const Tensor<T, B>& x, const char* op) const {
    static_assert(std::is_floating_point_v<T>, "GeometryMap: data must be float or double");
    static_assert(B::host_memory, "GeometryMap: the reference implementation needs host memory");
    require_built(op);
    BF_CHECK(x.ndim() == 4 && x.dim(1) >= 1 && x.dim(2) == H_ && x.dim(3) == W_, ShapeError, op,
             ": expected (B, C, ", H_, ", ", W_, "), got ", x.shape_string());
  }

  // ---- build ----------------------------------------------------------------------------------

  void build_impl(const std::vector<double>& pos, const MeshTopology& topo, Index H, Index W,
                  const GeometryMapOptions& opt) {
    const char* op = "GeometryMap::build";
    const Index V = topo.num_vertices();
    BF_CHECK(topo.num_faces() > 0, ArgumentError, op, ": the mesh has no faces");
    BF_CHECK(topo.num_unreferenced_vertices() == 0, ArgumentError, op, ": vertex ",
             topo.first_unreferenced_vertex(), " is not used by any face (", topo.num_unreferenced_vertices(),
             " unused vertices); every vertex needs a place in the map");
    BF_CHECK(topo.num_components() == 1, ArgumentError, op, ": the mesh has ", topo.num_components(),
             " connected components; a geometry map needs a single connected disk");
    BF_CHECK(topo.is_manifold(), ArgumentError, op, ": the mesh is not an oriented 2-manifold: ",
             topo.manifold_problem());
    const auto& loops = topo.boundary_loops();
    BF_CHECK(!loops.empty(), ArgumentError, op,
             ": the mesh has no boundary (closed surface); a geometry map needs a topological disk "
             "(optionally with holes)");
    const Index nl = static_cast<Index>(loops.size());
    const Index chi = topo.euler_characteristic();
    BF_CHECK(chi == 2 - nl, ArgumentError, op,
             ": the mesh is not a topological disk with holes: V - E + F = ", chi, " with ", nl,
             " boundary loops (a disk with h holes has 2 - (h + 1)), i.e. genus ", (2 - nl - chi) / 2);

    // 1. Outer loop = longest.
    auto loop_length = [&](const std::vector<std::int32_t>& l) {
      double s = 0;
      for (std::size_t k = 0; k < l.size(); ++k)
        s += detail::gmap::dist3(&pos[3 * static_cast<std::size_t>(l[k])], &pos[3 * static_cast<std::size_t>(l[(k + 1) % l.size()])]);
      return s;
    };
    std::size_t outer_i = 0;
    double best_len = -1;
    for (std::size_t i = 0; i < loops.size(); ++i) {
      const double len = loop_length(loops[i]);
      if (len > best_len) {
        best_len = len;
        outer_i = i;
      }
    }
    std::vector<std::int32_t> outer = loops[outer_i];
    const std::size_t n = outer.size();
    BF_CHECK(n >= 4, ArgumentError, op, ": the outer boundary has only ", n,
             " vertices; at least 4 are needed to pin the square's corners");
    auto X = [&](std::int32_t v) { return pos[3 * static_cast<std::size_t>(v)]; };
    auto Y = [&](std::int32_t v) { return pos[3 * static_cast<std::size_t>(v) + 1]; };

    // 2. Orientation: counter-clockwise in (x, y).
    double area2 = 0;
    for (std::size_t k = 0; k < n; ++k) {
      const auto a = outer[k], b = outer[(k + 1) % n];
      area2 += X(a) * Y(b) - X(b) * Y(a);
    }
    const bool reversed = area2 < 0;
    if (reversed) std::reverse(outer.begin(), outer.end());

    // Start: lowest crossing of the loop with x = xs.
    double xmin = X(outer[0]), xmax = xmin;
    for (auto v : outer) {
      xmin = std::min(xmin, X(v));
      xmax = std::max(xmax, X(v));
    }
    const double xs = opt.symmetry_x ? *opt.symmetry_x : 0.5 * (xmin + xmax);
    std::size_t start_k = n;
    double start_t = 0, start_y = std::numeric_limits<double>::infinity();
    for (std::size_t k = 0; k < n; ++k) {
      const auto p = outer[k], q = outer[(k + 1) % n];
      const double dp = X(p) - xs, dq = X(q) - xs;
      double t = -1;
      if (dp == 0) t = 0;
      else if (dq != 0 && ((dp < 0) != (dq < 0))) t = dp / (dp - dq);
      if (t < 0) continue;
      const double y = Y(p) + t * (Y(q) - Y(p));
      if (y < start_y) {
        start_y = y;
        start_k = k;
        start_t = t;
      }
    }
    BF_CHECK(start_k < n, ArgumentError, op, ": the outer boundary does not cross the symmetry plane x = ",
             xs, " (its x-range is [", xmin, ", ", xmax, "])");

    // Arc lengths from the start point.
    std::vector<double> cum(n + 1, 0.0);
    for (std::size_t k = 0; k < n; ++k)
      cum[k + 1] = cum[k] + detail::gmap::dist3(&pos[3 * static_cast<std::size_t>(outer[k])],
                                                &pos[3 * static_cast<std::size_t>(outer[(k + 1) % n])]);
    const double perim = cum[n];
    BF_CHECK(perim > 0 && std::isfinite(perim), ArgumentError, op, ": the outer boundary has zero length");
    const double s_start = cum[start_k] + start_t * (cum[start_k + 1] - cum[start_k]);
    const std::size_t first = start_t == 0 ? start_k : (start_k + 1) % n;
    std::vector<std::int32_t> ord(n);
    std::vector<double> sp(n);
    for (std::size_t m = 0; m < n; ++m) {
      const std::size_t k = (first + m) % n;
      ord[m] = outer[k];
      double s = cum[k] - s_start;
      if (s < 0) s += perim;
      if (m == 0 && s >= perim) s = 0;
      sp[m] = s;
    }
    // Corners at 1/8, 3/8, 5/8, 7/8 of the perimeter (BR, TR, TL, BL in that order).
    std::array<std::size_t, 4> corner{};
    for (int c = 0; c < 4; ++c) {
      const double target = (c + 0.5) * perim / 4.0;
      std::size_t best = 0;
      for (std::size_t m = 1; m < n; ++m)
        if (std::abs(sp[m] - target) < std::abs(sp[best] - target)) best = m;
      corner[static_cast<std::size_t>(c)] = best;
    }
    BF_CHECK(corner[0] < corner[1] && corner[1] < corner[2] && corner[2] < corner[3], ArgumentError, op,
             ": the outer boundary is too coarse or uneven to pin four distinct square corners");
    static constexpr double kCornerUv[4][2] = {{1, 1}, {1, 0}, {0, 0}, {0, 1}};
    const std::size_t na = static_cast<std::size_t>(V) + (opt.fill_holes ? loops.size() - 1 : 0);
    std::vector<double> uv_all(2 * na, 0.0);
    std::vector<std::int32_t> unk(na, 0);
    for (int c = 0; c < 4; ++c) {
      const std::size_t a = corner[static_cast<std::size_t>(c)], b = corner[static_cast<std::size_t>((c + 1) % 4)];
      const double len = b > a ? sp[b] - sp[a] : sp[b] + perim - sp[a];
      BF_CHECK(len > 0, ArgumentError, op, ": a side of the outer boundary has zero length");
      const double* ca = kCornerUv[c];
      const double* cb = kCornerUv[(c + 1) % 4];
      for (std::size_t m = a;; m = (m + 1) % n) {
        const double d = m >= a ? sp[m] - sp[a] : sp[m] + perim - sp[a];
        const double f = m == b ? 1.0 : std::clamp(d / len, 0.0, 1.0);
        const auto v = static_cast<std::size_t>(ord[m]);
        uv_all[2 * v] = ca[0] + f * (cb[0] - ca[0]);
        uv_all[2 * v + 1] = ca[1] + f * (cb[1] - ca[1]);
        unk[v] = -1;
        if (m == b) break;
      }
    }

    // 3. Harmonic solve on the (hole-filled) mesh.
    std::vector<double> apos(pos);
    apos.resize(3 * na, 0.0);
    std::vector<Face> afaces = topo.faces();
    if (opt.fill_holes) {
      std::size_t hv = static_cast<std::size_t>(V);
      for (std::size_t i = 0; i < loops.size(); ++i) {
        if (i == outer_i) continue;
        const auto& l = loops[i];
        for (auto v : l)
          for (int d = 0; d < 3; ++d) apos[3 * hv + static_cast<std::size_t>(d)] += pos[3 * static_cast<std::size_t>(v) + static_cast<std::size_t>(d)] / static_cast<double>(l.size());
        for (std::size_t k = 0; k < l.size(); ++k)
          afaces.push_back({l[k], l[(k + 1) % l.size()], static_cast<std::int32_t>(hv)});
        ++hv;
      }
    }
    solve_harmonic(apos, afaces, unk, uv_all, opt.weights);
    scheme_ = uv_weights_name(opt.weights);

    H_ = H;
    W_ = W;
    V_ = V;
    faces_ = topo.faces();
    uv_.assign(uv_all.begin(), uv_all.begin() + 2 * V);
    for (double& x : uv_) x = std::clamp(x, 0.0, 1.0);

    stats_ = {};
    stats_.num_holes = nl - 1;
    stats_.outer_loop_vertices = static_cast<Index>(n);
    // Boundary runs clockwise in (u, v-down) coordinates, so faces are clockwise there unless the
    // loop was reversed to make it counter-clockwise in (x, y).
    const double expected_sign = reversed ? 1.0 : -1.0;
    for (const Face& t : faces_) {
      const double* a = &uv_[2 * static_cast<std::size_t>(t[0])];
      const double* b = &uv_[2 * static_cast<std::size_t>(t[1])];
      const double* c = &uv_[2 * static_cast<std::size_t>(t[2])];
      const double ar = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]);
      if (std::abs(ar) <= 1e-18) ++stats_.degenerate_faces;
      else if (ar * expected_sign < 0) ++stats_.flipped_faces;
    }

    // 4. Rasterise.
    rasterise();
    BF_CHECK(stats_.valid_pixels > 0, ArgumentError, op, ": no pixel centre is covered by a triangle");
    compute_taps();
  }

  static void solve_harmonic(const std::vector<double>& pos, const std::vector<Face>& faces,
                             std::vector<std::int32_t>& unk, std::vector<double>& uv, UvWeights scheme) {
    const Index na = static_cast<Index>(unk.size());
    using Trip = Eigen::Triplet<double, Index>;
    std::vector<Trip> trip;
    trip.reserve(faces.size() * 6);
    auto P = [&](std::int32_t v) { return &pos[3 * static_cast<std::size_t>(v)]; };
    for (const Face& t : faces) {
      for (int k = 0; k < 3; ++k) {
        const std::int32_t i = t[static_cast<std::size_t>(k)], j = t[static_cast<std::size_t>((k + 1) % 3)],
                           o = t[static_cast<std::size_t>((k + 2) % 3)];
        const double *pi = P(i), *pj = P(j), *po = P(o);
        if (scheme == UvWeights::Uniform) {
          trip.emplace_back(i, j, 1.0);
          trip.emplace_back(j, i, 1.0);
        } else if (scheme == UvWeights::Cotangent) {
          // angle at o, opposite edge (i, j)
          const double a[3] = {pi[0] - po[0], pi[1] - po[1], pi[2] - po[2]};
          const double b[3] = {pj[0] - po[0], pj[1] - po[1], pj[2] - po[2]};
          const double dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
          const double cx = a[1] * b[2] - a[2] * b[1], cy = a[2] * b[0] - a[0] * b[2], cz = a[0] * b[1] - a[1] * b[0];
          const double cr = std::sqrt(cx * cx + cy * cy + cz * cz);
          const double cot = cr > 1e-300 ? dot / cr : 0.0;
          trip.emplace_back(i, j, 0.5 * cot);
          trip.emplace_back(j, i, 0.5 * cot);
        } else {
          // mean value: angle at i between (i→j) and (i→o) contributes to w_ij and w_io
          const double a[3] = {pj[0] - pi[0], pj[1] - pi[1], pj[2] - pi[2]};
          const double b[3] = {po[0] - pi[0], po[1] - pi[1], po[2] - pi[2]};
          const double la = std::sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2]);
          const double lb = std::sqrt(b[0] * b[0] + b[1] * b[1] + b[2] * b[2]);
          const double dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
          const double cx = a[1] * b[2] - a[2] * b[1], cy = a[2] * b[0] - a[0] * b[2], cz = a[0] * b[1] - a[1] * b[0];
          const double cr = std::sqrt(cx * cx + cy * cy + cz * cz);
          const double den = la * lb + dot;
          const double th = den > 1e-6 * la * lb ? cr / den : 1e6;  // tan(θ/2)
          if (la > 0) trip.emplace_back(i, j, th / la);
          if (lb > 0) trip.emplace_back(i, o, th / lb);
        }
      }
    }
    Eigen::SparseMatrix<double, Eigen::RowMajor, Index> Wm(na, na);
    Wm.setFromTriplets(trip.begin(), trip.end());
    // Positive weights: uniform → exactly 1; others clamped below at 1e-3 × the mean weight.
    double mean = 0;
    Index cnt = 0;
    for (Index r = 0; r < na; ++r)
      for (decltype(Wm)::InnerIterator it(Wm, r); it; ++it) {
        mean += std::abs(it.value());
        ++cnt;
      }
    mean = cnt ? mean / static_cast<double>(cnt) : 1.0;
    for (Index r = 0; r < na; ++r)
      for (decltype(Wm)::InnerIterator it(Wm, r); it; ++it) {
        if (scheme == UvWeights::Uniform) it.valueRef() = 1.0;
        else if (!(it.value() >= 1e-3 * mean)) it.valueRef() = 1e-3 * mean;
      }

    Index nu = 0;
    for (auto& u : unk)
      if (u >= 0) u = static_cast<std::int32_t>(nu++);
    if (nu == 0) return;
    std::vector<Trip> at;
    Eigen::MatrixXd rhs = Eigen::MatrixXd::Zero(nu, 2);
    for (Index r = 0; r < na; ++r) {
      const std::int32_t ur = unk[static_cast<std::size_t>(r)];
      if (ur < 0) continue;
      double diag = 0;
      for (decltype(Wm)::InnerIterator it(Wm, r); it; ++it) {
        const Index c = it.col();
        diag += it.value();
        const std::int32_t uc = unk[static_cast<std::size_t>(c)];
        if (uc >= 0) {
          at.emplace_back(ur, uc, -it.value());
        } else {
          rhs(ur, 0) += it.value() * uv[2 * static_cast<std::size_t>(c)];
          rhs(ur, 1) += it.value() * uv[2 * static_cast<std::size_t>(c) + 1];
        }
      }
      at.emplace_back(ur, ur, diag);
    }
    Eigen::SparseMatrix<double> A(nu, nu);
    A.setFromTriplets(at.begin(), at.end());
    A.makeCompressed();
    Eigen::MatrixXd sol;
    if (scheme == UvWeights::MeanValue) {
      Eigen::SparseLU<Eigen::SparseMatrix<double>, Eigen::COLAMDOrdering<int>> lu;
      lu.analyzePattern(A);
      lu.factorize(A);
      BF_CHECK(lu.info() == Eigen::Success, ArgumentError,
               "GeometryMap::build: the harmonic UV system could not be factorised (SparseLU: ",
               lu.lastErrorMessage(), ")");
      sol = lu.solve(rhs);
    } else {
      Eigen::SimplicialLDLT<Eigen::SparseMatrix<double>> ldlt(A);
      BF_CHECK(ldlt.info() == Eigen::Success, ArgumentError,
               "GeometryMap::build: the harmonic UV system could not be factorised (SimplicialLDLT)");
      sol = ldlt.solve(rhs);
    }
    for (Index r = 0; r < na; ++r) {
      const std::int32_t ur = unk[static_cast<std::size_t>(r)];
      if (ur < 0) continue;
      uv[2 * static_cast<std::size_t>(r)] = sol(ur, 0);
      uv[2 * static_cast<std::size_t>(r) + 1] = sol(ur, 1);
      BF_CHECK(std::isfinite(sol(ur, 0)) && std::isfinite(sol(ur, 1)), ArgumentError,
               "GeometryMap::build: the harmonic UV solve produced a non-finite value");
    }
  }

  void rasterise() {
    const std::size_t P = static_cast<std::size_t>(H_ * W_);
    pix_idx_.assign(3 * P, 0);
    pix_w_.assign(3 * P, 0.0f);
    pix_face_.assign(P, -1);
    stats_.valid_pixels = 0;
    const detail::gmap::UvTriangleGrid grid(uv_, faces_);
    std::array<double, 3> w{};
    for (Index i = 0; i < H_; ++i) {
      const double v = (static_cast<double>(i) + 0.5) / static_cast<double>(H_);
      for (Index j = 0; j < W_; ++j) {
        const double u = (static_cast<double>(j) + 0.5) / static_cast<double>(W_);
        const std::int32_t f = grid.locate(u, v, w);
        if (f < 0) continue;
        const std::size_t p = static_cast<std::size_t>(i * W_ + j);
        pix_face_[p] = f;
        for (std::size_t k = 0; k < 3; ++k) {
          pix_idx_[3 * p + k] = faces_[static_cast<std::size_t>(f)][k];
          pix_w_[3 * p + k] = static_cast<float>(w[k]);
        }
        ++stats_.valid_pixels;
      }
    }
  }

  void compute_taps() {
    tap_idx_.assign(4 * static_cast<std::size_t>(V_), 0);
    tap_w_.assign(4 * static_cast<std::size_t>(V_), 0.0);
    tap_complete_.assign(static_cast<std::size_t>(V_), 1);
    auto valid = [&](Index p) { return pix_face_[static_cast<std::size_t>(p)] >= 0; };
    for (Index v = 0; v < V_; ++v) {
      const double x = std::clamp(uv_[2 * static_cast<std::size_t>(v)] * static_cast<double>(W_) - 0.5, 0.0, static_cast<double>(W_ - 1));
      const double y = std::clamp(uv_[2 * static_cast<std::size_t>(v) + 1] * static_cast<double>(H_) - 0.5, 0.0, static_cast<double>(H_ - 1));
      const Index j0 = std::min<Index>(static_cast<Index>(std::floor(x)), W_ - 2);
      const Index i0 = std::min<Index>(static_cast<Index>(std::floor(y)), H_ - 2);
      const double fx = x - static_cast<double>(j0), fy = y - static_cast<double>(i0);
      const Index px[4] = {i0 * W_ + j0, i0 * W_ + j0 + 1, (i0 + 1) * W_ + j0, (i0 + 1) * W_ + j0 + 1};
      double wt[4] = {(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy};
      double sum = 0;
      for (int k = 0; k < 4; ++k) {
        if (!valid(px[k])) {
          if (wt[k] != 0) tap_complete_[static_cast<std::size_t>(v)] = 0;
          wt[k] = 0;
        }
        sum += wt[k];
      }
      std::int32_t* id = &tap_idx_[4 * static_cast<std::size_t>(v)];
      double* tw = &tap_w_[4 * static_cast<std::size_t>(v)];
      if (sum > 1e-12) {
        for (int k = 0; k < 4; ++k) {
          id[k] = static_cast<std::int32_t>(px[k]);
          tw[k] = wt[k] / sum;
        }
      } else {  // footprint entirely masked: nearest valid pixel centre
        Index best = -1;
        double bd = std::numeric_limits<double>::infinity();
        for (Index p = 0; p < H_ * W_; ++p) {
          if (!valid(p)) continue;
          const double dx = static_cast<double>(p % W_) - x, dy = static_cast<double>(p / W_) - y;
          const double d = dx * dx + dy * dy;
          if (d < bd) {
            bd = d;
            best = p;
          }
        }
        for (int k = 0; k < 4; ++k) id[k] = static_cast<std::int32_t>(best);
        tw[0] = 1.0;
      }
    }
  }

  Index H_ = 0, W_ = 0, V_ = 0;
  std::vector<Face> faces_;
  std::vector<double> uv_;
  std::vector<std::int32_t> pix_idx_;
  std::vector<float> pix_w_;
  std::vector<std::int32_t> pix_face_;
  std::vector<std::int32_t> tap_idx_;
  std::vector<double> tap_w_;
  std::vector<std::uint8_t> tap_complete_;
  GeometryMapStats stats_;
  std::string scheme_;
};

}  // namespace blendfuse::geometry
