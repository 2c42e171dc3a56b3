// Rigs (rig/rig.hpp), the ARKit-52 rig of the procedural face (rig/arkit.hpp) and the two solvers
// (rig/solve.hpp): file round trip and bad files, the ARKit shapes' semantics, L_G against a dense
// least-squares reference, the bounded solver against the KKT conditions, and the FLAME-style jaw
// on a synthetic model built here (FLAME itself cannot be downloaded).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "blendfuse/core/rng.hpp"
#include "blendfuse/data/face_mesh.hpp"
#include "blendfuse/data/procedural.hpp"
#include "blendfuse/rig/arkit.hpp"
#include "blendfuse/rig/rig.hpp"
#include "blendfuse/rig/solve.hpp"

using namespace blendfuse;
namespace fs = std::filesystem;

namespace {

std::string tmp_path(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / "blendfuse_test_rig";
  fs::create_directories(d);
  return (d / name).string();
}

const data::FaceMesh& tiny_mesh() {
  static const data::FaceMesh m = data::build_face_mesh(25, true);
  return m;
}
const rig::Rig& tiny_arkit() {
  static const rig::Rig r = rig::build_arkit52(tiny_mesh());
  return r;
}

/// A small random rig; with `jaw` a FLAME-style jaw (joint behind the face, weights on the lower
/// half, small random pose correctives).
rig::Rig random_rig(Index V, Index S, bool jaw, std::uint64_t seed) {
  Rng rng(seed);
  rig::Rig r;
  r.name = "random";
  r.neutral = Tensor<float>({V, 3});
  for (Index i = 0; i < r.neutral.numel(); ++i) r.neutral[i] = static_cast<float>(rng.uniform(-50, 50));
  r.shapes = Tensor<float>({S, V, 3});
  for (Index i = 0; i < r.shapes.numel(); ++i) r.shapes[i] = static_cast<float>(rng.normal(0, 2));
  for (Index s = 0; s < S; ++s) {
    r.names.push_back("s" + std::to_string(s));
    r.flags.push_back(0);
  }
  if (jaw) {
    rig::Jaw j;
    j.joint = {0.0, 5.0, -60.0};
    j.weights = Tensor<float>({V});
    for (Index v = 0; v < V; ++v) j.weights[v] = r.neutral(v, 1) < 0 ? 1.0f : 0.2f;
    j.posedirs = Tensor<float>({9, V, 3});
    for (Index i = 0; i < j.posedirs.numel(); ++i) j.posedirs[i] = static_cast<float>(rng.normal(0, 1.0));
    r.jaw = j;
  }
  return r;
}

Eigen::VectorXd random_params(const rig::Rig& r, Rng& rng, double jaw_scale = 0.1) {
  Eigen::VectorXd p = Eigen::VectorXd::Zero(r.num_params());
  for (Index s = 0; s < r.num_shapes(); ++s)
    if (r.supported(s)) p[s] = rng.uniform(0.0, 1.0);
  for (Index k = r.num_shapes(); k < r.num_params(); ++k) p[k] = rng.uniform(-jaw_scale, jaw_scale);
  return p;
}

/// Mirror partner of every vertex (x → −x), by position and side of the mouth slit (the two lip
/// copies coincide at rest).
std::vector<Index> mirror_vertices(const Tensor<float>& v, const std::vector<std::int8_t>& side) {
  const Index V = v.dim(0);
  using Key = std::tuple<long, long, long, int>;
  auto key = [](double x, double y, double z, int s) {
    return Key{std::lround(x * 1e3), std::lround(y * 1e3), std::lround(z * 1e3), s};
  };
  std::map<Key, Index> all;
  for (Index i = 0; i < V; ++i) all[key(v(i, 0), v(i, 1), v(i, 2), side[static_cast<std::size_t>(i)])] = i;
  std::vector<Index> out(static_cast<std::size_t>(V), -1);
  for (Index i = 0; i < V; ++i) {
    const auto it = all.find(key(-v(i, 0), v(i, 1), v(i, 2), side[static_cast<std::size_t>(i)]));
    if (it != all.end()) out[static_cast<std::size_t>(i)] = it->second;
  }
  return out;
}

}  // namespace

