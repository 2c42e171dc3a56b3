// blendfuse — the UV layout of a geometry map (GeometryMap::build, steps 1–3; paper §3.1): every
// vertex of a fixed-topology face mesh that is a topological disk (optionally with holes) gets a
// fold-free position in the unit square.
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
//
// Used by geometry/geometry_map.hpp (which rasterises the layout, geometry/uv_raster.hpp); the
// conventions (u to the right, v downwards) are in its file comment.
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
#include <vector>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/geometry/mesh_topology.hpp"

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

/// Steps 1–3 of GeometryMap::build for the positions `pos` (3V, xyz) of the mesh `topo`.
struct UvLayout {
  std::vector<double> uv;        ///< (V, 2) per-vertex (u, v), clamped to [0, 1]
  std::string scheme;            ///< uv_weights_name of the weights used
  Index num_holes = 0, outer_loop_vertices = 0, flipped_faces = 0, degenerate_faces = 0;
};

inline void solve_harmonic(const std::vector<double>& pos, const std::vector<Face>& faces,
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

/// The checks of a mesh and steps 1–3 (see the file comment); ArgumentError naming
/// GeometryMap::build and the problem for meshes that are not a single oriented manifold disk.
inline UvLayout layout_uv(const std::vector<double>& pos, const MeshTopology& topo, const GeometryMapOptions& opt) {
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
      s += dist3(&pos[3 * static_cast<std::size_t>(l[k])], &pos[3 * static_cast<std::size_t>(l[(k + 1) % l.size()])]);
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
    cum[k + 1] = cum[k] + dist3(&pos[3 * static_cast<std::size_t>(outer[k])],
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

  UvLayout out;
  out.scheme = uv_weights_name(opt.weights);
  out.uv.assign(uv_all.begin(), uv_all.begin() + 2 * V);
  for (double& x : out.uv) x = std::clamp(x, 0.0, 1.0);
  out.num_holes = nl - 1;
  out.outer_loop_vertices = static_cast<Index>(n);
  // Boundary runs clockwise in (u, v-down) coordinates, so faces are clockwise there unless the
  // loop was reversed to make it counter-clockwise in (x, y).
  const double expected_sign = reversed ? 1.0 : -1.0;
  for (const Face& t : topo.faces()) {
    const double* a = &out.uv[2 * static_cast<std::size_t>(t[0])];
    const double* b = &out.uv[2 * static_cast<std::size_t>(t[1])];
    const double* c = &out.uv[2 * static_cast<std::size_t>(t[2])];
    const double ar = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1]);
    if (std::abs(ar) <= 1e-18) ++out.degenerate_faces;
    else if (ar * expected_sign < 0) ++out.flipped_faces;
  }

  return out;
}

}  // namespace detail::gmap

}  // namespace blendfuse::geometry
