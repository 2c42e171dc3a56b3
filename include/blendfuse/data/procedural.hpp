// blendfuse — the procedural two-domain face dataset (speech + expression) with known ground truth.
//
// What it builds (all deterministic in ProceduralConfig::seed; units mm, 30 fps):
// * FaceMesh (data/face_mesh.hpp): a face-like open surface (disk with a mouth slit and optional
//   eye holes) with separate upper/lower lip rows that coincide at rest; regions and weights ω.
// * Ground-truth bases, (K, V, 3) displacement fields, smooth and localised (C² Wendland falloffs):
//   speech   B_A*: jaw_open, lip_round, lip_press, lip_stretch, upper_lip_raise, lower_lip_funnel
//   expression B_E*: smile, sad, anger, surprise, disgust, brow-raise (no "_": file stems stay <subject>_<seq>)
//   Only speech bases move the two lip rows differently. Each speech basis k adds to the lip
//   opening (upper row − lower row) exactly gap_coeff[k] · λ(p) · E(p) for one shared field E
//   (|E| ≈ 12 mm at the mouth centre) and lens profile λ (1 at the centre, 0 at the corners):
//   gap_coeff = {1, 0.25, −1, 0, 0.35, 0.3}. So the lip opening of any speech frame is
//   o(t) · λ · E with o(t) = Σ_k gap_coeff[k] w_A[t,k]; lip_press (−1) closes what the others
//   open. Expression bases never open the lips (their fields are the same on both rows).
// * Subjects: neutral templates = canonical + a smooth identity offset (scale, nose, chin, cheeks,
//   brows, lip fullness, random low-frequency bumps), identical on both lip rows (closed at rest).
// * Speech sequences: a phoneme timeline (libespeak-ng events if compiled in, else a random
//   phoneme string) → viseme targets (data/phonemes.hpp), per-occurrence jitter ±15 %, Cohen–
//   Massaro style dominance-weighted coarticulation. The press weight never exceeds what closes
//   the lips (no interpenetration: o(t) ≥ 0) and, on the central frames of every /p b m/, equals
//   it exactly: those frames ("bilabial closures", recorded) have lip gap 0 in the clean truth.
//   Data = template + B_A* w_A + LEAK: B_E* of one random expression at weight `speech_leak`.
// * Expression sequences: neutral – onset – apex – offset – neutral envelope env(t) ∈ [0, 1] on one
//   primary expression (apex intensity 0.7–1) plus sometimes a weak secondary one. Data =
//   template + B_E* w_E + LEAK: speech basis `expression_leak_basis` (jaw_open) at weight
//   `expression_leak` · env(t). So a naive sum (speech data + expression data − template) leaves
//   the lips open by expression_leak · env · 12 mm on frames whose truth is a closed /p b m/.
//
// Dataset folder (docs: /work/shared/DATA.md) written by write_dataset(dir, config):
//   template.obj, regions/{lips.txt, upper_face.txt, weights.npy}, templates/<subject>.npy,
//   speech/<subject>_sentenceNN.npy, expression/<subject>_<expression>NN.npy (T, V, 3) float32,
//   split.json, and truth/:
//     speech_bases.npy (Ka,V,3), expression_bases.npy (Ke,V,3), bases.json (names, gap_coeff),
//     lip_pairs.npy (P,2) int32 (upper, lower vertex of each slit pair), uv.npy (V,2),
//     config.json (the configuration, and which phoneme source was used),
//     bilabial_frames.json {"<sequence>": [frame, ...]},
//     speech/<name>.wA.npy (T,Ka) clean weights, speech/<name>.leak_wE.npy (T,Ke) leaked weights,
//     speech/<name>.phonemes.json {"text": ..., "phonemes": [{"phoneme","start","end"}, ...]},
//     expression/<name>.wE.npy (T,Ke) clean weights, expression/<name>.leak_wA.npy (T,Ka).
//   Clean truth of a sequence = template + B_A* wA + B_E* wE (weights of the other domain are 0).
//   units.txt: the length unit of the files ("mm"; "m" with ProceduralConfig::unit_mm = 1000).
//   rig/arkit52.safetensors: the ARKit-52 rig of the canonical face (rig/arkit.hpp, docs/rigs.md),
//   in the files' unit (its metadata says which).
// Units: everything is generated in mm (every constant above is in mm); with unit_mm ≠ 1 (gen-data
// --units m) the coordinates written — template.obj, templates/, speech/, expression/ and the
// truth bases — are divided by unit_mm, so a metres copy of a dataset is the mm one × 0.001.
// Same seed and config → byte-identical files (on one platform; the espeak-ng path additionally
// depends on the installed espeak-ng version).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/core/domain.hpp"
#include "blendfuse/core/error.hpp"
#include "blendfuse/core/rng.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/data/dataset.hpp"
#include "blendfuse/data/face_mesh.hpp"
#include "blendfuse/data/phonemes.hpp"
#include "blendfuse/io/file.hpp"
#include "blendfuse/io/mesh.hpp"
#include "blendfuse/io/npy.hpp"
#include "blendfuse/io/wav.hpp"
#include "blendfuse/rig/arkit.hpp"

