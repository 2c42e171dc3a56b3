// blendfuse CLI — the fusion commands: gen-data, train-fusion, fuse, eval-fusion.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <limits>
#include <memory>
#include <vector>

#include "blendfuse/data/dataset.hpp"
#include "blendfuse/data/procedural.hpp"
#include "blendfuse/io/npy.hpp"
#include "blendfuse/metrics/fusion_eval.hpp"
#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/train/fusion_trainer.hpp"
#include "cli_checks.hpp"
#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"  // before any DeformationFusionModule<float, OneDnn> (ODR)
#endif

namespace blendfuse::cli {

/// gen-data's output folder: refused when it is a file or a non-empty folder (old files would mix
/// with the new dataset) unless `force`, which replaces it — but only a folder that holds a
/// dataset (template.obj), never an arbitrary one. The dataset is written into a temporary
/// sibling folder and renamed into place, so a failure leaves no half-written dataset.
inline std::string write_dataset_folder(const std::string& out, const data::ProceduralConfig& cfg, bool force) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path target = fs::path(out).lexically_normal();
  if (target.filename().empty()) target = target.parent_path();  // "dir/" → "dir"
  const bool exists = fs::exists(target, ec);
  if (exists && !fs::is_directory(target, ec)) throw IoError(out, "gen-data: --out exists and is not a folder");
  const bool non_empty = exists && !fs::is_empty(target, ec);
  if (non_empty && !force)
    throw IoError(out, "gen-data: --out is an existing non-empty folder; old files would mix with the new "
                       "dataset (give --force to replace it, or another folder)");
  if (non_empty && !fs::is_regular_file(target / "template.obj", ec))
    throw IoError(out, "gen-data --force: the folder does not hold a dataset (no template.obj); refusing to replace it");
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, ec)) throw IoError(out, "gen-data: --out cannot be created: folder '" + parent.string() + "' does not exist");
  if (!detail::folder_writable(parent)) throw IoError(out, "gen-data: --out cannot be created: folder '" + parent.string() + "' is not writable");
  std::random_device rd;
  const fs::path tmp = parent / (target.filename().string() + ".tmp" + std::to_string(rd() % 1000000u));
  std::string src;
  try {
    src = data::write_dataset(tmp.string(), cfg);
    if (exists) {
      fs::remove_all(target, ec);
      if (ec) throw IoError(out, "gen-data: cannot remove the old folder: " + ec.message());
    }
    fs::rename(tmp, target, ec);
    if (ec) throw IoError(out, "gen-data: cannot move the new dataset into place: " + ec.message());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return src;
}

// ---- gen-data --------------------------------------------------------------------------------
struct GenDataArgs {
  std::string out;
  std::uint64_t seed = 20251029;
  bool tiny = false;
  int subjects = 0;
  int grid = 0;
  std::string phonemes = "auto";
  bool audio = false;
  int sentences = 0;
  bool force = false;
  std::string units = "mm";
};

/// `--units auto|mm|cm|m` of the commands that read a dataset (auto: units.txt, else the size).
inline CLI::Option* add_units_option(CLI::App* c, std::string& units) {
  return c->add_option("--units", units, "length unit of the dataset: auto (units.txt in the folder, else from the "
                                  "template's size), mm, cm or m (default auto)")
      ->check(CLI::IsMember({"auto", "mm", "cm", "m"}));
}

/// Loads a dataset folder with the unit of --units.
inline data::Dataset load_dataset(const std::string& dir, const std::string& units) {
  data::DatasetOptions opt;
  opt.units = units;
  return data::Dataset::load(dir, opt);
}

/// "m (units.txt)": the data's unit and where it came from, for the commands' output.
inline std::string units_note(const data::Dataset& ds) { return ds.units() + " (" + ds.unit_source + ")"; }

