// blendfuse — fixed-topology triangle mesh connectivity: edges, vertex adjacency (CSR), boundary
// loops, manifold checks, and the uniform ("umbrella") Laplacian with its adjoint.
//
// Dimension order:
//   faces      (F, 3) integer vertex indices (int32 preferred; any integral type is accepted and
//              range-checked), oriented consistently (e.g. counter-clockwise seen from outside).
//   laplacian  x (V, C) or (B, V, C) → same shape (C = 3 for vertex positions / offsets).
//
// Uniform Laplacian (used by the smoothness loss, paper eq. 12):
//   L(x)_i = x_i − (1/|N(i)|) Σ_{j ∈ N(i)} x_j,   N(i) = the vertices sharing an edge with i.
// A vertex with no neighbours (not used by any face) has L(x)_i = 0, so L(const) = 0 everywhere.
// L is linear and, as a matrix, L = I − D⁻¹A (A the symmetric adjacency, D the degrees); its
// adjoint is Lᵀ y = y − A D⁻¹ y, i.e. (Lᵀ y)_j = y_j − Σ_{i ∈ N(j)} y_i / |N(i)| (0 rows stay 0).
//
// Boundary loops are traced along the boundary half-edges in the direction given by the faces
// (for counter-clockwise faces the outer boundary runs counter-clockwise and holes clockwise);
// each loop starts at its smallest vertex index and loops are sorted by that vertex. Boundary
// information needs an oriented 2-manifold (every edge in at most two faces, with opposite
// directions; at most one boundary fan per vertex); otherwise `boundary_loops()` throws
// ArgumentError naming the offending edge or vertex. Edges, adjacency and the Laplacian work on any
// mesh whose indices are in range.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse::geometry {

class MeshTopology {
 public:
  using Face = std::array<std::int32_t, 3>;
  using Edge = std::array<std::int32_t, 2>;

  MeshTopology() = default;

  /// Builds the connectivity of `faces` (F, 3) over `num_vertices` vertices. Throws ShapeError for
  /// a wrong shape and ArgumentError for an index outside [0, V) or a face that repeats a vertex.
  template <class I, class B>
  MeshTopology(const Tensor<I, B>& faces, Index num_vertices) {
    static_assert(std::is_integral_v<I>, "MeshTopology: faces must have an integral element type");
    check_shape(faces, {-1, 3}, "MeshTopology: faces");
    BF_CHECK(num_vertices >= 0 && num_vertices <= Index(INT32_MAX), ArgumentError,
             "MeshTopology: invalid vertex count ", num_vertices);
    const Tensor<I, B> f = faces.contiguous();
    const Index nf = f.dim(0);
    faces_.resize(static_cast<std::size_t>(nf));
    for (Index i = 0; i < nf; ++i) {
      for (int k = 0; k < 3; ++k) {
        const auto v = static_cast<long long>(f[3 * i + k]);
        BF_CHECK(v >= 0 && v < num_vertices, ArgumentError, "MeshTopology: face ", i,
                 " has vertex index ", v, " outside [0, ", num_vertices, ")");
        faces_[static_cast<std::size_t>(i)][k] = static_cast<std::int32_t>(v);
      }
      const Face& t = faces_[static_cast<std::size_t>(i)];
      BF_CHECK(t[0] != t[1] && t[1] != t[2] && t[0] != t[2], ArgumentError, "MeshTopology: face ",
               i, " (", t[0], ", ", t[1], ", ", t[2], ") repeats a vertex");
    }
    nv_ = num_vertices;
    build();
  }

  Index num_vertices() const noexcept { return nv_; }
  Index num_faces() const noexcept { return static_cast<Index>(faces_.size()); }
  Index num_edges() const noexcept { return static_cast<Index>(edges_.size()); }

  const std::vector<Face>& faces() const noexcept { return faces_; }
  /// Undirected edges (a < b), sorted lexicographically.
  const std::vector<Edge>& edges() const noexcept { return edges_; }
  /// Number of faces using each edge of `edges()` (1 = boundary edge, 2 = interior edge).
  const std::vector<std::int32_t>& edge_face_count() const noexcept { return edge_faces_; }

  /// Edges as an (E, 2) int32 tensor.
  Tensor<std::int32_t> edges_tensor() const {
    Tensor<std::int32_t> t({num_edges(), 2});
    for (std::size_t e = 0; e < edges_.size(); ++e) {
      t[static_cast<Index>(2 * e)] = edges_[e][0];
      t[static_cast<Index>(2 * e + 1)] = edges_[e][1];
    }
    return t;
  }
  Tensor<std::int32_t> faces_tensor() const {
    Tensor<std::int32_t> t({num_faces(), 3});
    for (std::size_t f = 0; f < faces_.size(); ++f)
      for (int k = 0; k < 3; ++k) t[static_cast<Index>(3 * f + k)] = faces_[f][k];
    return t;
  }