namespace blendfuse::data {

enum class PhonemeSource { Auto, Random, Espeak };

inline constexpr int kMaxExpressionBases = 6;
inline const std::array<const char*, kMaxExpressionBases>& expression_basis_names() {
  static const std::array<const char*, kMaxExpressionBases> n = {"smile", "sad", "anger",
                                                                 "surprise", "disgust", "brow-raise"};
  return n;
}
/// Contribution of each speech basis to the lip opening (see the file comment).
inline const std::array<double, kMaxSpeechBases>& speech_gap_coeff() {
  static const std::array<double, kMaxSpeechBases> c = {1.0, 0.25, -1.0, 0.0, 0.35, 0.3};
  return c;
}

struct ProceduralConfig {
  std::uint64_t seed = 20251029;
  int grid = 72;                  // parameter grid n×n: 72 → ~5,100 vertices
  bool eye_holes = true;
  int num_subjects = 8;
  int num_val = 1;                // subjects in split "val"
  int num_test = 1;               // subjects in split "test"; the rest are "train"
  int speech_per_subject = 4;
  int expression_per_subject = 5; // cycles through the expression bases
  int num_speech_bases = 6;       // Ka ∈ [3, 6] (jaw_open, lip_round, lip_press are always in)
  int num_expression_bases = 5;   // Ke ∈ [1, 6]
  double speech_seconds = 3.0;    // approximate sentence length (random timelines; espeak: words)
  double speech_leak = 0.25;      // weight of the leaked expression in speech data
  double expression_leak = 0.45;  // apex weight of the leaked speech basis in expression data
  int expression_leak_basis = kJawOpen;
  double identity_scale = 1.0;    // scales the per-subject identity offsets
  PhonemeSource phonemes = PhonemeSource::Auto;
  double fps = 30.0;
  /// Speech audio (gen-data --audio): every speech sequence is synthesised by libespeak-ng with
  /// its subject's voice (subject_voice), the phoneme events of that synthesis drive the face, and
  /// speech/<name>.wav (16 kHz, 16-bit) is written next to the .npy. Off: no audio, and the
  /// dataset is byte-identical to one written before this option existed.
  bool audio = false;
  /// Millimetres per unit of the written coordinates: 1 (mm, the default) or e.g. 1000 (metres).
  /// Generation is always in mm; only the files are converted.
  double unit_mm = 1.0;

  /// A small configuration for tests: ~600 vertices, 3 subjects, short sequences.
  static ProceduralConfig tiny() {
    ProceduralConfig c;
    c.grid = 25;
    c.num_subjects = 3;
    c.num_val = 1;
    c.num_test = 1;
    c.speech_per_subject = 2;
    c.expression_per_subject = 2;
    c.speech_seconds = 2.0;
    c.phonemes = PhonemeSource::Random;
    return c;
  }

