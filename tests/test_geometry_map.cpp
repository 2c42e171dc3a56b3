// Tests for geometry/mesh_topology.hpp and geometry/geometry_map.hpp (paper §3.1, eq. 1).
#include "test_util.hpp"

#include <chrono>
#include <filesystem>
#include <functional>
#include <numbers>
#include <set>

#include "blendfuse/geometry/geometry_map.hpp"
#include "blendfuse/geometry/mesh_topology.hpp"

using namespace blendfuse;
using namespace blendfuse::geometry;
namespace fs = std::filesystem;

namespace {

/// A triangulated (n+1)×(n+1) grid over [-1, 1]² (x = column, y = row, y up) with a bump in z,
/// minus the cells for which `removed(r, c)` is true; unused vertices are dropped. Faces are
/// counter-clockwise in (x, y). With `mirror_diag` the diagonals of the left half mirror those of
/// the right half, so the mesh is exactly symmetric about x = 0 (n even).
struct GridMesh {
  int n = 0;
  Tensor<double> verts;
  Tensor<std::int32_t> faces;
  std::vector<int> id;  // grid (r, c) → vertex index, −1 if dropped
  int at(int r, int c) const { return id[static_cast<std::size_t>(r * (n + 1) + c)]; }
  Index V() const { return verts.dim(0); }
};

GridMesh grid_mesh(int n, bool mirror_diag, const std::function<bool(int, int)>& removed = {},
                   double x_shift = 0.0) {
  GridMesh m;
  m.n = n;
  const int N = n + 1;
  std::vector<std::array<int, 3>> tri;
  for (int r = 0; r < n; ++r)
    for (int c = 0; c < n; ++c) {
      if (removed && removed(r, c)) continue;
      const int a = r * N + c, b = r * N + c + 1, cc = (r + 1) * N + c + 1, d = (r + 1) * N + c;
      const bool slash = !mirror_diag || c < n / 2;
      if (slash) {
        tri.push_back({a, b, cc});
        tri.push_back({a, cc, d});
      } else {
        tri.push_back({a, b, d});
        tri.push_back({b, cc, d});
      }
    }
  std::vector<int> used(static_cast<std::size_t>(N * N), 0);
  for (auto& t : tri)
    for (int k : t) used[static_cast<std::size_t>(k)] = 1;
  m.id.assign(static_cast<std::size_t>(N * N), -1);
  int nv = 0;
  for (int k = 0; k < N * N; ++k)
    if (used[static_cast<std::size_t>(k)]) m.id[static_cast<std::size_t>(k)] = nv++;
  m.verts = Tensor<double>({nv, 3});
  for (int r = 0; r < N; ++r)
    for (int c = 0; c < N; ++c) {
      const int v = m.at(r, c);
      if (v < 0) continue;
      const double x = -1.0 + 2.0 * c / n, y = -1.0 + 2.0 * r / n;
      m.verts(v, 0) = x + x_shift;
      m.verts(v, 1) = y;
      m.verts(v, 2) = 0.3 * std::exp(-(x * x + y * y)) + 0.1 * y * y;
    }
  m.faces = Tensor<std::int32_t>({static_cast<Index>(tri.size()), 3});
  for (std::size_t f = 0; f < tri.size(); ++f)
    for (int k = 0; k < 3; ++k)
      m.faces(static_cast<Index>(f), k) = m.id[static_cast<std::size_t>(tri[f][static_cast<std::size_t>(k)])];
  return m;
}

/// Face-like test mesh: a 1-cell-tall "mouth" slit 6 cells wide (and optionally two 2-cell "eyes"),
/// all symmetric about x = 0.
std::function<bool(int, int)> face_holes(int n, bool eyes) {
  return [n, eyes](int r, int c) {
    const int h = n / 2;
    if (r == n / 4 && c >= h - 3 && c < h + 3) return true;  // mouth
    if (eyes && r == (3 * n) / 4 && ((c >= h - 5 && c < h - 3) || (c >= h + 3 && c < h + 5))) return true;
    return false;
  };
}

double dot(const Tensor<double>& a, const Tensor<double>& b) {
  REQUIRE(a.shape() == b.shape());
  double s = 0;
  for (Index i = 0; i < a.numel(); ++i) s += a[i] * b[i];
  return s;
}

double signed_area(const Tensor<double>& uv, const std::array<std::int32_t, 3>& t) {
  const double ax = uv(t[0], 0), ay = uv(t[0], 1);
  return (uv(t[1], 0) - ax) * (uv(t[2], 1) - ay) - (uv(t[2], 0) - ax) * (uv(t[1], 1) - ay);
}

/// Point-in-polygon (even–odd) and distance to the polygon's edges.
bool in_polygon(const std::vector<std::array<double, 2>>& poly, double x, double y, double& dist) {
  bool inside = false;
  dist = INFINITY;
  for (std::size_t i = 0, j = poly.size() - 1; i < poly.size(); j = i++) {
    const auto& a = poly[i];
    const auto& b = poly[j];
    if ((a[1] > y) != (b[1] > y) && x < (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]) + a[0]) inside = !inside;
    const double ex = b[0] - a[0], ey = b[1] - a[1];
    const double t = std::clamp(((x - a[0]) * ex + (y - a[1]) * ey) / (ex * ex + ey * ey), 0.0, 1.0);
    dist = std::min(dist, std::hypot(x - a[0] - t * ex, y - a[1] - t * ey));
  }
  return inside;
}

std::string tmp_path(const std::string& name) {
  const auto dir = fs::temp_directory_path() / "blendfuse_tests";
  fs::create_directories(dir);
  return (dir / name).string();
}

