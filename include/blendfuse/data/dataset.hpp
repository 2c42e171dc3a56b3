// blendfuse — loading a dataset folder (`--data DIR`, /work/shared/DATA.md) into memory.
//
// Layout read by Dataset::load(DIR):
//   template.obj              canonical neutral mesh (V, 3) + triangles (F, 3): the topology of all data
//   regions/lips.txt          required: lip vertex indices, one integer per line
//   regions/upper_face.txt    optional: upper-face vertex indices
//   regions/weights.npy       optional: (V,) per-vertex loss weights ω (default all ones)
//   templates/<subject>.npy   optional: (V, 3) per-subject neutral (default: template.obj's vertices)
//   speech/<subject>_<seq>.npy      (T, V, 3) or (T, V*3), f4 or f8, absolute positions, 30 fps
//   speech/<subject>_<seq>.wav      optional matching audio (its path is recorded, not read)
//   expression/<subject>_<seq>.npy  as speech (the folder may be absent: speech-only data)
//   split.json                optional {"train": [subjects], "val": [...], "test": [...]}
//                             (default: every subject is "train"; subjects a split.json does not
//                             list belong to no split)
//   units.txt                 optional: the length unit of every coordinate above, one word:
//                             "mm", "cm" or "m" ('#' comments allowed)
// Files in the sequence folders other than .npy/.wav, and sub-folders, are ignored.
//
// FaceFormer's VOCAset layout is taken as is: when DIR has no speech/ but has vertices_npy/
// (FaceFormer's (T, 5023*3) files at 60 fps), those are the speech sequences, subsampled by
// DatasetOptions::vocaset_frame_step (2: every second frame, 60 → 30 fps, as FaceFormer does), with
// audio paths from DIR/wav/<name>.wav. The template mesh defaults to DIR/template.obj, falling back
// to DIR/FLAME_sample.ply (shipped with FaceFormer's vocaset folder); DatasetOptions can point
// template_mesh and lips anywhere. Per-subject templates come from templates/<subject>.npy, which
// scripts/convert_vocaset_templates.py writes from FaceFormer's templates.pkl:
//   /usr/bin/python3 scripts/convert_vocaset_templates.py vocaset/templates.pkl vocaset/templates
//   Dataset::load("vocaset", {.template_mesh = "flame.obj", .lips = "flame_lips.txt"})
// Florence4D (OBJ/PLY-per-frame folders <subject>/<expression>/*.obj) is converted to
// expression/<subject>_<expression>.npy by convert_florence4d / convert_obj_sequence_folder.
//
// Everything is loaded eagerly, as float: deformations (T, V, 3) = positions − subject template.
// (VOCAset at 30 fps with 5023 vertices is ~60 KB per frame, a few GB in all.)
//
// Subject names: the part of a file stem before its sequence token — see parse_subject.
//
// Units: data are kept in the file's unit (nothing is rescaled on load); Dataset::unit_mm says how
// many millimetres one unit is (1 for mm, 1000 for m) and unit_source where that came from. The
// unit is, in this order: DatasetOptions::units when it is not "auto" (the CLI's --units), else
// units.txt, else detected from the template: a face whose largest bounding-box side is below 1
// is in metres, above 20 in millimetres, and anything in between (a face in cm? a tiny part of
// one?) is refused with a message asking for units.txt or --units. Models and metrics convert
// with unit_mm (docs/fusion.md, "Units").
//
// Errors: every bad input throws IoError("<file>: what is wrong"): a missing template.obj or
// lips.txt, an index out of range (naming the line and the vertex count), a sequence whose vertex
// count differs from the template (naming both counts), NaN/Inf (naming frame, vertex, coordinate),
// truncated/corrupt .npy files, invalid split.json or one naming an unknown subject, and a
// missing or empty speech folder.
#pragma once

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/core/domain.hpp"
#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/file.hpp"
#include "blendfuse/io/mesh.hpp"
#include "blendfuse/io/npy.hpp"