// ---- file format ---------------------------------------------------------------------------------
TEST_CASE("rig: save/load round trip keeps shapes, names, flags, unit and jaw") {
  rig::Rig r = random_rig(30, 4, true, 1);
  r.flags[2] = rig::kUnsupported;
  for (Index i = 0; i < 30 * 3; ++i) r.shapes[2 * 30 * 3 + i] = 0.0f;
  r.unit_mm = 1000.0;
  r.name = "test";
  const std::string p = tmp_path("roundtrip.safetensors");
  r.save(p);
  const rig::Rig q = rig::Rig::load(p);
  CHECK(q.name == "test");
  CHECK(q.units() == "m");
  CHECK(q.names == r.names);
  CHECK(q.flags == r.flags);
  CHECK(!q.supported(2));
  REQUIRE(q.jaw.has_value());
  CHECK(q.jaw->joint == r.jaw->joint);
  for (Index i = 0; i < r.shapes.numel(); ++i) REQUIRE(q.shapes[i] == r.shapes[i]);
  for (Index i = 0; i < r.neutral.numel(); ++i) REQUIRE(q.neutral[i] == r.neutral[i]);
  for (Index i = 0; i < r.jaw->posedirs.numel(); ++i) REQUIRE(q.jaw->posedirs[i] == r.jaw->posedirs[i]);
  CHECK(q.param_names().back() == "jaw_rz");
  CHECK(q.num_params() == 7);
}

TEST_CASE("rig: bad files give errors naming the file") {
  const rig::Rig r = random_rig(10, 2, false, 2);
  const std::string good = tmp_path("good.safetensors");
  r.save(good);
  auto expect_error = [](const std::string& path, const std::string& needle) {
    try {
      (void)rig::Rig::load(path);
      FAIL("loaded a bad rig file ", path);
    } catch (const IoError& e) {
      const std::string msg = e.what();
      CHECK_MESSAGE(msg.find(path) != std::string::npos, msg);
      CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
    }
  };
  expect_error(tmp_path("missing.safetensors"), "file not found");
  {  // truncated
    const auto bytes = io::read_file_bytes(good);
    const std::string p = tmp_path("trunc.safetensors");
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size() / 2));
    expect_error(p, "truncated");
  }
  {  // another safetensors file (no rig metadata)
    io::SafeTensorsWriter w;
    w.add("x", Tensor<float>({2}));
    const std::string p = tmp_path("notarig.safetensors");
    w.save(p);
    expect_error(p, "not a blendfuse rig");
  }
  auto with = [&](const std::string& name, auto edit) {
    io::SafeTensorsWriter w;
    w.add("neutral", r.neutral);
    w.add("shapes", r.shapes);
    w.add("flags", Tensor<std::int32_t>::from({2}, {0, 0}));
    w.set_metadata("format", rig::kRigFormat);
    w.set_metadata("version", "1");
    w.set_metadata("unit", "mm");
    w.set_metadata("names", R"(["a", "b"])");
    edit(w);
    const std::string p = tmp_path(name);
    w.save(p);
    return p;
  };
  CHECK_NOTHROW(rig::Rig::load(with("ok.safetensors", [](io::SafeTensorsWriter&) {})));
  expect_error(with("nounit.safetensors", [](io::SafeTensorsWriter& w) { w.set_metadata("unit", ""); }), "unit");
  expect_error(with("badunit.safetensors", [](io::SafeTensorsWriter& w) { w.set_metadata("unit", "inch"); }), "inch");
  expect_error(with("names.safetensors", [](io::SafeTensorsWriter& w) { w.set_metadata("names", R"(["a"])"); }),
               "shapes must have shape");
  expect_error(with("dupe.safetensors", [](io::SafeTensorsWriter& w) { w.set_metadata("names", R"(["a", "a"])"); }),
               "appears twice");
  expect_error(with("json.safetensors", [](io::SafeTensorsWriter& w) { w.set_metadata("names", "[a"); }), "not valid JSON");
  expect_error(with("flag.safetensors", [](io::SafeTensorsWriter& w) { w.add("flags", Tensor<std::int32_t>::from({2}, {1, 0})); }),
               "flagged unsupported but is not all zero");
  expect_error(with("jaw.safetensors", [](io::SafeTensorsWriter& w) { w.add("jaw.weights", Tensor<float>({10})); }),
               "jaw needs all of");
  expect_error(with("nan.safetensors", [&](io::SafeTensorsWriter& w) {
                 Tensor<float> n = r.neutral.clone();
                 n[4] = std::nanf("");
                 w.add("neutral", n);
               }),
               "non-finite");
}