  void validate() const {
    BF_CHECK(num_speech_bases >= 3 && num_speech_bases <= kMaxSpeechBases, ArgumentError,
             "ProceduralConfig: num_speech_bases ", num_speech_bases, " not in [3, 6]");
    BF_CHECK(num_expression_bases >= 1 && num_expression_bases <= kMaxExpressionBases, ArgumentError,
             "ProceduralConfig: num_expression_bases ", num_expression_bases, " not in [1, 6]");
    BF_CHECK(num_subjects >= 1 && num_val >= 0 && num_test >= 0 && num_val + num_test < num_subjects,
             ArgumentError, "ProceduralConfig: need at least one train subject (subjects ",
             num_subjects, ", val ", num_val, ", test ", num_test, ")");
    BF_CHECK(speech_per_subject >= 0 && expression_per_subject >= 0, ArgumentError,
             "ProceduralConfig: negative sequence count");
    BF_CHECK(expression_leak_basis >= 0 && expression_leak_basis < num_speech_bases, ArgumentError,
             "ProceduralConfig: expression_leak_basis ", expression_leak_basis, " not a speech basis");
    BF_CHECK(speech_seconds >= 0.5 && speech_seconds <= 60, ArgumentError,
             "ProceduralConfig: speech_seconds ", speech_seconds, " not in [0.5, 60]");
    BF_CHECK(!audio || phonemes != PhonemeSource::Random, ArgumentError,
             "ProceduralConfig: audio needs espeak-ng phoneme timings, not random phonemes");
    BF_CHECK(fps > 0 && std::isfinite(speech_leak) && std::isfinite(expression_leak) &&
                 std::isfinite(identity_scale),
             ArgumentError, "ProceduralConfig: bad fps or leak/scale value");
    BF_CHECK(unit_mm > 0 && std::isfinite(unit_mm), ArgumentError, "ProceduralConfig: unit_mm ", unit_mm,
             " must be positive");
  }
};

/// Ground-truth bases.
struct FaceBases {
  Tensor<float> speech;       // (Ka, V, 3)
  Tensor<float> expression;   // (Ke, V, 3)
  std::vector<std::string> speech_names, expression_names;
  std::vector<double> gap_coeff;  // (Ka) lip-opening contribution of each speech basis
};

struct Subject {
  std::string name;
  Tensor<float> neutral;  // (V, 3)
};

/// The domain of a generated sequence (the same type as data::Domain).
using SequenceKind = Domain;

struct ProceduralSequence {
  std::string name;       // "<subject>_sentence01", "<subject>_smile01"
  std::string subject;
  int subject_index = 0;
  SequenceKind kind = SequenceKind::Speech;
  Tensor<float> positions;        // (T, V, 3) data (clean + leak), absolute
  Tensor<float> w_speech;         // (T, Ka) clean speech weights (0 for expression sequences)
  Tensor<float> w_expression;     // (T, Ke) clean expression weights (0 for speech sequences)
  Tensor<float> leak_speech;      // (T, Ka) leaked speech weights (expression sequences)
  Tensor<float> leak_expression;  // (T, Ke) leaked expression weights (speech sequences)
  std::vector<PhonemeSegment> phonemes;        // speech sequences
  std::string text;                            // sentence given to espeak-ng ("" for random)
  std::vector<float> audio;                    // 16 kHz mono speech (config.audio), T/fps seconds
  std::string voice;                           // espeak-ng voice of the audio ("" without audio)
  std::vector<std::int32_t> bilabial_frames;   // frames whose truth is a closed /p b m/
  int expression_id = -1;       // primary expression (expression seqs) / leaked one (speech seqs)
  Index num_frames() const { return positions.dim(0); }
};

/// Mesh, bases and subjects: everything except the sequences.
struct FaceModel {
  ProceduralConfig config;
  FaceMesh mesh;
  FaceBases bases;
  std::vector<Subject> subjects;
  std::vector<std::string> train, val, test;  // subject names per split
};

struct ProceduralDataset {
  FaceModel model;
  std::vector<ProceduralSequence> speech, expression;
  std::string phoneme_source;  // "espeak-ng" or "random"
};

namespace detail {

inline std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0) {
  std::uint64_t h = seed ^ 0x9e3779b97f4a7c15ULL;
  for (std::uint64_t v : {a, b, c}) {
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h = (h ^ (h >> 31)) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
  }
  return h;
}

inline std::string two_digits(int i) {
  std::string s = std::to_string(i);
  return s.size() < 2 ? "0" + s : s;
}

/// Speech basis `k` at one vertex: continuous part + lens·(h_up·α − h_low·β)·E, α + β = gap_coeff.
inline Vec3 speech_basis_at(int k, const BasisContext& c, const FaceMesh& m) {
  const double xc = m.mouth_half_width, ym = m.mouth_y;
  const double x = c.x, y = c.y;
  const double M_lip = bump(x, y, 0.0, ym, xc + 12.0, 16.0);
  const double M_upper = bump(x, y, 0.0, ym + 9.0, xc + 8.0, 12.0);
  const double M_lower = bump(x, y, 0.0, ym - 9.0, xc + 8.0, 12.0);
  const double M_wide = bump(x, y, 0.0, ym, xc + 22.0, 22.0);
  Vec3 C;
  double alpha = 0, beta = 0;
  switch (k) {
    case kJawOpen: {
      const double sig = smoothstep01(0.5 + 0.5 * (ym - y) / 14.0);
      const double w = (1.0 - c.lambda) * sig;
      C = {c.J.x * c.lat * w, c.J.y * c.lat * w, c.J.z * c.lat * w};
      alpha = 0.0;
      beta = 1.0;
      break;
    }
    case kLipRound:
      C = {-0.35 * x * M_lip, 0.0, 7.0 * M_lip};
      alpha = 0.12;
      beta = 0.13;
      break;
    case kLipPress: {
      const double bulge = bump(x, y, 0.0, ym + 12.0, 20.0, 6.0) + bump(x, y, 0.0, ym - 13.0, 20.0, 6.0);
      C = {0.06 * x * M_lip, 0.0, -2.5 * M_lip + 1.0 * bulge};
      alpha = -0.5;
      beta = -0.5;
      break;
    }
    case kLipStretch:
      C = {0.25 * x * M_wide, -0.3 * M_lip, -1.5 * M_lip};
      break;
    case kUpperLipRaise:
      C = {0.0, 2.0 * M_upper, 1.0 * M_upper};
      alpha = 0.35;
      break;
    case kLowerLipFunnel:
      C = {-0.1 * x * M_lip, 0.0, 3.0 * M_lip + 2.0 * M_lower};
      beta = 0.3;
      break;
    default:
      throw ArgumentError(blendfuse::detail::concat("speech basis index ", k, " out of range"));
  }
  const double s = c.lambda * (c.h_up * alpha - (1.0 - c.h_up) * beta);
  return {C.x + s * c.E.x, C.y + s * c.E.y, C.z + s * c.E.z};
}

/// Expression basis `k` at one vertex (the same on both lip rows: never opens the mouth).
inline Vec3 expression_basis_at(int k, const BasisContext& c, const FaceMesh& m) {
  const double xc = m.mouth_half_width, ym = m.mouth_y;
  const double ex = FaceLayout::eye_x, ey = FaceLayout::eye_y, by = FaceLayout::brow_y;
  const double x = c.x, y = c.y;
  Vec3 d;
  auto add = [&](double w, double dx, double dy, double dz) {
    d.x += w * dx;
    d.y += w * dy;
    d.z += w * dz;
  };
  for (double s : {-1.0, 1.0}) {
    switch (k) {
      case 0:  // smile: corners up and out, cheeks up, lower lids up
        add(bump(x, y, s * xc, ym, 22.0, 20.0), s * 6.0, 6.0, -2.0);
        add(bump(x, y, s * 40.0, -5.0, 25.0, 22.0), s * 1.0, 4.0, 3.0);
        add(bump(x, y, s * ex, ey - 9.0, 14.0, 7.0), 0.0, 2.5, 0.5);
        break;
      case 1:  // sad: corners down, inner brows up
        add(bump(x, y, s * xc, ym, 20.0, 18.0), -s * 1.0, -5.0, 0.0);
        add(bump(x, y, s * 14.0, by, 14.0, 10.0), 0.0, 5.0, 0.5);
        break;
      case 2:  // anger: brows down and together, nostrils flare
        add(bump(x, y, s * 22.0, by, 20.0, 12.0), -s * 4.0, -5.0, 1.0);
        add(bump(x, y, s * 10.0, -15.0, 8.0, 6.0), s * 2.0, 1.0, 0.0);
        break;
      case 3:  // surprise: brows and upper lids up (no jaw: that is speech's jaw_open)
        add(bump(x, y, s * 30.0, by, 28.0, 16.0), 0.0, 8.0, 0.0);
        add(bump(x, y, s * ex, ey + 8.0, 14.0, 6.0), 0.0, 3.0, 0.0);
        break;
      case 4:  // disgust: brows down, lip corners down a little
        add(bump(x, y, s * 20.0, by, 18.0, 12.0), -s * 2.0, -3.0, 0.0);
        add(bump(x, y, s * xc, ym - 6.0, 12.0, 10.0), 0.0, -1.5, 0.0);
        break;
      case 5:  // brow raise
        add(bump(x, y, s * 28.0, by + 2.0, 30.0, 18.0), 0.0, 7.0, 0.5);
        break;
      default:
        throw ArgumentError(blendfuse::detail::concat("expression basis index ", k, " out of range"));
    }
  }
  switch (k) {
    case 1: add(bump(x, y, 0.0, -72.0, 22.0, 16.0), 0.0, 3.0, 2.0); break;   // chin raise
    case 2: {                                                                 // lips tighten
      const double w = bump(x, y, 0.0, ym, xc + 10.0, 14.0);
      add(w, -0.12 * x, 0.0, -1.5);
      break;
    }
    case 3: {
      add(bump(x, y, 0.0, 65.0, 50.0, 30.0), 0.0, 3.0, 0.0);                  // forehead
      const double w = bump(x, y, 0.0, ym, xc + 10.0, 14.0);
      add(w, -0.05 * x, 0.0, 1.5);
      break;
    }
    case 4:
      add(bump(x, y, 0.0, 12.0, 16.0, 14.0), 0.0, 3.0, 1.0);                  // nose wrinkle
      add(bump(x, y, 0.0, ym + 10.0, xc + 6.0, 16.0), 0.0, 3.5, 1.0);         // upper lip up
      break;
    case 5: add(bump(x, y, 0.0, 70.0, 55.0, 30.0), 0.0, 2.0, 0.0); break;
    default: break;
  }
  return d;
}

/// Adds Σ_k w[k] · B[k] to `acc` (V·3 doubles). B: (K, V, 3), w: K weights.
inline void accumulate(std::vector<double>& acc, const Tensor<float>& B, const float* w) {
  const Index K = B.dim(0), n = B.dim(1) * 3;
  for (Index k = 0; k < K; ++k) {
    const double wk = w[k];
    if (wk == 0.0) continue;
    const float* b = B.data() + k * n;
    for (Index i = 0; i < n; ++i) acc[static_cast<std::size_t>(i)] += wk * b[i];
  }
}

}  // namespace detail

