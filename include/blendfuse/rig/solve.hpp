// blendfuse — from our deformations to a rig's parameters: the paper's linear map L_G (eq. 14–15)
// and a bounded per-frame solve.
//
// Both fit the rig's linearised basis A (3V × P, mm; Rig::basis_mm) to a target deformation d
// (3V, converted to mm) under per-vertex weights ω (the dataset's regions/weights.npy: 1 on the
// skin, up to 5 on the lips — the ω_k of eq. 15; vertices with ω = 0 are outside the face region):
//   E(p) = Σ_k ω_k ‖(A p − d)_k‖² + λ‖p‖²                                (eq. 14 with eq. 15)
// The L2 term is on the rig parameters. Regularisation strengths are RELATIVE, dimensionless:
// λ_abs = λ · s with s = tr(G)/P', G = AᵀΩA and P' the number of supported parameters (the mean
// squared weighted norm of a column), so the same λ means the same on any mesh size or unit.
//
// (a) LinearSolver / fit_linear_map — the paper's L_G. The minimiser is p = R d with
//     R = (G + λ_abs I)⁻¹ AᵀΩ (P × 3V). Our fused deformation is ΔV = B w (eq. 13, B = [B_A|B_E],
//     3V × K), so L_G = R B (P × K) maps blendshape weights to rig parameters: fitted once from
//     the learned blendshapes, a frame then costs one P×K product (L·w). R d gives the same p from
//     a deformation (for outputs in span B: R d = R B w = L w), at P·3V multiply-adds.
// (b) BoundedSolver — per frame, for rigs whose weights must stay in range:
//     min ½pᵀHp − cᵀp  s.t. lo ≤ p ≤ hi,
//     H = G + λ_abs I + μ_abs I + σ_abs Σ_(l,r) (e_l − e_r)(e_l − e_r)ᵀ,  c = AᵀΩd + μ_abs p_prev
//     (μ: temporal smoothness towards the previous frame's solution, not on the first frame;
//     σ: left/right symmetry over the rig's mirror pairs). Shape weights are boxed to [lo, hi]
//     (default [0, 1]), unsupported shapes to [0, 0], jaw rotations are free. Solved exactly by a
//     primal active-set method on the small P × P system (Cholesky of the free block per step),
//     warm-started from the previous frame's solution and active set; the result satisfies the
//     KKT conditions to `tol` (relative): free → ∂f ≈ 0, at lo → ∂f ≥ 0, at hi → ∂f ≤ 0.
// Errors: reconstruction_error() evaluates the rig EXACTLY (jaw rotations included) and reports
// the vertex RMS and max distance in mm over the face region (ω > 0).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/safetensors.hpp"
#include "blendfuse/rig/rig.hpp"

namespace blendfuse::rig {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Vertex error of a rig reconstruction, mm, over the face region.
struct FitError {
  double rms_mm = 0;  // sqrt(mean over region vertices and frames of |rig − target|²)
  double max_mm = 0;  // largest vertex distance
  Index frames = 0, vertices = 0;
};

/// Per-vertex weights ω as doubles: `w` (V,) if given, else ones; checks size and sign.
inline std::vector<double> vertex_weights_or_ones(const Tensor<float>& w, Index V) {
  std::vector<double> out(static_cast<std::size_t>(V), 1.0);
  if (w.empty()) return out;
  BF_CHECK(w.numel() == V, ShapeError, "rig solver: ", w.numel(), " vertex weights for ", V, " vertices");
  for (Index i = 0; i < V; ++i) {
    BF_CHECK(std::isfinite(w[i]) && w[i] >= 0, ArgumentError, "rig solver: vertex weight ", w[i], " at vertex ", i,
             " is negative or not finite");
    out[static_cast<std::size_t>(i)] = w[i];
  }
  return out;
}

/// The shared precomputation of both solvers: A, ΩA, G = AᵀΩA and the scale s.
class RigProblem {
 public:
  RigProblem(const Rig& rig, const Tensor<float>& vertex_weights = {})
      : V_(rig.num_vertices()), P_(rig.num_params()), S_(rig.num_shapes()),
        omega_(vertex_weights_or_ones(vertex_weights, rig.num_vertices())) {
    A_ = rig.basis_mm();
    Eigen::VectorXd w3(3 * V_);
    for (Index v = 0; v < V_; ++v) w3.segment<3>(3 * v).setConstant(omega_[static_cast<std::size_t>(v)]);
    AtW_ = (A_.array().colwise() * w3.array()).matrix().transpose();
    G_ = AtW_ * A_;
    fixed_.assign(static_cast<std::size_t>(P_), false);
    double tr = 0;
    Index n = 0;
    for (Index p = 0; p < P_; ++p) {
      const bool zero = G_(p, p) <= 0.0;
      fixed_[static_cast<std::size_t>(p)] = (p < S_ && !rig.supported(p)) || zero;
      if (!fixed_[static_cast<std::size_t>(p)]) {
        tr += G_(p, p);
        ++n;
      }
    }
    BF_CHECK(n > 0, ArgumentError, "rig solver: no parameter of rig '", rig.name,
             "' moves a vertex with positive weight");
    scale_ = tr / static_cast<double>(n);
    mirror_ = rig.mirror_pairs();
    names_ = rig.param_names();
    jaw_ = rig.jaw.has_value();
  }