// ---- ARKit-52 ------------------------------------------------------------------------------------
TEST_CASE("arkit52: 52 official names in order, unsupported shapes zero and flagged") {
  const rig::Rig& r = tiny_arkit();
  REQUIRE(r.num_shapes() == 52);
  CHECK(r.names.front() == "eyeBlinkLeft");
  CHECK(r.names[17] == "jawOpen");
  CHECK(r.names.back() == "tongueOut");
  for (std::size_t i = 0; i < 52; ++i) CHECK(r.names[i] == rig::arkit52_names()[i]);
  const Index V = r.num_vertices();
  int flagged = 0;
  for (Index s = 0; s < 52; ++s) {
    const std::string& n = r.names[static_cast<std::size_t>(s)];
    const bool expect_unsupported = n.rfind("eyeLook", 0) == 0 || n == "tongueOut";
    CHECK_MESSAGE(r.supported(s) == !expect_unsupported, n);
    double norm = 0;
    for (Index i = 0; i < V * 3; ++i) norm += std::abs(r.shapes[s * V * 3 + i]);
    if (expect_unsupported) {
      CHECK_MESSAGE(norm == 0.0, n);
      ++flagged;
    } else {
      CHECK_MESSAGE(norm > 1.0, n, " does not move the face");
    }
  }
  CHECK(flagged == 9);
  CHECK(r.mirror_pairs().size() == 20);  // 7 eye, jaw, mouth side, 7 mouth, 2 brow, cheek, nose
}

TEST_CASE("arkit52: jawOpen opens every lip pair, mouthClose cancels it") {
  const auto& m = tiny_mesh();
  const rig::Rig& r = tiny_arkit();
  const Index jo = r.find("jawOpen"), mc = r.find("mouthClose");
  REQUIRE(jo >= 0);
  std::vector<double> p(52, 0.0);
  p[static_cast<std::size_t>(jo)] = 1.0;
  const Tensor<float> open = r.evaluate(p.data());
  double centre_gap = 0;
  for (const auto& [u, l] : m.lip_pairs) {
    const double gap = double(open(u, 1)) - open(l, 1);
    CHECK(gap > 0.1);
    centre_gap = std::max(centre_gap, gap);
  }
  CHECK(centre_gap > 0.6 * rig::kArkitJawOpenMm);
  CHECK(data::lip_gap(r.neutral.data(), m) == 0.0);
  p[static_cast<std::size_t>(mc)] = 1.0;
  const Tensor<float> closed = r.evaluate(p.data());
  CHECK(data::lip_gap(closed.data(), m) < 1e-3);
}

TEST_CASE("arkit52: Left/Right shapes are mirror images; Left moves the +x side") {
  const rig::Rig& r = tiny_arkit();
  const Index V = r.num_vertices();
  const auto mir = mirror_vertices(r.neutral, tiny_mesh().side);
  for (Index i = 0; i < V; ++i) REQUIRE(mir[static_cast<std::size_t>(i)] >= 0);
  const auto pairs = r.mirror_pairs();
  REQUIRE(!pairs.empty());
  for (const auto& [l, rr] : pairs) {
    double worst = 0, left_side = 0, right_side = 0;
    for (Index v = 0; v < V; ++v) {
      const Index w = mir[static_cast<std::size_t>(v)];
      worst = std::max(worst, std::abs(double(r.shapes(l, v, 0)) + r.shapes(rr, w, 0)));
      worst = std::max(worst, std::abs(double(r.shapes(l, v, 1)) - r.shapes(rr, w, 1)));
      worst = std::max(worst, std::abs(double(r.shapes(l, v, 2)) - r.shapes(rr, w, 2)));
      const double mag = std::abs(r.shapes(l, v, 0)) + std::abs(r.shapes(l, v, 1)) + std::abs(r.shapes(l, v, 2));
      (r.neutral(v, 0) > 0 ? left_side : right_side) += mag;
    }
    CHECK_MESSAGE(worst < 1e-4, r.names[static_cast<std::size_t>(l)], " vs ", r.names[static_cast<std::size_t>(rr)]);
    if (r.supported(l) && r.names[static_cast<std::size_t>(l)] != "jawLeft" && r.names[static_cast<std::size_t>(l)] != "mouthLeft")
      CHECK_MESSAGE(left_side > 3 * right_side, r.names[static_cast<std::size_t>(l)]);
  }
  const Index sl = r.find("mouthSmileLeft");
  double up = 0;
  for (Index v = 0; v < V; ++v) up += r.shapes(sl, v, 1);
  CHECK(up > 0);
}