namespace blendfuse::data {

// Domain: the two training domains of the paper (blendfuse::Domain, core/domain.hpp).
enum class Split { Train, Val, Test };

inline const char* to_string(Domain d) { return domain_name(d); }
inline const char* to_string(Split s) {
  return s == Split::Train ? "train" : s == Split::Val ? "val" : "test";
}
/// "train" / "val" / "test" → Split; ArgumentError otherwise.
inline Split split_from_string(std::string_view s) {
  if (s == "train") return Split::Train;
  if (s == "val") return Split::Val;
  if (s == "test") return Split::Test;
  throw ArgumentError("unknown split '" + std::string(s) + "' (expected train, val or test)");
}

/// The subject of a sequence file stem ("<subject>_<seq>"):
/// 1. the longest `known` subject s such that stem = s + "_" + something (this disambiguates
///    sequence names that contain '_' themselves, e.g. "subj00_brow_raise01" with subj00 known);
/// 2. else, when the stem contains "_sentence", the part before the last "_sentence"
///    (FaceFormer/VOCAset: "FaceTalk_170725_00137_TA_sentence01" → "FaceTalk_170725_00137_TA");
/// 3. else the part before the last '_' ("subj03_seq07" → "subj03").
/// Throws ArgumentError when the stem has no "<subject>_<seq>" form (no '_', or an empty part).
inline std::string parse_subject(std::string_view stem, const std::set<std::string>& known = {}) {
  std::string best;
  for (const auto& s : known)
    if (!s.empty() && stem.size() > s.size() + 1 && stem.substr(0, s.size()) == s &&
        stem[s.size()] == '_' && s.size() > best.size())
      best = s;
  if (!best.empty()) return best;
  std::size_t cut = stem.rfind("_sentence");
  if (cut == std::string_view::npos) cut = stem.rfind('_');
  if (cut == std::string_view::npos || cut == 0 || cut + 1 >= stem.size())
    throw ArgumentError("sequence name '" + std::string(stem) +
                        "' is not of the form <subject>_<sequence> (e.g. subj03_seq07, "
                        "FaceTalk_170725_00137_TA_sentence01)");
  return std::string(stem.substr(0, cut));
}

/// One sequence file of the dataset.
struct Sequence {
  std::string name;       // file stem, e.g. "FaceTalk_170725_00137_TA_sentence01"
  std::string subject;    // parse_subject(name)
  Domain domain = Domain::Speech;
  std::string path;       // the .npy file
  std::string wav_path;   // matching .wav if it exists (speech), else ""
  Index frame_step = 1;   // frames kept from the file: 0, step, 2·step, … (2 for VOCAset 60 fps)
  Tensor<float> deformations;  // (T, V, 3) = positions − subject template, 30 fps

  Index num_frames() const { return deformations.empty() ? 0 : deformations.dim(0); }
};

/// Where Dataset::load looks for things; the defaults are the DATA.md layout.
struct DatasetOptions {
  std::string template_mesh;     // default DIR/template.obj (VOCAset layout: DIR/FLAME_sample.ply)
  std::string lips;              // default DIR/regions/lips.txt
  Index vocaset_frame_step = 2;  // subsampling of vertices_npy/ files (60 → 30 fps)
  std::string units = "auto";    // "mm", "cm", "m", or "auto" (units.txt, else the template's size)
};

// ---- length units ------------------------------------------------------------------------------
/// Millimetres per unit of a unit name: "mm" → 1, "cm" → 10, "m" → 1000; ArgumentError otherwise.
inline double unit_mm_from_name(std::string_view name) {
  if (name == "mm") return 1.0;
  if (name == "cm") return 10.0;
  if (name == "m") return 1000.0;
  throw ArgumentError("unknown length unit '" + std::string(name) + "' (expected mm, cm or m)");
}
/// The name of a unit given in millimetres per unit ("mm", "cm", "m", else e.g. "2.5 mm").
inline std::string unit_name(double unit_mm) {
  if (unit_mm == 1.0) return "mm";
  if (unit_mm == 10.0) return "cm";
  if (unit_mm == 1000.0) return "m";
  return blendfuse::detail::concat(unit_mm, " mm");
}

/// Auto-detection thresholds on the template's largest bounding-box side (see the file comment).
inline constexpr double kMetresMaxExtent = 1.0;        // below: metres (a face is ~0.2 m)
inline constexpr double kMillimetresMinExtent = 20.0;  // above: millimetres (a face is ~150–250 mm)

/// Largest side of the axis-aligned bounding box of (V, 3) vertices.
inline double bounding_box_extent(const Tensor<float>& vertices) {
  const auto v = vertices.contiguous();
  const Index n = v.numel() / 3;
  if (n == 0) return 0.0;
  double lo[3], hi[3];
  for (int c = 0; c < 3; ++c) lo[c] = hi[c] = v[c];
  for (Index i = 1; i < n; ++i)
    for (int c = 0; c < 3; ++c) {
      lo[c] = std::min(lo[c], static_cast<double>(v[3 * i + c]));
      hi[c] = std::max(hi[c], static_cast<double>(v[3 * i + c]));
    }
  return std::max({hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]});
}

