// blendfuse benchmarks — rig solvers (rig/solve.hpp) on the procedural face (grid 72, 5,170 vertices,
// the ARKit-52 rig of rig/arkit.hpp), per frame:
//   rig/fit                  fitting L_G once from K = 12 blendshapes (basis, G = AᵀΩA, Cholesky, R·B)
//   rig/lg/weights           L_G on blendshape weights: p = L w (52 × 12)
//   rig/lg/deformation       L_G on a fused deformation: p = (G + λI)⁻¹ AᵀΩ d (52 × 15,510, then the solve)
//   rig/bounded/<smooth>     the bounded active-set solve, warm-started from the previous frame,
//                            smoothness 0 or 0.1, over a 3 s fused sequence
// "Fused" frames are eq. 13 with the generator's ground-truth blendshapes B = [B_A* | B_E*]: a
// speech sequence's clean weights with an expression sequence's (what an ideal fusion module
// outputs). Counters: us_per_frame, and the fit error of each solver (exact rig evaluation, mm,
// over the face region ω > 0) as rms_mm / max_mm.
#include "bench_common.hpp"

#include <chrono>

#include "blendfuse/data/procedural.hpp"
#include "blendfuse/rig/arkit.hpp"
#include "blendfuse/rig/solve.hpp"

using namespace blendfuse;

namespace {

struct Setup {
  data::FaceModel model;
  rig::Rig rig;
  Eigen::MatrixXd B;          // (3V, K) mm
  Eigen::MatrixXd W;          // (K, T) weights of the fused frames
  Tensor<float> fused;        // (T, V, 3) mm
};

const Setup& setup() {
  static const Setup s = [] {
    Setup s;
    data::ProceduralConfig cfg;
    cfg.num_subjects = 1;
    cfg.num_val = cfg.num_test = 0;
    cfg.phonemes = data::PhonemeSource::Random;
    cfg.num_expression_bases = 6;
    s.model = data::make_face_model(cfg);
    s.rig = rig::build_arkit52(s.model.mesh);
    const auto& b = s.model.bases;
    const Index V = s.model.mesh.num_vertices(), Ka = b.speech.dim(0), Ke = b.expression.dim(0);
    s.B.resize(3 * V, Ka + Ke);
    for (Index k = 0; k < Ka; ++k)
      for (Index i = 0; i < 3 * V; ++i) s.B(i, k) = b.speech[k * 3 * V + i];
    for (Index k = 0; k < Ke; ++k)
      for (Index i = 0; i < 3 * V; ++i) s.B(i, Ka + k) = b.expression[k * 3 * V + i];
    const auto sp = data::make_speech_sequence(s.model, 0, 0);
    const auto ex = data::make_expression_sequence(s.model, 0, 0);  // smile
    const Index T = sp.num_frames(), Te = ex.num_frames();
    s.W.resize(Ka + Ke, T);
    for (Index t = 0; t < T; ++t) {
      for (Index k = 0; k < Ka; ++k) s.W(k, t) = sp.w_speech(t, k);
      const Index te = std::min<Index>(Te - 1, t * Te / T);
      for (Index k = 0; k < Ke; ++k) s.W(Ka + k, t) = ex.w_expression(te, k);
    }
    const Eigen::MatrixXd D = s.B * s.W;  // (3V, T)
    s.fused = Tensor<float>({T, V, 3});
    for (Index t = 0; t < T; ++t)
      for (Index i = 0; i < 3 * V; ++i) s.fused[t * 3 * V + i] = static_cast<float>(D(i, t));
    return s;
  }();
  return s;
}

void set_error(benchmark::State& st, const rig::FitError& e) {
  st.counters["rms_mm"] = e.rms_mm;
  st.counters["max_mm"] = e.max_mm;
}

void fit(benchmark::State& st) {
  const auto& s = setup();
  for (auto _ : st) {
    auto m = rig::fit_linear_map(s.rig, s.B, s.model.mesh.weights, 1e-4);
    benchmark::DoNotOptimize(m.L.data());
  }
}

void lg_weights(benchmark::State& st) {
  const auto& s = setup();
  const auto m = rig::fit_linear_map(s.rig, s.B, s.model.mesh.weights, 1e-4);
  const Index T = s.W.cols();
  Eigen::VectorXd p(m.L.rows());
  Index t = 0;
  for (auto _ : st) {
    p.noalias() = m.L * s.W.col(t);
    benchmark::DoNotOptimize(p.data());
    t = (t + 1) % T;
  }
  set_error(st, rig::reconstruction_error(s.rig, (m.L * s.W).transpose(), s.fused, 1.0, s.model.mesh.weights));
  st.counters["us_per_frame"] = benchmark::Counter(1e-6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void lg_deformation(benchmark::State& st) {
  const auto& s = setup();
  const rig::RigProblem prob(s.rig, s.model.mesh.weights);
  const rig::LinearSolver lin(prob, 1e-4);
  const Index T = s.fused.dim(0), n = prob.vertices() * 3;
  Index t = 0;
  for (auto _ : st) {
    const Eigen::VectorXd p = lin.solve(s.fused.data() + t * n, 1.0);
    benchmark::DoNotOptimize(p.data());
    t = (t + 1) % T;
  }
  set_error(st, rig::reconstruction_error(s.rig, rig::solve_sequence_linear(lin, s.fused, 1.0), s.fused, 1.0, s.model.mesh.weights));
  st.counters["us_per_frame"] = benchmark::Counter(1e-6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void bounded(benchmark::State& st, double smooth) {
  const auto& s = setup();
  const rig::RigProblem prob(s.rig, s.model.mesh.weights);
  rig::BoundedOptions opt;
  opt.smooth = smooth;
  const rig::BoundedSolver solver(prob, opt);
  const Index T = s.fused.dim(0), n = prob.vertices() * 3;
  Eigen::VectorXd prev;
  Index t = 0;
  double iters = 0, frames = 0;
  for (auto _ : st) {
    rig::BoundedStats bs;
    const Eigen::VectorXd x = solver.solve(s.fused.data() + t * n, 1.0, t ? &prev : nullptr, nullptr, &bs);
    prev = x;
    iters += bs.iterations;
    frames += 1;
    t = (t + 1) % T;
  }
  rig::BoundedStats worst;
  set_error(st, rig::reconstruction_error(s.rig, solver.solve_sequence(s.fused, 1.0, &worst), s.fused, 1.0, s.model.mesh.weights));
  st.counters["active_set_steps"] = iters / std::max(1.0, frames);
  st.counters["kkt"] = worst.kkt;
  st.counters["us_per_frame"] = benchmark::Counter(1e-6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void register_all() {
  benchmark::RegisterBenchmark("rig/fit", fit)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("rig/lg/weights", lg_weights)->Unit(benchmark::kMicrosecond)->UseRealTime();
  benchmark::RegisterBenchmark("rig/lg/deformation", lg_deformation)->Unit(benchmark::kMicrosecond)->UseRealTime();
  for (double sm : {0.0, 0.1})
    benchmark::RegisterBenchmark(("rig/bounded/smooth:" + std::to_string(sm).substr(0, 3)).c_str(),
                                 [sm](benchmark::State& st) { bounded(st, sm); })
        ->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BFBENCH_MAIN(register_all)