const UvWeights kSchemes[] = {UvWeights::Uniform, UvWeights::Cotangent, UvWeights::MeanValue};

}  // namespace

// ---- mesh topology ----------------------------------------------------------------------------

TEST_CASE("mesh_topology: edges, adjacency, boundary loops of a grid with a slit") {
  const int n = 8;
  const GridMesh m = grid_mesh(n, true, face_holes(n, false));
  const MeshTopology topo(m.faces, m.V());
  CHECK(topo.num_vertices() == 81);
  CHECK(topo.num_faces() == 2 * (64 - 6));
  // E from the counting identity 3F = 2E_interior + E_boundary, boundary edges = 4n + 2·6 + 2.
  const Index eb = 4 * n + 14;
  CHECK(topo.num_edges() == (3 * topo.num_faces() + eb) / 2);
  Index nb = 0;
  for (auto c : topo.edge_face_count()) {
    CHECK((c == 1 || c == 2));
    nb += c == 1;
  }
  CHECK(nb == eb);
  CHECK(topo.is_manifold());
  CHECK(topo.num_components() == 1);
  CHECK(topo.euler_characteristic() == 0);  // disk with one hole
  const auto& loops = topo.boundary_loops();
  REQUIRE(loops.size() == 2);
  // Loop 0 starts at vertex 0 (the outer loop), loop 1 is the slit with 2·7 vertices.
  CHECK(loops[0].size() == static_cast<std::size_t>(4 * n));
  CHECK(loops[0][0] == 0);
  CHECK(loops[1].size() == 14u);
  auto shoelace = [&](const std::vector<std::int32_t>& l) {
    double a = 0;
    for (std::size_t k = 0; k < l.size(); ++k) {
      const auto p = l[k], q = l[(k + 1) % l.size()];
      a += m.verts(p, 0) * m.verts(q, 1) - m.verts(q, 0) * m.verts(p, 1);
    }
    return a;
  };
  CHECK(shoelace(loops[0]) > 0);  // counter-clockwise faces → outer loop counter-clockwise
  CHECK(shoelace(loops[1]) < 0);  // ... and holes clockwise
  // Consecutive loop vertices share a boundary edge; adjacency is symmetric and sorted.
  for (const auto& l : loops)
    for (std::size_t k = 0; k < l.size(); ++k) {
      const auto nb_k = topo.neighbors(l[k]);
      CHECK(std::binary_search(nb_k.begin(), nb_k.end(), l[(k + 1) % l.size()]));
      CHECK(topo.is_boundary_vertex(l[k]));
    }
  for (Index v = 0; v < topo.num_vertices(); ++v) {
    const auto nv = topo.neighbors(v);
    CHECK(std::is_sorted(nv.begin(), nv.end()));
    for (auto w : nv) {
      const auto nw = topo.neighbors(w);
      CHECK(std::binary_search(nw.begin(), nw.end(), static_cast<std::int32_t>(v)));
    }
  }
  // Interior grid vertex away from the slit and the mirror seam has 6 neighbours.
  CHECK(topo.degree(m.at(6, 2)) == 6);
  CHECK_FALSE(topo.is_boundary_vertex(m.at(6, 2)));
  const auto et = topo.edges_tensor();
  CHECK(et.shape() == Shape{topo.num_edges(), 2});
  for (Index e = 0; e < et.dim(0); ++e) CHECK(et(e, 0) < et(e, 1));
}

TEST_CASE("mesh_topology: laplacian of constant / linear fields, reference and adjoint") {
  const int n = 10;
  const GridMesh m = grid_mesh(n, false);  // uniform diagonals: regular 6-neighbour stencil
  const MeshTopology topo(m.faces, m.V());
  const Index V = m.V();

  Tensor<double> cst({V, 3});
  for (Index v = 0; v < V; ++v)
    for (int c = 0; c < 3; ++c) cst(v, c) = 1.5 - c;
  const auto lc = laplacian(topo, cst);
  for (Index i = 0; i < lc.numel(); ++i) CHECK(std::abs(lc[i]) < 1e-14);

  // f(p) = A (x, y) + b: zero at interior vertices, non-zero at some boundary vertices.
  const double A[3][2] = {{0.7, -1.3}, {2.0, 0.4}, {-0.5, 0.9}}, b[3] = {0.1, -2.0, 3.0};
  Tensor<double> lin({2, V, 3});
  for (Index s = 0; s < 2; ++s)
    for (Index v = 0; v < V; ++v)
      for (int c = 0; c < 3; ++c)
        lin(s, v, c) = (s + 1.0) * (A[c][0] * m.verts(v, 0) + A[c][1] * m.verts(v, 1) + b[c]);
  const auto ll = laplacian(topo, lin);
  double boundary_max = 0;
  for (Index s = 0; s < 2; ++s)
    for (Index v = 0; v < V; ++v)
      for (int c = 0; c < 3; ++c) {
        if (topo.is_boundary_vertex(v)) boundary_max = std::max(boundary_max, std::abs(ll(s, v, c)));
        else CHECK(std::abs(ll(s, v, c)) < 1e-12);
      }
  CHECK(boundary_max > 1e-2);

  // Against a naive reference built directly from the faces.
  std::vector<std::set<int>> nbr(static_cast<std::size_t>(V));
  for (Index f = 0; f < m.faces.dim(0); ++f)
    for (int k = 0; k < 3; ++k) {
      const int a = m.faces(f, k), c = m.faces(f, (k + 1) % 3);
      nbr[static_cast<std::size_t>(a)].insert(c);
      nbr[static_cast<std::size_t>(c)].insert(a);
    }
  Rng rng(3);
  const auto x = bft::random_tensor({2, V, 3}, rng);
  const auto lx = laplacian(topo, x);
  Tensor<double> ref({2, V, 3});
  for (Index s = 0; s < 2; ++s)
    for (Index v = 0; v < V; ++v)
      for (int c = 0; c < 3; ++c) {
        double mean = 0;
        for (int w : nbr[static_cast<std::size_t>(v)]) mean += x(s, w, c);
        mean /= static_cast<double>(nbr[static_cast<std::size_t>(v)].size());
        ref(s, v, c) = x(s, v, c) - mean;
      }
  BFT_CHECK_CLOSE(lx, ref, 1e-12, 1e-12);

  // Unbatched (V, 3) agrees with the batched result.
  const auto l0 = laplacian(topo, x.select(0).contiguous());
  BFT_CHECK_CLOSE(l0, lx.select(0).contiguous(), 0.0, 1e-15);

  // Adjoint: <L x, y> = <x, Lᵀ y>, and Lᵀ differs from L (the operator is not symmetric).
  const auto y = bft::random_tensor({2, V, 3}, rng);
  const auto lty = laplacian_backward(topo, y);
  const double lhs = dot(lx, y), rhs = dot(x, lty);
  CHECK(std::abs(lhs - rhs) <= 1e-12 * (std::abs(lhs) + 1.0));
  CHECK(bft::closeness(lty, laplacian(topo, y), 0.0, 1e-6) > 1.0);

  // Gradient check of L(x) through the backward.
  bft::gradcheck(
      {bft::random_tensor({1, V, 3}, rng)},
      [&](const std::vector<Tensor<double>>& in) { return laplacian(topo, in[0]); },
      [&](const std::vector<Tensor<double>>&, const Tensor<double>& dy) {
        return std::vector<Tensor<double>>{laplacian_backward(topo, dy)};
      });

  CHECK_THROWS_AS(laplacian(topo, Tensor<double>({V + 1, 3})), ShapeError);
  CHECK_THROWS_AS(laplacian(topo, Tensor<double>({V})), ShapeError);
}

