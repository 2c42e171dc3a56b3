// blendfuse — measuring a fusion method against the clean truth of a procedural dataset.
//
// For every (speech sequence, expression sequence) pair of the test subjects, the expression is
// time-stretched to the speech length and fused; the result, placed on the speech subject's
// template, is compared with the clean truth  template + B_A* w_A + B_E* w_E  that the generator
// wrote to truth/ (no leaks). `fuse` works in the dataset's unit (Dataset::unit_mm); every score
// is reported in millimetres whatever that unit is (distances × unit_mm). Reported per method:
//   err_mm      mean vertex L2 distance to the clean truth (mm)
//   gap_mm      lip-closure gap error: mean |gap(pred) − gap(truth)| over frames whose truth is a
//               closed bilabial /p b m/ (gap = mean distance of paired upper/lower lip vertices)
//   lve_mm      lip vertex error vs the truth: max L2 over lip vertices, averaged over frames
//   lve_sq      the same with squared distances (FaceFormer/CodeTalker's convention, mm²)
#pragma once

#include <array>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/data/dataset.hpp"
#include "blendfuse/io/npy.hpp"
#include "blendfuse/metrics/metrics.hpp"
#include "blendfuse/ops/interp.hpp"

namespace blendfuse::metrics {

/// The generator's truth/ folder: clean bases, per-sequence clean weights, bilabial frames.
struct ProceduralTruth {
  Tensor<float> speech_bases;      // (Ka, V, 3)
  Tensor<float> expression_bases;  // (Ke, V, 3)
  std::vector<std::array<std::int32_t, 2>> lip_pairs;
  std::map<std::string, std::vector<std::int32_t>> bilabial;  // speech sequence → frames
  std::string dir;

  /// Reads DIR/truth. With `V` >= 0 (the dataset's vertex count) the bases must be (K, V, 3) and
  /// the lip pairs inside [0, V); NaN/Inf in the bases are errors naming the file.
  static ProceduralTruth load(const std::string& data_dir, Index V = -1) {
    ProceduralTruth t;
    t.dir = data_dir + "/truth";
    if (!data::detail::is_dir(t.dir))
      throw IoError(t.dir, "no truth/ folder: clean-truth evaluation needs a procedural dataset (blendfuse gen-data)");
    auto bases = [&](const std::string& p) {
      Tensor<float> b = io::load_npy<float>(p);
      if (b.ndim() != 3 || b.dim(2) != 3 || b.dim(0) == 0 || (V >= 0 && b.dim(1) != V))
        throw IoError(p, "expected shape (K, " + (V >= 0 ? std::to_string(V) : std::string("V")) + ", 3), got " + b.shape_string());
      data::detail::check_finite(b, p);
      return b;
    };
    t.speech_bases = bases(t.dir + "/speech_bases.npy");
    t.expression_bases = bases(t.dir + "/expression_bases.npy");
    const std::string ppath = t.dir + "/lip_pairs.npy";
    const auto pairs = io::load_npy<std::int32_t>(ppath);
    if (pairs.ndim() != 2 || pairs.dim(1) != 2) throw IoError(ppath, "expected shape (P, 2), got " + pairs.shape_string());
    const Index nv = V >= 0 ? V : t.speech_bases.dim(1);
    for (Index i = 0; i < pairs.dim(0); ++i) {
      if (pairs(i, 0) < 0 || pairs(i, 0) >= nv || pairs(i, 1) < 0 || pairs(i, 1) >= nv)
        throw IoError(ppath, "lip pair " + std::to_string(i) + " (" + std::to_string(pairs(i, 0)) + ", " +
                                 std::to_string(pairs(i, 1)) + ") has a vertex out of range for " + std::to_string(nv) + " vertices");
      t.lip_pairs.push_back({pairs(i, 0), pairs(i, 1)});
    }
    const std::string bpath = t.dir + "/bilabial_frames.json";
    try {
      const auto j = nlohmann::json::parse(io::read_file_text(bpath));
      for (auto it = j.begin(); it != j.end(); ++it) t.bilabial[it.key()] = it.value().get<std::vector<std::int32_t>>();
    } catch (const nlohmann::json::exception& e) {
      throw IoError(bpath, std::string("invalid JSON: ") + e.what());
    }
    return t;
  }