  /// CSR adjacency: the neighbours of v are indices[offsets[v] .. offsets[v+1]), sorted ascending.
  const std::vector<std::int64_t>& adjacency_offsets() const noexcept { return adj_off_; }
  const std::vector<std::int32_t>& adjacency_indices() const noexcept { return adj_idx_; }
  std::span<const std::int32_t> neighbors(Index v) const {
    BF_CHECK(v >= 0 && v < nv_, ArgumentError, "MeshTopology::neighbors: vertex ", v,
             " outside [0, ", nv_, ")");
    const auto b = static_cast<std::size_t>(adj_off_[static_cast<std::size_t>(v)]);
    const auto e = static_cast<std::size_t>(adj_off_[static_cast<std::size_t>(v) + 1]);
    return std::span<const std::int32_t>(adj_idx_.data() + b, e - b);
  }
  Index degree(Index v) const { return static_cast<Index>(neighbors(v).size()); }

  /// True when the mesh is an oriented 2-manifold (with or without boundary).
  bool is_manifold() const noexcept { return manifold_problem_.empty(); }
  /// Empty when manifold, else a sentence describing the first problem found.
  const std::string& manifold_problem() const noexcept { return manifold_problem_; }

  /// Boundary loops (see the file comment). Throws ArgumentError on a non-manifold mesh.
  const std::vector<std::vector<std::int32_t>>& boundary_loops() const {
    BF_CHECK(is_manifold(), ArgumentError, "MeshTopology: boundary loops need an oriented 2-manifold: ",
             manifold_problem_);
    return loops_;
  }
  /// 1 for vertices on a boundary edge, else 0.
  const std::vector<std::uint8_t>& boundary_vertex_flags() const noexcept { return on_boundary_; }
  bool is_boundary_vertex(Index v) const {
    BF_CHECK(v >= 0 && v < nv_, ArgumentError, "MeshTopology: vertex ", v, " outside [0, ", nv_, ")");
    return on_boundary_[static_cast<std::size_t>(v)] != 0;
  }

  /// Vertices not used by any face.
  Index num_unreferenced_vertices() const noexcept { return n_unref_; }
  /// First vertex not used by any face, or -1.
  Index first_unreferenced_vertex() const noexcept { return first_unref_; }
  /// Connected components of the vertices used by faces (edge-connectivity).
  Index num_components() const noexcept { return n_comp_; }
  /// V_used − E + F over the vertices used by faces (= 2 − 2g − b for a connected orientable
  /// surface of genus g with b boundary loops; 1 for a disk).
  Index euler_characteristic() const noexcept {
    return (nv_ - n_unref_) - num_edges() + num_faces();
  }