/// The unit of a template from its size: 1000 (metres) below kMetresMaxExtent, 1 (millimetres)
/// above kMillimetresMinExtent; IoError(path, ...) asking for units.txt or --units otherwise.
inline double detect_unit_mm(const Tensor<float>& vertices, const std::string& path) {
  const double e = bounding_box_extent(vertices);
  if (e > 0 && e < kMetresMaxExtent) return 1000.0;
  if (e > kMillimetresMinExtent && std::isfinite(e)) return 1.0;
  throw IoError(path, blendfuse::detail::concat(
                          "cannot tell the length unit: the template's largest extent is ", e,
                          ", neither a face in metres (< ", kMetresMaxExtent, ") nor in millimetres (> ",
                          kMillimetresMinExtent, "); write the unit (mm, cm or m) to units.txt in the "
                          "dataset folder or pass --units"));
}

/// Reads a units.txt file: one of "mm", "cm", "m" (blank lines and '#' comments allowed).
inline double load_units_file(const std::string& path) {
  const std::string text = io::read_file_text(path);
  std::string word;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (const auto h = line.find('#'); h != std::string_view::npos) line = line.substr(0, h);
    const auto tok = io::detail::split_ws(line);
    for (const auto& t : tok) {
      if (!word.empty()) throw IoError(path, "expected one unit word (mm, cm or m), got more than one");
      word = std::string(t);
    }
  }
  if (word.empty()) throw IoError(path, "no unit in file (expected mm, cm or m)");
  try {
    return unit_mm_from_name(word);
  } catch (const ArgumentError& e) {
    throw IoError(path, e.what());
  }
}

/// One frame of one sequence: index into Dataset::sequences(domain), frame number.
struct FrameRef {
  std::size_t sequence = 0;
  Index frame = 0;
};

namespace detail {

inline std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

/// "Natural" file-name order: digit runs compare by value (frame2 < frame10), the rest by byte.
inline bool natural_less(const std::string& a, const std::string& b) {
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    const bool da = std::isdigit(static_cast<unsigned char>(a[i])) != 0;
    const bool db = std::isdigit(static_cast<unsigned char>(b[j])) != 0;
    if (da && db) {
      std::size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      std::size_t is = i, js = j;  // skip leading zeros
      while (is + 1 < ie && a[is] == '0') ++is;
      while (js + 1 < je && b[js] == '0') ++js;
      if (ie - is != je - js) return ie - is < je - js;
      const int c = a.compare(is, ie - is, b, js, je - js);
      if (c != 0) return c < 0;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
      ++i;
      ++j;
    }
  }
  if (a.size() - i != b.size() - j) return a.size() - i < b.size() - j;
  return a < b;
}

/// Regular files in `dir` whose lower-cased extension is in `exts`, in natural order.
inline std::vector<std::filesystem::path> list_files(const std::filesystem::path& dir,
                                                     const std::vector<std::string>& exts) {
  namespace fs = std::filesystem;
  std::vector<fs::path> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) throw IoError(dir.string(), "cannot list folder: " + ec.message());
  for (const auto& e : it) {
    std::error_code ec2;
    if (!e.is_regular_file(ec2)) continue;
    const std::string ext = lower(e.path().extension().string());
    if (std::find(exts.begin(), exts.end(), ext) != exts.end()) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) {
    return natural_less(a.filename().string(), b.filename().string());
  });
  return out;
}

inline bool is_dir(const std::string& p) {
  std::error_code ec;
  return std::filesystem::is_directory(p, ec);
}
inline bool is_file(const std::string& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

/// Rejects NaN/Inf in `t`, naming the file and the first bad flat index.
inline void check_finite(const Tensor<float>& t, const std::string& path) {
  for (Index i = 0; i < t.numel(); ++i)
    if (!std::isfinite(t[i]))
      throw IoError(path, blendfuse::detail::concat("non-finite value ", t[i], " at flat index ", i,
                                                    " (shape ", t.shape_string(), ")"));
}

}  // namespace detail