  Index vertices() const { return V_; }
  Index params() const { return P_; }
  Index shapes() const { return S_; }
  bool has_jaw() const { return jaw_; }
  const Eigen::MatrixXd& A() const { return A_; }
  const RowMatrix& AtW() const { return AtW_; }
  const Eigen::MatrixXd& G() const { return G_; }
  double scale() const { return scale_; }
  const std::vector<bool>& fixed() const { return fixed_; }
  const std::vector<double>& omega() const { return omega_; }
  const std::vector<std::pair<Index, Index>>& mirror_pairs() const { return mirror_; }
  const std::vector<std::string>& param_names() const { return names_; }

  /// AᵀΩd for one frame d (3V floats in a unit of `unit_mm` millimetres).
  Eigen::VectorXd rhs(const float* d, double unit_mm) const {
    Eigen::VectorXd dd(3 * V_);
    for (Index i = 0; i < 3 * V_; ++i) dd[i] = unit_mm * d[i];
    return AtW_ * dd;
  }

 private:
  Index V_, P_, S_;
  std::vector<double> omega_;
  Eigen::MatrixXd A_, G_;
  RowMatrix AtW_;
  std::vector<bool> fixed_;
  double scale_ = 1;
  std::vector<std::pair<Index, Index>> mirror_;
  std::vector<std::string> names_;
  bool jaw_ = false;
};

/// (a) The unconstrained weighted ridge solve p = (G + λ_abs I)⁻¹ AᵀΩ d (unsupported → 0).
class LinearSolver {
 public:
  LinearSolver(const RigProblem& prob, double l2) : prob_(&prob), l2_(l2) {
    BF_CHECK(l2 >= 0 && std::isfinite(l2), ArgumentError, "LinearSolver: l2 must be >= 0, got ", l2);
    for (Index p = 0; p < prob.params(); ++p)
      if (!prob.fixed()[static_cast<std::size_t>(p)]) free_.push_back(p);
    const Index n = static_cast<Index>(free_.size());
    Eigen::MatrixXd K(n, n);
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) K(i, j) = prob.G()(free_[static_cast<std::size_t>(i)], free_[static_cast<std::size_t>(j)]);
    K.diagonal().array() += l2 * prob.scale();
    llt_.compute(K);
    const auto dg = llt_.matrixLLT().diagonal();
    BF_CHECK(llt_.info() == Eigen::Success && n > 0 &&
                 (l2 > 0 || dg.minCoeff() * dg.minCoeff() > 1e-10 * dg.maxCoeff() * dg.maxCoeff()),
             ArgumentError, "LinearSolver: the rig's shapes are (nearly) linearly dependent on the weighted region "
             "(e.g. ARKit's jawLeft = -jawRight); use l2 > 0");
  }

  double l2() const { return l2_; }
  const RigProblem& problem() const { return *prob_; }

  /// p for a right-hand side b = AᵀΩd (or AᵀΩB, one column per right-hand side).
  Eigen::MatrixXd solve_rhs(const Eigen::MatrixXd& b) const {
    const Index n = static_cast<Index>(free_.size());
    Eigen::MatrixXd bf(n, b.cols());
    for (Index i = 0; i < n; ++i) bf.row(i) = b.row(free_[static_cast<std::size_t>(i)]);
    const Eigen::MatrixXd xf = llt_.solve(bf);
    Eigen::MatrixXd x = Eigen::MatrixXd::Zero(prob_->params(), b.cols());
    for (Index i = 0; i < n; ++i) x.row(free_[static_cast<std::size_t>(i)]) = xf.row(i);
    return x;
  }