inline void add_gen_data(CLI::App& app, GenDataArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("gen-data", "Write a procedural two-domain dataset with clean truth");
  c->add_option("--out", a.out, "output dataset folder")->required();
  c->add_option("--seed", a.seed, "random seed (a non-negative integer)")->check(kSeedCheck);
  c->add_flag("--tiny", a.tiny, "small dataset for quick tests (~600 vertices, 3 subjects)");
  c->add_option("--subjects", a.subjects, "number of subjects (default 8)");
  c->add_option("--grid", a.grid, "face grid resolution n (about n*n vertices; default 72)");
  c->add_option("--phonemes", a.phonemes, "auto | espeak | random")->check(CLI::IsMember({"auto", "espeak", "random"}));
  c->add_flag("--audio", a.audio, "synthesise speech/<name>.wav with libespeak-ng (one voice per subject) and drive the face from its phoneme events");
  auto* sentences_opt = c->add_option("--sentences", a.sentences, "speech sequences per subject (default 4, tiny 2)");
  c->add_flag("--force", a.force, "replace an existing non-empty --out folder (only one that holds a dataset: template.obj)");
  c->add_option("--units", a.units, "length unit of the written files: mm (default) or m (a metres copy: the same "
                                    "data × 0.001, as VOCAset/FLAME are), or cm")
      ->check(CLI::IsMember({"mm", "cm", "m"}));
  auto* grid_opt = c->get_option("--grid");
  auto* subjects_opt = c->get_option("--subjects");
  c->callback([&, subjects_opt, grid_opt, sentences_opt] {
    run = [&, subjects_opt, grid_opt, sentences_opt] {
      // values given explicitly must be valid (0 or a negative count is not "the default")
      if (subjects_opt->count() > 0) require_count("gen-data", "--subjects", a.subjects, 3, 1000);
      if (grid_opt->count() > 0) require_count("gen-data", "--grid", a.grid, 15, 1000);
      if (sentences_opt->count() > 0) require_count("gen-data", "--sentences", a.sentences, 1, 1000);
      auto cfg = a.tiny ? data::ProceduralConfig::tiny() : data::ProceduralConfig{};
      cfg.seed = a.seed;
      if (a.subjects > 0) cfg.num_subjects = a.subjects;
      if (a.grid > 0) cfg.grid = a.grid;
      if (a.phonemes == "espeak") cfg.phonemes = data::PhonemeSource::Espeak;
      else if (a.phonemes == "random") cfg.phonemes = data::PhonemeSource::Random;
      if (a.sentences > 0) cfg.speech_per_subject = a.sentences;
      cfg.unit_mm = data::unit_mm_from_name(a.units);
      if (a.audio) {
        if (a.phonemes == "random") throw ArgumentError("gen-data: --audio needs espeak-ng phonemes, not --phonemes random");
        cfg.audio = true;
        cfg.phonemes = data::PhonemeSource::Espeak;
      }
      cfg.validate();
      const std::string src = write_dataset_folder(a.out, cfg, a.force);
      std::printf("gen-data: wrote %s (seed %llu, phonemes from %s%s, units %s)\n", a.out.c_str(),
                  static_cast<unsigned long long>(a.seed), src.c_str(), cfg.audio ? ", with speech audio" : "",
                  a.units.c_str());
    };
  });
}

// ---- helpers ---------------------------------------------------------------------------------
/// All frames of the given domain/split as one (N, V, 3) pool.
inline Tensor<float> frame_pool(const data::Dataset& ds, data::Domain d, data::Split s) {
  const auto seqs = ds.sequences(d, s);
  Index n = 0;
  for (const auto* q : seqs) n += q->num_frames();
  const Index V = ds.num_vertices();
  Tensor<float> pool({n, V, 3});
  Index at = 0;
  for (const auto* q : seqs) {
    std::copy(q->deformations.data(), q->deformations.data() + q->deformations.numel(), pool.data() + at * V * 3);
    at += q->num_frames();
  }
  return pool;
}