TEST_CASE("arkit52: deterministic, and written by the generator in the data's unit") {
  const auto a = io::SafeTensorsWriter{};
  (void)a;
  const std::string p1 = tmp_path("a1.safetensors"), p2 = tmp_path("a2.safetensors");
  rig::build_arkit52(data::build_face_mesh(25, true)).save(p1);
  rig::build_arkit52(data::build_face_mesh(25, true)).save(p2);
  CHECK(io::read_file_bytes(p1) == io::read_file_bytes(p2));

  auto cfg = data::ProceduralConfig::tiny();
  cfg.num_subjects = 3;
  cfg.speech_per_subject = 1;
  cfg.expression_per_subject = 1;
  const std::string dir = tmp_path("gen_mm");
  data::write_dataset(dir, cfg);
  const rig::Rig mm = rig::Rig::load(dir + "/rig/arkit52.safetensors");
  const auto ds = data::Dataset::load(dir);
  CHECK(mm.units() == "mm");
  CHECK(mm.num_vertices() == ds.num_vertices());
  for (Index i = 0; i < mm.neutral.numel(); ++i) REQUIRE(mm.neutral[i] == ds.template_vertices[i]);
  cfg.unit_mm = 1000.0;
  const std::string dirm = tmp_path("gen_m");
  data::write_dataset(dirm, cfg);
  const rig::Rig m = rig::Rig::load(dirm + "/rig/arkit52.safetensors");
  CHECK(m.units() == "m");
  for (Index i = 0; i < m.shapes.numel(); ++i)
    REQUIRE(std::abs(double(m.shapes[i]) * 1000.0 - mm.shapes[i]) <= 1e-6 * (1 + std::abs(mm.shapes[i])));
  // the solvers work in mm: the same basis from either file
  CHECK((m.basis_mm() - mm.basis_mm()).cwiseAbs().maxCoeff() < 1e-4);
}