TEST_CASE("mesh_topology: isolated vertex, non-manifold, bad indices") {
  // Vertex 4 is unused: its Laplacian row is 0 and it does not break the others.
  const auto f = Tensor<std::int32_t>::from({2, 3}, {0, 1, 2, 0, 2, 3});
  const MeshTopology topo(f, 5);
  CHECK(topo.num_unreferenced_vertices() == 1);
  CHECK(topo.first_unreferenced_vertex() == 4);
  CHECK(topo.degree(4) == 0);
  auto x = Tensor<double>::full({5, 3}, 2.0);
  x(4, 0) = 7.0;
  const auto lx = laplacian(topo, x);
  for (Index i = 0; i < lx.numel(); ++i) CHECK(std::abs(lx[i]) <= 1e-14);  // exact 0 is not guaranteed under FMA contraction

  // Three faces on edge (0, 1).
  const auto nm = Tensor<std::int32_t>::from({3, 3}, {0, 1, 2, 1, 0, 3, 0, 1, 4});
  const MeshTopology t2(nm, 5);
  CHECK_FALSE(t2.is_manifold());
  CHECK_THROWS_WITH_AS(t2.boundary_loops(), doctest::Contains("non-manifold edge"), ArgumentError);
  CHECK(t2.num_edges() == 7);  // edges and adjacency still work
  // Inconsistently oriented neighbours.
  const MeshTopology t4(Tensor<std::int32_t>::from({2, 3}, {0, 1, 2, 0, 3, 2}), 4);
  CHECK_THROWS_WITH_AS(t4.boundary_loops(), doctest::Contains("same direction"), ArgumentError);

  CHECK_THROWS_WITH_AS(MeshTopology(Tensor<std::int32_t>::from({1, 3}, {0, 1, 5}), 5),
                       doctest::Contains("outside [0, 5)"), ArgumentError);
  CHECK_THROWS_WITH_AS(MeshTopology(Tensor<std::int32_t>::from({1, 3}, {0, -1, 2}), 5),
                       doctest::Contains("outside"), ArgumentError);
  CHECK_THROWS_WITH_AS(MeshTopology(Tensor<std::int32_t>::from({1, 3}, {0, 1, 1}), 5),
                       doctest::Contains("repeats a vertex"), ArgumentError);
  CHECK_THROWS_AS(MeshTopology(Tensor<std::int32_t>({2, 2}), 5), ShapeError);
  // int64 faces are accepted and range-checked.
  const MeshTopology t3(Tensor<std::int64_t>::from({1, 3}, {0, 1, 2}), 3);
  CHECK(t3.num_edges() == 3);
}

// ---- geometry map -----------------------------------------------------------------------------