/// The default of the fusion commands' --backend: onednn when built, else cpu.
#ifdef BLENDFUSE_WITH_ONEDNN
inline constexpr const char* kFusionDefaultBackend = "onednn";
#else
inline constexpr const char* kFusionDefaultBackend = "cpu";
#endif

/// `--backend cpu|onednn` of the commands that run the fusion model.
inline CLI::Option* add_fusion_backend_option(CLI::App* c, std::string& backend, const char* what) {
  return c->add_option("--backend", backend, std::string(what) + ": cpu (reference) or onednn (default when built)")
      ->check(CLI::IsMember({"cpu", "onednn"}));
}

/// Calls f(Cpu{}) or f(OneDnn{}) for --backend; onednn without the backend built is an error.
template <class F>
decltype(auto) with_fusion_backend(const std::string& cmd, const std::string& backend, F&& f) {
  if (backend == "onednn") {
#ifdef BLENDFUSE_WITH_ONEDNN
    return f(OneDnn{});
#else
    throw ArgumentError(cmd + " --backend onednn: this build has no oneDNN backend (BLENDFUSE_WITH_ONEDNN=OFF)");
#endif
  }
  return f(Cpu{});
}

inline nlohmann::json read_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(io::read_file_text(path));
  } catch (const nlohmann::json::exception& e) {
    throw IoError(path, std::string("invalid JSON: ") + e.what());
  }
}

// ---- train-fusion ----------------------------------------------------------------------------
struct TrainFusionArgs {
  std::string data, out, config, variant = "full", checkpoint, units = "auto", backend = kFusionDefaultBackend;
  int epochs = 10;
  Index batch = 32;
  double lr = 3e-4;
  std::uint64_t seed = 1;
  bool resume = false, quiet = false;
  double max_minutes = 0;
  Index map_size = 0, k_a = 0, k_e = 0;
};