  /// Clean deformation of a sequence: B w over its clean weights (T, K) file.
  Tensor<float> clean_deformation(const std::string& weights_file, const Tensor<float>& bases) const {
    const auto w = io::load_npy<float>(weights_file);
    const Index K = bases.dim(0), V = bases.dim(1);
    if (w.ndim() != 2 || w.dim(1) != K) throw IoError(weights_file, "expected (T, " + std::to_string(K) + ") weights, got " + w.shape_string());
    data::detail::check_finite(w, weights_file);
    const Index T = w.dim(0);
    Tensor<float> out({T, V, 3});
    for (Index t = 0; t < T; ++t)
      for (Index k = 0; k < K; ++k) {
        const float c = w(t, k);
        if (c == 0.0f) continue;
        const float* b = bases.data() + k * V * 3;
        float* o = out.data() + t * V * 3;
        for (Index i = 0; i < V * 3; ++i) o[i] += c * b[i];
      }
    return out;
  }
};

/// Linearly time-stretches a (T_in, V, 3) sequence to T frames (align_corners=True).
inline Tensor<float> stretch_to(const Tensor<float>& seq, Index T) {
  if (seq.dim(0) == T) return seq;
  const Index V = seq.dim(1);
  const Tensor<float> x = seq.contiguous().reshape({1, seq.dim(0), V * 3});
  return ops::interp_linear_ntc(x, T).reshape({T, V, 3});
}

struct FusionScore {
  std::string method;
  double err_mm = 0, gap_mm = 0, lve_mm = 0, lve_sq = 0;
  Index pairs = 0, frames = 0, bilabial_frames = 0;

  nlohmann::ordered_json to_json() const {
    return {{"method", method}, {"err_mm", err_mm}, {"gap_mm", gap_mm}, {"lve_mm", lve_mm},
            {"lve_sq_mm2", lve_sq}, {"pairs", pairs}, {"frames", frames}, {"bilabial_frames", bilabial_frames}};
  }
};

/// `fuse(speech_def (T,V,3), expression_def (T,V,3)) → fused deformation (T,V,3)`.
using FuseFn = std::function<Tensor<float>(const Tensor<float>&, const Tensor<float>&)>;

/// Scores `fuse` on all (speech, expression) pairs of the `split` subjects.
inline FusionScore evaluate_fusion(const data::Dataset& ds, const ProceduralTruth& truth,
                                   const std::string& method, const FuseFn& fuse,
                                   data::Split split = data::Split::Test) {
  FusionScore s;
  s.method = method;
  const auto speech = ds.sequences(data::Domain::Speech, split);
  const auto expr = ds.sequences(data::Domain::Expression, split);
  if (speech.empty() || expr.empty())
    throw ArgumentError(std::string("evaluate_fusion: the ") + data::to_string(split) +
                        " split has no speech or no expression sequences");
  double err = 0, gap = 0, lve = 0, lsq = 0;
  for (const auto* sp : speech) {
    const Tensor<float> clean_a = truth.clean_deformation(truth.dir + "/speech/" + sp->name + ".wA.npy", truth.speech_bases);
    const Index T = sp->num_frames();
    if (clean_a.dim(0) != T) throw IoError(truth.dir + "/speech/" + sp->name + ".wA.npy", "frame count differs from the sequence");
    const Tensor<float>& tmpl = ds.template_of(sp->subject);
    auto bil = truth.bilabial.find(sp->name);
    for (const auto* ex : expr) {
      const Tensor<float> clean_e = stretch_to(truth.clean_deformation(truth.dir + "/expression/" + ex->name + ".wE.npy", truth.expression_bases), T);
      const Tensor<float> e = stretch_to(ex->deformations, T);
      const Tensor<float> fused = fuse(sp->deformations, e);
      Tensor<float> pred({T, ds.num_vertices(), 3}), ref({T, ds.num_vertices(), 3});
      const Index VN = ds.num_vertices() * 3;
      for (Index t = 0; t < T; ++t)
        for (Index i = 0; i < VN; ++i) {
          pred[t * VN + i] = tmpl[i] + fused[t * VN + i];
          ref[t * VN + i] = tmpl[i] + clean_a[t * VN + i] + clean_e[t * VN + i];
        }
      err += mve_mm(pred, ref) * static_cast<double>(T);
      lve += lve_mm(pred, ref, ds.lips) * static_cast<double>(T);
      lsq += lve_sq(pred, ref, ds.lips) * static_cast<double>(T);
      s.frames += T;
      ++s.pairs;
      if (bil != truth.bilabial.end() && !bil->second.empty()) {
        const auto gp = lip_gaps(pred, truth.lip_pairs), gr = lip_gaps(ref, truth.lip_pairs);
        for (auto f : bil->second) {
          if (f < 0 || f >= T) continue;
          gap += std::abs(gp[static_cast<std::size_t>(f)] - gr[static_cast<std::size_t>(f)]);
          ++s.bilabial_frames;
        }
      }
    }
  }
  const double nf = static_cast<double>(std::max<Index>(s.frames, 1));
  const double u = ds.unit_mm;  // data unit → mm (exactly 1 for mm data)
  s.err_mm = err / nf * u;
  s.lve_mm = lve / nf * u;
  s.lve_sq = lsq / nf * (u * u);
  s.gap_mm = (s.bilabial_frames ? gap / static_cast<double>(s.bilabial_frames) : 0.0) * u;
  return s;
}

/// The naive sum of the two input deformations (paper eq. 6; "interpolation of inputs").
inline Tensor<float> naive_sum(const Tensor<float>& a, const Tensor<float>& e) {
  Tensor<float> out = a.clone();
  const auto ec = e.contiguous();
  for (Index i = 0; i < out.numel(); ++i) out[i] += ec[i];
  return out;
}

}  // namespace blendfuse::metrics