// ---- L_G -----------------------------------------------------------------------------------------
TEST_CASE("L_G: recovers known weights exactly when the target is in the rig's span") {
  Rng rng(5);
  {  // a full-rank rig: the parameters themselves
    const rig::Rig r = random_rig(300, 12, true, 3);
    const rig::RigProblem prob(r);
    const rig::LinearSolver solver(prob, 0.0);
    for (int trial = 0; trial < 3; ++trial) {
      const Eigen::VectorXd p = random_params(r, rng);
      const Eigen::VectorXd d = prob.A() * p;
      std::vector<float> df(d.data(), d.data() + d.size());
      const Eigen::VectorXd q = solver.solve(df.data(), 1.0);
      CHECK((q - p).cwiseAbs().maxCoeff() < 1e-5);
    }
  }
  const rig::Rig& r = tiny_arkit();
  const auto& m = tiny_mesh();
  const rig::RigProblem prob(r, m.weights);
  // ARKit has opposite pairs (jawLeft = −jawRight, mouthLeft = −mouthRight): no unique
  // unregularised solution, and the solver says so
  CHECK_THROWS_WITH_AS(rig::LinearSolver(prob, 0.0), doctest::Contains("linearly dependent"), ArgumentError);
  // with a tiny ridge the reconstruction is exact (the minimum-norm split of the opposite pairs)
  const rig::LinearSolver solver(prob, 1e-10);
  for (int trial = 0; trial < 3; ++trial) {
    const Eigen::VectorXd p = random_params(r, rng);
    const Eigen::VectorXd d = prob.A() * p;
    Tensor<float> df({1, r.num_vertices(), 3});
    for (Index i = 0; i < df.numel(); ++i) df[i] = static_cast<float>(d[i]);
    const Eigen::VectorXd q = solver.solve(df.data(), 1.0);
    const auto err = rig::reconstruction_error(r, q.transpose(), df, 1.0, m.weights);
    CHECK(err.rms_mm < 1e-3);
    for (Index i = 0; i < r.num_params(); ++i) {
      const std::string& n = r.names[static_cast<std::size_t>(i)];
      if (n == "jawLeft" || n == "jawRight" || n == "mouthLeft" || n == "mouthRight") continue;
      CHECK_MESSAGE(std::abs(q[i] - p[i]) < 1e-3, n);
    }
    CHECK(q[r.find("jawLeft")] - q[r.find("jawRight")] == doctest::Approx(p[r.find("jawLeft")] - p[r.find("jawRight")]).epsilon(1e-4));
  }
  // blendshapes that are rig shapes → L_G is a selection matrix
  Eigen::MatrixXd B(3 * r.num_vertices(), 2);
  B.col(0) = prob.A().col(r.find("jawOpen"));
  B.col(1) = 0.5 * prob.A().col(r.find("mouthSmileLeft")) + prob.A().col(r.find("browInnerUp"));
  const auto map = rig::fit_linear_map(r, B, m.weights, 1e-12);
  CHECK(map.L(r.find("jawOpen"), 0) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(map.L(r.find("mouthSmileLeft"), 1) == doctest::Approx(0.5).epsilon(1e-6));
  CHECK(map.L(r.find("browInnerUp"), 1) == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(std::abs(map.L(r.find("mouthSmileRight"), 1)) < 1e-6);
}

TEST_CASE("L_G: matches a dense weighted ridge least-squares reference off the span") {
  const rig::Rig& r = tiny_arkit();
  const auto& m = tiny_mesh();
  const Index V = r.num_vertices();
  const double l2 = 1e-3;
  const rig::RigProblem prob(r, m.weights);
  const rig::LinearSolver solver(prob, l2);
  Rng rng(7);
  Eigen::MatrixXd B(3 * V, 5);
  for (Index i = 0; i < B.size(); ++i) B.data()[i] = rng.normal(0, 1.0);
  const Eigen::MatrixXd L = solver.map(B);
  // reference: [√Ω A_F; √(λ s) I] x = [√Ω b; 0] by Householder QR, unsupported columns dropped
  std::vector<Index> F;
  for (Index p = 0; p < r.num_params(); ++p)
    if (r.supported(p)) F.push_back(p);
  const Index n = static_cast<Index>(F.size());
  Eigen::MatrixXd M = Eigen::MatrixXd::Zero(3 * V + n, n);
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < 3 * V; ++i) M(i, j) = std::sqrt(double(m.weights[i / 3])) * prob.A()(i, F[static_cast<std::size_t>(j)]);
  double tr = 0;
  for (Index j = 0; j < n; ++j) tr += (M.col(j).head(3 * V)).squaredNorm();
  M.bottomRows(n).diagonal().setConstant(std::sqrt(l2 * tr / static_cast<double>(n)));
  for (Index k = 0; k < B.cols(); ++k) {
    Eigen::VectorXd rhs = Eigen::VectorXd::Zero(3 * V + n);
    for (Index i = 0; i < 3 * V; ++i) rhs[i] = std::sqrt(double(m.weights[i / 3])) * B(i, k);
    const Eigen::VectorXd x = M.householderQr().solve(rhs);
    for (Index j = 0; j < n; ++j) CHECK(L(F[static_cast<std::size_t>(j)], k) == doctest::Approx(x[j]).epsilon(1e-7).scale(1e-6));
    for (Index p = 0; p < r.num_params(); ++p)
      if (!r.supported(p)) CHECK(L(p, k) == 0.0);
  }
  // map file round trip
  auto map = rig::fit_linear_map(r, B, m.weights, l2, 2);
  map.fit.rms_mm = 1.5;
  const std::string p = tmp_path("map.safetensors");
  map.save(p);
  const auto q = rig::LinearMap::load(p);
  CHECK((q.L - map.L).cwiseAbs().maxCoeff() == 0.0);
  CHECK(q.k_a == 2);
  CHECK(q.fit.rms_mm == 1.5);
  CHECK_NOTHROW(q.check_rig(r, p));
  CHECK_THROWS_AS(q.check_rig(random_rig(V, 3, false, 1), p), IoError);
  CHECK_THROWS_WITH_AS(rig::LinearMap::load(tmp_path("nomap.safetensors")), doctest::Contains("nomap.safetensors"), IoError);
}

// ---- bounded solver ------------------------------------------------------------------------------
TEST_CASE("bounded: active set satisfies KKT on random box QPs") {
  Rng rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    const Index n = 3 + static_cast<Index>(rng.below(40));
    Eigen::MatrixXd A(n + 5, n);
    for (Index i = 0; i < A.size(); ++i) A.data()[i] = rng.normal(0, 1);
    Eigen::MatrixXd H = A.transpose() * A;
    H.diagonal().array() += 1e-3;
    Eigen::VectorXd c(n), lo(n), hi(n), x0(n);
    for (Index i = 0; i < n; ++i) {
      c[i] = rng.normal(0, 5);
      lo[i] = 0;
      hi[i] = 1;
      x0[i] = rng.uniform(-1, 2);
    }
    if (trial % 3 == 0) lo[0] = hi[0] = 0;  // a fixed variable
    rig::BoundedStats st;
    const Eigen::VectorXd x = rig::solve_box_qp(H, c, lo, hi, x0, 1e-12, 1000, &st);
    CHECK(st.converged);
    const Eigen::VectorXd g = H * x - c;
    const double tol = 1e-8 * (c.lpNorm<Eigen::Infinity>() + H.diagonal().maxCoeff());
    for (Index i = 0; i < n; ++i) {
      REQUIRE(x[i] >= lo[i]);
      REQUIRE(x[i] <= hi[i]);
      if (lo[i] == hi[i]) continue;
      if (x[i] > lo[i] && x[i] < hi[i]) CHECK(std::abs(g[i]) <= tol);
      else if (x[i] == lo[i]) CHECK(g[i] >= -tol);
      else CHECK(g[i] <= tol);
    }
    // the unconstrained minimiser, when it lies inside the box, is the answer
    const Eigen::VectorXd u = H.llt().solve(c);
    if ((u.array() > lo.array()).all() && (u.array() < hi.array()).all()) CHECK((u - x).norm() < 1e-8);
  }
}