/// Builds the ground-truth bases on `mesh`.
inline FaceBases build_bases(const FaceMesh& mesh, int num_speech, int num_expression) {
  BF_CHECK(num_speech >= 1 && num_speech <= kMaxSpeechBases && num_expression >= 1 &&
               num_expression <= kMaxExpressionBases,
           ArgumentError, "build_bases: ", num_speech, " speech / ", num_expression,
           " expression bases requested (at most 6 each)");
  const auto ctx = detail::basis_context(mesh);
  const Index V = mesh.num_vertices();
  FaceBases b;
  b.speech = Tensor<float>({num_speech, V, 3});
  b.expression = Tensor<float>({num_expression, V, 3});
  for (int k = 0; k < num_speech; ++k) {
    b.speech_names.push_back(speech_basis_names()[static_cast<std::size_t>(k)]);
    b.gap_coeff.push_back(speech_gap_coeff()[static_cast<std::size_t>(k)]);
    for (Index v = 0; v < V; ++v) {
      const auto d = detail::speech_basis_at(k, ctx[static_cast<std::size_t>(v)], mesh);
      b.speech(k, v, 0) = static_cast<float>(d.x);
      b.speech(k, v, 1) = static_cast<float>(d.y);
      b.speech(k, v, 2) = static_cast<float>(d.z);
    }
  }
  for (int k = 0; k < num_expression; ++k) {
    b.expression_names.push_back(expression_basis_names()[static_cast<std::size_t>(k)]);
    for (Index v = 0; v < V; ++v) {
      const auto d = detail::expression_basis_at(k, ctx[static_cast<std::size_t>(v)], mesh);
      b.expression(k, v, 0) = static_cast<float>(d.x);
      b.expression(k, v, 1) = static_cast<float>(d.y);
      b.expression(k, v, 2) = static_cast<float>(d.z);
    }
  }
  return b;
}

/// A subject's neutral: the canonical mesh plus a smooth identity offset (the same on both lip rows).
inline Tensor<float> make_subject_neutral(const FaceMesh& mesh, Rng& rng, double scale = 1.0) {
  using detail::bump;
  const double sx = rng.normal(0.0, 0.04) * scale, sy = rng.normal(0.0, 0.04) * scale;
  const double nose = rng.normal(0.0, 4.0) * scale;
  const double chin_y = rng.normal(0.0, 3.0) * scale, chin_z = rng.normal(0.0, 3.0) * scale;
  const double cheek_x = rng.normal(0.0, 2.0) * scale, cheek_z = rng.normal(0.0, 2.0) * scale;
  const double brow_y = rng.normal(0.0, 2.0) * scale, brow_z = rng.normal(0.0, 1.5) * scale;
  const double lips_z = rng.normal(0.0, 1.5) * scale;
  struct Blob {
    double cx, cy, r, dx, dy, dz;
  };
  std::vector<Blob> blobs(6);
  for (auto& b : blobs) {
    b.cx = rng.uniform(-60.0, 60.0);
    b.cy = rng.uniform(-90.0, 90.0);
    b.r = rng.uniform(25.0, 50.0);
    b.dx = rng.normal(0.0, 1.5) * scale;
    b.dy = rng.normal(0.0, 1.5) * scale;
    b.dz = rng.normal(0.0, 1.5) * scale;
  }
  const double ym = mesh.mouth_y, xc = mesh.mouth_half_width;
  Tensor<float> out = mesh.vertices.clone();
  for (Index k = 0; k < mesh.num_vertices(); ++k) {
    const double x = mesh.vertices(k, 0), y = mesh.vertices(k, 1);
    double dx = sx * x, dy = sy * y, dz = 0;
    dz += nose * detail::gauss2(x, y, 0.0, -2.0, 8.0, 16.0);
    const double chin = bump(x, y, 0.0, -80.0, 35.0, 30.0);
    dy += chin_y * chin;
    dz += chin_z * chin;
    for (double s : {-1.0, 1.0}) {
      const double cheek = bump(x, y, s * 45.0, -10.0, 25.0, 25.0);
      dx += s * cheek_x * cheek;
      dz += cheek_z * cheek;
      const double brow = bump(x, y, s * 30.0, FaceLayout::brow_y, 25.0, 12.0);
      dy += brow_y * brow;
      dz += brow_z * brow;
    }
    dz += lips_z * bump(x, y, 0.0, ym, xc + 8.0, 14.0);
    for (const auto& b : blobs) {
      const double w = bump(x, y, b.cx, b.cy, b.r, b.r);
      dx += w * b.dx;
      dy += w * b.dy;
      dz += w * b.dz;
    }
    out(k, 0) = static_cast<float>(mesh.vertices(k, 0) + dx);
    out(k, 1) = static_cast<float>(mesh.vertices(k, 1) + dy);
    out(k, 2) = static_cast<float>(mesh.vertices(k, 2) + dz);
  }
  return out;
}