TEST_CASE("geometry_map: UVs in the unit square, fold-free, boundary on the border, upright") {
  const int n = 16;
  const GridMesh m = grid_mesh(n, true, face_holes(n, true));
  for (UvWeights s : kSchemes) {
    const std::string scheme = uv_weights_name(s);
    CAPTURE(scheme);
    GeometryMapOptions opt;
    opt.weights = s;
    const auto gm = GeometryMap::build(m.verts, m.faces, 64, 64, opt);
    CHECK(gm.stats().num_holes == 3);
    CHECK(gm.stats().flipped_faces == 0);
    CHECK(gm.stats().degenerate_faces == 0);
    const auto uv = gm.uv();
    REQUIRE(uv.shape() == Shape{m.V(), 2});
    for (Index i = 0; i < uv.numel(); ++i) CHECK((uv[i] >= 0.0 && uv[i] <= 1.0));
    // All UV triangles have the same, non-zero orientation.
    int pos = 0, neg = 0;
    double min_abs = INFINITY;
    for (const auto& t : gm.faces()) {
      const double a = signed_area(uv, t);
      pos += a > 0;
      neg += a < 0;
      min_abs = std::min(min_abs, std::abs(a));
    }
    CHECK(((pos == 0) != (neg == 0)));
    CHECK(min_abs > 1e-8);
    // Outer grid boundary lies on the square's border; the rest strictly inside.
    for (int r = 0; r <= n; ++r)
      for (int c = 0; c <= n; ++c) {
        const int v = m.at(r, c);
        const double d = std::min({uv(v, 0), 1 - uv(v, 0), uv(v, 1), 1 - uv(v, 1)});
        if (r == 0 || c == 0 || r == n || c == n) CHECK(d < 1e-12);
        else CHECK(d > 1e-3);
      }
    // Upright: the bottom-middle boundary vertex is the start (u = 0.5, v = 1), top-middle at
    // (0.5, 0), mesh corners at square corners, x → u.
    CHECK(uv(m.at(0, n / 2), 0) == doctest::Approx(0.5).epsilon(1e-12));
    CHECK(uv(m.at(0, n / 2), 1) == doctest::Approx(1.0).epsilon(1e-12));
    CHECK(uv(m.at(n, n / 2), 0) == doctest::Approx(0.5).epsilon(1e-12));
    CHECK(uv(m.at(n, n / 2), 1) == doctest::Approx(0.0).epsilon(1e-12));
    CHECK(uv(m.at(0, n), 0) == doctest::Approx(1.0));
    CHECK(uv(m.at(0, n), 1) == doctest::Approx(1.0));
    CHECK(uv(m.at(n, 0), 0) == doctest::Approx(0.0));
    CHECK(uv(m.at(n, 0), 1) == doctest::Approx(0.0));
    CHECK(uv(m.at(8, 12), 0) > uv(m.at(8, 4), 0));
    CHECK(uv(m.at(12, 8), 1) < uv(m.at(4, 8), 1));
  }
}

TEST_CASE("geometry_map: left-right symmetry and translation invariance") {
  const int n = 16;
  const GridMesh m = grid_mesh(n, true, face_holes(n, true));
  const GridMesh shifted = grid_mesh(n, true, face_holes(n, true), 3.25);
  for (UvWeights s : kSchemes) {
    const std::string scheme = uv_weights_name(s);
    CAPTURE(scheme);
    GeometryMapOptions opt;
    opt.weights = s;
    const auto gm = GeometryMap::build(m.verts, m.faces, 64, 64, opt);
    const auto uv = gm.uv();
    double worst = 0;
    for (int r = 0; r <= n; ++r)
      for (int c = 0; c <= n; ++c) {
        const int v = m.at(r, c), w = m.at(r, n - c);
        worst = std::max({worst, std::abs(uv(w, 0) - (1.0 - uv(v, 0))), std::abs(uv(w, 1) - uv(v, 1))});
      }
    CHECK(worst < 1e-9);
    // Mirrored pixels agree on validity (pixel centres mirror exactly under u ↦ 1 − u).
    int mismatched = 0;
    for (Index i = 0; i < gm.height(); ++i)
      for (Index j = 0; j < gm.width(); ++j) mismatched += gm.pixel_valid(i, j) != gm.pixel_valid(i, gm.width() - 1 - j);
    CHECK(mismatched <= 2);
    // The symmetry plane defaults to the centre of the boundary's x-range.
    const auto gs = GeometryMap::build(shifted.verts, shifted.faces, 64, 64, opt);
    BFT_CHECK_CLOSE(gs.uv(), uv, 0.0, 1e-9);
    // Clockwise faces: the boundary is re-oriented, so the UVs are the same and still fold-free.
    Tensor<std::int32_t> cw = m.faces.clone();
    for (Index f = 0; f < cw.dim(0); ++f) std::swap(cw(f, 1), cw(f, 2));
    const auto gc = GeometryMap::build(m.verts, cw, 64, 64, opt);
    BFT_CHECK_CLOSE(gc.uv(), uv, 0.0, 1e-9);
    CHECK(gc.stats().flipped_faces == 0);
    CHECK(gc.stats().degenerate_faces == 0);
  }
  // An explicit, off-centre symmetry plane breaks the symmetry (the option is honoured).
  GeometryMapOptions off;
  off.symmetry_x = 0.3;
  const auto ga = GeometryMap::build(m.verts, m.faces, 32, 32, off);
  CHECK(std::abs(ga.uv()(m.at(0, n / 2), 0) - 0.5) > 0.01);
}