TEST_CASE("bounded: per-frame rig solves satisfy KKT with smoothness and symmetry, warm-started") {
  const rig::Rig& r = tiny_arkit();
  const auto& m = tiny_mesh();
  const Index V = r.num_vertices(), T = 8;
  const rig::RigProblem prob(r, m.weights);
  Rng rng(13);
  // targets: a rig motion pushed out of range (weights in [−0.5, 1.5]) plus noise
  Tensor<float> seq({T, V, 3});
  Eigen::VectorXd p = random_params(r, rng);
  for (Index t = 0; t < T; ++t) {
    for (Index s = 0; s < 52; ++s)
      if (r.supported(s)) p[s] = std::clamp(p[s] + rng.normal(0, 0.3), -0.5, 1.5);
    const Eigen::VectorXd d = prob.A() * p;
    for (Index i = 0; i < 3 * V; ++i) seq[t * 3 * V + i] = static_cast<float>(d[i] + rng.normal(0, 0.3));
  }
  for (const auto& [smooth, sym] : std::vector<std::pair<double, double>>{{0, 0}, {0.5, 0}, {0, 2.0}, {0.3, 0.5}}) {
    rig::BoundedOptions opt;
    opt.smooth = smooth;
    opt.symmetry = sym;
    const rig::BoundedSolver solver(prob, opt);
    Eigen::VectorXd prev;
    for (Index t = 0; t < T; ++t) {
      const Eigen::VectorXd b = prob.rhs(seq.data() + t * 3 * V, 1.0);
      rig::BoundedStats st;
      const Eigen::VectorXd x = solver.solve_rhs(b, t ? &prev : nullptr, nullptr, &st);
      CHECK(st.converged);
      const Eigen::MatrixXd& H = solver.hessian(t > 0);
      const Eigen::VectorXd c = solver.linear_term(b, t ? &prev : nullptr);
      const Eigen::VectorXd g = H * x - c;
      const double tol = 1e-8 * (c.lpNorm<Eigen::Infinity>() + H.diagonal().maxCoeff());
      int at_bounds = 0;
      for (Index i = 0; i < r.num_params(); ++i) {
        REQUIRE(x[i] >= 0.0);
        REQUIRE(x[i] <= 1.0);
        if (!r.supported(i)) {
          CHECK(x[i] == 0.0);
          continue;
        }
        if (x[i] > 0 && x[i] < 1) CHECK(std::abs(g[i]) <= tol);
        else if (x[i] == 0) {
          CHECK(g[i] >= -tol);
          ++at_bounds;
        } else {
          CHECK(g[i] <= tol);
          ++at_bounds;
        }
      }
      CHECK(at_bounds > 0);  // the targets are out of range: the box is active
      // cold start gives the same minimiser (strictly convex)
      const Eigen::VectorXd zero = Eigen::VectorXd::Zero(r.num_params());
      const Eigen::VectorXd y = solver.solve_rhs(b, t ? &prev : nullptr, &zero);
      CHECK((y - x).cwiseAbs().maxCoeff() < 1e-7);
      prev = x;
    }
  }
  // symmetry pulls mirror pairs together; smoothness shrinks frame-to-frame change
  auto spread = [&](const Eigen::MatrixXd& W) {
    double s = 0;
    for (const auto& [l, rr] : prob.mirror_pairs()) s += (W.col(l) - W.col(rr)).squaredNorm();
    return s;
  };
  auto jitter = [&](const Eigen::MatrixXd& W) { return (W.bottomRows(T - 1) - W.topRows(T - 1)).squaredNorm(); };
  rig::BoundedOptions base, sym, smo;
  sym.symmetry = 10;
  smo.smooth = 5;
  const auto W0 = rig::BoundedSolver(prob, base).solve_sequence(seq, 1.0);
  const auto Ws = rig::BoundedSolver(prob, sym).solve_sequence(seq, 1.0);
  const auto Wt = rig::BoundedSolver(prob, smo).solve_sequence(seq, 1.0);
  CHECK(spread(Ws) < 0.2 * spread(W0));
  CHECK(jitter(Wt) < 0.5 * jitter(W0));
  // inside the box the bounded solve equals the linear one (a full-rank rig: ARKit's opposite
  // pairs make the ridge solution split them into a negative and a positive weight)
  const rig::Rig rr = random_rig(300, 12, false, 4);
  const rig::RigProblem pr(rr);
  Tensor<float> inside({1, 300, 3});
  Eigen::VectorXd pin(12);
  for (Index s = 0; s < 12; ++s) pin[s] = 0.2 + 0.6 * rng.uniform();
  const Eigen::VectorXd d = pr.A() * pin;
  for (Index i = 0; i < 900; ++i) inside[i] = static_cast<float>(d[i]);
  const auto lin = rig::solve_sequence_linear(rig::LinearSolver(pr, 1e-4), inside, 1.0);
  const auto bnd = rig::BoundedSolver(pr, base).solve_sequence(inside, 1.0);
  CHECK((lin - bnd).cwiseAbs().maxCoeff() < 1e-6);
  CHECK((lin.row(0).transpose() - pin).cwiseAbs().maxCoeff() < 1e-2);
}

