// blendfuse — the procedural face mesh: a frontal face region built on a square parameter grid.
//
// Design (units: millimetres; x to the face's right as seen by the viewer, y up, z towards the
// viewer; the face is about 150 mm wide and 210 mm tall):
// * An n×n grid (u, v) ∈ [-1, 1]² is mapped onto a rounded-rectangle/ellipse outline (a blend of
//   the identity and the elliptical-grid square→disk map, so no cell degenerates at the corners),
//   and lifted to a face-like depth z(x, y) (nose, brow ridge, eye sockets, lips, chin, cheeks).
// * The mouth is a SLIT along one grid row: the row's vertices strictly between the two mouth
//   corners are duplicated; cells above the row use the upper copies (upper-lip row), cells below
//   use the lower copies (lower-lip row). At rest the two copies coincide (closed-lip gap 0); a
//   displacement that differs between the copies opens the mouth. The corners are shared.
// * Optional eye holes: grid cells whose centre lies inside an ellipse around each eye are removed
//   (diagonal "pinch" configurations are repaired, so the result stays manifold).
// The surface is therefore a topological disk with 1 + 1 (+ 2 eyes) boundary loops: Euler
// characteristic V − E + F = 2 − loops (0 for the mouth slit only, −2 with eye holes). The grid
// coordinates give a natural parameterisation onto the unit square (`uv`; the two lip copies share
// their uv, i.e. the mouth slit collapses to a segment there).
// Triangles are oriented counter-clockwise seen from +z (normals point towards the viewer).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/mesh.hpp"

namespace blendfuse::data {

/// Fixed face-layout constants (canonical face, mm).
struct FaceLayout {
  static constexpr double half_width = 75.0;    // a: x extent of the outline
  static constexpr double half_height = 105.0;  // b: y extent of the outline
  static constexpr double corner_blend = 0.8;   // 0 = square outline, 1 = ellipse
  static constexpr double mouth_y = -38.0;      // target height of the mouth line
  static constexpr double mouth_half_width = 26.0;
  static constexpr double eye_x = 32.0, eye_y = 24.0;       // eye centres (±eye_x, eye_y)
  static constexpr double eye_rx = 14.0, eye_ry = 6.5;      // eye-hole ellipse semi-axes
  static constexpr double brow_y = 42.0;
  static constexpr double upper_face_min_y = 10.0;          // upper face: y above this
};

/// The canonical face mesh with its regions.
struct FaceMesh {
  Tensor<float> vertices;             // (V, 3) canonical neutral, mm
  Tensor<std::int32_t> faces;         // (F, 3), 0-based, CCW seen from +z
  Tensor<float> uv;                   // (V, 2) grid parameterisation in [0, 1]²
  std::vector<std::int32_t> lips;     // lip-region vertex indices (both lip rows), sorted
  std::vector<std::int32_t> upper_face;  // vertices with y > FaceLayout::upper_face_min_y
  Tensor<float> weights;              // (V,) reconstruction weights ω: 1 on the skin, up to 5 on the lips
  std::vector<std::array<std::int32_t, 2>> lip_pairs;  // (upper copy, lower copy) along the slit
  std::array<std::int32_t, 2> mouth_corners{};         // left, right (shared by both rows)
  std::vector<std::int8_t> side;      // +1 above the mouth row, −1 below, 0 on it outside the slit
  double mouth_y = 0;                 // y of the mouth row at x = 0
  double mouth_half_width = 0;        // |x| of the mouth corners
  int grid = 0;                       // n
  bool eye_holes = false;
  int boundary_loops = 0;             // as designed: 2 (outline + mouth) or 4 (+ two eyes)