  /// Parameters of one deformation frame (3V floats, unit `unit_mm`).
  Eigen::VectorXd solve(const float* d, double unit_mm) const { return solve_rhs(prob_->rhs(d, unit_mm)); }

  /// L_G = R B for blendshapes B (3V × K, mm): (P × K).
  Eigen::MatrixXd map(const Eigen::MatrixXd& B_mm) const {
    BF_CHECK(B_mm.rows() == 3 * prob_->vertices(), ShapeError, "LinearSolver::map: blendshapes have ", B_mm.rows(),
             " rows, the rig 3·", prob_->vertices());
    return solve_rhs(prob_->AtW() * B_mm);
  }

 private:
  const RigProblem* prob_;
  double l2_;
  std::vector<Index> free_;
  Eigen::LLT<Eigen::MatrixXd> llt_;
};

/// The fitted linear map L_G and what it was fitted with; saved as safetensors.
struct LinearMap {
  Eigen::MatrixXd L;                     // (P, K): rig parameters = L · blendshape weights
  std::vector<std::string> param_names;  // P names (the rig's parameters)
  std::string rig_name;
  Index rig_vertices = 0;
  Index k_a = 0;                         // the first k_a columns of B are speech blendshapes (B_A)
  double l2 = 0;                         // relative L2 strength used
  Tensor<float> vertex_weights;          // (V,) ω used (the face region is ω > 0)
  double data_unit_mm = 1.0;             // unit of the data the fit error was measured on
  FitError fit;                          // error on the fused frames of the fit (if measured)
  std::string model;                     // the fusion model it was fitted from (informational)

  Eigen::VectorXd apply(const Eigen::VectorXd& w) const {
    BF_CHECK(w.size() == L.cols(), ShapeError, "LinearMap::apply: ", w.size(), " weights for a map of ", L.cols());
    return L * w;
  }

  void save(const std::string& path) const {
    io::SafeTensorsWriter wr;
    Tensor<double> t({static_cast<Index>(L.rows()), static_cast<Index>(L.cols())});
    for (Index i = 0; i < L.rows(); ++i)
      for (Index j = 0; j < L.cols(); ++j) t(i, j) = L(i, j);
    for (Index i = 0; i < t.numel(); ++i)
      BF_CHECK(std::isfinite(t[i]), ArgumentError, "LinearMap::save(", path, "): non-finite entry");
    wr.add("L", t);
    if (!vertex_weights.empty()) wr.add("vertex_weights", vertex_weights);
    wr.set_metadata("format", "blendfuse.rig_map");
    wr.set_metadata("version", "1");
    wr.set_metadata("param_names", nlohmann::json(param_names).dump());
    wr.set_metadata("rig_name", rig_name);
    wr.set_metadata("rig_vertices", std::to_string(rig_vertices));
    wr.set_metadata("k_a", std::to_string(k_a));
    wr.set_metadata("l2", nlohmann::json(l2).dump());
    wr.set_metadata("data_unit_mm", nlohmann::json(data_unit_mm).dump());
    wr.set_metadata("fit", nlohmann::json{{"rms_mm", fit.rms_mm}, {"max_mm", fit.max_mm}, {"frames", fit.frames},
                                          {"vertices", fit.vertices}}.dump());
    wr.set_metadata("model", model);
    wr.save(path);
  }