/// Absolute positions (T, V, 3) = neutral + B_A wA + B_E wE (+ any further (B, w) pairs), summed in
/// double. wA: (T, Ka), wE: (T, Ke); an empty weight tensor skips its basis.
inline Tensor<float> compose(const Tensor<float>& neutral, const FaceBases& bases,
                             const Tensor<float>& wA, const Tensor<float>& wE,
                             const Tensor<float>& leak_wA = {}, const Tensor<float>& leak_wE = {}) {
  const Index V = neutral.dim(0);
  Index T = -1;
  for (const Tensor<float>* w : {&wA, &wE, &leak_wA, &leak_wE})
    if (!w->empty()) {
      BF_CHECK(T < 0 || w->dim(0) == T, ShapeError, "compose: weight sequences of different lengths");
      T = w->dim(0);
    }
  BF_CHECK(T >= 0, ArgumentError, "compose: no weights given");
  check_shape(neutral, {V, 3}, "compose(neutral)");
  if (!wA.empty()) check_shape(wA, {T, bases.speech.dim(0)}, "compose(wA)");
  if (!leak_wA.empty()) check_shape(leak_wA, {T, bases.speech.dim(0)}, "compose(leak_wA)");
  if (!wE.empty()) check_shape(wE, {T, bases.expression.dim(0)}, "compose(wE)");
  if (!leak_wE.empty()) check_shape(leak_wE, {T, bases.expression.dim(0)}, "compose(leak_wE)");
  Tensor<float> out({T, V, 3});
  std::vector<double> acc(static_cast<std::size_t>(V * 3));
  const auto n0 = neutral.contiguous();
  for (Index t = 0; t < T; ++t) {
    for (Index i = 0; i < V * 3; ++i) acc[static_cast<std::size_t>(i)] = n0[i];
    if (!wA.empty()) detail::accumulate(acc, bases.speech, wA.data() + t * wA.dim(1));
    if (!leak_wA.empty()) detail::accumulate(acc, bases.speech, leak_wA.data() + t * leak_wA.dim(1));
    if (!wE.empty()) detail::accumulate(acc, bases.expression, wE.data() + t * wE.dim(1));
    if (!leak_wE.empty()) detail::accumulate(acc, bases.expression, leak_wE.data() + t * leak_wE.dim(1));
    float* o = out.data() + t * V * 3;
    for (Index i = 0; i < V * 3; ++i) o[i] = static_cast<float>(acc[static_cast<std::size_t>(i)]);
  }
  return out;
}

/// Largest distance between the two copies of a lip-slit vertex in one frame (V·3 floats), mm.
inline double lip_gap(const float* frame, const FaceMesh& mesh) {
  double g = 0;
  for (const auto& p : mesh.lip_pairs) {
    const float* a = frame + 3 * static_cast<Index>(p[0]);
    const float* b = frame + 3 * static_cast<Index>(p[1]);
    const double dx = double(a[0]) - b[0], dy = double(a[1]) - b[1], dz = double(a[2]) - b[2];
    g = std::max(g, std::sqrt(dx * dx + dy * dy + dz * dz));
  }
  return g;
}
/// Smallest vertical opening (upper-row y − lower-row y) along the slit; negative = lips overlap.
inline double lip_min_opening(const float* frame, const FaceMesh& mesh) {
  double g = 1e300;
  for (const auto& p : mesh.lip_pairs)
    g = std::min(g, double(frame[3 * static_cast<Index>(p[0]) + 1]) - frame[3 * static_cast<Index>(p[1]) + 1]);
  return g;
}
/// lip_gap of every frame of a (T, V, 3) sequence.
inline std::vector<double> lip_gaps(const Tensor<float>& seq, const FaceMesh& mesh) {
  check_shape(seq, {-1, mesh.num_vertices(), 3}, "lip_gaps");
  const auto c = seq.contiguous();
  std::vector<double> g(static_cast<std::size_t>(c.dim(0)));
  for (Index t = 0; t < c.dim(0); ++t) g[static_cast<std::size_t>(t)] = lip_gap(c.data() + t * c.dim(1) * 3, mesh);
  return g;
}

/// Clean speech weights (T, Ka) from a phoneme timeline; fills the bilabial-closure frames.
inline Tensor<float> speech_weights_from_timeline(const std::vector<PhonemeSegment>& tl, int Ka,
                                                  double fps, Rng& rng,
                                                  std::vector<std::int32_t>& closure_frames) {
  BF_CHECK(!tl.empty(), ArgumentError, "speech_weights_from_timeline: empty timeline");
  BF_CHECK(Ka >= 3 && Ka <= kMaxSpeechBases, ArgumentError,
           "speech_weights_from_timeline: Ka ", Ka, " not in [3, 6]");
  const double dur = tl.back().end;
  const Index T = std::max<Index>(1, static_cast<Index>(std::ceil(dur * fps - 1e-9)));
  struct Seg {
    double c, s, alpha;
    std::array<double, kMaxSpeechBases> target;
  };
  std::vector<Seg> segs;
  for (const auto& p : tl) {
    const Viseme v = viseme_of(p.phoneme);
    Seg s;
    s.c = 0.5 * (p.start + p.end);
    s.s = 0.5 * (p.end - p.start) + 0.035;
    s.alpha = viseme_dominance(v);
    s.target = viseme_target(v);
    for (double& x : s.target) x = std::clamp(x * rng.uniform(0.85, 1.15), 0.0, 1.0);
    segs.push_back(s);
  }
  const auto& gc = speech_gap_coeff();
  Tensor<float> w({T, Ka});
  std::vector<std::uint8_t> closure(static_cast<std::size_t>(T), 0);
  for (const auto& p : tl) {
    if (!is_bilabial(p.phoneme)) continue;
    const double d = p.end - p.start, lo = p.start + 0.15 * d, hi = p.end - 0.15 * d;
    bool any = false;
    for (Index t = 0; t < T; ++t) {
      const double time = static_cast<double>(t) / fps;
      if (time >= lo && time <= hi) closure[static_cast<std::size_t>(t)] = 1, any = true;
    }
    if (!any) {
      const Index t = std::clamp<Index>(static_cast<Index>(std::lround(0.5 * (p.start + p.end) * fps)), 0, T - 1);
      closure[static_cast<std::size_t>(t)] = 1;
    }
  }
  for (Index t = 0; t < T; ++t) {
    const double time = static_cast<double>(t) / fps;
    std::array<double, kMaxSpeechBases> num{};
    double den = 1e-9;
    for (const auto& s : segs) {
      const double u = (time - s.c) / s.s;
      const double D = s.alpha * std::exp(-u * u);
      den += D;
      for (int k = 0; k < kMaxSpeechBases; ++k) num[static_cast<std::size_t>(k)] += D * s.target[static_cast<std::size_t>(k)];
    }
    std::array<double, kMaxSpeechBases> wt{};
    for (int k = 0; k < kMaxSpeechBases; ++k) wt[static_cast<std::size_t>(k)] = num[static_cast<std::size_t>(k)] / den;
    // The press closes at most what the other bases open; on closure frames exactly that.
    double opening = 0;
    for (int k = 0; k < Ka; ++k)
      if (k != kLipPress) opening += gc[static_cast<std::size_t>(k)] * static_cast<float>(wt[static_cast<std::size_t>(k)]);
    double& press = wt[kLipPress];
    press = closure[static_cast<std::size_t>(t)] ? opening : std::min(press, opening);
    for (int k = 0; k < Ka; ++k) w(t, k) = static_cast<float>(wt[static_cast<std::size_t>(k)]);
    if (closure[static_cast<std::size_t>(t)]) closure_frames.push_back(static_cast<std::int32_t>(t));
  }
  return w;
}