/// Reads a vertex-index file (one integer per line; blank lines and '#' comments allowed) and
/// checks every index is in [0, V) and appears once. `V_source` names where V comes from.
inline std::vector<std::int32_t> load_index_file(const std::string& path, Index V,
                                                 const std::string& V_source = "template") {
  const std::string text = io::read_file_text(path);
  std::vector<std::int32_t> out;
  std::set<std::int32_t> seen;
  std::size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (const auto h = line.find('#'); h != std::string_view::npos) line = line.substr(0, h);
    const auto tok = io::detail::split_ws(line);
    if (tok.empty()) continue;
    const std::string where = "line " + std::to_string(line_no) + ": ";
    if (tok.size() != 1)
      throw IoError(path, where + "expected one integer per line, got '" + std::string(line) + "'");
    std::int64_t v;
    if (!io::detail::parse_int_token(tok[0], v))
      throw IoError(path, where + "'" + std::string(tok[0]) + "' is not an integer");
    if (v < 0 || v >= V)
      throw IoError(path, where + "vertex index " + std::to_string(v) + " is out of range [0, " +
                              std::to_string(V) + ") (" + V_source + " has " + std::to_string(V) +
                              " vertices)");
    if (!seen.insert(static_cast<std::int32_t>(v)).second)
      throw IoError(path, where + "vertex index " + std::to_string(v) + " is listed twice");
    out.push_back(static_cast<std::int32_t>(v));
  }
  if (out.empty()) throw IoError(path, "no vertex indices in file");
  return out;
}

/// Loads a vertex sequence file (T, V, 3) or (T, V*3) (f4/f8) as absolute positions (T', V, 3),
/// keeping frames 0, step, 2·step, …. The vertex count must be V (`V_source` names the template in
/// the error); NaN/Inf and empty sequences are rejected.
inline Tensor<float> load_sequence_positions(const std::string& path, Index V, Index step = 1,
                                             const std::string& V_source = "template") {
  BF_CHECK(step >= 1, ArgumentError, "load_sequence_positions: frame step ", step, " < 1");
  const Tensor<float> a = io::load_npy<float>(path);
  Index file_V = -1;
  if (a.ndim() == 3 && a.dim(2) == 3) file_V = a.dim(1);
  else if (a.ndim() == 2 && a.dim(1) % 3 == 0) file_V = a.dim(1) / 3;
  else
    throw IoError(path, "vertex sequence must have shape (T, V, 3) or (T, V*3), got " + a.shape_string());
  if (file_V != V)
    throw IoError(path, "vertex count mismatch: the sequence has " + std::to_string(file_V) +
                            " vertices per frame (shape " + a.shape_string() + "), " + V_source +
                            " has " + std::to_string(V));
  if (a.dim(0) == 0) throw IoError(path, "sequence has no frames (shape " + a.shape_string() + ")");
  const Tensor<float> seq = io::to_vertex_sequence(a, path, V);  // also rejects NaN/Inf
  if (step == 1) return seq;
  const Index T = (seq.dim(0) + step - 1) / step;
  Tensor<float> out({T, V, 3});
  for (Index t = 0; t < T; ++t)
    std::copy_n(seq.data() + t * step * V * 3, V * 3, out.data() + t * V * 3);
  return out;
}