  Index num_vertices() const { return vertices.dim(0); }
  Index num_faces() const { return faces.dim(0); }
  io::Mesh as_mesh() const { return io::Mesh{vertices, faces}; }
};

namespace detail {

/// C² Wendland bump: (1 − r)⁴(4r + 1) for r < 1, else 0.
inline double wendland(double r) {
  if (r >= 1.0) return 0.0;
  const double s = 1.0 - r;
  return s * s * s * s * (4.0 * r + 1.0);
}
/// Wendland bump of an axis-aligned ellipse centred at (cx, cy) with radii (rx, ry).
inline double bump(double x, double y, double cx, double cy, double rx, double ry) {
  const double dx = (x - cx) / rx, dy = (y - cy) / ry;
  return wendland(std::sqrt(dx * dx + dy * dy));
}
inline double gauss2(double x, double y, double cx, double cy, double sx, double sy) {
  const double dx = (x - cx) / sx, dy = (y - cy) / sy;
  return std::exp(-0.5 * (dx * dx + dy * dy));
}
/// Cubic smoothstep of t clamped to [0, 1].
inline double smoothstep01(double t) {
  t = std::clamp(t, 0.0, 1.0);
  return t * t * (3.0 - 2.0 * t);
}

/// Grid (u, v) ∈ [-1, 1]² → face-plane (x, y) in mm.
inline void face_plane_map(double u, double v, double& x, double& y) {
  const double k = FaceLayout::corner_blend;
  x = FaceLayout::half_width * u * ((1.0 - k) + k * std::sqrt(1.0 - 0.5 * v * v));
  y = FaceLayout::half_height * v * ((1.0 - k) + k * std::sqrt(1.0 - 0.5 * u * u));
}

/// Depth of the canonical face at (x, y), mm.
inline double face_depth(double x, double y) {
  const double a = FaceLayout::half_width, b = FaceLayout::half_height;
  const double base = 50.0 * std::sqrt(std::max(0.05, 1.0 - 0.7 * (x / a) * (x / a) - 0.4 * (y / b) * (y / b)));
  double z = base;
  z += 22.0 * gauss2(x, y, 0.0, -2.0, 8.0, 16.0);                         // nose
  z += 6.0 * gauss2(x, y, 0.0, -18.0, 12.0, 6.0);                         // nostrils / base
  for (double s : {-1.0, 1.0}) {
    z -= 7.0 * gauss2(x, y, s * FaceLayout::eye_x, FaceLayout::eye_y, 12.0, 9.0);  // eye socket
    z += 4.0 * gauss2(x, y, s * 30.0, FaceLayout::brow_y, 16.0, 5.0);    // brow ridge
    z += 3.0 * gauss2(x, y, s * 45.0, -10.0, 16.0, 16.0);                // cheek
  }
  z += 6.0 * gauss2(x, y, 0.0, FaceLayout::mouth_y, 18.0, 8.0);           // lips
  z += 5.0 * gauss2(x, y, 0.0, -85.0, 18.0, 12.0);                        // chin
  return z;
}

struct Vec3 {
  double x = 0, y = 0, z = 0;
};

/// Per-vertex geometry shared by the basis builders.
struct BasisContext {
  double x, y, z;     // canonical position
  double lambda;      // lens profile of the mouth opening (1 at the centre of the slit)
  double h_up;        // 1 on the upper side, 0 on the lower side, 0.5 on the mouth row outside the slit
  Vec3 J;             // jaw-rotation displacement at full jaw_open
  double lat;         // lateral falloff of the jaw
  Vec3 E;             // opening field: −J·lat (upward/forward), |E| ≈ 12 mm at the mouth centre
};

/// `jaw_travel_mm`: how far the full jaw rotation moves the mouth centre (the generator's 12 mm;
/// the ARKit rig's jawOpen uses its own travel, rig/arkit.hpp).
inline std::vector<BasisContext> basis_context(const FaceMesh& m, double jaw_travel_mm = 12.0) {
  const double xc = m.mouth_half_width, ym = m.mouth_y;
  // Jaw pivot behind the face at ear level; angle so that the mouth centre moves by jaw_travel_mm.
  const double py = 5.0, pz = -75.0;
  const double lip_z = face_depth(0.0, ym);
  const double r = std::hypot(ym - py, lip_z - pz);
  const double theta = 2.0 * std::asin(jaw_travel_mm / (2.0 * r));
  const double ct = std::cos(theta), st = std::sin(theta);
  std::vector<BasisContext> out(static_cast<std::size_t>(m.num_vertices()));
  for (Index k = 0; k < m.num_vertices(); ++k) {
    BasisContext& c = out[static_cast<std::size_t>(k)];
    c.x = m.vertices(k, 0);
    c.y = m.vertices(k, 1);
    c.z = m.vertices(k, 2);
    const double ux = c.x / xc;
    const double lens = std::abs(ux) < 1.0 ? std::pow(1.0 - ux * ux, 1.5) : 0.0;
    c.lambda = lens * std::exp(-((c.y - ym) / 10.0) * ((c.y - ym) / 10.0));
    const int s = m.side[static_cast<std::size_t>(k)];
    c.h_up = s > 0 ? 1.0 : (s < 0 ? 0.0 : 0.5);
    // rotation about the x axis through (y, z) = (py, pz): (Y, Z) → (Y cos − Z sin, Y sin + Z cos)
    const double Y = c.y - py, Z = c.z - pz;
    c.J = {0.0, (Y * ct - Z * st) - Y, (Y * st + Z * ct) - Z};
    c.lat = 1.0 - 0.4 * smoothstep01((std::abs(c.x) - 40.0) / 35.0);
    c.E = {-c.J.x * c.lat, -c.J.y * c.lat, -c.J.z * c.lat};
  }
  return out;
}

}  // namespace detail

/// Builds the canonical face mesh on an n×n grid (n ≥ 15). n = 72 gives about 5,100 vertices.
inline FaceMesh build_face_mesh(int n = 72, bool eye_holes = true) {
  BF_CHECK(n >= 15 && n <= 2000, ArgumentError, "build_face_mesh: grid size ", n,
           " out of range [15, 2000]");
  const double a = FaceLayout::half_width;
  auto gu = [&](int i) { return -1.0 + 2.0 * i / (n - 1); };
  auto at = [&](int i, int j) { return static_cast<std::size_t>(j) * n + i; };

  // Mouth row and corners.
  const int jm = static_cast<int>(std::lround((FaceLayout::mouth_y / FaceLayout::half_height + 1.0) * (n - 1) / 2.0));
  const double vm = gu(jm);
  const double row_scale = a * ((1.0 - FaceLayout::corner_blend) + FaceLayout::corner_blend * std::sqrt(1.0 - 0.5 * vm * vm));
  const int il = static_cast<int>(std::lround((-FaceLayout::mouth_half_width / row_scale + 1.0) * (n - 1) / 2.0));
  const int ir = n - 1 - il;
  BF_CHECK(ir - il >= 2 && jm >= 2 && jm <= n - 3, ArgumentError, "build_face_mesh: grid ", n,
           " too coarse for a mouth slit");

  // Cells (i, j), i, j ∈ [0, n-2]; removal mask for the eye holes.
  const int nc = n - 1;
  std::vector<std::uint8_t> removed(static_cast<std::size_t>(nc) * nc, 0);
  auto cell_centre = [&](int i, int j, double& x, double& y) {
    double sx = 0, sy = 0;
    for (int dj = 0; dj < 2; ++dj)
      for (int di = 0; di < 2; ++di) {
        double px, py;
        detail::face_plane_map(gu(i + di), gu(j + dj), px, py);
        sx += px;
        sy += py;
      }
    x = sx / 4;
    y = sy / 4;
  };
  auto rm = [&](int i, int j) -> std::uint8_t& { return removed[static_cast<std::size_t>(j) * nc + i]; };
  if (eye_holes) {
    for (double s : {-1.0, 1.0}) {
      const double ex = s * FaceLayout::eye_x, ey = FaceLayout::eye_y;
      int best_i = -1, best_j = -1, count = 0;
      double best_d = 1e300;
      for (int j = 0; j < nc; ++j)
        for (int i = 0; i < nc; ++i) {
          double x, y;
          cell_centre(i, j, x, y);
          const double d = ((x - ex) / FaceLayout::eye_rx) * ((x - ex) / FaceLayout::eye_rx) +
                           ((y - ey) / FaceLayout::eye_ry) * ((y - ey) / FaceLayout::eye_ry);
          if (d <= 1.0) {
            rm(i, j) = 1;
            ++count;
          }
          if (d < best_d) {
            best_d = d;
            best_i = i;
            best_j = j;
          }
        }
      if (count == 0) rm(best_i, best_j) = 1;  // coarse grids: at least one cell per eye
    }
    // Repair pinch vertices (two removed cells touching only diagonally) until none is left.
    for (bool changed = true; changed;) {
      changed = false;
      for (int j = 1; j < n - 1; ++j)
        for (int i = 1; i < n - 1; ++i) {
          const bool sw = rm(i - 1, j - 1), se = rm(i, j - 1), nw = rm(i - 1, j), ne = rm(i, j);
          if (sw == ne && se == nw && sw != se) {
            // remove the kept cells too, so the four cells around this vertex are all removed
            rm(i - 1, j - 1) = rm(i, j - 1) = rm(i - 1, j) = rm(i, j) = 1;
            changed = true;
          }
        }
    }
    for (int j = 0; j < nc; ++j)
      for (int i = 0; i < nc; ++i)
        if (rm(i, j)) {
          BF_CHECK(i > 0 && j > 0 && i < nc - 1 && j < nc - 1 && (j < jm - 1 || j > jm), ArgumentError,
                   "build_face_mesh: eye hole reaches the outline or the mouth at grid ", n);
        }
  }

  // Which grid vertices are used by a kept cell.
  std::vector<std::uint8_t> used(static_cast<std::size_t>(n) * n, 0);
  for (int j = 0; j < nc; ++j)
    for (int i = 0; i < nc; ++i)
      if (!rm(i, j))
        for (int dj = 0; dj < 2; ++dj)
          for (int di = 0; di < 2; ++di) used[at(i + di, j + dj)] = 1;

  FaceMesh m;
  m.grid = n;
  m.eye_holes = eye_holes;
  m.boundary_loops = eye_holes ? 4 : 2;

  // Index assignment: used grid vertices in row-major order, then the lower-lip copies.
  std::vector<std::int32_t> index(static_cast<std::size_t>(n) * n, -1);
  std::vector<double> pos, uvs;
  std::vector<std::int8_t> side;
  auto push_vertex = [&](int i, int j) {
    double x, y;
    detail::face_plane_map(gu(i), gu(j), x, y);
    pos.insert(pos.end(), {x, y, detail::face_depth(x, y)});
    uvs.insert(uvs.end(), {static_cast<double>(i) / (n - 1), static_cast<double>(j) / (n - 1)});
    side.push_back(static_cast<std::int8_t>(j > jm ? 1 : (j < jm ? -1 : (i > il && i < ir ? 1 : 0))));
  };
  std::int32_t next = 0;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i)
      if (used[at(i, j)]) {
        index[at(i, j)] = next++;
        push_vertex(i, j);
      }
  std::vector<std::int32_t> lower(static_cast<std::size_t>(n), -1);
  for (int i = il + 1; i < ir; ++i) {
    lower[static_cast<std::size_t>(i)] = next++;
    push_vertex(i, jm);
    side.back() = -1;
    m.lip_pairs.push_back({index[at(i, jm)], lower[static_cast<std::size_t>(i)]});
  }
  m.mouth_corners = {index[at(il, jm)], index[at(ir, jm)]};