  static LinearMap load(const std::string& path) {
    const auto f = io::SafeTensorsFile::load(path);
    if (f.meta("format") != "blendfuse.rig_map")
      throw IoError(path, "not a blendfuse rig map (metadata format is '" + f.meta("format", "<missing>") +
                              "', expected 'blendfuse.rig_map'; write one with `blendfuse rig-fit`)");
    LinearMap m;
    try {
      const auto names = nlohmann::json::parse(f.meta("param_names"));
      for (const auto& n : names) m.param_names.push_back(n.get<std::string>());
      m.l2 = nlohmann::json::parse(f.meta("l2")).get<double>();
      m.data_unit_mm = nlohmann::json::parse(f.meta("data_unit_mm", "1")).get<double>();
      m.rig_vertices = std::stoll(f.meta("rig_vertices"));
      m.k_a = std::stoll(f.meta("k_a", "0"));
      const auto fit = nlohmann::json::parse(f.meta("fit", "{}"));
      m.fit.rms_mm = fit.value("rms_mm", 0.0);
      m.fit.max_mm = fit.value("max_mm", 0.0);
      m.fit.frames = fit.value("frames", Index{0});
      m.fit.vertices = fit.value("vertices", Index{0});
    } catch (const std::exception& e) {
      throw IoError(path, std::string("corrupt rig map metadata: ") + e.what());
    }
    m.rig_name = f.meta("rig_name");
    m.model = f.meta("model");
    if (!f.contains("L")) throw IoError(path, "rig map lacks tensor 'L'");
    const auto t = f.get<double>("L");
    if (t.ndim() != 2 || t.dim(0) != static_cast<Index>(m.param_names.size()))
      throw IoError(path, "L has shape " + t.shape_string() + " for " + std::to_string(m.param_names.size()) +
                              " parameter names");
    m.L.resize(t.dim(0), t.dim(1));
    for (Index i = 0; i < t.dim(0); ++i)
      for (Index j = 0; j < t.dim(1); ++j) {
        if (!std::isfinite(t(i, j))) throw IoError(path, "non-finite entry in L");
        m.L(i, j) = t(i, j);
      }
    if (f.contains("vertex_weights")) m.vertex_weights = f.get<float>("vertex_weights", {m.rig_vertices});
    if (!(m.l2 >= 0)) throw IoError(path, "negative l2");
    return m;
  }

  /// Throws IoError(where) unless the map was fitted for this rig (same parameter names, V).
  void check_rig(const Rig& rig, const std::string& where) const {
    if (param_names != rig.param_names() || rig_vertices != rig.num_vertices())
      throw IoError(where, "the map was fitted for rig '" + rig_name + "' (" + std::to_string(param_names.size()) +
                               " parameters, " + std::to_string(rig_vertices) + " vertices), not for rig '" +
                               rig.name + "' (" + std::to_string(rig.num_params()) + " parameters, " +
                               std::to_string(rig.num_vertices()) + " vertices)");
  }
};

/// Fits L_G from learned blendshapes B (3V × K, mm) — (V·3, K) as DeformationFusionModule::
/// blendshapes() returns them — with per-vertex weights ω and relative L2 strength `l2`.
inline LinearMap fit_linear_map(const Rig& rig, const Eigen::MatrixXd& B_mm, const Tensor<float>& vertex_weights,
                                double l2, Index k_a = 0) {
  const RigProblem prob(rig, vertex_weights);
  const LinearSolver solver(prob, l2);
  LinearMap m;
  m.L = solver.map(B_mm);
  m.param_names = rig.param_names();
  m.rig_name = rig.name;
  m.rig_vertices = rig.num_vertices();
  m.k_a = k_a;
  m.l2 = l2;
  Tensor<float> w({rig.num_vertices()});
  for (Index v = 0; v < rig.num_vertices(); ++v) w[v] = static_cast<float>(prob.omega()[static_cast<std::size_t>(v)]);
  m.vertex_weights = w;
  return m;
}

/// Bounded-solve settings (relative strengths, see the file comment).
struct BoundedOptions {
  double l2 = 1e-4;        // λ
  double smooth = 0.0;     // μ: towards the previous frame
  double symmetry = 0.0;   // σ: left/right pairs equal
  double lo = 0.0, hi = 1.0;  // box of the shape weights (jaw rotations are free)
  double tol = 1e-10;      // KKT tolerance, relative to |c|∞ + max diag H
  int max_iter = 0;        // active-set steps per frame; 0 = 10·P + 50
};

/// The result of one bounded solve.
struct BoundedStats {
  int iterations = 0;
  bool converged = false;
  double kkt = 0;  // largest KKT violation (absolute)
};