TEST_CASE("geometry_map: rasterisation, mask covers holes, coverage") {
  const int n = 16;
  const GridMesh m = grid_mesh(n, true, face_holes(n, true));
  const Index H = 96, W = 128;
  const auto gm = GeometryMap::build(m.verts, m.faces, H, W);
  const auto uv = gm.uv();
  const auto idx = gm.pixel_vertices();
  const auto wts = gm.pixel_weights();
  const auto face = gm.pixel_face();
  const auto mask = gm.valid_mask();
  CHECK(idx.shape() == Shape{H, W, 3});
  CHECK(wts.shape() == Shape{H, W, 3});
  CHECK(mask.shape() == Shape{H, W});
  // Hole polygons in UV.
  const MeshTopology topo(m.faces, m.V());
  const auto& loops = topo.boundary_loops();
  REQUIRE(loops.size() == 4);
  std::vector<std::vector<std::array<double, 2>>> holes;
  for (std::size_t l = 1; l < loops.size(); ++l) {  // loop 0 (contains vertex 0) is the outer one
    holes.emplace_back();
    for (auto v : loops[l]) holes.back().push_back({uv(v, 0), uv(v, 1)});
  }
  Index in_holes = 0, valid = 0, checked_outside = 0;
  for (Index i = 0; i < H; ++i)
    for (Index j = 0; j < W; ++j) {
      const double u = (j + 0.5) / W, v = (i + 0.5) / H;
      bool inside = false, near = false;
      for (const auto& poly : holes) {
        double d;
        inside |= in_polygon(poly, u, v, d);
        near |= d < 1e-7;
      }
      const bool ok = mask(i, j) != 0;
      valid += ok;
      CHECK(ok == (face(i, j) >= 0));
      if (near) continue;
      if (inside) {
        ++in_holes;
        CHECK_FALSE(ok);
        CHECK(wts(i, j, 0) + wts(i, j, 1) + wts(i, j, 2) == 0.0f);
      } else {
        ++checked_outside;
        CHECK(ok);
        // Barycentric weights reproduce the pixel centre and name the face's vertices.
        double su = 0, sv = 0, sw = 0;
        for (int k = 0; k < 3; ++k) {
          CHECK(wts(i, j, k) >= 0.0f);
          CHECK(idx(i, j, k) == gm.faces()[static_cast<std::size_t>(face(i, j))][static_cast<std::size_t>(k)]);
          su += wts(i, j, k) * uv(idx(i, j, k), 0);
          sv += wts(i, j, k) * uv(idx(i, j, k), 1);
          sw += wts(i, j, k);
        }
        CHECK(std::abs(sw - 1.0) < 1e-6);
        CHECK(std::abs(su - u) < 1e-6);
        CHECK(std::abs(sv - v) < 1e-6);
      }
    }
  MESSAGE("masked pixels inside holes: ", in_holes, ", valid: ", valid, " of ", H * W);
  CHECK(in_holes > 30);  // hole filling keeps the slits open in UV
  CHECK(valid == gm.num_valid_pixels());
  CHECK(static_cast<double>(valid) / static_cast<double>(H * W) > 0.9);
  CHECK(checked_outside + in_holes > (H * W * 99) / 100);
  // Without hole filling each free hole-boundary vertex averages neighbours on one side only, so
  // the holes are pulled open and take more of the map.
  GeometryMapOptions nofill;
  nofill.fill_holes = false;
  const auto gn = GeometryMap::build(m.verts, m.faces, H, W, nofill);
  MESSAGE("fill_holes=false: valid ", gn.num_valid_pixels(), ", flipped faces ", gn.stats().flipped_faces);
  CHECK(gn.num_valid_pixels() < valid);
  for (Index i = 0; i < gn.uv().numel(); ++i) CHECK((gn.uv()[i] >= 0.0 && gn.uv()[i] <= 1.0));
  const auto mf = gm.mask_as<float>();
  for (Index p = 0; p < H * W; ++p) CHECK(mf[p] == (mask[p] ? 1.0f : 0.0f));
}

TEST_CASE("geometry_map: fields linear in UV round-trip mesh → map → mesh") {
  const int n = 16;
  const GridMesh m = grid_mesh(n, true, face_holes(n, true));
  const Index H = 128, W = 128;
  const auto gm = GeometryMap::build(m.verts, m.faces, H, W);
  const auto uv = gm.uv();
  const Index V = m.V();
  const double A[3][2] = {{1.5, -0.7}, {0.3, 2.2}, {-1.1, 0.4}}, b[3] = {0.2, -0.5, 1.0};
  Tensor<double> f({2, V, 3});
  for (Index s = 0; s < 2; ++s)
    for (Index v = 0; v < V; ++v)
      for (int c = 0; c < 3; ++c) f(s, v, c) = (s ? -2.0 : 1.0) * (A[c][0] * uv(v, 0) + A[c][1] * uv(v, 1) + b[c]);
  const auto map = gm.mesh_to_map(f);
  REQUIRE(map.shape() == Shape{2, 3, H, W});
  // The map holds the field at each valid pixel centre; masked pixels are 0.
  for (Index s = 0; s < 2; ++s)
    for (Index i = 0; i < H; ++i)
      for (Index j = 0; j < W; ++j)
        for (int c = 0; c < 3; ++c) {
          const double u = (j + 0.5) / W, v = (i + 0.5) / H;
          const double want = gm.pixel_valid(i, j) ? (s ? -2.0 : 1.0) * (A[c][0] * u + A[c][1] * v + b[c]) : 0.0;
          CHECK(std::abs(map(s, c, i, j) - want) < 1e-5);
        }
  // Back at the vertices: exact where the bilinear footprint is complete, at the UV clamped to
  // the outermost pixel centres (border clamp).
  const auto back = gm.map_to_mesh(map);
  REQUIRE(back.shape() == Shape{2, V, 3});
  Index complete = 0;
  for (Index v = 0; v < V; ++v) {
    if (!gm.vertex_footprint_complete(v)) continue;
    ++complete;
    const double u = std::clamp(uv(v, 0), 0.5 / W, 1 - 0.5 / W), w = std::clamp(uv(v, 1), 0.5 / H, 1 - 0.5 / H);
    for (Index s = 0; s < 2; ++s)
      for (int c = 0; c < 3; ++c)
        CHECK(std::abs(back(s, v, c) - (s ? -2.0 : 1.0) * (A[c][0] * u + A[c][1] * w + b[c])) < 2e-5);
  }
  MESSAGE("vertices with a complete bilinear footprint: ", complete, " of ", V);
  CHECK(complete > (V * 8) / 10);
  CHECK(complete < V);  // hole-boundary vertices touch masked pixels

  // float path agrees with double.
  const auto mapf = gm.mesh_to_map(f.cast<float>());
  BFT_CHECK_CLOSE(mapf, map, 1e-5, 1e-5);
  BFT_CHECK_CLOSE(gm.map_to_mesh(mapf), back, 1e-5, 1e-5);
}

