// blendfuse — rasterising a UV layout into a geometry map (GeometryMap::build, step 4) and the
// bilinear taps of map_to_mesh.
//
//  4. Rasterisation: for every pixel centre the covering triangle is found in UV space with a
//     uniform grid over triangle bounding boxes (ties on shared edges go to the triangle where
//     the point is most interior). The pixel stores the triangle's three vertex indices (int32,
//     in the face's order) and barycentric weights (float, ≥ 0, summing to 1). Pixels covered by
//     no triangle (holes, i.e. mouth/eyes) are masked: vertex indices 0, weights 0, face −1.
//
// Used by geometry/geometry_map.hpp, whose file comment has the pixel and UV conventions.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "blendfuse/core/tensor.hpp"
#include "blendfuse/geometry/mesh_topology.hpp"

namespace blendfuse::geometry::detail::gmap {

using Face = MeshTopology::Face;

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

/// Step 4: pixel (i, j) of an H×W map → its covering face of `faces` in the layout `uv` (V, 2), the
/// face's vertex indices and barycentric weights; masked pixels get indices 0, weights 0, face −1.
/// Returns the number of covered pixels.
inline Index rasterise_uv(const std::vector<double>& uv_, const std::vector<Face>& faces_, Index H_, Index W_,
                          std::vector<std::int32_t>& pix_idx_, std::vector<float>& pix_w_,
                          std::vector<std::int32_t>& pix_face_) {
  Index valid_pixels = 0;
  const std::size_t P = static_cast<std::size_t>(H_ * W_);
  pix_idx_.assign(3 * P, 0);
  pix_w_.assign(3 * P, 0.0f);
  pix_face_.assign(P, -1);
  const UvTriangleGrid grid(uv_, faces_);
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
      ++valid_pixels;
    }
  }
  return valid_pixels;
}

/// The bilinear taps of map_to_mesh (see geometry_map.hpp's conventions): for each of the V vertices
/// of `uv` (V, 2) four flat pixel indices and weights (masked taps dropped, the rest renormalised;
/// the nearest valid pixel when all are masked) and whether its footprint was complete.
inline void bilinear_taps(const std::vector<double>& uv_, Index V_, Index H_, Index W_,
                          const std::vector<std::int32_t>& pix_face_, std::vector<std::int32_t>& tap_idx_,
                          std::vector<double>& tap_w_, std::vector<std::uint8_t>& tap_complete_) {
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

}  // namespace blendfuse::geometry::detail::gmap