/// The name of subject `s` ("P01", ...; three digits beyond 99 subjects).
inline std::string subject_name(const ProceduralConfig& cfg, int s) {
  const int width = cfg.num_subjects > 99 ? 3 : 2;
  std::string num = std::to_string(s + 1);
  while (static_cast<int>(num.size()) < width) num = "0" + num;
  return "P" + num;
}

/// Builds the mesh, bases, subjects and split of a configuration.
inline FaceModel make_face_model(const ProceduralConfig& cfg) {
  cfg.validate();
  FaceModel m;
  m.config = cfg;
  m.mesh = build_face_mesh(cfg.grid, cfg.eye_holes);
  m.bases = build_bases(m.mesh, cfg.num_speech_bases, cfg.num_expression_bases);
  for (int s = 0; s < cfg.num_subjects; ++s) {
    Rng rng(detail::mix_seed(cfg.seed, 1, static_cast<std::uint64_t>(s)));
    Subject sub{subject_name(cfg, s), make_subject_neutral(m.mesh, rng, cfg.identity_scale)};
    const int n_train = cfg.num_subjects - cfg.num_val - cfg.num_test;
    (s < n_train ? m.train : (s < n_train + cfg.num_val ? m.val : m.test)).push_back(sub.name);
    m.subjects.push_back(std::move(sub));
  }
  return m;
}

/// The voice of subject `s` in audio datasets: espeak-ng English voice variants (male m1–m7,
/// female f1–f5) with different speaking rates and pitches, cycled.
inline EspeakVoice subject_voice(int s) {
  static const char* names[] = {"en+m1", "en+f2", "en+m3", "en+f4", "en+m7", "en+f1", "en+m2", "en+f3",
                                "en+m5", "en+f5", "en+m4", "en+m6"};
  static const int rates[] = {160, 185, 150, 200, 170, 175, 190, 155, 180, 165, 195, 172};
  static const int pitches[] = {45, 55, 40, 60, 50, 52, 35, 58, 48, 62, 42, 50};
  BF_CHECK(s >= 0, ArgumentError, "subject_voice: negative subject index ", s);
  const auto k = static_cast<std::size_t>(s) % 12;
  EspeakVoice v;
  v.name = names[k];
  v.rate = rates[k];
  v.pitch = pitches[k];
  v.noise_seed = static_cast<unsigned>(1 + s);
  return v;
}

/// Which phoneme source a configuration resolves to on this build ("espeak-ng" or "random").
inline std::string resolved_phoneme_source(const ProceduralConfig& cfg) {
  if (cfg.audio) {
    BF_CHECK(espeak_available(), ArgumentError,
             "speech audio (gen-data --audio) needs libespeak-ng: install libespeak-ng-dev and rebuild "
             "(CMake then defines BLENDFUSE_WITH_ESPEAK)");
    return "espeak-ng";
  }
  if (cfg.phonemes == PhonemeSource::Random) return "random";
  if (cfg.phonemes == PhonemeSource::Espeak) {
    BF_CHECK(espeak_available(), ArgumentError,
             "ProceduralConfig: phonemes = Espeak but libespeak-ng is not compiled in or does not "
             "initialise (build with BLENDFUSE_WITH_ESPEAK and libespeak-ng)");
    return "espeak-ng";
  }
  return espeak_available() ? "espeak-ng" : "random";
}

/// Speech sequence `q` of subject `s` (deterministic in the seed, independent of other sequences).
inline ProceduralSequence make_speech_sequence(const FaceModel& model, int s, int q) {
  const auto& cfg = model.config;
  BF_CHECK(s >= 0 && s < static_cast<int>(model.subjects.size()), ArgumentError,
           "make_speech_sequence: subject ", s, " out of range");
  Rng rng(detail::mix_seed(cfg.seed, 2, static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(q)));
  ProceduralSequence seq;
  seq.subject = model.subjects[static_cast<std::size_t>(s)].name;
  seq.subject_index = s;
  seq.kind = SequenceKind::Speech;
  seq.name = seq.subject + "_sentence" + detail::two_digits(q + 1);
  if (resolved_phoneme_source(cfg) == "espeak-ng") {
    const int words = std::max(3, static_cast<int>(std::lround(cfg.speech_seconds * 2.5)));
    seq.text = random_sentence(rng, words);
    if (cfg.audio) {
      const EspeakVoice voice = subject_voice(s);
      auto u = espeak_synthesize(seq.text, voice);
      if (!u)
        throw IoError("espeak-ng", blendfuse::detail::concat("cannot synthesise \"", seq.text, "\" with voice ", voice.name));
      seq.phonemes = std::move(u->phonemes);
      seq.audio = io::resample(u->samples, u->sample_rate, io::kSpeechSampleRate);
      seq.voice = voice.name;
    } else {
      auto tl = espeak_phoneme_timeline(seq.text);
      if (!tl) throw IoError("espeak-ng", blendfuse::detail::concat("no phoneme events for \"", seq.text, "\""));
      seq.phonemes = std::move(*tl);
    }
  } else {
    seq.phonemes = random_phoneme_timeline(rng, cfg.speech_seconds);
  }
  const int Ka = cfg.num_speech_bases, Ke = cfg.num_expression_bases;
  seq.w_speech = speech_weights_from_timeline(seq.phonemes, Ka, cfg.fps, rng, seq.bilabial_frames);
  const Index T = seq.w_speech.dim(0);
  if (cfg.audio)  // exactly T frames of audio: round(T · 16000 / fps) samples
    seq.audio.resize(static_cast<std::size_t>(std::llround(static_cast<double>(T) * io::kSpeechSampleRate / cfg.fps)), 0.0f);
  seq.w_expression = Tensor<float>({T, Ke});
  seq.leak_speech = Tensor<float>({T, Ka});
  seq.leak_expression = Tensor<float>({T, Ke});
  seq.expression_id = static_cast<int>(rng.below(static_cast<std::uint64_t>(Ke)));
  for (Index t = 0; t < T; ++t) seq.leak_expression(t, seq.expression_id) = static_cast<float>(cfg.speech_leak);
  seq.positions = compose(model.subjects[static_cast<std::size_t>(s)].neutral, model.bases, seq.w_speech,
                          {}, {}, seq.leak_expression);
  return seq;
}