TEST_CASE("geometry_map: map_to_mesh ignores masked pixels (renormalised footprint)") {
  const int n = 16;
  const GridMesh m = grid_mesh(n, true, face_holes(n, true));
  const auto gm = GeometryMap::build(m.verts, m.faces, 64, 64);
  const Index H = gm.height(), W = gm.width(), V = m.V();
  Tensor<double> map({1, 2, H, W});
  for (Index i = 0; i < H; ++i)
    for (Index j = 0; j < W; ++j) {
      map(0, 0, i, j) = gm.pixel_valid(i, j) ? 3.0 : 1e6;
      map(0, 1, i, j) = gm.pixel_valid(i, j) ? -1.0 : -1e6;
    }
  const auto out = gm.map_to_mesh(map);
  Index incomplete = 0;
  for (Index v = 0; v < V; ++v) {
    incomplete += !gm.vertex_footprint_complete(v);
    CHECK(std::abs(out(0, v, 0) - 3.0) < 1e-12);
    CHECK(std::abs(out(0, v, 1) + 1.0) < 1e-12);
  }
  CHECK(incomplete > 0);
  const auto tw = gm.vertex_sample_weights();
  const auto tp = gm.vertex_sample_pixels();
  for (Index v = 0; v < V; ++v) {
    double s = 0;
    for (int k = 0; k < 4; ++k) {
      CHECK(tw(v, k) >= 0.0);
      if (tw(v, k) > 0) CHECK(gm.pixel_valid(tp(v, k) / W, tp(v, k) % W));
      s += tw(v, k);
    }
    CHECK(std::abs(s - 1.0) < 1e-12);
  }
}

TEST_CASE("geometry_map: adjoints (dot-product tests, double)") {
  const int n = 12;
  const GridMesh m = grid_mesh(n, true, face_holes(n, false));
  const auto gm = GeometryMap::build(m.verts, m.faces, 40, 48);
  Rng rng(11);
  const Index V = m.V(), H = 40, W = 48;
  for (Index C : {Index(3), Index(2)}) {
    const auto x = bft::random_tensor({2, V, C}, rng);
    const auto y = bft::random_tensor({2, C, H, W}, rng);
    const double a1 = dot(gm.mesh_to_map(x), y), b1 = dot(x, gm.mesh_to_map_backward(y));
    CHECK(std::abs(a1 - b1) <= 1e-12 * std::max(1.0, std::abs(a1)));
    const double a2 = dot(gm.map_to_mesh(y), x), b2 = dot(y, gm.map_to_mesh_backward(x));
    CHECK(std::abs(a2 - b2) <= 1e-12 * std::max(1.0, std::abs(a2)));
    CHECK(std::abs(a1) > 1e-3);
    CHECK(std::abs(a2) > 1e-3);
  }
  // Masked pixels receive no gradient from map_to_mesh_backward and give none to mesh_to_map_backward.
  const auto g = gm.map_to_mesh_backward(bft::random_tensor({1, V, 3}, rng));
  auto y = bft::random_tensor({1, 3, H, W}, rng);
  Index masked = 0;
  for (Index i = 0; i < H; ++i)
    for (Index j = 0; j < W; ++j) {
      if (!gm.pixel_valid(i, j)) {
        ++masked;
        for (int c = 0; c < 3; ++c) CHECK(g(0, c, i, j) == 0.0);
      } else {
        for (int c = 0; c < 3; ++c) y(0, c, i, j) = 0.0;
      }
    }
  CHECK(masked > 0);
  const auto gy = gm.mesh_to_map_backward(y);  // gradient only on masked pixels → none
  for (Index i = 0; i < gy.numel(); ++i) CHECK(gy[i] == 0.0);
  // Non-contiguous input gives the same result as its contiguous copy.
  const auto x = bft::random_tensor({2, 3, V}, rng).transpose(1, 2);
  CHECK_FALSE(x.is_contiguous());
  BFT_CHECK_CLOSE(gm.mesh_to_map(x), gm.mesh_to_map(x.clone()), 0.0, 0.0 + 1e-300);
  CHECK_THROWS_AS(gm.mesh_to_map(Tensor<double>({1, V + 1, 3})), ShapeError);
  CHECK_THROWS_AS(gm.map_to_mesh(Tensor<double>({1, 3, H, W + 1})), ShapeError);
  CHECK_THROWS_AS(gm.mesh_to_map_backward(Tensor<double>({3, H, W})), ShapeError);
  CHECK_THROWS_WITH_AS(GeometryMap().mesh_to_map(Tensor<double>({1, 3, 3})), doctest::Contains("not been built"),
                       ArgumentError);
}

