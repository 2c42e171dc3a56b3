// blendfuse CLI — rigs (docs/rigs.md): `rig-fit` fits the paper's linear map L_G from a fusion
// model's learned blendshapes to a rig's parameters; `rig-solve` turns a vertex sequence into
// per-frame rig parameters with that map or with the bounded solver.
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/data/dataset.hpp"
#include "blendfuse/io/file.hpp"
#include "blendfuse/io/mesh.hpp"
#include "blendfuse/io/npy.hpp"
#include "blendfuse/metrics/fusion_eval.hpp"
#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/rig/rig.hpp"
#include "blendfuse/rig/solve.hpp"
#include "cli_checks.hpp"

namespace blendfuse::cli {

namespace rigcli {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Every entry finite, else ArgumentError naming what (nothing non-finite is ever written).
inline void require_finite(const Eigen::MatrixXd& W, const std::string& what) {
  for (Index t = 0; t < W.rows(); ++t)
    for (Index j = 0; j < W.cols(); ++j)
      if (!std::isfinite(W(t, j)))
        throw ArgumentError(blendfuse::detail::concat(what, ": non-finite rig parameter at frame ", t, ", parameter ", j,
                                                      " (bad input or l2 = 0 on a degenerate rig); nothing written"));
}

inline std::string fmt(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

/// The dataset's neutral for a subject (templates/S.npy, else template.obj), its unit and ω,
/// read without loading the sequences.
struct DataInfo {
  Tensor<float> neutral;
  double unit_mm = 1.0;
  std::string unit_source;
  Tensor<float> weights;
};

inline DataInfo read_data_info(const std::string& dir, const std::string& subject, const std::string& seq_path,
                               const std::string& units) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw IoError(dir, "dataset folder not found");
  DataInfo info;
  const io::Mesh mesh = io::load_mesh(dir + "/template.obj");
  info.neutral = mesh.vertices;
  std::string s = subject;
  std::set<std::string> known;
  std::error_code ec;
  if (fs::is_directory(dir + "/templates", ec))
    for (const auto& e : fs::directory_iterator(dir + "/templates", ec))
      if (e.path().extension() == ".npy") known.insert(e.path().stem().string());
  if (s.empty()) {
    try {
      const std::string guess = data::parse_subject(fs::path(seq_path).stem().string(), known);
      if (known.count(guess)) s = guess;
    } catch (const ArgumentError&) {
    }
  }
  if (!s.empty()) {
    const std::string p = dir + "/templates/" + s + ".npy";
    if (!fs::is_regular_file(p)) throw IoError(p, "no template for subject '" + s + "'");
    Tensor<float> t = io::load_npy<float>(p);
    if (t.ndim() != 2 || t.dim(1) != 3 || t.dim(0) != mesh.num_vertices())
      throw IoError(p, "subject template must have shape (" + std::to_string(mesh.num_vertices()) + ", 3), got " + t.shape_string());
    info.neutral = t;
    info.unit_source = "subject " + s;
  } else {
    info.unit_source = "template.obj (no subject: pass --subject for a subject's template)";
  }
  if (units != "auto") {
    info.unit_mm = data::unit_mm_from_name(units);
  } else if (fs::is_regular_file(dir + "/units.txt")) {
    info.unit_mm = data::load_units_file(dir + "/units.txt");
  } else {
    info.unit_mm = data::detect_unit_mm(mesh.vertices, dir + "/template.obj");
  }
  if (const std::string w = dir + "/regions/weights.npy"; fs::is_regular_file(w)) {
    info.weights = io::load_npy<float>(w);
    if (info.weights.numel() != mesh.num_vertices()) throw IoError(w, "per-vertex weights do not match template.obj");
  }
  return info;
}

inline void write_outputs(const Eigen::MatrixXd& W, const std::vector<std::string>& names, const std::string& out,
                          const std::string& csv, const std::string& json, const nlohmann::ordered_json& extra) {
  const Index T = W.rows(), P = W.cols();
  Tensor<float> t({T, P});
  for (Index i = 0; i < T; ++i)
    for (Index j = 0; j < P; ++j) t(i, j) = static_cast<float>(W(i, j));
  if (!out.empty()) io::save_npy(out, t);
  if (!csv.empty()) {
    std::string s = "frame";
    for (const auto& n : names) s += "," + n;
    s += "\n";
    for (Index i = 0; i < T; ++i) {
      s += std::to_string(i);
      for (Index j = 0; j < P; ++j) s += "," + fmt(t(i, j));
      s += "\n";
    }
    io::write_file_atomic(csv, s);
  }
  if (!json.empty()) {
    nlohmann::ordered_json j = extra;
    j["names"] = names;
    nlohmann::ordered_json frames = nlohmann::ordered_json::array();
    for (Index i = 0; i < T; ++i) {
      std::vector<double> row(static_cast<std::size_t>(P));
      for (Index k = 0; k < P; ++k) row[static_cast<std::size_t>(k)] = t(i, k);
      frames.push_back(row);
    }
    j["weights"] = frames;
    io::write_file_atomic(json, j.dump(1) + "\n");
  }
}

}  // namespace rigcli

// ---- rig-fit -----------------------------------------------------------------------------------
struct RigFitArgs {
  std::string data, model, rig, out, split = "test", units = "auto";
  double l2 = 1e-4;
};

inline void add_rig_fit(CLI::App& app, RigFitArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("rig-fit", "Fit the paper's linear map L_G (eq. 14-15) from a fusion model's blendshapes to a rig's parameters");
  c->add_option("--data", a.data, "dataset folder (topology, vertex weights, and the frames the fit error is measured on)")->required();
  c->add_option("--model", a.model, "fusion model (.safetensors, from train-fusion)")->required();
  c->add_option("--rig", a.rig, "rig (.safetensors; default DATA/rig/arkit52.safetensors)");
  c->add_option("--out", a.out, "output map (.safetensors)")->required();
  c->add_option("--l2", a.l2, "relative L2 strength on the rig parameters (default 1e-4)");
  c->add_option("--split", a.split, "subjects whose fused (speech, expression) pairs measure the fit error: test, val, train or all (default test)")
      ->check(CLI::IsMember({"test", "val", "train", "all"}));
  c->add_option("--units", a.units, "length unit of the dataset: auto, mm, cm or m (default auto)")->check(CLI::IsMember({"auto", "mm", "cm", "m"}));
  c->callback([&] {
    run = [&] {
      // options and the output path before any work (docs/errors.md)
      require_range("rig-fit", "--l2", a.l2, 0.0, 1e6);
      check_outputs("rig-fit", {{"--out", a.out}}, {{"--model", a.model}, {"--rig", a.rig}});
      data::DatasetOptions opt;
      opt.units = a.units;
      const data::Dataset ds = data::Dataset::load(a.data, opt);
      const std::string rig_path = a.rig.empty() ? a.data + "/rig/arkit52.safetensors" : a.rig;
      const rig::Rig rg = rig::Rig::load(rig_path);
      if (rg.num_vertices() != ds.num_vertices())
        throw IoError(rig_path, "rig has " + std::to_string(rg.num_vertices()) + " vertices, the dataset " + std::to_string(ds.num_vertices()));
      auto model = nn::DeformationFusionModule<float>::load(a.model);
      model.cache_derived_weights();
      if (model.vertices() != ds.num_vertices())
        throw IoError(a.model, "model has " + std::to_string(model.vertices()) + " vertices, the dataset " + std::to_string(ds.num_vertices()));
      const Tensor<float> Bt = model.blendshapes();  // (V·3, K), mm
      Eigen::MatrixXd B(Bt.dim(0), Bt.dim(1));
      for (Index i = 0; i < Bt.dim(0); ++i)
        for (Index j = 0; j < Bt.dim(1); ++j) B(i, j) = Bt(i, j);
      auto t0 = std::chrono::steady_clock::now();
      rig::LinearMap map = rig::fit_linear_map(rg, B, ds.vertex_weights, a.l2, model.config().k_a);
      const double fit_s = rigcli::seconds_since(t0);
      map.model = std::filesystem::path(a.model).filename().string();
      map.data_unit_mm = ds.unit_mm;
      rigcli::require_finite(map.L, a.out);

      // fused frames of (speech, expression) pairs of the split: the L_G error and, for comparison, the bounded solver's
      std::vector<const data::Sequence*> sp, ex;
      for (const auto& q : ds.speech)
        if (a.split == "all" || (ds.split_of(q.subject) && data::to_string(*ds.split_of(q.subject)) == a.split)) sp.push_back(&q);
      for (const auto& q : ds.expression)
        if (a.split == "all" || (ds.split_of(q.subject) && data::to_string(*ds.split_of(q.subject)) == a.split)) ex.push_back(&q);
      if (sp.empty() || ex.empty())
        throw IoError(a.data, "no speech and expression sequences in split '" + a.split + "' to measure the fit on (try --split all)");
      const rig::RigProblem prob(rg, ds.vertex_weights);
      const rig::LinearSolver lin(prob, a.l2);
      const rig::BoundedSolver bnd(prob, rig::BoundedOptions{});
      rig::FitError e_lin, e_bnd;
      double sq_lin = 0, sq_bnd = 0, t_lin = 0, t_bnd = 0, t_lw = 0;
      Index frames = 0;
      for (std::size_t i = 0; i < sp.size(); ++i) {
        const Tensor<float>& s = sp[i]->deformations;
        const Tensor<float> e = metrics::stretch_to(ex[i % ex.size()]->deformations, s.dim(0));
        const Tensor<float> fused = model.fuse(s, e, 1.0, ds.unit_mm);
        // L_G on the weights: w from the encoders, p = L w (what a runtime with w does)
        const Tensor<float> wa = model.encode(nn::Domain::Speech, s, ds.unit_mm);
        const Tensor<float> we = model.encode(nn::Domain::Expression, e, ds.unit_mm);
        const Index T = s.dim(0), K = wa.dim(1), ka = model.config().k_a;
        Eigen::MatrixXd W(K, T);
        for (Index t = 0; t < T; ++t)
          for (Index k = 0; k < K; ++k) W(k, t) = k < ka ? wa(t, k) : we(t, k);
        t0 = std::chrono::steady_clock::now();
        const Eigen::MatrixXd Plw = (map.L * W).transpose();
        t_lw += rigcli::seconds_since(t0);
        t0 = std::chrono::steady_clock::now();
        const Eigen::MatrixXd Pl = rig::solve_sequence_linear(lin, fused, ds.unit_mm);
        t_lin += rigcli::seconds_since(t0);
        // the two routes are the same map (L = R·B): a consistency check on every run
        const double diff = (Plw - Pl).cwiseAbs().maxCoeff(), scale = 1.0 + Pl.cwiseAbs().maxCoeff();
        if (!(diff <= 1e-3 * scale))
          throw ArgumentError("rig-fit: L·w and R·d disagree by " + rigcli::fmt(diff) + " (internal error)");
        t0 = std::chrono::steady_clock::now();
        const Eigen::MatrixXd Pb = bnd.solve_sequence(fused, ds.unit_mm);
        t_bnd += rigcli::seconds_since(t0);
        const auto el = rig::reconstruction_error(rg, Pl, fused, ds.unit_mm, ds.vertex_weights);
        const auto eb = rig::reconstruction_error(rg, Pb, fused, ds.unit_mm, ds.vertex_weights);
        sq_lin += el.rms_mm * el.rms_mm * static_cast<double>(T);
        sq_bnd += eb.rms_mm * eb.rms_mm * static_cast<double>(T);
        e_lin.max_mm = std::max(e_lin.max_mm, el.max_mm);
        e_bnd.max_mm = std::max(e_bnd.max_mm, eb.max_mm);
        e_lin.vertices = e_bnd.vertices = el.vertices;
        frames += T;
      }
      e_lin.frames = e_bnd.frames = frames;
      e_lin.rms_mm = std::sqrt(sq_lin / static_cast<double>(frames));
      e_bnd.rms_mm = std::sqrt(sq_bnd / static_cast<double>(frames));
      map.fit = e_lin;
      map.save(a.out);
      const double us = 1e6 / static_cast<double>(frames);
      std::printf("rig-fit: rig '%s' (%lld parameters, %s), model K = %lld (%lld speech); l2 %g; fitted in %.1f ms\n",
                  rg.name.c_str(), static_cast<long long>(rg.num_params()), rg.units().c_str(),
                  static_cast<long long>(map.L.cols()), static_cast<long long>(map.k_a), a.l2, 1e3 * fit_s);
      std::printf("rig-fit: fit error on %lld fused frames (%s split, %lld face-region vertices, data in %s): "
                  "L_G rms %.3f mm (max %.3f); bounded [0,1] rms %.3f mm (max %.3f)\n",
                  static_cast<long long>(frames), a.split.c_str(), static_cast<long long>(e_lin.vertices),
                  ds.units().c_str(), e_lin.rms_mm, e_lin.max_mm, e_bnd.rms_mm, e_bnd.max_mm);
      std::printf("rig-fit: per frame: L*w %.2f us, L_G on the deformation %.1f us, bounded %.1f us\n", t_lw * us,
                  t_lin * us, t_bnd * us);
      std::printf("rig-fit: wrote %s\n", a.out.c_str());
    };
  });
}

// ---- rig-solve ---------------------------------------------------------------------------------
struct RigSolveArgs {
  std::string rig, map, in, out, csv, json, data, subject, neutral, units = "auto", vertex_weights;
  bool bounded = false, offsets = false;
  double l2 = 1e-4, smooth = 0.1, symmetry = 0.0, lo = 0.0, hi = 1.0, fps = 30.0;
};

inline void add_rig_solve(CLI::App& app, RigSolveArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("rig-solve", "Per-frame rig parameters of a vertex sequence (.npy, .csv, .json with names)");
  c->add_option("--rig", a.rig, "rig (.safetensors)")->required();
  auto* map = c->add_option("--map", a.map, "linear map L_G from rig-fit (unbounded least squares, the paper's map)");
  auto* bnd = c->add_flag("--bounded", a.bounded, "bounded per-frame solve: weights in [--range], L2, --smooth, --symmetry");
  map->excludes(bnd);
  c->add_option("--in", a.in, "sequence .npy (T,V,3): absolute positions (as speak/fuse write), or deformations with --offsets")->required();
  c->add_option("--out", a.out, "output .npy (T,P) float32 rig parameters")->required();
  c->add_option("--csv", a.csv, "also write a CSV: one row per frame, one column per parameter name");
  c->add_option("--json", a.json, "also write JSON: {names, weights: [[...] per frame], fps, ...}");
  c->add_option("--data", a.data, "dataset folder: the neutral (templates/SUBJECT.npy or template.obj), unit and vertex weights");
  c->add_option("--subject", a.subject, "subject whose template is the neutral (default: from the --in file name, else template.obj)");
  c->add_option("--neutral", a.neutral, "neutral (V,3) .npy to subtract instead of --data's");
  c->add_flag("--offsets", a.offsets, "--in holds deformations (positions - neutral): subtract nothing");
  c->add_option("--units", a.units, "unit of --in: auto (the dataset's; else from the neutral's size), mm, cm or m")
      ->check(CLI::IsMember({"auto", "mm", "cm", "m"}));
  c->add_option("--vertex-weights", a.vertex_weights, "per-vertex weights (V,) .npy (default: the map's, else --data's regions/weights.npy, else ones)");
  c->add_option("--l2", a.l2, "bounded: relative L2 strength (default 1e-4)");
  c->add_option("--smooth", a.smooth, "bounded: relative temporal smoothness towards the previous frame (default 0.1)");
  c->add_option("--symmetry", a.symmetry, "bounded: relative left/right symmetry over the rig's mirror pairs (default 0)");
  c->add_option("--range", [&](const std::vector<std::string>& v) {
    if (v.size() != 1) return false;
    const auto comma = v[0].find(',');
    if (comma == std::string::npos) return false;
    try {
      a.lo = std::stod(v[0].substr(0, comma));
      a.hi = std::stod(v[0].substr(comma + 1));
    } catch (const std::exception&) {
      return false;
    }
    return std::isfinite(a.lo) && std::isfinite(a.hi) && a.lo <= a.hi;
  }, "bounded: LO,HI range of the shape weights (default 0,1; jaw rotations are free)");
  c->add_option("--fps", a.fps, "frame rate recorded in the JSON (default 30)");
  c->callback([&, map, bnd] {
    run = [&, map, bnd] {
      if (map->count() == 0 && bnd->count() == 0) throw ArgumentError("rig-solve: give --map MAP or --bounded");
      // options and the output paths before any work (docs/errors.md)
      require_range("rig-solve", "--l2", a.l2, 0.0, 1e6);
      require_range("rig-solve", "--smooth", a.smooth, 0.0, 1e6);
      require_range("rig-solve", "--symmetry", a.symmetry, 0.0, 1e6);
      require_range("rig-solve", "--fps", a.fps, 1.0, 1000.0);
      check_outputs("rig-solve", {{"--out", a.out}, {"--csv", a.csv}, {"--json", a.json}},
                    {{"--rig", a.rig}, {"--map", a.map}, {"--in", a.in}, {"--neutral", a.neutral},
                     {"--vertex-weights", a.vertex_weights}});
      const int sources = !a.data.empty() + !a.neutral.empty() + a.offsets;
      if (sources != 1 && !(sources == 2 && !a.data.empty() && !a.neutral.empty()))
        throw ArgumentError("rig-solve: give exactly one of --data DIR, --neutral N.npy or --offsets (what to subtract from --in)");
      const rig::Rig rg = rig::Rig::load(a.rig);
      const Index V = rg.num_vertices();
      Tensor<float> seq = io::load_vertex_sequence(a.in, V);
      double unit_mm = a.units == "auto" ? 0.0 : data::unit_mm_from_name(a.units);
      Tensor<float> weights;
      if (!a.data.empty()) {
        auto info = rigcli::read_data_info(a.data, a.subject, a.in, a.units);
        if (info.neutral.dim(0) != V)
          throw IoError(a.data + "/template.obj", "has " + std::to_string(info.neutral.dim(0)) + " vertices, the rig " + std::to_string(V));
        unit_mm = info.unit_mm;
        weights = info.weights;
        if (a.neutral.empty()) {
          const Index T = seq.dim(0);
          for (Index t = 0; t < T; ++t)
            for (Index i = 0; i < V * 3; ++i) seq[t * V * 3 + i] -= info.neutral[i];
        }
      }
      if (!a.neutral.empty()) {
        Tensor<float> n = io::load_vertex_sequence(a.neutral, V);
        if (n.dim(0) != 1) throw IoError(a.neutral, "expected one (V, 3) neutral, got " + std::to_string(n.dim(0)) + " frames");
        if (unit_mm == 0.0) unit_mm = data::detect_unit_mm(n.reshape({V, 3}), a.neutral);
        for (Index t = 0; t < seq.dim(0); ++t)
          for (Index i = 0; i < V * 3; ++i) seq[t * V * 3 + i] -= n[i];
      }
      if (unit_mm == 0.0)
        throw ArgumentError("rig-solve: --offsets needs --units (mm, cm or m): the unit of deformations cannot be guessed");
      rig::LinearMap lm;
      if (!a.map.empty()) {
        lm = rig::LinearMap::load(a.map);
        lm.check_rig(rg, a.map);
        if (weights.empty() || !lm.vertex_weights.empty()) weights = lm.vertex_weights;
      }
      if (!a.vertex_weights.empty()) {
        weights = io::load_npy<float>(a.vertex_weights);
        if (weights.numel() != V) throw IoError(a.vertex_weights, "has " + std::to_string(weights.numel()) + " weights for " + std::to_string(V) + " vertices");
      }
      const rig::RigProblem prob(rg, weights);
      Eigen::MatrixXd W;
      nlohmann::ordered_json extra;
      extra["rig"] = rg.name;
      extra["fps"] = a.fps;
      const auto t0 = std::chrono::steady_clock::now();
      if (!a.map.empty()) {
        W = rig::solve_sequence_linear(rig::LinearSolver(prob, lm.l2), seq, unit_mm);
        extra["method"] = "L_G";
        extra["l2"] = lm.l2;
      } else {
        rig::BoundedOptions opt;
        opt.l2 = a.l2;
        opt.smooth = a.smooth;
        opt.symmetry = a.symmetry;
        opt.lo = a.lo;
        opt.hi = a.hi;
        rig::BoundedStats st;
        W = rig::BoundedSolver(prob, opt).solve_sequence(seq, unit_mm, &st);
        if (!st.converged) std::fprintf(stderr, "rig-solve: warning: the active set did not converge on some frame (KKT violation %g)\n", st.kkt);
        extra["method"] = "bounded";
        extra["l2"] = a.l2;
        extra["smooth"] = a.smooth;
        extra["symmetry"] = a.symmetry;
        extra["range"] = {a.lo, a.hi};
      }
      const double secs = rigcli::seconds_since(t0);
      rigcli::require_finite(W, a.out);
      const auto err = rig::reconstruction_error(rg, W, seq, unit_mm, weights);
      extra["fit"] = {{"rms_mm", err.rms_mm}, {"max_mm", err.max_mm}, {"frames", err.frames}, {"vertices", err.vertices}};
      rigcli::write_outputs(W, rg.param_names(), a.out, a.csv, a.json, extra);
      std::printf("rig-solve: %lld frames -> %lld parameters of rig '%s' (%s); fit rms %.3f mm, max %.3f mm over %lld vertices; "
                  "%.1f us per frame; wrote %s\n",
                  static_cast<long long>(W.rows()), static_cast<long long>(W.cols()), rg.name.c_str(),
                  extra["method"].get<std::string>().c_str(), err.rms_mm, err.max_mm, static_cast<long long>(err.vertices),
                  1e6 * secs / static_cast<double>(std::max<Index>(1, W.rows())), a.out.c_str());
    };
  });
}

/// Both rig commands (one registration line in blendfuse_cli.cpp).
struct RigArgs {
  RigFitArgs fit;
  RigSolveArgs solve;
};
inline void add_rig(CLI::App& app, RigArgs& a, std::function<void()>& run) {
  add_rig_fit(app, a.fit, run);
  add_rig_solve(app, a.solve, run);
}

}  // namespace blendfuse::cli