/// Expression sequence `q` of subject `s`: expression (q mod Ke), onset–apex–offset.
inline ProceduralSequence make_expression_sequence(const FaceModel& model, int s, int q) {
  const auto& cfg = model.config;
  BF_CHECK(s >= 0 && s < static_cast<int>(model.subjects.size()), ArgumentError,
           "make_expression_sequence: subject ", s, " out of range");
  Rng rng(detail::mix_seed(cfg.seed, 3, static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(q)));
  const int Ka = cfg.num_speech_bases, Ke = cfg.num_expression_bases;
  ProceduralSequence seq;
  seq.subject = model.subjects[static_cast<std::size_t>(s)].name;
  seq.subject_index = s;
  seq.kind = SequenceKind::Expression;
  seq.expression_id = q % Ke;
  seq.name = seq.subject + "_" + expression_basis_names()[static_cast<std::size_t>(seq.expression_id)] +
             detail::two_digits(q / Ke + 1);
  const int hold0 = 4 + static_cast<int>(rng.below(7)), onset = 8 + static_cast<int>(rng.below(11));
  const int apex = 20 + static_cast<int>(rng.below(21)), offset = 8 + static_cast<int>(rng.below(11));
  const int hold1 = 4 + static_cast<int>(rng.below(7));
  const Index T = hold0 + onset + apex + offset + hold1;
  const double intensity = rng.uniform(0.7, 1.0);
  int secondary = -1;
  double sec_w = 0;
  if (Ke > 1 && rng.uniform() < 0.5) {
    secondary = (seq.expression_id + 1 + static_cast<int>(rng.below(static_cast<std::uint64_t>(Ke - 1)))) % Ke;
    sec_w = rng.uniform(0.05, 0.2);
  }
  const double wobble_f = rng.uniform(0.3, 0.8), wobble_p = rng.uniform(0.0, 6.283185307179586);
  seq.w_speech = Tensor<float>({T, Ka});
  seq.w_expression = Tensor<float>({T, Ke});
  seq.leak_speech = Tensor<float>({T, Ka});
  seq.leak_expression = Tensor<float>({T, Ke});
  for (Index t = 0; t < T; ++t) {
    double env;
    if (t < hold0) env = 0;
    else if (t < hold0 + onset) env = detail::smoothstep01(double(t - hold0 + 1) / onset);
    else if (t < hold0 + onset + apex) env = 1;
    else if (t < hold0 + onset + apex + offset)
      env = 1.0 - detail::smoothstep01(double(t - hold0 - onset - apex + 1) / offset);
    else env = 0;
    const double wob = 1.0 + 0.04 * std::sin(wobble_p + 6.283185307179586 * wobble_f * static_cast<double>(t) / cfg.fps);
    seq.w_expression(t, seq.expression_id) = static_cast<float>(env * intensity * wob);
    if (secondary >= 0) seq.w_expression(t, secondary) = static_cast<float>(env * sec_w);
    seq.leak_speech(t, cfg.expression_leak_basis) = static_cast<float>(env * cfg.expression_leak);
  }
  seq.positions = compose(model.subjects[static_cast<std::size_t>(s)].neutral, model.bases, {},
                          seq.w_expression, seq.leak_speech, {});
  return seq;
}

/// The whole dataset in memory.
inline ProceduralDataset generate_dataset(const ProceduralConfig& cfg) {
  ProceduralDataset ds;
  ds.model = make_face_model(cfg);
  ds.phoneme_source = resolved_phoneme_source(cfg);
  for (int s = 0; s < cfg.num_subjects; ++s) {
    for (int q = 0; q < cfg.speech_per_subject; ++q) ds.speech.push_back(make_speech_sequence(ds.model, s, q));
    for (int q = 0; q < cfg.expression_per_subject; ++q)
      ds.expression.push_back(make_expression_sequence(ds.model, s, q));
  }
  return ds;
}

/// The clean truth of a sequence: neutral + B_A* w_speech + B_E* w_expression, (T, V, 3).
inline Tensor<float> clean_truth(const FaceModel& model, const ProceduralSequence& seq) {
  return compose(model.subjects[static_cast<std::size_t>(seq.subject_index)].neutral, model.bases,
                 seq.w_speech, seq.w_expression);
}