inline void add_train_fusion(CLI::App& app, TrainFusionArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("train-fusion", "Train the deformation fusion module on a dataset folder");
  c->add_option("--data", a.data, "dataset folder")->required();
  c->add_option("--out", a.out, "output model (.safetensors)")->required();
  auto* variant_opt = c->add_option("--variant", a.variant, "full | paper | no-sparsity | no-laplace | no-map | symmetric | usage-lasso")
      ->check(CLI::IsMember({"paper", "full", "no-sparsity", "no-laplace", "no-map", "symmetric", "usage-lasso"}));
  c->add_option("--config", a.config, "JSON file with model config keys (see docs/fusion.md)");
  c->add_option("--epochs", a.epochs, "epochs");
  c->add_option("--batch", a.batch, "frames per step (half from each domain)");
  c->add_option("--lr", a.lr, "Adam learning rate");
  c->add_option("--seed", a.seed, "random seed (initialisation and shuffling)")->check(kSeedCheck);
  auto* map_opt = c->add_option("--map-size", a.map_size, "geometry map size (overrides the config)");
  auto* ka_opt = c->add_option("--k-a", a.k_a, "speech blendshapes (overrides the config)");
  auto* ke_opt = c->add_option("--k-e", a.k_e, "expression blendshapes (overrides the config)");
  c->add_option("--checkpoint", a.checkpoint, "checkpoint written after every epoch and kept, so --resume with more --epochs continues (default OUT.ckpt)");
  c->add_flag("--resume", a.resume, "continue from the checkpoint if it exists");
  c->add_option("--max-minutes", a.max_minutes, "stop after the epoch in which this time budget runs out");
  c->add_flag("--quiet", a.quiet, "no per-epoch lines");
  add_units_option(c, a.units);
  add_fusion_backend_option(c, a.backend, "backend the model trains on (the saved model and checkpoints are the same for both)");
  c->callback([&, variant_opt, map_opt, ka_opt, ke_opt] {
    run = [&, variant_opt, map_opt, ka_opt, ke_opt] {
      const std::string cmd = "train-fusion";
      require_count(cmd, "--epochs", a.epochs, 1, 1000000);
      require_range(cmd, "--lr", a.lr, 1e-12, 1.0);
      require_range(cmd, "--max-minutes", a.max_minutes, 0, 1e7);
      require_count(cmd, "--batch", a.batch, 2, std::numeric_limits<int>::max());
      const std::string checkpoint = a.checkpoint.empty() ? a.out + ".ckpt" : a.checkpoint;
      check_outputs(cmd, {{"--out", a.out}, {a.checkpoint.empty() ? "--checkpoint (default OUT.ckpt)" : "--checkpoint", checkpoint}},
                    {{"--config", a.config}, {"--data", a.data}});
      nn::DfmConfig cfg;
      cfg.apply_variant(a.variant);
      if (!a.config.empty()) {
        auto j = read_json_file(a.config);
        if (variant_opt->count() > 0 && j.is_object()) j.erase("variant");  // --variant wins
        try {
          cfg.update_from_json(j, a.config);
          if (map_opt->count() + ka_opt->count() + ke_opt->count() == 0) cfg.validate();
        } catch (const ArgumentError& e) {
          throw IoError(a.config, without_prefix(e.what(), a.config));
        }
      }
      if (map_opt->count() > 0) cfg.map_size = a.map_size;
      if (ka_opt->count() > 0) cfg.k_a = a.k_a;
      if (ke_opt->count() > 0) cfg.k_e = a.k_e;
      try {
        cfg.validate();
      } catch (const ArgumentError& e) {
        throw ArgumentError(cmd + ": " + e.what());
      }
      const data::Dataset ds = load_dataset(a.data, a.units);
      cfg.data_unit_mm = ds.unit_mm;  // the model converts to mm inside and back on output
      const Tensor<float> sa = frame_pool(ds, data::Domain::Speech, data::Split::Train);
      const Tensor<float> se = frame_pool(ds, data::Domain::Expression, data::Split::Train);
      const Tensor<float> va = frame_pool(ds, data::Domain::Speech, data::Split::Val);
      const Tensor<float> ve = frame_pool(ds, data::Domain::Expression, data::Split::Val);
      with_fusion_backend(cmd, a.backend, [&](auto backend_tag) {
        using B = decltype(backend_tag);
        std::unique_ptr<nn::DeformationFusionModule<float, B>> model_ptr;
        try {
          model_ptr = std::make_unique<nn::DeformationFusionModule<float, B>>(cfg, ds.template_vertices, ds.faces, a.seed);
        } catch (const ArgumentError& e) {
          throw ArgumentError(cmd + ": " + e.what());
        }
        nn::DeformationFusionModule<float, B>& model = *model_ptr;
        train::FusionTrainConfig tc;
        tc.epochs = a.epochs;
        tc.batch = a.batch;
        // A batch beyond the data only repeats frames (and made an epoch take forever): cap it.
        const Index cap = 2 * std::max(sa.dim(0), se.dim(0));
        if (tc.batch > cap) {
          std::fprintf(stderr, "train-fusion: --batch %lld is more than the training data (%lld speech, %lld expression frames); using --batch %lld\n",
                       static_cast<long long>(a.batch), static_cast<long long>(sa.dim(0)), static_cast<long long>(se.dim(0)),
                       static_cast<long long>(cap));
          tc.batch = cap;
        }
        tc.lr = a.lr;
        tc.seed = a.seed;
        tc.checkpoint = checkpoint;
        tc.resume = a.resume;
        tc.max_seconds = a.max_minutes * 60;
        if (!a.quiet)
          std::printf("train-fusion: variant %s, %lld vertices, map %lld, K %lld+%lld, %lld parameters; "
                      "%lld speech + %lld expression training frames; data in %s, losses in mm units; backend %s\n",
                      cfg.variant.c_str(), static_cast<long long>(ds.num_vertices()),
                      static_cast<long long>(cfg.map_size), static_cast<long long>(cfg.k_a),
                      static_cast<long long>(cfg.k_e), static_cast<long long>(nn::count_parameters(model.parameters())),
                      static_cast<long long>(sa.dim(0)), static_cast<long long>(se.dim(0)), units_note(ds).c_str(),
                      a.backend.c_str());
        train::FusionTrainer<B> trainer(model, tc);
        trainer.fit(sa, se, va, ve, ds.vertex_weights, [&](const train::EpochStats& st) {
          if (a.quiet) return;
          std::printf("epoch %3d  train %.4f (rec %.4f sp %.4f lap %.4f usage %.4f ov %.4f)  val %.4f (rec %.4f)  %.1fs\n",
                      st.epoch, st.train.total, st.train.rec, st.train.sparsity, st.train.laplace,
                      st.train.usage, st.train.overlap, st.val.total, st.val.rec, st.seconds);
          std::fflush(stdout);
        });
        for (auto* p : model.parameters()) check_finite_output(p->value, a.out, "parameter '" + p->name + "' after training");
        model.save(a.out);
      });
      std::printf("train-fusion: wrote %s (trained on data in %s)\n", a.out.c_str(), ds.units().c_str());
    };
  });
}