TEST_CASE("geometry_map: save / load round trip, model-file prefix, corrupt files") {
  const int n = 12;
  const GridMesh m = grid_mesh(n, true, face_holes(n, true));
  GeometryMapOptions opt;
  opt.weights = UvWeights::Cotangent;
  const auto gm = GeometryMap::build(m.verts, m.faces, 32, 48, opt);
  const std::string path = tmp_path("geometry_map_roundtrip.safetensors");
  gm.save(path);
  const auto g2 = GeometryMap::load(path);
  CHECK(g2.height() == 32);
  CHECK(g2.width() == 48);
  CHECK(g2.num_vertices() == gm.num_vertices());
  CHECK(g2.faces() == gm.faces());
  CHECK(g2.weights_scheme() == "cotangent");
  CHECK(g2.num_valid_pixels() == gm.num_valid_pixels());
  BFT_CHECK_CLOSE(g2.uv(), gm.uv(), 0.0, 0.0 + 1e-300);
  BFT_CHECK_CLOSE(g2.pixel_weights(), gm.pixel_weights(), 0.0, 0.0 + 1e-300);
  BFT_CHECK_CLOSE(g2.pixel_vertices(), gm.pixel_vertices(), 0.0, 0.0 + 1e-300);
  BFT_CHECK_CLOSE(g2.pixel_face(), gm.pixel_face(), 0.0, 0.0 + 1e-300);
  BFT_CHECK_CLOSE(g2.vertex_sample_weights(), gm.vertex_sample_weights(), 0.0, 0.0 + 1e-300);
  BFT_CHECK_CLOSE(g2.vertex_sample_pixels(), gm.vertex_sample_pixels(), 0.0, 0.0 + 1e-300);
  Rng rng(5);
  const auto x = bft::random_tensor({1, m.V(), 3}, rng);
  BFT_CHECK_CLOSE(g2.mesh_to_map(x), gm.mesh_to_map(x), 0.0, 0.0 + 1e-300);

  // Inside a model file, next to other tensors, under another prefix.
  io::SafeTensorsWriter w;
  w.add("encoder.weight", bft::random_tensor({4, 4}, rng));
  gm.add_to(w, "model.gmap.");
  const auto file = io::SafeTensorsFile::parse(w.serialize(), "model.safetensors");
  const auto g3 = GeometryMap::from_safetensors(file, "model.gmap.");
  BFT_CHECK_CLOSE(g3.pixel_weights(), gm.pixel_weights(), 0.0, 0.0 + 1e-300);
  CHECK_THROWS_WITH_AS(GeometryMap::from_safetensors(file), doctest::Contains("missing tensor"), IoError);

  // Tampered content is rejected with the file named.
  auto tamper = [&](const std::string& name, auto value) {
    io::SafeTensorsWriter t;
    gm.add_to(t);
    t.add("geometry_map." + name, value);
    return io::SafeTensorsFile::parse(t.serialize(), "bad.safetensors");
  };
  auto pf = gm.pixel_face();
  pf[0] = static_cast<std::int32_t>(gm.num_faces());
  CHECK_THROWS_WITH_AS(GeometryMap::from_safetensors(tamper("pixel_face", pf)),
                       doctest::Contains("bad.safetensors: geometry map"), IoError);
  auto uvb = gm.uv();
  uvb[3] = 1.5;
  CHECK_THROWS_WITH_AS(GeometryMap::from_safetensors(tamper("vertex_uv", uvb)), doctest::Contains("outside [0, 1]"),
                       IoError);
  auto fb = gm.faces().size();
  Tensor<std::int32_t> bad_faces({static_cast<Index>(fb), 3});
  for (std::size_t i = 0; i < fb; ++i)
    for (int k = 0; k < 3; ++k) bad_faces[static_cast<Index>(3 * i + k)] = gm.faces()[i][static_cast<std::size_t>(k)];
  bad_faces[0] = static_cast<std::int32_t>(m.V() + 3);
  CHECK_THROWS_WITH_AS(GeometryMap::from_safetensors(tamper("faces", bad_faces)), doctest::Contains("invalid faces"),
                       IoError);
  auto pw = gm.pixel_weights();
  Index valid_p = 0;
  while (gm.pixel_face()[valid_p] < 0) ++valid_p;
  Index kmax = 3 * valid_p;
  for (Index k = 3 * valid_p; k < 3 * valid_p + 3; ++k)
    if (pw[k] > pw[kmax]) kmax = k;
  pw[kmax] *= 0.5f;
  CHECK_THROWS_WITH_AS(GeometryMap::from_safetensors(tamper("pixel_weights", pw)), doctest::Contains("summing"),
                       IoError);
  CHECK_THROWS_AS(GeometryMap::load(tmp_path("does_not_exist.safetensors")), IoError);
  fs::remove(path);
}