/// Converts one folder of per-frame meshes (`*.obj` / `*.ply`, frames in natural file-name order,
/// e.g. Florence4D's <subject>/<expression>/) to a (T, V, 3) float32 .npy written atomically to
/// `out_npy` (skipped when `out_npy` is empty). All frames must share the first frame's vertex
/// count and triangles; with `expected_V` >= 0 the vertex count must be that. Returns the array.
inline Tensor<float> convert_obj_sequence_folder(const std::string& in_dir, const std::string& out_npy,
                                                 Index expected_V = -1) {
  if (!detail::is_dir(in_dir)) throw IoError(in_dir, "folder not found");
  const auto files = detail::list_files(in_dir, {".obj", ".ply"});
  if (files.empty()) throw IoError(in_dir, "no .obj or .ply frames in folder");
  const io::Mesh first = io::load_mesh(files[0].string());
  const Index V = first.num_vertices();
  if (V == 0) throw IoError(files[0].string(), "mesh has no vertices");
  if (expected_V >= 0 && V != expected_V)
    throw IoError(files[0].string(), "vertex count mismatch: mesh has " + std::to_string(V) +
                                         " vertices, expected " + std::to_string(expected_V));
  const auto T = static_cast<Index>(files.size());
  Tensor<float> out({T, V, 3});
  for (Index t = 0; t < T; ++t) {
    const std::string p = files[static_cast<std::size_t>(t)].string();
    const io::Mesh m = t == 0 ? first : io::load_mesh(p);
    if (m.num_vertices() != V)
      throw IoError(p, "vertex count mismatch: frame has " + std::to_string(m.num_vertices()) +
                           " vertices, the first frame " + files[0].filename().string() + " has " +
                           std::to_string(V));
    const bool same_faces =
        m.num_faces() == first.num_faces() &&
        std::equal(m.faces.data(), m.faces.data() + m.faces.numel(), first.faces.data());
    if (!same_faces)
      throw IoError(p, "topology differs from the first frame " + files[0].filename().string() +
                           " (frames must be registered meshes with identical faces)");
    std::copy_n(m.vertices.contiguous().data(), V * 3, out.data() + t * V * 3);
  }
  if (!out_npy.empty()) io::save_npy(out_npy, out);
  return out;
}

/// Converts a Florence4D-style tree `root/<subject>/<expression>/*.obj|*.ply` to
/// `dataset_dir/expression/<subject>_<expression>.npy` (folder created if needed). '_' in an
/// expression name becomes '-' so that parse_subject recovers the subject. Returns the written
/// paths in order. Throws IoError when `root` holds no such folders.
inline std::vector<std::string> convert_florence4d(const std::string& root, const std::string& dataset_dir,
                                                   Index expected_V = -1) {
  namespace fs = std::filesystem;
  if (!detail::is_dir(root)) throw IoError(root, "folder not found");
  auto subdirs = [](const fs::path& d) {
    std::vector<fs::path> out;
    std::error_code ec;
    fs::directory_iterator it(d, ec);
    if (ec) throw IoError(d.string(), "cannot list folder: " + ec.message());
    for (const auto& e : it) {
      std::error_code ec2;
      if (e.is_directory(ec2)) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) {
      return detail::natural_less(a.filename().string(), b.filename().string());
    });
    return out;
  };
  const fs::path out_dir = fs::path(dataset_dir) / "expression";
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw IoError(out_dir.string(), "cannot create folder: " + ec.message());
  std::vector<std::string> written;
  for (const auto& subj : subdirs(root)) {
    for (const auto& expr : subdirs(subj)) {
      if (detail::list_files(expr, {".obj", ".ply"}).empty()) continue;
      std::string e = expr.filename().string();
      std::replace(e.begin(), e.end(), '_', '-');
      const std::string out = (out_dir / (subj.filename().string() + "_" + e + ".npy")).string();
      convert_obj_sequence_folder(expr.string(), out, expected_V);
      written.push_back(out);
    }
  }
  if (written.empty())
    throw IoError(root, "no <subject>/<expression>/ folders with .obj or .ply frames");
  return written;
}

/// A dataset folder in memory. Members are plain data; `load` fills and validates them.
struct Dataset {
  std::string root;                                  // DIR as given
  Tensor<float> template_vertices;                   // (V, 3) canonical neutral (template.obj)
  Tensor<std::int32_t> faces;                        // (F, 3) triangles, 0-based
  std::vector<std::int32_t> lips;                    // lip vertex indices (never empty)
  std::vector<std::int32_t> upper_face;              // upper-face indices (empty if no file)
  Tensor<float> vertex_weights;                      // (V,) loss weights ω (default ones)
  std::map<std::string, Tensor<float>> subject_templates;  // every subject → (V, 3) neutral
  std::set<std::string> subjects_with_own_template;  // subjects read from templates/<s>.npy
  std::vector<Sequence> speech, expression;          // sorted by name
  std::vector<std::string> train, val, test;         // subjects per split (sorted)
  bool has_split_file = false;                       // split.json was present
  double unit_mm = 1.0;                              // millimetres per data unit (1 mm, 1000 m)
  std::string unit_source = "default";               // "--units", "units.txt", "auto: ..."