namespace detail {

inline std::string indices_text(const std::vector<std::int32_t>& idx) {
  std::string s;
  for (auto i : idx) s += std::to_string(i) + "\n";
  return s;
}

inline nlohmann::ordered_json config_json(const ProceduralConfig& c, const std::string& source) {
  nlohmann::ordered_json j;
  j["generator"] = "blendfuse procedural v1";
  j["seed"] = c.seed;
  j["grid"] = c.grid;
  j["eye_holes"] = c.eye_holes;
  j["num_subjects"] = c.num_subjects;
  j["num_val"] = c.num_val;
  j["num_test"] = c.num_test;
  j["speech_per_subject"] = c.speech_per_subject;
  j["expression_per_subject"] = c.expression_per_subject;
  j["num_speech_bases"] = c.num_speech_bases;
  j["num_expression_bases"] = c.num_expression_bases;
  j["speech_seconds"] = c.speech_seconds;
  j["speech_leak"] = c.speech_leak;
  j["expression_leak"] = c.expression_leak;
  j["expression_leak_basis"] = speech_basis_names()[static_cast<std::size_t>(c.expression_leak_basis)];
  j["identity_scale"] = c.identity_scale;
  j["fps"] = c.fps;
  j["phoneme_source"] = source;
  j["units"] = unit_name(c.unit_mm);
  if (c.audio) {  // only with audio, so that datasets without it stay byte-identical
    j["audio"] = true;
    j["audio_sample_rate"] = io::kSpeechSampleRate;
    nlohmann::ordered_json voices = nlohmann::ordered_json::object();
    for (int s = 0; s < c.num_subjects; ++s) {
      const EspeakVoice v = subject_voice(s);
      voices[subject_name(c, s)] =
          nlohmann::ordered_json{{"voice", v.name}, {"rate", v.rate}, {"pitch", v.pitch}};
    }
    j["voices"] = voices;
  }
  return j;
}

inline void save_json(const std::string& path, const nlohmann::ordered_json& j) {
  io::write_file_atomic(path, j.dump(2) + "\n");
}

/// x / unit_mm as a new tensor; x itself for mm (so mm files stay byte-identical).
inline Tensor<float> in_unit(const Tensor<float>& x, double unit_mm) {
  if (unit_mm == 1.0) return x;
  Tensor<float> out = x.clone();
  float* p = out.data();
  for (Index i = 0; i < out.numel(); ++i) p[i] = static_cast<float>(static_cast<double>(p[i]) / unit_mm);
  return out;
}

inline void write_sequence(const std::string& dir, const ProceduralSequence& seq, double fps,
                           nlohmann::ordered_json& bilabial, double unit_mm = 1.0) {
  if (seq.kind == SequenceKind::Speech) {
    io::save_npy(dir + "/speech/" + seq.name + ".npy", in_unit(seq.positions, unit_mm));
    if (!seq.audio.empty())
      io::save_wav(dir + "/speech/" + seq.name + ".wav", seq.audio, io::kSpeechSampleRate, 1, io::WavFormat::Pcm16);
    io::save_npy(dir + "/truth/speech/" + seq.name + ".wA.npy", seq.w_speech);
    io::save_npy(dir + "/truth/speech/" + seq.name + ".leak_wE.npy", seq.leak_expression);
    nlohmann::ordered_json j;
    j["text"] = seq.text;
    if (!seq.voice.empty()) j["voice"] = seq.voice;
    j["fps"] = fps;
    j["phonemes"] = nlohmann::ordered_json::array();
    for (const auto& p : seq.phonemes)
      j["phonemes"].push_back(nlohmann::ordered_json{{"phoneme", p.phoneme}, {"start", p.start}, {"end", p.end}});
    save_json(dir + "/truth/speech/" + seq.name + ".phonemes.json", j);
    bilabial[seq.name] = seq.bilabial_frames;
  } else {
    io::save_npy(dir + "/expression/" + seq.name + ".npy", in_unit(seq.positions, unit_mm));
    io::save_npy(dir + "/truth/expression/" + seq.name + ".wE.npy", seq.w_expression);
    io::save_npy(dir + "/truth/expression/" + seq.name + ".leak_wA.npy", seq.leak_speech);
  }
}

}  // namespace detail

/// Writes the dataset folder (see the file comment) to `dir` (created if missing), generating one
/// sequence at a time. Returns the resolved phoneme source ("espeak-ng" or "random").
inline std::string write_dataset(const std::string& dir, const ProceduralConfig& cfg) {
  namespace fs = std::filesystem;
  const FaceModel model = make_face_model(cfg);
  const std::string source = resolved_phoneme_source(cfg);
  std::error_code ec;
  for (const char* sub : {"", "/regions", "/templates", "/speech", "/expression", "/truth",
                          "/truth/speech", "/truth/expression", "/rig"}) {
    fs::create_directories(dir + sub, ec);
    if (ec) throw IoError(dir + sub, "cannot create folder: " + ec.message());
  }
  const FaceMesh& m = model.mesh;
  const double u = cfg.unit_mm;
  {
    io::Mesh tm = m.as_mesh();
    tm.vertices = detail::in_unit(tm.vertices, u);
    io::save_obj(dir + "/template.obj", tm);
  }
  io::write_file_atomic(dir + "/units.txt", unit_name(u) + "\n");
  io::write_file_atomic(dir + "/regions/lips.txt", detail::indices_text(m.lips));
  io::write_file_atomic(dir + "/regions/upper_face.txt", detail::indices_text(m.upper_face));
  io::save_npy(dir + "/regions/weights.npy", m.weights);
  for (const auto& s : model.subjects) io::save_npy(dir + "/templates/" + s.name + ".npy", detail::in_unit(s.neutral, u));
  detail::save_json(dir + "/split.json",
                    nlohmann::ordered_json{{"train", model.train}, {"val", model.val}, {"test", model.test}});

  io::save_npy(dir + "/truth/speech_bases.npy", detail::in_unit(model.bases.speech, u));
  io::save_npy(dir + "/truth/expression_bases.npy", detail::in_unit(model.bases.expression, u));
  Tensor<std::int32_t> pairs({static_cast<Index>(m.lip_pairs.size()), 2});
  for (std::size_t i = 0; i < m.lip_pairs.size(); ++i) {
    pairs(static_cast<Index>(i), 0) = m.lip_pairs[i][0];
    pairs(static_cast<Index>(i), 1) = m.lip_pairs[i][1];
  }
  io::save_npy(dir + "/truth/lip_pairs.npy", pairs);
  io::save_npy(dir + "/truth/uv.npy", m.uv);
  {
    nlohmann::ordered_json j;
    j["speech"] = model.bases.speech_names;
    j["expression"] = model.bases.expression_names;
    j["speech_gap_coeff"] = model.bases.gap_coeff;
    j["mouth_corners"] = {m.mouth_corners[0], m.mouth_corners[1]};
    j["mouth_y"] = m.mouth_y;
    j["mouth_half_width"] = m.mouth_half_width;
    j["boundary_loops"] = m.boundary_loops;
    detail::save_json(dir + "/truth/bases.json", j);
  }
  detail::save_json(dir + "/truth/config.json", detail::config_json(cfg, source));
  rig::rig_in_unit(rig::build_arkit52(m), u).save(dir + "/rig/arkit52.safetensors");

  nlohmann::ordered_json bilabial = nlohmann::ordered_json::object();
  for (int s = 0; s < cfg.num_subjects; ++s) {
    for (int q = 0; q < cfg.speech_per_subject; ++q)
      detail::write_sequence(dir, make_speech_sequence(model, s, q), cfg.fps, bilabial, u);
    for (int q = 0; q < cfg.expression_per_subject; ++q)
      detail::write_sequence(dir, make_expression_sequence(model, s, q), cfg.fps, bilabial, u);
  }
  detail::save_json(dir + "/truth/bilabial_frames.json", bilabial);
  return source;
}

}  // namespace blendfuse::data