  // Triangles. Cells below the mouth row use the lower copies of the slit vertices.
  std::vector<std::int32_t> tris;
  auto vid = [&](int i, int j, bool cell_below_mouth) {
    if (cell_below_mouth && j == jm && i > il && i < ir) return lower[static_cast<std::size_t>(i)];
    return index[at(i, j)];
  };
  for (int j = 0; j < nc; ++j)
    for (int i = 0; i < nc; ++i) {
      if (rm(i, j)) continue;
      const bool below = (j + 1 == jm);
      const std::int32_t bl = vid(i, j, below), br = vid(i + 1, j, below);
      const std::int32_t tr = vid(i + 1, j + 1, below), tl = vid(i, j + 1, below);
      if (2 * i + 1 < nc) {  // left half: diagonal br–tl (mirror-symmetric triangulation)
        tris.insert(tris.end(), {bl, br, tl, br, tr, tl});
      } else {
        tris.insert(tris.end(), {bl, br, tr, bl, tr, tl});
      }
    }

  const Index V = next;
  m.vertices = Tensor<float>({V, 3});
  m.uv = Tensor<float>({V, 2});
  for (Index k = 0; k < V * 3; ++k) m.vertices[k] = static_cast<float>(pos[static_cast<std::size_t>(k)]);
  for (Index k = 0; k < V * 2; ++k) m.uv[k] = static_cast<float>(uvs[static_cast<std::size_t>(k)]);
  m.faces = Tensor<std::int32_t>::from({static_cast<Index>(tris.size() / 3), 3}, tris);
  m.side = std::move(side);

  double xm, ym;
  detail::face_plane_map(0.0, vm, xm, ym);
  m.mouth_y = ym;
  m.mouth_half_width = std::abs(static_cast<double>(m.vertices(m.mouth_corners[0], 0)));

  // Regions and weights (from the double-precision positions).
  m.weights = Tensor<float>({V});
  const double lip_rx = m.mouth_half_width + 6.0, lip_ry = 13.0;
  for (Index k = 0; k < V; ++k) {
    const double x = pos[static_cast<std::size_t>(3 * k)], y = pos[static_cast<std::size_t>(3 * k + 1)];
    const double dx = x / lip_rx, dy = (y - m.mouth_y) / lip_ry;
    if (dx * dx + dy * dy <= 1.0) m.lips.push_back(static_cast<std::int32_t>(k));
    if (y > FaceLayout::upper_face_min_y) m.upper_face.push_back(static_cast<std::int32_t>(k));
    m.weights[k] = static_cast<float>(1.0 + 4.0 * detail::bump(x, y, 0.0, m.mouth_y, lip_rx + 4.0, lip_ry + 4.0));
  }
  return m;
}

}  // namespace blendfuse::data