/// Largest violation of the KKT conditions of min ½xᵀHx − cᵀx, lo ≤ x ≤ hi at x (absolute, in
/// gradient units): free → |g|, at lo → max(0, −g), at hi → max(0, g), outside the box → distance.
inline double kkt_violation(const Eigen::MatrixXd& H, const Eigen::VectorXd& c, const Eigen::VectorXd& x,
                            const Eigen::VectorXd& lo, const Eigen::VectorXd& hi, double bound_eps = 1e-12) {
  const Eigen::VectorXd g = H * x - c;
  double worst = 0;
  for (Index i = 0; i < x.size(); ++i) {
    if (x[i] < lo[i] - bound_eps || x[i] > hi[i] + bound_eps) return std::numeric_limits<double>::infinity();
    const bool at_lo = x[i] <= lo[i] + bound_eps, at_hi = x[i] >= hi[i] - bound_eps;
    double v;
    if (at_lo && at_hi) v = 0;  // fixed
    else if (at_lo) v = std::max(0.0, -g[i]);
    else if (at_hi) v = std::max(0.0, g[i]);
    else v = std::abs(g[i]);
    worst = std::max(worst, v);
  }
  return worst;
}

/// Primal active-set solver of min ½xᵀHx − cᵀx s.t. lo ≤ x ≤ hi (H symmetric positive definite),
/// started from x0 (clamped into the box; its bound set is the initial active set).
inline Eigen::VectorXd solve_box_qp(const Eigen::MatrixXd& H, const Eigen::VectorXd& c, const Eigen::VectorXd& lo,
                                    const Eigen::VectorXd& hi, Eigen::VectorXd x, double tol, int max_iter,
                                    BoundedStats* stats = nullptr) {
  const Index n = H.rows();
  BF_CHECK(H.cols() == n && c.size() == n && lo.size() == n && hi.size() == n && x.size() == n, ShapeError,
           "solve_box_qp: inconsistent sizes");
  // state: 0 free, −1 at lo, +1 at hi, 2 fixed (lo == hi)
  std::vector<int> st(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    BF_CHECK(lo[i] <= hi[i], ArgumentError, "solve_box_qp: empty box at ", i);
    x[i] = std::clamp(x[i], lo[i], hi[i]);
    st[static_cast<std::size_t>(i)] = lo[i] == hi[i] ? 2 : (x[i] <= lo[i] ? -1 : (x[i] >= hi[i] ? 1 : 0));
  }
  double hscale = 0;
  for (Index i = 0; i < n; ++i) hscale = std::max(hscale, std::abs(H(i, i)));
  const double gtol = tol * (c.lpNorm<Eigen::Infinity>() + hscale + 1e-300);
  BoundedStats s;
  std::vector<Index> F;
  Eigen::MatrixXd HF;
  Eigen::VectorXd rhs;
  for (s.iterations = 0; s.iterations < max_iter; ++s.iterations) {
    F.clear();
    for (Index i = 0; i < n; ++i)
      if (st[static_cast<std::size_t>(i)] == 0) F.push_back(i);
    const Index m = static_cast<Index>(F.size());
    if (m > 0) {
      // H_FF z = c_F − H_FB x_B
      HF.resize(m, m);
      rhs.resize(m);
      for (Index a = 0; a < m; ++a) {
        double r = c[F[static_cast<std::size_t>(a)]];
        for (Index j = 0; j < n; ++j)
          if (st[static_cast<std::size_t>(j)] != 0) r -= H(F[static_cast<std::size_t>(a)], j) * x[j];
        rhs[a] = r;
        for (Index b = 0; b < m; ++b) HF(a, b) = H(F[static_cast<std::size_t>(a)], F[static_cast<std::size_t>(b)]);
      }
      const Eigen::LLT<Eigen::MatrixXd> llt(HF);
      BF_CHECK(llt.info() == Eigen::Success, ArgumentError, "solve_box_qp: the Hessian is not positive definite (l2 > 0 fixes this)");
      const Eigen::VectorXd z = llt.solve(rhs);
      double alpha = 1.0;
      Index block = -1;
      int bside = 0;
      for (Index a = 0; a < m; ++a) {
        const Index i = F[static_cast<std::size_t>(a)];
        const double p = z[a] - x[i];
        if (z[a] < lo[i] && p < 0) {
          const double t = (lo[i] - x[i]) / p;
          if (t < alpha) alpha = t, block = i, bside = -1;
        } else if (z[a] > hi[i] && p > 0) {
          const double t = (hi[i] - x[i]) / p;
          if (t < alpha) alpha = t, block = i, bside = 1;
        }
      }
      alpha = std::max(alpha, 0.0);
      for (Index a = 0; a < m; ++a) {
        const Index i = F[static_cast<std::size_t>(a)];
        x[i] = std::clamp(x[i] + alpha * (z[a] - x[i]), lo[i], hi[i]);
      }
      if (block >= 0) {
        x[block] = bside < 0 ? lo[block] : hi[block];
        st[static_cast<std::size_t>(block)] = bside;
        continue;
      }
    }
    // optimal on this face: release the bound variable with the most wrong-signed gradient
    const Eigen::VectorXd g = H * x - c;
    double worst = gtol;
    Index wi = -1;
    for (Index i = 0; i < n; ++i) {
      const int si = st[static_cast<std::size_t>(i)];
      const double v = si == -1 ? -g[i] : (si == 1 ? g[i] : 0.0);
      if (v > worst) worst = v, wi = i;
    }
    if (wi < 0) {
      s.converged = true;
      break;
    }
    st[static_cast<std::size_t>(wi)] = 0;
  }
  s.kkt = kkt_violation(H, c, x, lo, hi);
  if (stats) *stats = s;
  return x;
}