// ---- fuse ------------------------------------------------------------------------------------
struct FuseArgs {
  std::string model, data, speech, out, units = "auto", backend = kFusionDefaultBackend;
  std::vector<std::string> expressions;
  Index expression_frame = -1;
  double intensity = 1.0;
  bool naive = false;
};

/// The subject of a sequence file, for its template.
inline const Tensor<float>& subject_template(const data::Dataset& ds, const std::string& path) {
  const std::string stem = std::filesystem::path(path).stem().string();
  std::set<std::string> known;
  for (const auto& s : ds.subjects()) known.insert(s);
  std::string subject;
  try {
    subject = data::parse_subject(stem, known);
  } catch (const ArgumentError& e) {
    throw IoError(path, e.what());
  }
  if (!ds.subject_templates.count(subject))
    throw IoError(path, "subject '" + subject + "' has no template in the dataset (templates/" + subject + ".npy)");
  return ds.template_of(subject);
}

/// Deformation (T, V, 3) of an absolute-position sequence file relative to its subject template.
inline Tensor<float> load_deformation(const data::Dataset& ds, const std::string& path) {
  Tensor<float> seq = io::load_vertex_sequence(path, ds.num_vertices());
  const Tensor<float>& tmpl = subject_template(ds, path);
  const Index T = seq.dim(0), n = ds.num_vertices() * 3;
  for (Index t = 0; t < T; ++t)
    for (Index i = 0; i < n; ++i) seq[t * n + i] -= tmpl[i];
  return seq;
}

/// Largest --intensity and expression blend weight accepted (1 is the expression as recorded).
inline constexpr double kMaxIntensity = 10.0;

/// Parses "path[:weight]".
inline std::pair<std::string, double> path_weight(const std::string& s) {
  const auto colon = s.rfind(':');
  if (colon != std::string::npos && colon + 1 < s.size()) {
    try {
      std::size_t used = 0;
      const double w = std::stod(s.substr(colon + 1), &used);
      if (used == s.size() - colon - 1) return {s.substr(0, colon), w};
    } catch (const std::exception&) {
    }
  }
  return {s, 1.0};
}