// ---- FLAME-style jaw on a synthetic model --------------------------------------------------------
TEST_CASE("flame-like rig: jaw tangent matches finite differences; small rotations are recovered") {
  // A synthetic FLAME-like rig on the procedural face: 10 random smooth "expression" shapes, the
  // jaw joint behind the face, skinning weights on the lower face, random pose correctives.
  const auto& m = tiny_mesh();
  const Index V = m.num_vertices(), S = 10;
  Rng rng(17);
  rig::Rig r;
  r.name = "flame-synthetic";
  r.unit_mm = 1000.0;  // FLAME is in metres
  r.neutral = Tensor<float>({V, 3});
  for (Index i = 0; i < r.neutral.numel(); ++i) r.neutral[i] = static_cast<float>(m.vertices[i] / 1000.0);
  r.shapes = Tensor<float>({S, V, 3});
  for (Index s = 0; s < S; ++s) {
    const double cx = rng.uniform(-50, 50), cy = rng.uniform(-80, 60);
    const double dx = rng.normal(0, 3), dy = rng.normal(0, 3), dz = rng.normal(0, 3);
    for (Index v = 0; v < V; ++v) {
      const double w = data::detail::bump(m.vertices(v, 0), m.vertices(v, 1), cx, cy, 40, 40);
      r.shapes(s, v, 0) = static_cast<float>(w * dx / 1000);
      r.shapes(s, v, 1) = static_cast<float>(w * dy / 1000);
      r.shapes(s, v, 2) = static_cast<float>(w * dz / 1000);
    }
    r.names.push_back("exp" + std::to_string(s));
    r.flags.push_back(0);
  }
  rig::Jaw j;
  j.joint = {0.0, 0.005, -0.075};
  j.weights = Tensor<float>({V});
  j.posedirs = Tensor<float>({9, V, 3});
  for (Index v = 0; v < V; ++v) {
    j.weights[v] = static_cast<float>(data::detail::smoothstep01(0.5 + 0.5 * (m.mouth_y - m.vertices(v, 1)) / 14.0));
    for (int q = 0; q < 9; ++q)
      for (int c = 0; c < 3; ++c) j.posedirs(q, v, c) = static_cast<float>(j.weights[v] * rng.normal(0, 0.002));
  }
  r.jaw = j;
  r.validate("synthetic");
  // round trip
  const std::string path = tmp_path("flame_like.safetensors");
  r.save(path);
  const rig::Rig q = rig::Rig::load(path);
  REQUIRE(q.jaw.has_value());
  CHECK(q.num_params() == S + 3);
  // θ = 0 → neutral; tangent = finite differences
  std::vector<double> p(static_cast<std::size_t>(S + 3), 0.0);
  const auto zero = q.offsets_mm(p.data());
  for (double z : zero) REQUIRE(z == 0.0);
  const Eigen::MatrixXd A = q.basis_mm();
  for (int k = 0; k < 3; ++k) {
    const double h = 1e-6;
    p[static_cast<std::size_t>(S + k)] = h;
    const auto plus = q.offsets_mm(p.data());
    p[static_cast<std::size_t>(S + k)] = -h;
    const auto minus = q.offsets_mm(p.data());
    p[static_cast<std::size_t>(S + k)] = 0;
    double worst = 0, scale = 0;
    for (Index i = 0; i < 3 * V; ++i) {
      const double fd = (plus[static_cast<std::size_t>(i)] - minus[static_cast<std::size_t>(i)]) / (2 * h);
      worst = std::max(worst, std::abs(fd - A(i, S + k)));
      scale = std::max(scale, std::abs(fd));
    }
    CHECK(scale > 1.0);  // mm per radian: the jaw moves vertices
    CHECK(worst < 1e-5 * scale);
  }
  // frames with known expression weights and a small jaw opening θ: the linear fit recovers the
  // weights; the exact rig error is the linearisation error only, O(θ²) (halving θ quarters it)
  Eigen::VectorXd truth = Eigen::VectorXd::Zero(S + 3);
  for (Index s = 0; s < S; ++s) truth[s] = rng.normal(0, 1);
  const rig::RigProblem prob(q);
  const rig::LinearSolver lin(prob, 0.0);
  std::vector<double> errs;
  for (double theta : {0.05, 0.025}) {
    truth[S] = theta;
    std::vector<double> tp(truth.data(), truth.data() + truth.size());
    const auto off = q.offsets_mm(tp.data());
    Tensor<float> target({1, V, 3});
    for (Index i = 0; i < 3 * V; ++i) target[i] = static_cast<float>(off[static_cast<std::size_t>(i)] / 1000.0);  // metres
    const Eigen::VectorXd x = lin.solve(target.data(), 1000.0);
    CHECK(std::abs(x[S] - theta) < 0.1 * theta);
    for (Index s = 0; s < S; ++s) CHECK(std::abs(x[s] - truth[s]) < 0.1);
    const auto e = rig::reconstruction_error(q, x.transpose(), target, 1000.0);
    errs.push_back(e.rms_mm);
    const auto e_truth = rig::reconstruction_error(q, truth.transpose(), target, 1000.0);
    CHECK(e_truth.rms_mm < 1e-3);  // float storage in metres only
  }
  CHECK(errs[0] > 0);
  CHECK(errs[0] / errs[1] == doctest::Approx(4.0).epsilon(0.25));
}