  /// The data's unit name ("mm", "m", ...).
  std::string units() const { return unit_name(unit_mm); }

  /// Rescales every coordinate (templates and deformations) to millimetres and sets unit_mm = 1
  /// (a no-op on mm data). For stages that work in mm throughout (the audio model).
  void rescale_to_mm() {
    if (unit_mm == 1.0) return;
    const auto f = static_cast<float>(unit_mm);
    auto scale = [f](Tensor<float>& t) {
      float* p = t.data();
      for (Index i = 0; i < t.numel(); ++i) p[i] *= f;
    };
    scale(template_vertices);
    for (auto& [s, t] : subject_templates) scale(t);
    for (auto* seqs : {&speech, &expression})
      for (auto& q : *seqs) scale(q.deformations);
    unit_source += ", rescaled to mm";
    unit_mm = 1.0;
  }

  Index num_vertices() const { return template_vertices.empty() ? 0 : template_vertices.dim(0); }

  /// All subjects that have at least one sequence (sorted).
  std::vector<std::string> subjects() const {
    std::set<std::string> s;
    for (const auto* v : {&speech, &expression})
      for (const auto& q : *v) s.insert(q.subject);
    return {s.begin(), s.end()};
  }

  const std::vector<std::string>& subjects_in(Split s) const {
    return s == Split::Train ? train : s == Split::Val ? val : test;
  }

  /// The split of a subject, or nullopt if split.json does not list it.
  std::optional<Split> split_of(const std::string& subject) const {
    for (Split s : {Split::Train, Split::Val, Split::Test}) {
      const auto& v = subjects_in(s);
      if (std::find(v.begin(), v.end(), subject) != v.end()) return s;
    }
    return std::nullopt;
  }

  const std::vector<Sequence>& sequences(Domain d) const {
    return d == Domain::Speech ? speech : expression;
  }

  /// The sequences of `d` whose subject is in split `s`.
  std::vector<const Sequence*> sequences(Domain d, Split s) const {
    std::vector<const Sequence*> out;
    for (const auto& q : sequences(d))
      if (split_of(q.subject) == s) out.push_back(&q);
    return out;
  }

  /// The neutral (V, 3) of a subject; ArgumentError for an unknown subject.
  const Tensor<float>& template_of(const std::string& subject) const {
    const auto it = subject_templates.find(subject);
    BF_CHECK(it != subject_templates.end(), ArgumentError, "Dataset: unknown subject '", subject, "'");
    return it->second;
  }

  /// Every frame of the sequences of `d` in split `s` (FrameRef::sequence indexes sequences(d)).
  std::vector<FrameRef> frames(Domain d, Split s) const {
    std::vector<FrameRef> out;
    const auto& seqs = sequences(d);
    for (std::size_t i = 0; i < seqs.size(); ++i)
      if (split_of(seqs[i].subject) == s)
        for (Index t = 0; t < seqs[i].num_frames(); ++t) out.push_back({i, t});
    return out;
  }

  Index num_frames(Domain d, Split s) const {
    Index n = 0;
    for (const auto* q : sequences(d, s)) n += q->num_frames();
    return n;
  }

  /// The (V, 3) deformation of one frame (a view into the sequence's storage).
  Tensor<float> frame(Domain d, const FrameRef& r) const {
    const auto& seqs = sequences(d);
    BF_CHECK(r.sequence < seqs.size(), ArgumentError, "Dataset::frame: sequence ", r.sequence,
             " out of range (", seqs.size(), " ", to_string(d), " sequences)");
    return seqs[r.sequence].deformations.select(r.frame);
  }