inline void add_fuse(CLI::App& app, FuseArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("fuse", "Fuse a speech sequence with an expression (paper eq. 13)");
  c->add_option("--model", a.model, "fusion model (.safetensors)");
  c->add_option("--data", a.data, "dataset folder (templates and topology)")->required();
  c->add_option("--speech", a.speech, "speech sequence .npy (T,V,3) absolute positions")->required();
  c->add_option("--expression", a.expressions,
                "expression sequence .npy, optionally PATH:WEIGHT; repeat to blend several")->required();
  auto* frame_opt = c->add_option("--expression-frame", a.expression_frame, "hold this frame of the expression instead of time-stretching it");
  c->add_option("--intensity", a.intensity, "scale of the expression weights, in [0, 10]");
  c->add_flag("--naive", a.naive, "plain sum of the two input deformations (no model)");
  c->add_option("--out", a.out, "output .npy (T,V,3) absolute positions on the speech subject's template, in the dataset's unit")->required();
  add_units_option(c, a.units);
  add_fusion_backend_option(c, a.backend, "backend the fusion model runs on");
  c->callback([&, frame_opt] {
    run = [&, frame_opt] {
      if (!a.naive && a.model.empty()) throw ArgumentError("fuse: --model is required unless --naive is given");
      if (frame_opt->count() > 0) require_count("fuse", "--expression-frame", a.expression_frame, 0, std::numeric_limits<Index>::max());
      require_range("fuse", "--intensity", a.intensity, 0, kMaxIntensity);
      std::vector<PathArg> inputs = {{"--model", a.model}, {"--speech", a.speech}, {"--data", a.data}};
      for (const auto& spec : a.expressions) {
        const auto [path, w] = path_weight(spec);
        require_range("fuse", "--expression " + spec + ": the weight", w, 0, kMaxIntensity);
        inputs.push_back({"--expression", path});
      }
      check_outputs("fuse", {{"--out", a.out}}, inputs);
      const data::Dataset ds = load_dataset(a.data, a.units);
      const Tensor<float> speech = load_deformation(ds, a.speech);
      const Index T = speech.dim(0), V = ds.num_vertices();
      Tensor<float> expr({T, V, 3});
      double wsum = 0;
      for (const auto& spec : a.expressions) {
        const auto [path, w] = path_weight(spec);
        Tensor<float> e = load_deformation(ds, path);
        if (a.expression_frame >= 0) {
          if (a.expression_frame >= e.dim(0))
            throw IoError(path, "--expression-frame " + std::to_string(a.expression_frame) + " is past its " + std::to_string(e.dim(0)) + " frames");
          Tensor<float> held({T, V, 3});
          for (Index t = 0; t < T; ++t) held.select(t).assign(e.select(a.expression_frame));
          e = held;
        } else {
          e = metrics::stretch_to(e, T);
        }
        for (Index i = 0; i < expr.numel(); ++i) expr[i] += static_cast<float>(w) * e[i];
        wsum += w;
      }
      if (wsum <= 0) throw ArgumentError("fuse: expression weights must sum to a positive value");
      Tensor<float> fused;
      if (a.naive) {
        for (Index i = 0; i < expr.numel(); ++i) expr[i] = static_cast<float>(a.intensity * expr[i]);
        fused = metrics::naive_sum(speech, expr);
      } else {
        fused = with_fusion_backend("fuse", a.backend, [&](auto backend_tag) -> Tensor<float> {
          using B = decltype(backend_tag);
          auto model = nn::DeformationFusionModule<float, B>::load(a.model);
          model.cache_derived_weights();  // inference only: keep derived weights (column norms, backend copies) between calls
          if (model.vertices() != V)
            throw IoError(a.model, "model has " + std::to_string(model.vertices()) + " vertices, the dataset " + std::to_string(V));
          const auto on_b = [](const Tensor<float>& t) { return nn::detail::host_view<B>(t); };
          // in and out in the data's unit
          return nn::detail::host_view<Cpu>(model.fuse(on_b(speech), on_b(expr), a.intensity, ds.unit_mm));
        });
      }
      const Tensor<float>& tmpl = subject_template(ds, a.speech);
      for (Index t = 0; t < T; ++t)
        for (Index i = 0; i < V * 3; ++i) fused[t * V * 3 + i] += tmpl[i];
      check_finite_output(fused, a.out, a.naive ? std::string("the inputs") : "the fusion model " + a.model);
      io::save_npy(a.out, fused);
      std::printf("fuse: wrote %s (%lld frames, %s, in %s)\n", a.out.c_str(), static_cast<long long>(T),
                  a.naive ? "naive sum" : "fusion model", units_note(ds).c_str());
    };
  });
}