/// (b) The bounded per-frame solver (see the file comment).
class BoundedSolver {
 public:
  BoundedSolver(const RigProblem& prob, BoundedOptions opt) : prob_(&prob), opt_(opt) {
    for (double v : {opt.l2, opt.smooth, opt.symmetry})
      BF_CHECK(v >= 0 && std::isfinite(v), ArgumentError, "BoundedSolver: l2, smooth and symmetry must be >= 0");
    BF_CHECK(opt.lo <= opt.hi, ArgumentError, "BoundedSolver: weight range [", opt.lo, ", ", opt.hi, "] is empty");
    const Index P = prob.params();
    const double s = prob.scale();
    H0_ = prob.G();
    H0_.diagonal().array() += opt.l2 * s;
    for (const auto& [l, r] : prob.mirror_pairs()) {
      H0_(l, l) += opt.symmetry * s;
      H0_(r, r) += opt.symmetry * s;
      H0_(l, r) -= opt.symmetry * s;
      H0_(r, l) -= opt.symmetry * s;
    }
    H1_ = H0_;
    H1_.diagonal().array() += opt.smooth * s;
    lo_.resize(P);
    hi_.resize(P);
    const double inf = std::numeric_limits<double>::infinity();
    for (Index p = 0; p < P; ++p) {
      if (prob.fixed()[static_cast<std::size_t>(p)]) lo_[p] = hi_[p] = 0.0;
      else if (p < prob.shapes()) lo_[p] = opt.lo, hi_[p] = opt.hi;
      else lo_[p] = -inf, hi_[p] = inf;
    }
    // fixed parameters: keep the Hessian positive definite on them (their value is pinned anyway)
    for (Index p = 0; p < P; ++p)
      if (prob.fixed()[static_cast<std::size_t>(p)]) {
        H0_(p, p) = std::max(H0_(p, p), s);
        H1_(p, p) = std::max(H1_(p, p), s);
      }
    max_iter_ = opt.max_iter > 0 ? opt.max_iter : static_cast<int>(10 * P + 50);
  }

  const RigProblem& problem() const { return *prob_; }
  const BoundedOptions& options() const { return opt_; }
  const Eigen::VectorXd& lower() const { return lo_; }
  const Eigen::VectorXd& upper() const { return hi_; }
  /// The Hessian without (first frame) or with the smoothness term.
  const Eigen::MatrixXd& hessian(bool with_prev) const { return with_prev ? H1_ : H0_; }
  /// The linear term c for a right-hand side b = AᵀΩd and an optional previous solution.
  Eigen::VectorXd linear_term(const Eigen::VectorXd& b, const Eigen::VectorXd* prev) const {
    if (!prev) return b;
    return b + opt_.smooth * prob_->scale() * *prev;
  }

  /// One frame: d (3V floats, unit `unit_mm`), the previous frame's solution (smoothness; null on
  /// the first frame) and a warm start (null: the previous solution, else zeros).
  Eigen::VectorXd solve(const float* d, double unit_mm, const Eigen::VectorXd* prev,
                        const Eigen::VectorXd* warm = nullptr, BoundedStats* stats = nullptr) const {
    return solve_rhs(prob_->rhs(d, unit_mm), prev, warm, stats);
  }

  Eigen::VectorXd solve_rhs(const Eigen::VectorXd& b, const Eigen::VectorXd* prev, const Eigen::VectorXd* warm = nullptr,
                            BoundedStats* stats = nullptr) const {
    const Eigen::VectorXd x0 = warm ? *warm : (prev ? *prev : Eigen::VectorXd::Zero(prob_->params()));
    return solve_box_qp(hessian(prev != nullptr), linear_term(b, prev), lo_, hi_, x0, opt_.tol, max_iter_, stats);
  }