 private:
  void build() {
    const auto V = static_cast<std::uint64_t>(nv_);
    // Directed half-edges a→b as keys a·V + b, sorted.
    std::vector<std::uint64_t> half;
    half.reserve(faces_.size() * 3);
    for (const Face& t : faces_)
      for (int k = 0; k < 3; ++k)
        half.push_back(static_cast<std::uint64_t>(t[k]) * V + static_cast<std::uint64_t>(t[(k + 1) % 3]));
    std::sort(half.begin(), half.end());
    auto has_half = [&](std::uint64_t a, std::uint64_t b) {
      return std::binary_search(half.begin(), half.end(), a * V + b);
    };
    // Undirected edges with their face counts.
    std::vector<std::uint64_t> und;
    und.reserve(half.size());
    for (std::uint64_t h : half) {
      const std::uint64_t a = h / V, b = h % V;
      und.push_back(std::min(a, b) * V + std::max(a, b));
    }
    std::sort(und.begin(), und.end());
    edges_.clear();
    edge_faces_.clear();
    for (std::size_t i = 0; i < und.size();) {
      std::size_t j = i;
      while (j < und.size() && und[j] == und[i]) ++j;
      edges_.push_back({static_cast<std::int32_t>(und[i] / V), static_cast<std::int32_t>(und[i] % V)});
      edge_faces_.push_back(static_cast<std::int32_t>(j - i));
      if (j - i > 2 && manifold_problem_.empty())
        manifold_problem_ = detail::concat("non-manifold edge (", und[i] / V, ", ", und[i] % V,
                                           ") is shared by ", j - i, " faces");
      i = j;
    }
    for (std::size_t i = 1; i < half.size() && manifold_problem_.empty(); ++i)
      if (half[i] == half[i - 1])
        manifold_problem_ = detail::concat("edge (", half[i] / V, ", ", half[i] % V,
                                           ") is used twice in the same direction (duplicate face "
                                           "or inconsistently oriented neighbours)");

    // CSR adjacency (neighbours sorted because edges are sorted and we fill both directions
    // before sorting each row).
    adj_off_.assign(static_cast<std::size_t>(nv_) + 1, 0);
    for (const Edge& e : edges_) {
      ++adj_off_[static_cast<std::size_t>(e[0]) + 1];
      ++adj_off_[static_cast<std::size_t>(e[1]) + 1];
    }
    for (std::size_t v = 0; v < static_cast<std::size_t>(nv_); ++v) adj_off_[v + 1] += adj_off_[v];
    adj_idx_.assign(static_cast<std::size_t>(adj_off_.back()), 0);
    {
      std::vector<std::int64_t> fill(adj_off_.begin(), adj_off_.end() - 1);
      for (const Edge& e : edges_) {
        adj_idx_[static_cast<std::size_t>(fill[static_cast<std::size_t>(e[0])]++)] = e[1];
        adj_idx_[static_cast<std::size_t>(fill[static_cast<std::size_t>(e[1])]++)] = e[0];
      }
      for (std::size_t v = 0; v < static_cast<std::size_t>(nv_); ++v)
        std::sort(adj_idx_.begin() + adj_off_[v], adj_idx_.begin() + adj_off_[v + 1]);
    }

    // Unreferenced vertices and connected components (union-find over edges).
    std::vector<std::uint8_t> used(static_cast<std::size_t>(nv_), 0);
    for (const Face& t : faces_)
      for (int k = 0; k < 3; ++k) used[static_cast<std::size_t>(t[k])] = 1;
    n_unref_ = 0;
    first_unref_ = -1;
    for (Index v = 0; v < nv_; ++v)
      if (!used[static_cast<std::size_t>(v)]) {
        if (first_unref_ < 0) first_unref_ = v;
        ++n_unref_;
      }
    std::vector<std::int32_t> parent(static_cast<std::size_t>(nv_));
    std::iota(parent.begin(), parent.end(), 0);
    auto find = [&](std::int32_t x) {
      while (parent[static_cast<std::size_t>(x)] != x) {
        parent[static_cast<std::size_t>(x)] = parent[static_cast<std::size_t>(parent[static_cast<std::size_t>(x)])];
        x = parent[static_cast<std::size_t>(x)];
      }
      return x;
    };
    for (const Edge& e : edges_) {
      const auto a = find(e[0]), b = find(e[1]);
      if (a != b) parent[static_cast<std::size_t>(std::max(a, b))] = std::min(a, b);
    }
    n_comp_ = 0;
    for (Index v = 0; v < nv_; ++v)
      if (used[static_cast<std::size_t>(v)] && find(static_cast<std::int32_t>(v)) == v) ++n_comp_;

    // Boundary half-edges (no opposite half-edge) and loops.
    on_boundary_.assign(static_cast<std::size_t>(nv_), 0);
    loops_.clear();
    std::vector<std::int32_t> next(static_cast<std::size_t>(nv_), -1);
    for (std::uint64_t h : half) {
      const std::uint64_t a = h / V, b = h % V;
      if (has_half(b, a)) continue;
      on_boundary_[a] = on_boundary_[b] = 1;
      if (next[a] >= 0 && next[a] != static_cast<std::int32_t>(b) && manifold_problem_.empty())
        manifold_problem_ = detail::concat("vertex ", a,
                                           " has more than one boundary fan (non-manifold vertex)");
      next[a] = static_cast<std::int32_t>(b);
    }
    if (!manifold_problem_.empty()) return;
    std::vector<std::uint8_t> seen(static_cast<std::size_t>(nv_), 0);
    for (Index s = 0; s < nv_; ++s) {
      if (next[static_cast<std::size_t>(s)] < 0 || seen[static_cast<std::size_t>(s)]) continue;
      std::vector<std::int32_t> loop;
      std::int32_t v = static_cast<std::int32_t>(s);
      while (!seen[static_cast<std::size_t>(v)]) {
        seen[static_cast<std::size_t>(v)] = 1;
        loop.push_back(v);
        v = next[static_cast<std::size_t>(v)];
        if (v < 0) break;
      }
      if (v != static_cast<std::int32_t>(s)) {
        manifold_problem_ = detail::concat("boundary through vertex ", s, " does not close into a loop");
        loops_.clear();
        return;
      }
      loops_.push_back(std::move(loop));  // starts at its smallest vertex since s ascends
    }
  }