  /// Loads and validates the dataset folder `dir` (see the top of this file).
  static Dataset load(const std::string& dir, const DatasetOptions& opt = {}) {
    namespace fs = std::filesystem;
    if (!detail::is_dir(dir)) throw IoError(dir, "dataset folder not found");
    Dataset ds;
    ds.root = dir;
    const fs::path root(dir);
    const bool vocaset = !detail::is_dir((root / "speech").string()) &&
                         detail::is_dir((root / "vertices_npy").string());

    // ---- template mesh ----
    std::string tpath = opt.template_mesh;
    if (tpath.empty()) {
      tpath = (root / "template.obj").string();
      if (vocaset && !detail::is_file(tpath) && detail::is_file((root / "FLAME_sample.ply").string()))
        tpath = (root / "FLAME_sample.ply").string();
    }
    const io::Mesh mesh = io::load_mesh(tpath, /*reject_degenerate=*/true);  // it defines the topology
    const Index V = mesh.num_vertices();
    if (V == 0) throw IoError(tpath, "template mesh has no vertices");
    if (mesh.num_faces() == 0) throw IoError(tpath, "template mesh has no faces");
    ds.template_vertices = mesh.vertices;
    ds.faces = mesh.faces;
    const std::string vsrc = fs::path(tpath).filename().string();

    // ---- units: the option, else units.txt, else the template's size ----
    if (const auto up = (root / "units.txt").string(); opt.units != "auto") {
      try {
        ds.unit_mm = unit_mm_from_name(opt.units);
      } catch (const ArgumentError& e) {
        throw ArgumentError(std::string("--units: ") + e.what());
      }
      ds.unit_source = "--units";
      if (detail::is_file(up) && load_units_file(up) != ds.unit_mm)
        ds.unit_source += " (overrides units.txt: " + unit_name(load_units_file(up)) + ")";
    } else if (detail::is_file(up)) {
      ds.unit_mm = load_units_file(up);
      ds.unit_source = "units.txt";
    } else {
      ds.unit_mm = detect_unit_mm(ds.template_vertices, tpath);
      ds.unit_source = blendfuse::detail::concat("auto: template extent ",
                                                 bounding_box_extent(ds.template_vertices));
    }

    // ---- regions ----
    ds.lips = load_index_file(opt.lips.empty() ? (root / "regions" / "lips.txt").string() : opt.lips,
                              V, vsrc);
    if (const auto p = (root / "regions" / "upper_face.txt").string(); detail::is_file(p))
      ds.upper_face = load_index_file(p, V, vsrc);
    if (const auto p = (root / "regions" / "weights.npy").string(); detail::is_file(p)) {
      ds.vertex_weights = io::load_npy<float>(p);
      if (ds.vertex_weights.ndim() != 1 || ds.vertex_weights.dim(0) != V)
        throw IoError(p, "per-vertex weights must have shape (" + std::to_string(V) + ",) to match " +
                             vsrc + ", got " + ds.vertex_weights.shape_string());
      detail::check_finite(ds.vertex_weights, p);
      for (Index i = 0; i < V; ++i)
        if (ds.vertex_weights[i] < 0)
          throw IoError(p, blendfuse::detail::concat("negative weight ", ds.vertex_weights[i],
                                                     " at vertex ", i));
    } else {
      ds.vertex_weights = Tensor<float>::full({V}, 1.0f);
    }

    // ---- per-subject templates ----
    std::set<std::string> known;
    if (const auto tdir = root / "templates"; detail::is_dir(tdir.string())) {
      for (const auto& f : detail::list_files(tdir, {".npy"})) {
        const std::string p = f.string();
        Tensor<float> t = io::load_npy<float>(p);
        if (t.ndim() == 3 && t.dim(0) == 1) t = t.reshape({t.dim(1), t.dim(2)});
        if (t.ndim() != 2 || t.dim(1) != 3)
          throw IoError(p, "subject template must have shape (V, 3), got " + t.shape_string());
        if (t.dim(0) != V)
          throw IoError(p, "vertex count mismatch: the subject template has " +
                               std::to_string(t.dim(0)) + " vertices, " + vsrc + " has " +
                               std::to_string(V));
        detail::check_finite(t, p);
        const std::string s = f.stem().string();
        ds.subject_templates[s] = t;
        ds.subjects_with_own_template.insert(s);
        known.insert(s);
      }
    }

    // ---- split.json (parsed now: its names help parse_subject) ----
    const std::string split_path = (root / "split.json").string();
    std::map<std::string, std::vector<std::string>> split_lists;
    if (detail::is_file(split_path)) {
      ds.has_split_file = true;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(io::read_file_text(split_path));
      } catch (const nlohmann::json::exception& e) {
        throw IoError(split_path, std::string("invalid JSON: ") + e.what());
      }
      if (!j.is_object())
        throw IoError(split_path, "expected an object {\"train\": [...], \"val\": [...], \"test\": [...]}");
      for (const auto& [key, val] : j.items()) {
        if (key != "train" && key != "val" && key != "test")
          throw IoError(split_path, "unknown key \"" + key + "\" (expected train, val, test)");
        if (!val.is_array())
          throw IoError(split_path, "\"" + key + "\" must be an array of subject names");
        auto& list = split_lists[key];
        for (const auto& s : val) {
          if (!s.is_string() || s.get<std::string>().empty())
            throw IoError(split_path, "\"" + key + "\" must hold non-empty subject names, got " + s.dump());
          list.push_back(s.get<std::string>());
          known.insert(list.back());
        }
      }
    }

