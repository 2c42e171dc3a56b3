// blendfuse — geometry maps (paper §3.1, eq. 1): a square H×W image whose pixel (i, j) holds the
// barycentric interpolation of the three vertices of the mesh triangle covering it,
//     D_{i,j} = w_{i,j,1} V_{I_{i,j,1}} + w_{i,j,2} V_{I_{i,j,2}} + w_{i,j,3} V_{I_{i,j,3}}.
//
// Building a map (GeometryMap::build) for a fixed-topology face mesh that is a topological disk,
// possibly with inner holes (mouth slit, eyes): steps 1–3, the UV layout (outer boundary on the
// unit square's border, harmonic solve inside), are in geometry/uv_layout.hpp; step 4, the
// rasterisation into pixels and the bilinear taps of map_to_mesh, in geometry/uv_raster.hpp. This
// header holds the GeometryMap class: build, the data paths (eq. 1 and its adjoints) and storage.
//
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
#include "blendfuse/geometry/uv_layout.hpp"
#include "blendfuse/geometry/uv_raster.hpp"
#include "blendfuse/io/safetensors.hpp"

namespace blendfuse::geometry {

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
    detail::gmap::UvLayout lay = detail::gmap::layout_uv(pos, topo, opt);  // steps 1–3 (uv_layout.hpp)
    scheme_ = std::move(lay.scheme);
    H_ = H;
    W_ = W;
    V_ = topo.num_vertices();
    faces_ = topo.faces();
    uv_ = std::move(lay.uv);
    stats_ = {};
    stats_.num_holes = lay.num_holes;
    stats_.outer_loop_vertices = lay.outer_loop_vertices;
    stats_.flipped_faces = lay.flipped_faces;
    stats_.degenerate_faces = lay.degenerate_faces;
    // 4. Rasterise (uv_raster.hpp).
    rasterise();
    BF_CHECK(stats_.valid_pixels > 0, ArgumentError, "GeometryMap::build: no pixel centre is covered by a triangle");
    compute_taps();
  }

  void rasterise() {
    stats_.valid_pixels = detail::gmap::rasterise_uv(uv_, faces_, H_, W_, pix_idx_, pix_w_, pix_face_);
  }

  void compute_taps() { detail::gmap::bilinear_taps(uv_, V_, H_, W_, pix_face_, tap_idx_, tap_w_, tap_complete_); }

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
