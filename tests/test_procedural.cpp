// Tests of the procedural two-domain face dataset (include/blendfuse/data/procedural.hpp).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "blendfuse/data/dataset.hpp"
#include "blendfuse/data/procedural.hpp"
#include "blendfuse/io/mesh.hpp"
#include "blendfuse/io/npy.hpp"
#include "test_util.hpp"

namespace bd = blendfuse::data;
namespace bio = blendfuse::io;
using blendfuse::Index;
using blendfuse::Tensor;

namespace {

// ---- an independent topology check ---------------------------------------------------------------
struct Topology {
  Index V = 0, E = 0, F = 0;
  int boundary_loops = 0;
  int components = 0;
  int non_manifold_edges = 0;     // edges in more than two faces
  int inconsistent_edges = 0;     // a directed edge used twice (inconsistent orientation)
  int non_manifold_vertices = 0;  // incident faces do not form a single fan
  int unreferenced_vertices = 0;
  int bad_faces = 0;              // repeated index or out of range
  double min_area = 1e300;        // mm²
  double min_projected_area = 1e300;  // signed area of the xy projection (CCW seen from +z > 0)
};

Topology topology(const Tensor<float>& verts, const Tensor<std::int32_t>& faces) {
  Topology t;
  t.V = verts.dim(0);
  t.F = faces.dim(0);
  std::map<std::pair<int, int>, int> undirected;
  std::map<std::pair<int, int>, int> directed;
  std::vector<std::vector<int>> vf(static_cast<std::size_t>(t.V));
  for (Index f = 0; f < t.F; ++f) {
    const int a = faces(f, 0), b = faces(f, 1), c = faces(f, 2);
    if (a < 0 || b < 0 || c < 0 || a >= t.V || b >= t.V || c >= t.V || a == b || b == c || a == c) {
      ++t.bad_faces;
      continue;
    }
    const int idx[3] = {a, b, c};
    for (int k = 0; k < 3; ++k) {
      const int u = idx[k], v = idx[(k + 1) % 3];
      ++undirected[{std::min(u, v), std::max(u, v)}];
      ++directed[{u, v}];
      vf[static_cast<std::size_t>(u)].push_back(static_cast<int>(f));
    }
    double e1[3], e2[3];
    for (int d = 0; d < 3; ++d) {
      e1[d] = double(verts(b, d)) - verts(a, d);
      e2[d] = double(verts(c, d)) - verts(a, d);
    }
    const double nx = e1[1] * e2[2] - e1[2] * e2[1], ny = e1[2] * e2[0] - e1[0] * e2[2],
                 nz = e1[0] * e2[1] - e1[1] * e2[0];
    t.min_area = std::min(t.min_area, 0.5 * std::sqrt(nx * nx + ny * ny + nz * nz));
    t.min_projected_area = std::min(t.min_projected_area, 0.5 * nz);
  }
  t.E = static_cast<Index>(undirected.size());
  std::map<int, std::vector<int>> boundary_next;  // boundary edges, both directions
  for (const auto& [e, n] : undirected) {
    if (n > 2) ++t.non_manifold_edges;
    if (n == 1) {
      boundary_next[e.first].push_back(e.second);
      boundary_next[e.second].push_back(e.first);
    }
  }
  for (const auto& [e, n] : directed)
    if (n > 1) ++t.inconsistent_edges;
  // Vertex manifoldness: incident faces connected through edges at the vertex, and a boundary
  // vertex has exactly two boundary edges.
  for (Index v = 0; v < t.V; ++v) {
    const auto& fs = vf[static_cast<std::size_t>(v)];
    if (fs.empty()) {
      ++t.unreferenced_vertices;
      continue;
    }
    std::vector<int> comp(fs.size());
    for (std::size_t i = 0; i < fs.size(); ++i) comp[i] = static_cast<int>(i);
    auto find = [&](int i) {
      while (comp[static_cast<std::size_t>(i)] != i) i = comp[static_cast<std::size_t>(i)];
      return i;
    };
    auto others = [&](int f) {
      std::vector<int> o;
      for (int d = 0; d < 3; ++d)
        if (faces(f, d) != v) o.push_back(faces(f, d));
      return o;
    };
    for (std::size_t i = 0; i < fs.size(); ++i)
      for (std::size_t j = i + 1; j < fs.size(); ++j) {
        const auto oi = others(fs[i]), oj = others(fs[j]);
        bool share = false;
        for (int x : oi)
          for (int y : oj) share = share || x == y;
        if (share) comp[static_cast<std::size_t>(find(static_cast<int>(i)))] = find(static_cast<int>(j));
      }
    std::set<int> roots;
    for (std::size_t i = 0; i < fs.size(); ++i) roots.insert(find(static_cast<int>(i)));
    const auto it = boundary_next.find(static_cast<int>(v));
    const std::size_t nb = it == boundary_next.end() ? 0 : it->second.size();
    if (roots.size() != 1 || (nb != 0 && nb != 2)) ++t.non_manifold_vertices;
  }
  // Boundary loops: walk the boundary graph (every boundary vertex has degree 2 if manifold).
  std::set<int> seen;
  for (const auto& [start, nb] : boundary_next) {
    if (seen.count(start)) continue;
    ++t.boundary_loops;
    std::vector<int> stack{start};
    while (!stack.empty()) {
      const int u = stack.back();
      stack.pop_back();
      if (!seen.insert(u).second) continue;
      for (int w : boundary_next[u]) stack.push_back(w);
    }
  }
  // Connected components over faces.
  std::vector<int> parent(static_cast<std::size_t>(t.V));
  for (Index v = 0; v < t.V; ++v) parent[static_cast<std::size_t>(v)] = static_cast<int>(v);
  std::function<int(int)> root = [&](int i) {
    return parent[static_cast<std::size_t>(i)] == i ? i : parent[static_cast<std::size_t>(i)] = root(parent[static_cast<std::size_t>(i)]);
  };
  for (Index f = 0; f < t.F; ++f)
    for (int d = 1; d < 3; ++d) parent[static_cast<std::size_t>(root(faces(f, d)))] = root(faces(f, 0));
  std::set<int> comps;
  for (Index v = 0; v < t.V; ++v)
    if (!vf[static_cast<std::size_t>(v)].empty()) comps.insert(root(static_cast<int>(v)));
  t.components = static_cast<int>(comps.size());
  return t;
}

void check_manifold_disk(const bd::FaceMesh& m, int expected_loops) {
  const Topology t = topology(m.vertices, m.faces);
  CHECK(t.bad_faces == 0);
  CHECK(t.non_manifold_edges == 0);
  CHECK(t.inconsistent_edges == 0);
  CHECK(t.non_manifold_vertices == 0);
  CHECK(t.unreferenced_vertices == 0);
  CHECK(t.components == 1);
  CHECK(t.boundary_loops == expected_loops);
  CHECK(m.boundary_loops == expected_loops);
  // genus 0 with b boundary loops: χ = 2 − b
  CHECK(t.V - t.E + t.F == 2 - expected_loops);
  CHECK(t.min_area > 0.05);             // mm²: no degenerate triangles
  CHECK(t.min_projected_area > 0.0);    // all CCW seen from the front: no fold-overs
}

// Tensor bytes, for exact comparisons.
template <class T>
std::vector<std::uint8_t> bytes_of(const Tensor<T>& t) {
  return bio::serialize_npy(t);
}

/// Deformation (T,V,3) of `seq` minus the (V,3) `neutral`.
Tensor<float> one_frame(const Tensor<float>& seq, Index t) { return seq.select(t).contiguous(); }

double max_abs_diff(const Tensor<float>& a, const Tensor<float>& b) {
  REQUIRE(a.shape() == b.shape());
  const auto ca = a.contiguous(), cb = b.contiguous();
  double m = 0;
  for (Index i = 0; i < ca.numel(); ++i) m = std::max(m, std::abs(double(ca[i]) - cb[i]));
  return m;
}

double basis_gap(const bd::FaceModel& model, bool speech, int k, double w) {
  const Index Ka = model.bases.speech.dim(0), Ke = model.bases.expression.dim(0);
  Tensor<float> wa({1, Ka}), we({1, Ke});
  (speech ? wa : we)(0, k) = static_cast<float>(w);
  const auto pos = bd::compose(model.subjects[0].neutral, model.bases, wa, we);
  return bd::lip_gap(pos.data(), model.mesh);
}

std::string tmp_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("blendfuse_test_procedural_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

}  // namespace

TEST_CASE("face mesh: manifold disk with a mouth slit (and eye holes), regions") {
  SUBCASE("tiny grid, eye holes") { check_manifold_disk(bd::build_face_mesh(25, true), 4); }
  SUBCASE("tiny grid, mouth slit only") { check_manifold_disk(bd::build_face_mesh(25, false), 2); }
  SUBCASE("coarsest grid") { check_manifold_disk(bd::build_face_mesh(15, true), 4); }
  SUBCASE("default grid: about 5,000 vertices") {
    const auto m = bd::build_face_mesh(bd::ProceduralConfig{}.grid, true);
    CHECK(m.num_vertices() >= 4800);
    CHECK(m.num_vertices() <= 5400);
    check_manifold_disk(m, 4);
    // ~150 mm wide face
    float xmin = 1e9f, xmax = -1e9f;
    for (Index v = 0; v < m.num_vertices(); ++v) {
      xmin = std::min(xmin, m.vertices(v, 0));
      xmax = std::max(xmax, m.vertices(v, 0));
    }
    CHECK(xmax - xmin == doctest::Approx(150.0).epsilon(0.05));
    CHECK(m.lip_pairs.size() >= 15);
  }
  SUBCASE("regions") {
    const auto m = bd::build_face_mesh(40, true);
    const Index V = m.num_vertices();
    REQUIRE(m.lips.size() > 2 * m.lip_pairs.size());
    const std::set<int> lips(m.lips.begin(), m.lips.end());
    for (const auto& p : m.lip_pairs) {
      CHECK(lips.count(p[0]) == 1);
      CHECK(lips.count(p[1]) == 1);
      CHECK(m.side[static_cast<std::size_t>(p[0])] == 1);
      CHECK(m.side[static_cast<std::size_t>(p[1])] == -1);
    }
    CHECK(lips.count(m.mouth_corners[0]) == 1);
    for (int i : m.lips) CHECK(std::abs(m.vertices(i, 1) - m.mouth_y) < 15.0);
    REQUIRE(!m.upper_face.empty());
    for (int i : m.upper_face) CHECK(m.vertices(i, 1) > 10.0f);
    CHECK(m.upper_face.size() < static_cast<std::size_t>(V) / 2 + 1);
    CHECK(m.upper_face.size() > static_cast<std::size_t>(V) / 5);
    double wl = 0, wmin = 1e9;
    for (Index v = 0; v < V; ++v) wmin = std::min(wmin, double(m.weights[v]));
    for (const auto& p : m.lip_pairs) wl = std::max(wl, double(m.weights[p[0]]));
    CHECK(wmin == doctest::Approx(1.0));
    CHECK(wl > 4.0);
    CHECK(m.uv.shape() == blendfuse::Shape{V, 2});
  }
}

TEST_CASE("lips: closed at rest for every subject, opened by speech bases only") {
  const auto cfg = bd::ProceduralConfig::tiny();
  const auto model = bd::make_face_model(cfg);
  const auto& m = model.mesh;
  for (const auto& s : model.subjects) {
    CHECK(bd::lip_gap(s.neutral.data(), m) == 0.0);  // upper and lower rows coincide exactly
  }
  // Subjects differ.
  CHECK(max_abs_diff(model.subjects[0].neutral, model.subjects[1].neutral) > 1.0);
  // jaw_open at weight 1 opens ~12 mm at the centre, proportional to the weight
  const double jaw = basis_gap(model, true, bd::kJawOpen, 1.0);
  CHECK(jaw > 9.0);
  CHECK(jaw < 14.0);
  CHECK(basis_gap(model, true, bd::kJawOpen, 0.5) == doctest::Approx(0.5 * jaw).epsilon(1e-4));
  CHECK(basis_gap(model, true, bd::kLipRound, 1.0) == doctest::Approx(0.25 * jaw).epsilon(1e-4));
  CHECK(basis_gap(model, true, bd::kLipStretch, 1.0) < 1e-4);
  // lip_press cancels the jaw exactly (both at weight 0.3)
  {
    Tensor<float> wa({1, model.bases.speech.dim(0)}), we({1, model.bases.expression.dim(0)});
    wa(0, bd::kJawOpen) = 0.3f;
    wa(0, bd::kLipPress) = 0.3f;
    const auto pos = bd::compose(model.subjects[1].neutral, model.bases, wa, we);
    CHECK(bd::lip_gap(pos.data(), m) < 1e-4);
  }
  // expression bases move the lips (smile) but never separate them
  for (int k = 0; k < model.bases.expression.dim(0); ++k) {
    CAPTURE(k);
    CHECK(basis_gap(model, false, k, 1.0) < 1e-4);
    double mx = 0;
    for (Index i = 0; i < model.bases.expression.dim(1) * 3; ++i)
      mx = std::max(mx, double(std::abs(model.bases.expression.data()[k * model.bases.expression.dim(1) * 3 + i])));
    CHECK(mx > 3.0);  // a visible deformation (mm)
  }
  // smile moves the lip corners' neighbourhood
  double corner_move = 0;
  for (const auto& p : m.lip_pairs)
    for (int d = 0; d < 3; ++d) corner_move = std::max(corner_move, double(std::abs(model.bases.expression(0, p[0], d))));
  CHECK(corner_move > 1.0);
  // bases are localised: jaw_open leaves the forehead still, brows of surprise leave the chin still
  for (Index v = 0; v < m.num_vertices(); ++v) {
    if (m.vertices(v, 1) > 30.0f)
      for (int d = 0; d < 3; ++d) CHECK(std::abs(model.bases.speech(bd::kJawOpen, v, d)) < 1e-3);
    if (m.vertices(v, 1) < -70.0f)
      for (int d = 0; d < 3; ++d) CHECK(std::abs(model.bases.expression(3, v, d)) < 1e-3);
  }
}

TEST_CASE("determinism: same seed → identical data, another seed → different data") {
  auto cfg = bd::ProceduralConfig::tiny();
  const auto a = bd::generate_dataset(cfg);
  const auto b = bd::generate_dataset(cfg);
  REQUIRE(a.speech.size() == 6);
  REQUIRE(a.expression.size() == 6);
  CHECK(bytes_of(a.model.mesh.vertices) == bytes_of(b.model.mesh.vertices));
  CHECK(bytes_of(a.model.bases.speech) == bytes_of(b.model.bases.speech));
  for (std::size_t i = 0; i < a.speech.size(); ++i) {
    CHECK(a.speech[i].name == b.speech[i].name);
    CHECK(bytes_of(a.speech[i].positions) == bytes_of(b.speech[i].positions));
    CHECK(bytes_of(a.expression[i].positions) == bytes_of(b.expression[i].positions));
  }
  cfg.seed += 1;
  const auto c = bd::generate_dataset(cfg);
  CHECK(bytes_of(a.model.subjects[0].neutral) != bytes_of(c.model.subjects[0].neutral));
  CHECK(bytes_of(a.speech[0].w_speech) != bytes_of(c.speech[0].w_speech));
  // A sequence does not depend on how many others are generated.
  auto cfg2 = bd::ProceduralConfig::tiny();
  cfg2.speech_per_subject = 1;
  cfg2.expression_per_subject = 1;
  const auto d = bd::generate_dataset(cfg2);
  CHECK(bytes_of(d.speech[0].positions) == bytes_of(a.speech[0].positions));
}

TEST_CASE("speech: /p b m/ close the lips in the clean truth; the mouth opens elsewhere") {
  const auto ds = bd::generate_dataset(bd::ProceduralConfig::tiny());
  const auto& m = ds.model.mesh;
  for (const auto& seq : ds.speech) {
    CAPTURE(seq.name);
    REQUIRE(!seq.bilabial_frames.empty());
    CHECK(seq.positions.dim(0) == seq.w_speech.dim(0));
    CHECK(seq.num_frames() >= static_cast<Index>(std::floor(seq.phonemes.back().end * 30.0)));
    const auto truth = bd::clean_truth(ds.model, seq);
    const auto gaps_truth = bd::lip_gaps(truth, m);
    const auto gaps_data = bd::lip_gaps(seq.positions, m);
    for (int t : seq.bilabial_frames) {
      CAPTURE(t);
      CHECK(gaps_truth[static_cast<std::size_t>(t)] < 1e-4);
      CHECK(gaps_data[static_cast<std::size_t>(t)] < 1e-4);  // the expression leak keeps them closed
      // the frame lies inside a /p b m/ segment
      bool inside = false;
      for (const auto& p : seq.phonemes)
        inside = inside || (bd::is_bilabial(p.phoneme) && t / 30.0 >= p.start - 1e-9 && t / 30.0 <= p.end + 1e-9);
      CHECK(inside);
    }
    double max_gap = 0;
    for (Index t = 0; t < truth.dim(0); ++t) {
      max_gap = std::max(max_gap, gaps_truth[static_cast<std::size_t>(t)]);
      CHECK(bd::lip_min_opening(truth.data() + t * truth.dim(1) * 3, m) > -1e-4);  // never overlap
    }
    CHECK(max_gap > 3.0);
    // silence at both ends: rest pose
    CHECK(gaps_truth.front() < 1.0);
  }
}

TEST_CASE("the problem the paper solves: a naive sum leaves the lips open at /p b m/") {
  const auto cfg = bd::ProceduralConfig::tiny();
  const auto ds = bd::generate_dataset(cfg);
  const auto& m = ds.model.mesh;
  const double jaw_gap = basis_gap(ds.model, true, bd::kJawOpen, 1.0);
  int checked = 0;
  for (const auto& sp : ds.speech) {
    for (const auto& ex : ds.expression) {
      if (ex.subject != sp.subject) continue;
      // the apex frame of the expression
      Index apex = 0;
      for (Index t = 0; t < ex.num_frames(); ++t)
        if (ex.leak_speech(t, bd::kJawOpen) > ex.leak_speech(apex, bd::kJawOpen)) apex = t;
      const auto& neutral = ds.model.subjects[static_cast<std::size_t>(sp.subject_index)].neutral;
      const auto ex_frame = one_frame(ex.positions, apex);
      for (int t : sp.bilabial_frames) {
        const auto sp_frame = one_frame(sp.positions, t);
        Tensor<float> naive({neutral.dim(0), 3});
        for (Index i = 0; i < naive.numel(); ++i) naive[i] = sp_frame[i] + ex_frame[i] - neutral[i];
        // clean truth B_A* w_A + B_E* w_E for the same pair of frames
        Tensor<float> wa({1, sp.w_speech.dim(1)}), we({1, ex.w_expression.dim(1)});
        for (Index k = 0; k < wa.numel(); ++k) wa[k] = sp.w_speech(t, k);
        for (Index k = 0; k < we.numel(); ++k) we[k] = ex.w_expression(apex, k);
        const auto truth = bd::compose(neutral, ds.model.bases, wa, we);
        CHECK(bd::lip_gap(truth.data(), m) < 1e-4);
        const double g = bd::lip_gap(naive.data(), m);
        CHECK(g == doctest::Approx(cfg.expression_leak * jaw_gap).epsilon(0.02));
        CHECK(g > 3.0);
        ++checked;
      }
    }
  }
  CHECK(checked > 10);
}

TEST_CASE("leaks: present at the configured magnitude, absent when switched off") {
  auto cfg = bd::ProceduralConfig::tiny();
  cfg.speech_leak = 0.3;
  cfg.expression_leak = 0.4;
  const auto ds = bd::generate_dataset(cfg);
  const auto& B = ds.model.bases;
  const Index V = ds.model.mesh.num_vertices();
  for (const auto& seq : ds.speech) {
    CAPTURE(seq.name);
    // exactly one expression leaks, at the configured weight on every frame
    for (Index t = 0; t < seq.num_frames(); ++t)
      for (Index k = 0; k < seq.leak_expression.dim(1); ++k)
        CHECK(seq.leak_expression(t, k) == doctest::Approx(k == seq.expression_id ? 0.3 : 0.0));
    // data − clean truth = 0.3 · B_E*[id]
    const auto truth = bd::clean_truth(ds.model, seq);
    double worst = 0;
    for (Index t = 0; t < seq.num_frames(); ++t)
      for (Index i = 0; i < V * 3; ++i) {
        const double leak = double(seq.positions.data()[t * V * 3 + i]) - truth.data()[t * V * 3 + i];
        worst = std::max(worst, std::abs(leak - 0.3 * B.expression.data()[seq.expression_id * V * 3 + i]));
      }
    CHECK(worst < 1e-4);
    CHECK(max_abs_diff(seq.positions, truth) > 0.3 * 3.0);
  }
  const double jaw_gap = basis_gap(ds.model, true, bd::kJawOpen, 1.0);
  for (const auto& seq : ds.expression) {
    CAPTURE(seq.name);
    float env_max = 0, w_max = 0;
    for (Index t = 0; t < seq.num_frames(); ++t) {
      env_max = std::max(env_max, seq.leak_speech(t, bd::kJawOpen));
      w_max = std::max(w_max, seq.w_expression(t, seq.expression_id));
      for (Index k = 0; k < seq.leak_speech.dim(1); ++k)
        if (k != bd::kJawOpen) CHECK(seq.leak_speech(t, k) == 0.0f);
      // the leak follows the expression's onset–apex–offset envelope
      CHECK(bd::lip_gap(seq.positions.data() + t * V * 3, ds.model.mesh) ==
            doctest::Approx(seq.leak_speech(t, bd::kJawOpen) * jaw_gap).epsilon(0.01));
    }
    CHECK(env_max == doctest::Approx(0.4));
    CHECK(w_max >= 0.65f);
    CHECK(seq.leak_speech(0, bd::kJawOpen) == 0.0f);  // neutral at the start
    CHECK(seq.leak_speech(seq.num_frames() - 1, bd::kJawOpen) == 0.0f);
    const auto truth = bd::clean_truth(ds.model, seq);
    for (Index t = 0; t < seq.num_frames(); ++t) CHECK(bd::lip_gap(truth.data() + t * V * 3, ds.model.mesh) < 1e-4);
  }
  cfg.speech_leak = 0;
  cfg.expression_leak = 0;
  const auto clean = bd::generate_dataset(cfg);
  for (const auto* list : {&clean.speech, &clean.expression})
    for (const auto& seq : *list) CHECK(max_abs_diff(seq.positions, bd::clean_truth(clean.model, seq)) == 0.0);
}

TEST_CASE("phoneme timelines and visemes") {
  blendfuse::Rng rng(7);
  const auto tl = bd::random_phoneme_timeline(rng, 3.0);
  REQUIRE(tl.size() > 10);
  CHECK(tl.front().phoneme == "_");
  CHECK(tl.back().phoneme == "_");
  CHECK(tl.back().end == doctest::Approx(3.0).epsilon(0.15));
  bool bil = false;
  for (std::size_t i = 0; i < tl.size(); ++i) {
    CHECK(tl[i].end > tl[i].start);
    if (i) CHECK(tl[i].start == tl[i - 1].end);
    bil = bil || bd::is_bilabial(tl[i].phoneme);
  }
  CHECK(bil);
  CHECK(bd::viseme_of("p") == bd::Viseme::BMP);
  CHECK(bd::viseme_of("m") == bd::Viseme::BMP);
  CHECK(bd::viseme_of("A:") == bd::Viseme::AA);
  CHECK(bd::viseme_of("_:") == bd::Viseme::Sil);
  CHECK(bd::viseme_of("u:") == bd::Viseme::UW);
  if (bd::espeak_available()) {
    auto ets = bd::espeak_phoneme_timeline("Bob bought maybe five big apples.");
    REQUIRE(ets.has_value());
    int bilabials = 0;
    for (const auto& p : *ets) bilabials += bd::is_bilabial(p.phoneme);
    CHECK(bilabials >= 5);
    auto cfg = bd::ProceduralConfig::tiny();
    cfg.phonemes = bd::PhonemeSource::Espeak;
    const auto model = bd::make_face_model(cfg);
    const auto seq = bd::make_speech_sequence(model, 0, 0);
    CHECK(!seq.text.empty());
    REQUIRE(!seq.bilabial_frames.empty());
    const auto truth = bd::clean_truth(model, seq);
    for (int t : seq.bilabial_frames) CHECK(bd::lip_gap(truth.data() + t * truth.dim(1) * 3, model.mesh) < 1e-4);
  } else {
    MESSAGE("libespeak-ng not compiled in: random phoneme timelines only");
    auto cfg = bd::ProceduralConfig::tiny();
    cfg.phonemes = bd::PhonemeSource::Espeak;
    CHECK_THROWS_AS(bd::generate_dataset(cfg), blendfuse::ArgumentError);
  }
}

TEST_CASE("write_dataset: the DATA.md layout, reloadable, byte-identical per seed") {
  namespace fs = std::filesystem;
  const auto cfg = bd::ProceduralConfig::tiny();
  const std::string dir = tmp_dir("a"), dir2 = tmp_dir("b");
  const std::string source = bd::write_dataset(dir, cfg);
  CHECK(source == "random");
  const auto ds = bd::generate_dataset(cfg);
  const auto& m = ds.model.mesh;
  const Index V = m.num_vertices();

  const auto obj = bio::load_obj(dir + "/template.obj");
  CHECK(obj.num_vertices() == V);
  CHECK(obj.num_faces() == m.num_faces());
  CHECK(max_abs_diff(obj.vertices, m.vertices) == 0.0);
  CHECK(bytes_of(obj.faces) == bytes_of(m.faces));

  std::vector<int> lips;
  {
    const std::string txt = bio::read_file_text(dir + "/regions/lips.txt");
    std::size_t pos = 0;
    while (pos < txt.size()) {
      const std::size_t nl = txt.find('\n', pos);
      lips.push_back(std::stoi(txt.substr(pos, nl - pos)));
      pos = nl + 1;
    }
  }
  CHECK(lips == std::vector<int>(m.lips.begin(), m.lips.end()));
  CHECK(fs::file_size(dir + "/regions/upper_face.txt") > 0);
  CHECK(bio::load_npy<float>(dir + "/regions/weights.npy").shape() == blendfuse::Shape{V});
  for (const auto& s : ds.model.subjects)
    CHECK(max_abs_diff(bio::load_npy<float>(dir + "/templates/" + s.name + ".npy"), s.neutral) == 0.0);

  const auto split = nlohmann::json::parse(bio::read_file_text(dir + "/split.json"));
  CHECK(split["train"].size() == 1);
  CHECK(split["val"].size() == 1);
  CHECK(split["test"].size() == 1);
  CHECK(split["test"][0] == "P03");

  const auto bilabial = nlohmann::json::parse(bio::read_file_text(dir + "/truth/bilabial_frames.json"));
  for (const auto& seq : ds.speech) {
    CAPTURE(seq.name);
    const auto pos = bio::load_vertex_sequence(dir + "/speech/" + seq.name + ".npy", V);
    CHECK(max_abs_diff(pos, seq.positions) == 0.0);
    CHECK(max_abs_diff(bio::load_npy<float>(dir + "/truth/speech/" + seq.name + ".wA.npy"), seq.w_speech) == 0.0);
    CHECK(max_abs_diff(bio::load_npy<float>(dir + "/truth/speech/" + seq.name + ".leak_wE.npy"), seq.leak_expression) == 0.0);
    const auto ph = nlohmann::json::parse(bio::read_file_text(dir + "/truth/speech/" + seq.name + ".phonemes.json"));
    REQUIRE(ph["phonemes"].size() == seq.phonemes.size());
    CHECK(ph["phonemes"][1]["phoneme"] == seq.phonemes[1].phoneme);
    CHECK(ph["phonemes"].back()["end"].get<double>() == seq.phonemes.back().end);
    CHECK(bilabial[seq.name].get<std::vector<int>>() == std::vector<int>(seq.bilabial_frames.begin(), seq.bilabial_frames.end()));
  }
  for (const auto& seq : ds.expression) {
    CAPTURE(seq.name);
    CHECK(max_abs_diff(bio::load_vertex_sequence(dir + "/expression/" + seq.name + ".npy", V), seq.positions) == 0.0);
    CHECK(max_abs_diff(bio::load_npy<float>(dir + "/truth/expression/" + seq.name + ".wE.npy"), seq.w_expression) == 0.0);
    CHECK(max_abs_diff(bio::load_npy<float>(dir + "/truth/expression/" + seq.name + ".leak_wA.npy"), seq.leak_speech) == 0.0);
  }
  CHECK(max_abs_diff(bio::load_npy<float>(dir + "/truth/speech_bases.npy"), ds.model.bases.speech) == 0.0);
  CHECK(max_abs_diff(bio::load_npy<float>(dir + "/truth/expression_bases.npy"), ds.model.bases.expression) == 0.0);
  const auto pairs = bio::load_npy<std::int32_t>(dir + "/truth/lip_pairs.npy");
  CHECK(pairs.shape() == blendfuse::Shape{static_cast<Index>(m.lip_pairs.size()), 2});
  CHECK(bio::load_npy<float>(dir + "/truth/uv.npy").shape() == blendfuse::Shape{V, 2});
  const auto bases = nlohmann::json::parse(bio::read_file_text(dir + "/truth/bases.json"));
  CHECK(bases["speech"].size() == 6);
  CHECK(bases["expression"].size() == 5);
  CHECK(nlohmann::json::parse(bio::read_file_text(dir + "/truth/config.json"))["seed"] == cfg.seed);

  // The folder loader reads it back: subjects, splits, deformations = positions − subject template.
  {
    const auto loaded = bd::Dataset::load(dir);
    CHECK(loaded.num_vertices() == V);
    REQUIRE(loaded.speech.size() == ds.speech.size());
    REQUIRE(loaded.expression.size() == ds.expression.size());
    CHECK(loaded.subjects() == std::vector<std::string>{"P01", "P02", "P03"});
    CHECK(loaded.test == std::vector<std::string>{"P03"});
    CHECK(loaded.lips == std::vector<std::int32_t>(m.lips.begin(), m.lips.end()));
    for (std::size_t i = 0; i < ds.speech.size(); ++i) {
      const auto& mine = ds.speech[i];
      const auto& theirs = loaded.speech[i];
      REQUIRE(theirs.name == mine.name);
      CHECK(theirs.subject == mine.subject);
      const auto& neutral = ds.model.subjects[static_cast<std::size_t>(mine.subject_index)].neutral;
      double worst = 0;
      for (Index t = 0; t < mine.num_frames(); ++t)
        for (Index k = 0; k < V * 3; ++k)
          worst = std::max(worst, std::abs(double(theirs.deformations.data()[t * V * 3 + k]) -
                                           (double(mine.positions.data()[t * V * 3 + k]) - neutral[k])));
      CHECK(worst < 1e-4);
    }
  }

  // Every file of a second run with the same seed is byte-identical, and no file is missing.
  bd::write_dataset(dir2, cfg);
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(fs::relative(e.path(), dir).string());
  std::size_t files2 = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir2)) files2 += e.is_regular_file();
  CHECK(files.size() == files2);
  // 1 obj + 1 units + 3 regions + 3 templates + 1 split + 7 truth + 12 sequences + 6·3 speech truth + 6·2
  CHECK(files.size() == 1 + 1 + 3 + 3 + 1 + 7 + 12 + 18 + 12);
  CHECK(bio::read_file_text(dir + "/units.txt") == "mm\n");

  // A metres copy (gen-data --units m): every coordinate file is the mm one / 1000, the rest is
  // identical, and it loads as metres.
  {
    auto cfg_m = cfg;
    cfg_m.unit_mm = 1000;
    const std::string dm = tmp_dir("m");
    bd::write_dataset(dm, cfg_m);
    CHECK(bio::read_file_text(dm + "/units.txt") == "m\n");
    CHECK(nlohmann::json::parse(bio::read_file_text(dm + "/truth/config.json"))["units"] == "m");
    auto check_scaled = [](const blendfuse::Tensor<float>& m, const blendfuse::Tensor<float>& mm) {
      REQUIRE(m.shape() == mm.shape());
      double worst = 0;
      for (Index i = 0; i < m.numel(); ++i)
        worst = std::max(worst, std::abs(1000.0 * m.data()[i] - mm.data()[i]) / (1.0 + std::abs(double(mm.data()[i]))));
      CHECK(worst < 1e-6);
    };
    for (const char* f : {"/truth/speech_bases.npy", "/truth/expression_bases.npy", "/templates/P01.npy",
                          "/speech/P01_sentence01.npy", "/expression/P01_smile01.npy"}) {
      CAPTURE(f);
      check_scaled(bio::load_npy<float>(dm + f), bio::load_npy<float>(dir + f));
    }
    check_scaled(bio::load_obj(dm + "/template.obj").vertices, bio::load_obj(dir + "/template.obj").vertices);
    for (const char* f : {"/regions/lips.txt", "/regions/weights.npy", "/split.json", "/truth/lip_pairs.npy",
                          "/truth/bilabial_frames.json", "/truth/speech/P01_sentence01.wA.npy"}) {
      CAPTURE(f);
      CHECK(bio::read_file_bytes(dm + f) == bio::read_file_bytes(dir + f));
    }
    const auto lm = bd::Dataset::load(dm);
    CHECK(lm.unit_mm == 1000.0);
    CHECK(lm.unit_source == "units.txt");
    fs::remove(dm + "/units.txt");
    CHECK(bd::Dataset::load(dm).unit_mm == 1000.0);  // and without units.txt, from its size
    CHECK(bd::Dataset::load(dir).unit_mm == 1.0);
    fs::remove_all(dm);
  }
  for (const auto& f : files) {
    CAPTURE(f);
    CHECK(bio::read_file_bytes(dir + "/" + f) == bio::read_file_bytes(dir2 + "/" + f));
  }
  fs::remove_all(dir);
  fs::remove_all(dir2);
}

TEST_CASE("configuration errors") {
  auto cfg = bd::ProceduralConfig::tiny();
  cfg.num_speech_bases = 2;
  CHECK_THROWS_AS(bd::make_face_model(cfg), blendfuse::ArgumentError);
  cfg = bd::ProceduralConfig::tiny();
  cfg.num_val = 2;
  CHECK_THROWS_AS(bd::make_face_model(cfg), blendfuse::ArgumentError);
  CHECK_THROWS_AS(bd::build_face_mesh(8, true), blendfuse::ArgumentError);
}