    // ---- sequences ----
    auto scan = [&](const fs::path& folder, Domain d, Index step, const fs::path& wav_dir) {
      std::vector<Sequence> out;
      for (const auto& f : detail::list_files(folder, {".npy"})) {
        Sequence q;
        q.name = f.stem().string();
        q.domain = d;
        q.path = f.string();
        q.frame_step = step;
        try {
          q.subject = parse_subject(q.name, known);
        } catch (const ArgumentError& e) {
          throw IoError(q.path, e.what());
        }
        if (const auto w = (wav_dir / (q.name + ".wav")).string(); detail::is_file(w)) q.wav_path = w;
        else if (const auto W = (wav_dir / (q.name + ".WAV")).string(); detail::is_file(W)) q.wav_path = W;
        out.push_back(std::move(q));
      }
      if (out.empty())
        throw IoError(folder.string(), std::string("no .npy sequences in the ") + to_string(d) + " folder");
      return out;
    };
    if (vocaset) {
      ds.speech = scan(root / "vertices_npy", Domain::Speech, opt.vocaset_frame_step, root / "wav");
    } else {
      const fs::path sp = root / "speech";
      if (!detail::is_dir(sp.string()))
        throw IoError(sp.string(), "speech folder not found (expected speech/<subject>_<seq>.npy, "
                                   "or FaceFormer's VOCAset vertices_npy/)");
      ds.speech = scan(sp, Domain::Speech, 1, sp);
    }
    if (const auto ep = root / "expression"; detail::is_dir(ep.string()))
      ds.expression = scan(ep, Domain::Expression, 1, ep);

    // ---- subjects and their templates ----
    const auto subjects = ds.subjects();
    for (const auto& s : subjects)
      if (!ds.subject_templates.count(s)) ds.subject_templates[s] = ds.template_vertices;

    // ---- splits ----
    if (ds.has_split_file) {
      std::map<std::string, std::string> where;
      for (Split sp : {Split::Train, Split::Val, Split::Test}) {
        const std::string key = to_string(sp);
        auto& dst = sp == Split::Train ? ds.train : sp == Split::Val ? ds.val : ds.test;
        for (const auto& s : split_lists[key]) {
          if (!std::binary_search(subjects.begin(), subjects.end(), s))
            throw IoError(split_path, "unknown subject '" + s + "' in \"" + key +
                                          "\" (no sequences of it in the speech or expression folders)");
          if (const auto it = where.find(s); it != where.end())
            throw IoError(split_path, "subject '" + s + "' is listed in both \"" + it->second +
                                          "\" and \"" + key + "\"");
          where[s] = key;
          dst.push_back(s);
        }
        std::sort(dst.begin(), dst.end());
      }
    } else {
      ds.train = subjects;
    }

    // ---- load every sequence: deformation = positions − subject template ----
    for (auto* seqs : {&ds.speech, &ds.expression}) {
      for (auto& q : *seqs) {
        Tensor<float> pos = load_sequence_positions(q.path, V, q.frame_step, vsrc);
        const Tensor<float>& tmpl = ds.subject_templates.at(q.subject);
        const Index T = pos.dim(0);
        float* p = pos.data();
        const float* m = tmpl.data();
        for (Index t = 0; t < T; ++t)
          for (Index k = 0; k < V * 3; ++k) p[t * V * 3 + k] -= m[k];
        q.deformations = std::move(pos);
      }
    }
    return ds;
  }
};

}  // namespace blendfuse::data