TEST_CASE("geometry_map: clear errors for meshes that are not disks") {
  // Closed octahedron: no boundary.
  const auto ov = Tensor<double>::from({6, 3}, {1, 0, 0, -1, 0, 0, 0, 1, 0, 0, -1, 0, 0, 0, 1, 0, 0, -1});
  const auto of = Tensor<std::int32_t>::from(
      {8, 3}, {0, 2, 4, 2, 1, 4, 1, 3, 4, 3, 0, 4, 2, 0, 5, 1, 2, 5, 3, 1, 5, 0, 3, 5});
  CHECK(MeshTopology(of, 6).is_manifold());
  CHECK_THROWS_WITH_AS(GeometryMap::build(ov, of), doctest::Contains("no boundary"), ArgumentError);

  // Punctured torus: one boundary loop but genus 1.
  {
    const int a = 8, b = 6;
    Tensor<double> tv({a * b, 3});
    std::vector<std::int32_t> tf;
    for (int i = 0; i < a; ++i)
      for (int j = 0; j < b; ++j) {
        const double th = 2 * std::numbers::pi * i / a, ph = 2 * std::numbers::pi * j / b;
        tv(i * b + j, 0) = (2 + std::cos(ph)) * std::cos(th);
        tv(i * b + j, 1) = (2 + std::cos(ph)) * std::sin(th);
        tv(i * b + j, 2) = std::sin(ph);
        if (i == 0 && j == 0) continue;  // the puncture
        const int p = i * b + j, q = ((i + 1) % a) * b + j, r = ((i + 1) % a) * b + (j + 1) % b, s = i * b + (j + 1) % b;
        tf.insert(tf.end(), {p, q, r, p, r, s});
      }
    const auto tft = Tensor<std::int32_t>::from({static_cast<Index>(tf.size() / 3), 3}, tf);
    CHECK(MeshTopology(tft, a * b).boundary_loops().size() == 1);
    CHECK_THROWS_WITH_AS(GeometryMap::build(tv, tft), doctest::Contains("not a topological disk"), ArgumentError);
  }

  const GridMesh g = grid_mesh(4, false);
  // Face index out of range.
  auto bad = g.faces.clone();
  bad(3, 1) = static_cast<std::int32_t>(g.V());
  CHECK_THROWS_WITH_AS(GeometryMap::build(g.verts, bad), doctest::Contains("outside [0, 25)"), ArgumentError);
  // Unused vertex.
  Tensor<double> extra({g.V() + 1, 3});
  extra.slice(0, 0, g.V()).assign(g.verts);
  CHECK_THROWS_WITH_AS(GeometryMap::build(extra, g.faces), doctest::Contains("not used by any face"), ArgumentError);
  // Two components.
  Tensor<double> two({2 * g.V(), 3});
  two.slice(0, 0, g.V()).assign(g.verts);
  two.slice(0, g.V(), 2 * g.V()).assign(g.verts);
  Tensor<std::int32_t> tf2({2 * g.faces.dim(0), 3});
  for (Index i = 0; i < g.faces.numel(); ++i) {
    tf2[i] = g.faces[i];
    tf2[g.faces.numel() + i] = g.faces[i] + static_cast<std::int32_t>(g.V());
  }
  CHECK_THROWS_WITH_AS(GeometryMap::build(two, tf2), doctest::Contains("connected components"), ArgumentError);
  // Non-manifold: an extra face on an interior edge.
  Tensor<double> nmv({g.V() + 1, 3});
  nmv.slice(0, 0, g.V()).assign(g.verts);
  nmv(g.V(), 2) = 1.0;
  Tensor<std::int32_t> nmf({g.faces.dim(0) + 1, 3});
  nmf.slice(0, 0, g.faces.dim(0)).assign(g.faces);
  nmf(g.faces.dim(0), 0) = g.faces(0, 0);
  nmf(g.faces.dim(0), 1) = g.faces(0, 2);
  nmf(g.faces.dim(0), 2) = static_cast<std::int32_t>(g.V());
  CHECK_THROWS_WITH_AS(GeometryMap::build(nmv, nmf), doctest::Contains("not an oriented 2-manifold"), ArgumentError);
  // Shapes and values.
  CHECK_THROWS_AS(GeometryMap::build(Tensor<double>({g.V(), 2}), g.faces), ShapeError);
  CHECK_THROWS_AS(GeometryMap::build(g.verts, Tensor<std::int32_t>({4, 2})), ShapeError);
  CHECK_THROWS_AS(GeometryMap::build(g.verts, g.faces, 1, 16), ArgumentError);
  auto nan = g.verts.clone();
  nan(2, 1) = NAN;
  CHECK_THROWS_WITH_AS(GeometryMap::build(nan, g.faces), doctest::Contains("non-finite"), ArgumentError);
  // A disk builds fine (float vertices, int64 faces).
  const auto ok = GeometryMap::build(g.verts.cast<float>(), g.faces.cast<std::int64_t>(), 16, 16);
  CHECK(ok.num_valid_pixels() == 256);
}

TEST_CASE("geometry_map: build time for a ~5k-vertex face-like mesh at 128x128") {
  const int n = 70;
  const GridMesh m = grid_mesh(n, true, [n](int r, int c) {
    const int h = n / 2;
    if (r == n / 4 && c >= h - 12 && c < h + 12) return true;
    if (r == (2 * n) / 3 && ((c >= h - 20 && c < h - 8) || (c >= h + 8 && c < h + 20))) return true;
    return false;
  });
  MESSAGE("mesh: ", m.V(), " vertices, ", m.faces.dim(0), " faces");
  for (UvWeights s : kSchemes) {
    GeometryMapOptions opt;
    opt.weights = s;
    const auto t0 = std::chrono::steady_clock::now();
    const auto gm = GeometryMap::build(m.verts, m.faces, 128, 128, opt);
    const auto t1 = std::chrono::steady_clock::now();
    Rng rng(1);
    const auto x = bft::random_tensor({8, m.V(), 3}, rng);
    const auto t2 = std::chrono::steady_clock::now();
    const auto d = gm.mesh_to_map(x);
    const auto t3 = std::chrono::steady_clock::now();
    const auto back = gm.map_to_mesh(d);
    const auto t4 = std::chrono::steady_clock::now();
    auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    MESSAGE(std::string(uv_weights_name(s)), ": build ", ms(t0, t1), " ms; mesh_to_map (B=8) ", ms(t2, t3),
            " ms; map_to_mesh (B=8) ", ms(t3, t4), " ms; valid pixels ", gm.num_valid_pixels());
    CHECK(gm.stats().flipped_faces == 0);
    CHECK(gm.stats().num_holes == 3);
    CHECK(back.shape() == x.shape());
  }
}
