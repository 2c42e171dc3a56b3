// blendfuse — evaluation metrics for talking-face sequences. All take (T, V, 3) sequences in the
// mesh's units (mm for our data) of predicted and reference vertex positions (or deformations —
// every metric here is a difference, so either works as long as both agree). The results are in
// that same unit ("_mm" names the usual case): callers with data in another unit multiply by
// Dataset::unit_mm (squared for lve_sq) to report mm, as evaluate_fusion does.
//
//   lve_mm        lip vertex error: per frame the maximum L2 distance over lip vertices, averaged
//                 over frames (the paper's Table 1 convention, in mm)
//   lve_sq        the same with squared L2 (FaceFormer/CodeTalker's code computes this, mm²)
//   mve_mm        mean vertex error: mean L2 distance over all vertices and frames
//   fdd           upper-face dynamics deviation (CodeTalker): over upper-face vertices, the
//                 standard deviation over time of the displacement norm, reference minus
//                 prediction, averaged (needs deformations, not absolute positions)
//   lip_gap       mean distance between paired upper/lower lip vertices per frame
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "blendfuse/core/tensor.hpp"

namespace blendfuse::metrics {

namespace detail {
inline void check_pair(const Tensor<float>& a, const Tensor<float>& b, const char* what) {
  BF_CHECK(a.shape() == b.shape() && a.ndim() == 3 && a.dim(2) == 3, ShapeError, what,
           ": sequences must both be (T, V, 3), got ", a.shape_string(), " and ", b.shape_string());
}
inline double dist(const float* a, const float* b) {
  const double dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
  return std::sqrt(dx * dx + dy * dy + dz * dz);
}
inline void check_indices(const std::vector<std::int32_t>& idx, Index V, const char* what) {
  BF_CHECK(!idx.empty(), ArgumentError, what, ": empty vertex set");
  for (auto i : idx) BF_CHECK(i >= 0 && i < V, ArgumentError, what, ": vertex index ", i, " out of range for ", V, " vertices");
}
}  // namespace detail

/// Mean over frames of the max over `lips` of ‖pred − ref‖ (squared when `squared`).
inline double lve(const Tensor<float>& pred, const Tensor<float>& ref,
                  const std::vector<std::int32_t>& lips, bool squared = false) {
  detail::check_pair(pred, ref, "lve");
  const Index T = pred.dim(0), V = pred.dim(1);
  detail::check_indices(lips, V, "lve");
  const auto p = pred.contiguous(), r = ref.contiguous();
  double sum = 0;
  for (Index t = 0; t < T; ++t) {
    double worst = 0;
    for (auto v : lips) {
      const double d = detail::dist(p.data() + (t * V + v) * 3, r.data() + (t * V + v) * 3);
      worst = std::max(worst, squared ? d * d : d);
    }
    sum += worst;
  }
  return T ? sum / static_cast<double>(T) : 0.0;
}

inline double lve_mm(const Tensor<float>& pred, const Tensor<float>& ref, const std::vector<std::int32_t>& lips) {
  return lve(pred, ref, lips, false);
}
inline double lve_sq(const Tensor<float>& pred, const Tensor<float>& ref, const std::vector<std::int32_t>& lips) {
  return lve(pred, ref, lips, true);
}

/// Mean L2 distance over all vertices and frames.
inline double mve_mm(const Tensor<float>& pred, const Tensor<float>& ref) {
  detail::check_pair(pred, ref, "mve");
  const auto p = pred.contiguous(), r = ref.contiguous();
  const Index n = pred.dim(0) * pred.dim(1);
  double sum = 0;
  for (Index i = 0; i < n; ++i) sum += detail::dist(p.data() + 3 * i, r.data() + 3 * i);
  return n ? sum / static_cast<double>(n) : 0.0;
}

/// Upper-face dynamics deviation on deformation sequences (CodeTalker's definition).
inline double fdd(const Tensor<float>& pred_def, const Tensor<float>& ref_def,
                  const std::vector<std::int32_t>& upper) {
  detail::check_pair(pred_def, ref_def, "fdd");
  const Index T = pred_def.dim(0), V = pred_def.dim(1);
  detail::check_indices(upper, V, "fdd");
  if (T < 2) return 0.0;
  const auto p = pred_def.contiguous(), r = ref_def.contiguous();
  static const float zero[3] = {0, 0, 0};
  auto stdev = [&](const Tensor<float>& s, std::int32_t v) {
    double m = 0, m2 = 0;
    for (Index t = 0; t < T; ++t) {
      const double n = detail::dist(s.data() + (t * V + v) * 3, zero);
      m += n;
      m2 += n * n;
    }
    m /= static_cast<double>(T);
    return std::sqrt(std::max(0.0, m2 / static_cast<double>(T) - m * m));
  };
  double sum = 0;
  for (auto v : upper) sum += stdev(r, v) - stdev(p, v);
  return sum / static_cast<double>(upper.size());
}

/// Per-frame mean distance between paired (upper, lower) lip vertices of absolute positions.
inline std::vector<double> lip_gaps(const Tensor<float>& seq, const std::vector<std::array<std::int32_t, 2>>& pairs) {
  BF_CHECK(seq.ndim() == 3 && seq.dim(2) == 3, ShapeError, "lip_gaps: sequence must be (T, V, 3), got ", seq.shape_string());
  BF_CHECK(!pairs.empty(), ArgumentError, "lip_gaps: no lip pairs");
  const Index T = seq.dim(0), V = seq.dim(1);
  for (const auto& pr : pairs)
    BF_CHECK(pr[0] >= 0 && pr[0] < V && pr[1] >= 0 && pr[1] < V, ArgumentError, "lip_gaps: lip pair index out of range");
  const auto s = seq.contiguous();
  std::vector<double> out(static_cast<std::size_t>(T));
  for (Index t = 0; t < T; ++t) {
    double sum = 0;
    for (const auto& pr : pairs) sum += detail::dist(s.data() + (t * V + pr[0]) * 3, s.data() + (t * V + pr[1]) * 3);
    out[static_cast<std::size_t>(t)] = sum / static_cast<double>(pairs.size());
  }
  return out;
}

}  // namespace blendfuse::metrics