  /// A whole sequence (T, V, 3) of deformations in `unit_mm`: (T, P), each frame warm-started
  /// and smoothed towards the previous one. `worst` (optional) gets the largest KKT violation.
  Eigen::MatrixXd solve_sequence(const Tensor<float>& seq, double unit_mm, BoundedStats* worst = nullptr) const {
    check_shape(seq, {-1, prob_->vertices(), 3}, "BoundedSolver::solve_sequence");
    const auto c = seq.contiguous();
    const Index T = c.dim(0), n = prob_->vertices() * 3;
    Eigen::MatrixXd out(T, prob_->params());
    Eigen::VectorXd prev;
    BoundedStats agg;
    agg.converged = true;
    for (Index t = 0; t < T; ++t) {
      BoundedStats st;
      const Eigen::VectorXd x = solve(c.data() + t * n, unit_mm, t > 0 ? &prev : nullptr, nullptr, &st);
      agg.iterations = std::max(agg.iterations, st.iterations);
      agg.converged = agg.converged && st.converged;
      agg.kkt = std::max(agg.kkt, st.kkt);
      out.row(t) = x.transpose();
      prev = x;
    }
    if (worst) *worst = agg;
    return out;
  }

 private:
  const RigProblem* prob_;
  BoundedOptions opt_;
  Eigen::MatrixXd H0_, H1_;
  Eigen::VectorXd lo_, hi_;
  int max_iter_ = 0;
};

/// The linear map applied to a whole deformation sequence (T, V, 3) in `unit_mm`: (T, P).
inline Eigen::MatrixXd solve_sequence_linear(const LinearSolver& s, const Tensor<float>& seq, double unit_mm) {
  check_shape(seq, {-1, s.problem().vertices(), 3}, "solve_sequence_linear");
  const auto c = seq.contiguous();
  const Index T = c.dim(0), n = s.problem().vertices() * 3;
  Eigen::MatrixXd B(s.problem().params(), T);
  for (Index t = 0; t < T; ++t) B.col(t) = s.problem().rhs(c.data() + t * n, unit_mm);
  return s.solve_rhs(B).transpose();
}

/// Exact rig reconstruction error: rig offsets of params (T × P) vs target deformations
/// (T, V, 3) in `unit_mm`, over the vertices with weight > 0 (all when `vertex_weights` is empty).
inline FitError reconstruction_error(const Rig& rig, const Eigen::MatrixXd& params, const Tensor<float>& targets,
                                     double unit_mm, const Tensor<float>& vertex_weights = {}) {
  const Index V = rig.num_vertices();
  check_shape(targets, {params.rows(), V, 3}, "reconstruction_error(targets)");
  BF_CHECK(params.cols() == rig.num_params(), ShapeError, "reconstruction_error: ", params.cols(),
           " parameters per frame for a rig of ", rig.num_params());
  const auto w = vertex_weights_or_ones(vertex_weights, V);
  const auto c = targets.contiguous();
  FitError e;
  e.frames = params.rows();
  for (Index v = 0; v < V; ++v) e.vertices += w[static_cast<std::size_t>(v)] > 0;
  double sum = 0;
  std::vector<double> p(static_cast<std::size_t>(params.cols()));
  for (Index t = 0; t < params.rows(); ++t) {
    for (Index j = 0; j < params.cols(); ++j) p[static_cast<std::size_t>(j)] = params(t, j);
    const auto off = rig.offsets_mm(p.data());
    const float* d = c.data() + t * V * 3;
    for (Index v = 0; v < V; ++v) {
      if (!(w[static_cast<std::size_t>(v)] > 0)) continue;
      double q = 0;
      for (int k = 0; k < 3; ++k) {
        const double diff = off[static_cast<std::size_t>(3 * v + k)] - unit_mm * d[3 * v + k];
        q += diff * diff;
      }
      sum += q;
      e.max_mm = std::max(e.max_mm, std::sqrt(q));
    }
  }
  const double n = static_cast<double>(e.frames) * static_cast<double>(e.vertices);
  e.rms_mm = n > 0 ? std::sqrt(sum / n) : 0.0;
  return e;
}

}  // namespace blendfuse::rig