  Index nv_ = 0;
  std::vector<Face> faces_;
  std::vector<Edge> edges_;
  std::vector<std::int32_t> edge_faces_;
  std::vector<std::int64_t> adj_off_{0};
  std::vector<std::int32_t> adj_idx_;
  std::vector<std::uint8_t> on_boundary_;
  std::vector<std::vector<std::int32_t>> loops_;
  std::string manifold_problem_;
  Index n_unref_ = 0, first_unref_ = -1, n_comp_ = 0;
};

namespace detail {
template <class T, class B>
void laplacian_check(const MeshTopology& topo, const Tensor<T, B>& x, const char* op) {
  static_assert(std::is_floating_point_v<T>, "laplacian needs a floating-point element type");
  static_assert(B::host_memory, "laplacian: the reference implementation needs host memory");
  BF_CHECK(x.ndim() == 2 || x.ndim() == 3, ShapeError, op,
           ": expected (V, C) or (B, V, C), got shape ", x.shape_string());
  BF_CHECK(x.dim(-2) == topo.num_vertices(), ShapeError, op, ": input shape ", x.shape_string(),
           " does not match the mesh's ", topo.num_vertices(), " vertices");
}
}  // namespace detail

/// Uniform Laplacian L(x)_i = x_i − mean_{j∈N(i)} x_j of x (V, C) or (B, V, C).
template <class T, class B>
Tensor<T, B> laplacian(const MeshTopology& topo, const Tensor<T, B>& x) {
  detail::laplacian_check(topo, x, "laplacian");
  const Tensor<T, B> c = x.contiguous();
  Tensor<T, B> out(x.shape());
  const Index V = topo.num_vertices(), C = x.dim(-1), nb = x.ndim() == 3 ? x.dim(0) : 1;
  const auto& off = topo.adjacency_offsets();
  const auto& idx = topo.adjacency_indices();
  for (Index b = 0; b < nb; ++b) {
    const T* xb = c.data() + b * V * C;
    T* ob = out.data() + b * V * C;
    for (Index i = 0; i < V; ++i) {
      const std::int64_t s = off[static_cast<std::size_t>(i)], e = off[static_cast<std::size_t>(i) + 1];
      if (s == e) continue;  // isolated vertex: 0
      const T inv = T(1) / static_cast<T>(e - s);
      for (Index ch = 0; ch < C; ++ch) {
        T acc = 0;
        for (std::int64_t k = s; k < e; ++k) acc += xb[idx[static_cast<std::size_t>(k)] * C + ch];
        ob[i * C + ch] = xb[i * C + ch] - inv * acc;
      }
    }
  }
  return out;
}

/// Adjoint of `laplacian`: (Lᵀ y)_j = y_j − Σ_{i∈N(j)} y_i / |N(i)| (0 for isolated vertices).
template <class T, class B>
Tensor<T, B> laplacian_backward(const MeshTopology& topo, const Tensor<T, B>& dy) {
  detail::laplacian_check(topo, dy, "laplacian_backward");
  const Tensor<T, B> c = dy.contiguous();
  Tensor<T, B> out(dy.shape());
  const Index V = topo.num_vertices(), C = dy.dim(-1), nb = dy.ndim() == 3 ? dy.dim(0) : 1;
  const auto& off = topo.adjacency_offsets();
  const auto& idx = topo.adjacency_indices();
  std::vector<T> inv_deg(static_cast<std::size_t>(V), T(0));
  for (Index i = 0; i < V; ++i) {
    const auto d = off[static_cast<std::size_t>(i) + 1] - off[static_cast<std::size_t>(i)];
    if (d > 0) inv_deg[static_cast<std::size_t>(i)] = T(1) / static_cast<T>(d);
  }
  for (Index b = 0; b < nb; ++b) {
    const T* yb = c.data() + b * V * C;
    T* ob = out.data() + b * V * C;
    for (Index j = 0; j < V; ++j) {
      const std::int64_t s = off[static_cast<std::size_t>(j)], e = off[static_cast<std::size_t>(j) + 1];
      if (s == e) continue;
      for (Index ch = 0; ch < C; ++ch) {
        T acc = 0;
        for (std::int64_t k = s; k < e; ++k) {
          const auto i = idx[static_cast<std::size_t>(k)];
          acc += yb[i * C + ch] * inv_deg[static_cast<std::size_t>(i)];
        }
        ob[j * C + ch] = yb[j * C + ch] - acc;
      }
    }
  }
  return out;
}

}  // namespace blendfuse::geometry