// ---- eval-fusion -----------------------------------------------------------------------------
struct EvalFusionArgs {
  std::vector<std::string> models;
  std::string data, markdown, units = "auto", backend = kFusionDefaultBackend;
  bool json = false;
};

inline std::string score_table_markdown(const std::vector<metrics::FusionScore>& rows) {
  std::string s = "| method | error vs truth (mm) | bilabial gap error (mm) | LVE (mm) | LVE (mm², squared) |\n|---|---|---|---|---|\n";
  char buf[256];
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "| %s | %.3f | %.3f | %.3f | %.3f |\n", r.method.c_str(), r.err_mm, r.gap_mm, r.lve_mm, r.lve_sq);
    s += buf;
  }
  return s;
}

inline void add_eval_fusion(CLI::App& app, EvalFusionArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("eval-fusion", "Score fusion models and the naive sum against the clean truth (ablation table)");
  c->add_option("--model", a.models, "fusion model(s); repeat for an ablation table")->required();
  c->add_option("--data", a.data, "procedural dataset folder (with truth/)")->required();
  c->add_flag("--json", a.json, "print JSON instead of a table");
  c->add_option("--markdown", a.markdown, "also write the table to this Markdown file");
  add_units_option(c, a.units);
  add_fusion_backend_option(c, a.backend, "backend the fusion models run on");
  c->callback([&] {
    run = [&] {
      std::vector<PathArg> inputs = {{"--data", a.data}};
      for (const auto& m : a.models) inputs.push_back({"--model", m});
      check_outputs("eval-fusion", {{"--markdown", a.markdown}}, inputs);
      const data::Dataset ds = load_dataset(a.data, a.units);
      const auto truth = metrics::ProceduralTruth::load(a.data, ds.num_vertices());
      std::vector<metrics::FusionScore> rows;
      rows.push_back(metrics::evaluate_fusion(ds, truth, "naive sum of inputs", metrics::naive_sum));
      for (const auto& path : a.models) {
        with_fusion_backend("eval-fusion", a.backend, [&](auto backend_tag) {
          using B = decltype(backend_tag);
          auto model = nn::DeformationFusionModule<float, B>::load(path);
          model.cache_derived_weights();
          if (model.vertices() != ds.num_vertices())
            throw IoError(path, "model has " + std::to_string(model.vertices()) + " vertices, the dataset " + std::to_string(ds.num_vertices()));
          const std::string name = model.config().variant + " (" + std::filesystem::path(path).filename().string() + ")";
          rows.push_back(metrics::evaluate_fusion(ds, truth, name, [&](const Tensor<float>& s, const Tensor<float>& e) {
            return nn::detail::host_view<Cpu>(
                model.fuse(nn::detail::host_view<B>(s), nn::detail::host_view<B>(e), 1.0, ds.unit_mm));
          }));
        });
      }
      for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        if (!std::isfinite(r.err_mm) || !std::isfinite(r.gap_mm) || !std::isfinite(r.lve_mm) || !std::isfinite(r.lve_sq))
          throw IoError(i == 0 ? a.data : a.models[i - 1], "eval-fusion: the scores of '" + r.method + "' are non-finite");
      }
      if (a.json) {
        nlohmann::ordered_json j = nlohmann::ordered_json::array();
        for (const auto& r : rows) j.push_back(r.to_json());
        std::printf("%s\n", j.dump(2).c_str());
      } else {
        std::printf("%s", score_table_markdown(rows).c_str());
        std::printf("(%lld pairs, %lld frames, %lld bilabial frames of the test subjects; scores in mm, data in %s)\n",
                    static_cast<long long>(rows[0].pairs), static_cast<long long>(rows[0].frames),
                    static_cast<long long>(rows[0].bilabial_frames), units_note(ds).c_str());
      }
      if (!a.markdown.empty()) io::write_file_atomic(a.markdown, score_table_markdown(rows));
    };
  });
}

}  // namespace blendfuse::cli
