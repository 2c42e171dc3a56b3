// blendfuse — triangle meshes: Wavefront OBJ and PLY readers and writers.
//
// Mesh layout (docs/conventions.md): vertices (V, 3) float, faces (F, 3) int32, 0-based indices.
//
// OBJ: `v x y z [w | r g b]` and `f` lines are read; face corners may be `i`, `i/t`, `i//n` or
// `i/t/n`, indices 1-based or negative (relative to the vertices read so far); polygons are
// fan-triangulated; every other line (vt, vn, g, o, s, usemtl, mtllib, l, comments, ...) is
// ignored. Errors name the file and the line.
// PLY: ascii, binary_little_endian and binary_big_endian; the `vertex` element must have scalar
// x, y, z properties of any type (float and double are what exporters use — Florence4D ships
// binary double PLY); all other properties and elements, scalar or list, are skipped correctly.
// Faces come from the `vertex_indices` (or `vertex_index`) list of the `face` element, with any
// integer count and index types; polygons are fan-triangulated. A body shorter than the header
// declares is reported as truncated, naming the element and item.
// Writers are atomic (io::write_file_atomic); OBJ floats are written in shortest round-trip form.
#pragma once

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/file.hpp"

namespace blendfuse::io {

struct Mesh {
  Tensor<float> vertices;       // (V, 3)
  Tensor<std::int32_t> faces;   // (F, 3), 0-based vertex indices

  Index num_vertices() const { return vertices.empty() ? 0 : vertices.dim(0); }
  Index num_faces() const { return faces.empty() ? 0 : faces.dim(0); }
};

/// Throws ArgumentError (naming `what`) unless vertices are (V, 3) finite and faces (F, 3) with
/// indices in [0, V).
inline void validate_mesh(const Mesh& m, const std::string& what) {
  BF_CHECK(m.vertices.ndim() == 2 && m.vertices.dim(1) == 3, ArgumentError, what,
           ": mesh vertices must have shape (V, 3), got ", m.vertices.shape_string());
  BF_CHECK(m.faces.ndim() == 2 && m.faces.dim(1) == 3, ArgumentError, what,
           ": mesh faces must have shape (F, 3), got ", m.faces.shape_string());
  const Index V = m.vertices.dim(0);
  const auto f = m.faces.contiguous();
  for (Index i = 0; i < f.numel(); ++i)
    BF_CHECK(f[i] >= 0 && f[i] < V, ArgumentError, what, ": face ", i / 3, " references vertex ",
             f[i], ", mesh has ", V, " vertices");
  const auto v = m.vertices.contiguous();
  for (Index i = 0; i < v.numel(); ++i)
    BF_CHECK(std::isfinite(v[i]), ArgumentError, what, ": vertex ", i / 3,
             " has a non-finite coordinate");
}

namespace detail {

inline bool parse_double_token(std::string_view tok, double& out) {
  if (!tok.empty() && tok.front() == '+') tok.remove_prefix(1);
  if (tok.empty()) return false;
  const auto r = std::from_chars(tok.data(), tok.data() + tok.size(), out);
  return r.ec == std::errc() && r.ptr == tok.data() + tok.size();
}

inline bool parse_int_token(std::string_view tok, std::int64_t& out) {
  if (!tok.empty() && tok.front() == '+') tok.remove_prefix(1);
  if (tok.empty()) return false;
  const auto r = std::from_chars(tok.data(), tok.data() + tok.size(), out);
  return r.ec == std::errc() && r.ptr == tok.data() + tok.size();
}

inline std::vector<std::string_view> split_ws(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\f' || line[i] == '\v')) ++i;
    const std::size_t s = i;
    while (i < line.size() && !(line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\f' || line[i] == '\v')) ++i;
    if (i > s) out.push_back(line.substr(s, i - s));
  }
  return out;
}

inline std::string float_str(float v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

inline Mesh make_mesh(const std::vector<float>& verts, const std::vector<std::int32_t>& tris) {
  Mesh m;
  m.vertices = Tensor<float>::from({static_cast<Index>(verts.size() / 3), 3}, verts);
  m.faces = Tensor<std::int32_t>::from({static_cast<Index>(tris.size() / 3), 3}, tris);
  return m;
}

}  // namespace detail

// ---- OBJ ----------------------------------------------------------------------------------------

/// Parses OBJ text; `path` names it in errors ("path:LINE: what is wrong").
/// With `reject_degenerate` a face that uses a vertex twice (`f 5 5 5`) is an error naming the
/// line (meshes that define a topology — a dataset's template — need proper triangles).
inline Mesh parse_obj(const std::string& text, const std::string& path, bool reject_degenerate = false) {
  std::vector<float> verts;
  std::vector<std::int32_t> tris;
  struct Corner { std::int64_t index; std::size_t line; };
  std::vector<Corner> corners;  // resolved 0-based indices, checked once all vertices are known
  std::size_t line_no = 0, pos = 0;
  auto fail = [&](const std::string& what) -> void {
    throw IoError(path, "line " + std::to_string(line_no) + ": " + what);
  };
  while (pos <= text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    ++line_no;
    pos = end + 1;
    if (const auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    const auto tok = detail::split_ws(line);
    if (tok.empty()) continue;
    if (tok[0] == "v") {
      if (tok.size() < 4) fail("vertex needs 3 coordinates, got " + std::to_string(tok.size() - 1));
      for (int k = 1; k <= 3; ++k) {
        double d;
        if (!detail::parse_double_token(tok[k], d))
          fail("bad number '" + std::string(tok[k]) + "' in vertex");
        const float f = static_cast<float>(d);
        if (!std::isfinite(f)) fail("non-finite vertex coordinate '" + std::string(tok[k]) + "'");
        verts.push_back(f);
      }
    } else if (tok[0] == "f") {
      if (tok.size() < 4) fail("face needs at least 3 vertices, got " + std::to_string(tok.size() - 1));
      const Index nv = static_cast<Index>(verts.size() / 3);
      std::vector<std::int64_t> idx;
      for (std::size_t k = 1; k < tok.size(); ++k) {
        const std::string_view first = tok[k].substr(0, tok[k].find('/'));
        std::int64_t i;
        if (!detail::parse_int_token(first, i))
          fail("bad face index '" + std::string(tok[k]) + "'");
        if (i == 0) fail("face index 0 is invalid (OBJ indices start at 1)");
        if (i < 0) {
          if (-i > nv)
            fail("relative face index " + std::to_string(i) + " is out of range (only " +
                 std::to_string(nv) + " vertices so far)");
          i = nv + i;
        } else {
          i -= 1;
        }
        idx.push_back(i);
      }
      for (std::size_t a = 0; reject_degenerate && a < idx.size(); ++a)
        for (std::size_t b = a + 1; b < idx.size(); ++b)
          if (idx[a] == idx[b])
            fail("degenerate face: vertex " + std::to_string(idx[a] + 1) +
                 " is used twice (a face needs distinct vertices)");
      for (std::size_t k = 1; k + 1 < idx.size(); ++k) {
        corners.push_back({idx[0], line_no});
        corners.push_back({idx[k], line_no});
        corners.push_back({idx[k + 1], line_no});
      }
    }
    // every other statement is ignored
  }
  const std::int64_t V = static_cast<std::int64_t>(verts.size() / 3);
  if (V > std::numeric_limits<std::int32_t>::max()) throw IoError(path, "too many vertices");
  tris.reserve(corners.size());
  for (const auto& c : corners) {
    if (c.index >= V)
      throw IoError(path, "line " + std::to_string(c.line) + ": face index " +
                              std::to_string(c.index + 1) + " is out of range (file has " +
                              std::to_string(V) + " vertices)");
    tris.push_back(static_cast<std::int32_t>(c.index));
  }
  return detail::make_mesh(verts, tris);
}

/// Reads an OBJ file (triangulated); throws IoError naming the file and line.
inline Mesh load_obj(const std::string& path, bool reject_degenerate = false) {
  return parse_obj(read_file_text(path), path, reject_degenerate);
}

inline std::string serialize_obj(const Mesh& m) {
  validate_mesh(m, "serialize_obj");
  const auto v = m.vertices.contiguous();
  const auto f = m.faces.contiguous();
  std::string out = "# written by blendfuse\n";
  for (Index i = 0; i < m.num_vertices(); ++i)
    out += "v " + detail::float_str(v[3 * i]) + " " + detail::float_str(v[3 * i + 1]) + " " +
           detail::float_str(v[3 * i + 2]) + "\n";
  for (Index i = 0; i < m.num_faces(); ++i)
    out += "f " + std::to_string(f[3 * i] + 1) + " " + std::to_string(f[3 * i + 1] + 1) + " " +
           std::to_string(f[3 * i + 2] + 1) + "\n";
  return out;
}

/// Writes an OBJ file atomically (1-based `v`/`f` lines, floats in shortest round-trip form).
inline void save_obj(const std::string& path, const Mesh& m) {
  const std::string text = serialize_obj(m);
  write_file_atomic(path, text);
}

// ---- PLY ----------------------------------------------------------------------------------------

enum class PlyFormat { Ascii, BinaryLittleEndian, BinaryBigEndian };

namespace detail {

enum class PlyType { Int8, UInt8, Int16, UInt16, Int32, UInt32, Float32, Float64, None };

inline PlyType ply_type(std::string_view s) {
  if (s == "char" || s == "int8") return PlyType::Int8;
  if (s == "uchar" || s == "uint8") return PlyType::UInt8;
  if (s == "short" || s == "int16") return PlyType::Int16;
  if (s == "ushort" || s == "uint16") return PlyType::UInt16;
  if (s == "int" || s == "int32") return PlyType::Int32;
  if (s == "uint" || s == "uint32") return PlyType::UInt32;
  if (s == "float" || s == "float32") return PlyType::Float32;
  if (s == "double" || s == "float64") return PlyType::Float64;
  return PlyType::None;
}

inline std::size_t ply_size(PlyType t) {
  switch (t) {
    case PlyType::Int8: case PlyType::UInt8: return 1;
    case PlyType::Int16: case PlyType::UInt16: return 2;
    case PlyType::Int32: case PlyType::UInt32: case PlyType::Float32: return 4;
    case PlyType::Float64: return 8;
    default: return 0;
  }
}

inline bool ply_is_int(PlyType t) { return t != PlyType::Float32 && t != PlyType::Float64; }

struct PlyProperty {
  std::string name;
  PlyType type = PlyType::None;        // value type (element type for lists)
  PlyType count_type = PlyType::None;  // != None for list properties
  bool is_list() const { return count_type != PlyType::None; }
};

struct PlyElement {
  std::string name;
  std::int64_t count = 0;
  std::vector<PlyProperty> props;
};

/// Reads values of the body in sequence, with bounds checks; errors say where it stopped.
class PlyBodyReader {
 public:
  PlyBodyReader(const std::vector<std::uint8_t>& b, std::size_t pos, PlyFormat fmt,
                std::size_t line, const std::string& path)
      : b_(b), pos_(pos), fmt_(fmt), line_(line), path_(path) {}

  void set_context(const std::string& element, std::int64_t item, std::int64_t count) {
    element_ = &element;
    item_ = item;
    count_ = count;
  }

  double read(PlyType t) {
    return fmt_ == PlyFormat::Ascii ? read_ascii(t) : read_binary(t);
  }

  std::size_t remaining() const { return b_.size() - pos_; }

  [[noreturn]] void fail(const std::string& what) const {
    std::string where = "element '" + (element_ ? *element_ : std::string("?")) + "' item " +
                        std::to_string(item_) + " of " + std::to_string(count_);
    if (fmt_ == PlyFormat::Ascii) where = "line " + std::to_string(line_) + ", " + where;
    else where += " (byte offset " + std::to_string(pos_) + ")";
    throw IoError(path_, what + " in " + where);
  }

 private:
  double read_binary(PlyType t) {
    const std::size_t n = ply_size(t);
    if (pos_ + n > b_.size())
      fail("truncated PLY body: file ends after " + std::to_string(b_.size()) + " bytes");
    std::uint8_t tmp[8];
    std::memcpy(tmp, b_.data() + pos_, n);
    pos_ += n;
    if (fmt_ == PlyFormat::BinaryBigEndian) std::reverse(tmp, tmp + n);  // host is little-endian
    switch (t) {
      case PlyType::Int8: { std::int8_t v; std::memcpy(&v, tmp, 1); return v; }
      case PlyType::UInt8: return tmp[0];
      case PlyType::Int16: { std::int16_t v; std::memcpy(&v, tmp, 2); return v; }
      case PlyType::UInt16: { std::uint16_t v; std::memcpy(&v, tmp, 2); return v; }
      case PlyType::Int32: { std::int32_t v; std::memcpy(&v, tmp, 4); return v; }
      case PlyType::UInt32: { std::uint32_t v; std::memcpy(&v, tmp, 4); return v; }
      case PlyType::Float32: { float v; std::memcpy(&v, tmp, 4); return v; }
      default: { double v; std::memcpy(&v, tmp, 8); return v; }
    }
  }

  double read_ascii(PlyType t) {
    while (pos_ < b_.size() && std::isspace(b_[pos_])) {
      if (b_[pos_] == '\n') ++line_;
      ++pos_;
    }
    if (pos_ >= b_.size()) fail("truncated PLY body: unexpected end of file");
    const std::size_t s = pos_;
    while (pos_ < b_.size() && !std::isspace(b_[pos_])) ++pos_;
    const std::string_view tok(reinterpret_cast<const char*>(b_.data()) + s, pos_ - s);
    double v;
    if (!parse_double_token(tok, v)) fail("bad number '" + std::string(tok) + "'");
    if (ply_is_int(t) && v != std::floor(v)) fail("non-integer value '" + std::string(tok) + "' for an integer property");
    return v;
  }

  const std::vector<std::uint8_t>& b_;
  std::size_t pos_;
  PlyFormat fmt_;
  std::size_t line_;
  const std::string& path_;
  const std::string* element_ = nullptr;
  std::int64_t item_ = 0, count_ = 0;
};

}  // namespace detail

/// Parses an in-memory PLY image; `path` names it in errors.
inline Mesh parse_ply(const std::vector<std::uint8_t>& bytes, const std::string& path) {
  using detail::PlyType;
  // ---- header ----
  std::size_t pos = 0, line_no = 0;
  auto next_line = [&](std::string& line) -> bool {
    if (pos >= bytes.size()) return false;
    std::size_t end = pos;
    while (end < bytes.size() && bytes[end] != '\n') ++end;
    if (end >= bytes.size()) return false;  // header lines always end with '\n'
    line.assign(reinterpret_cast<const char*>(bytes.data()) + pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    pos = end + 1;
    ++line_no;
    return true;
  };
  auto header_fail = [&](const std::string& what) -> void {
    throw IoError(path, "malformed PLY header (line " + std::to_string(line_no) + "): " + what);
  };
  std::string line;
  if (!next_line(line) || line != "ply") throw IoError(path, "not a PLY file (missing 'ply' magic line)");
  PlyFormat fmt = PlyFormat::Ascii;
  bool have_format = false, have_end = false;
  std::vector<detail::PlyElement> elements;
  while (next_line(line)) {
    const auto tok = detail::split_ws(line);
    if (tok.empty()) continue;
    if (tok[0] == "comment" || tok[0] == "obj_info") continue;
    if (tok[0] == "end_header") {
      have_end = true;
      break;
    }
    if (tok[0] == "format") {
      if (tok.size() != 3) header_fail("bad format line '" + line + "'");
      if (tok[1] == "ascii") fmt = PlyFormat::Ascii;
      else if (tok[1] == "binary_little_endian") fmt = PlyFormat::BinaryLittleEndian;
      else if (tok[1] == "binary_big_endian") fmt = PlyFormat::BinaryBigEndian;
      else header_fail("unknown format '" + std::string(tok[1]) + "'");
      have_format = true;
    } else if (tok[0] == "element") {
      std::int64_t n;
      if (tok.size() != 3 || !detail::parse_int_token(tok[2], n) || n < 0)
        header_fail("bad element line '" + line + "'");
      elements.push_back({std::string(tok[1]), n, {}});
    } else if (tok[0] == "property") {
      if (elements.empty()) header_fail("property before any element");
      detail::PlyProperty p;
      if (tok.size() == 5 && tok[1] == "list") {
        p.count_type = detail::ply_type(tok[2]);
        p.type = detail::ply_type(tok[3]);
        p.name = tok[4];
        if (p.count_type == PlyType::None || p.type == PlyType::None)
          header_fail("unknown type in '" + line + "'");
        if (!detail::ply_is_int(p.count_type)) header_fail("list count type must be an integer in '" + line + "'");
      } else if (tok.size() == 3) {
        p.type = detail::ply_type(tok[1]);
        p.name = tok[2];
        if (p.type == PlyType::None) header_fail("unknown type '" + std::string(tok[1]) + "'");
      } else {
        header_fail("bad property line '" + line + "'");
      }
      elements.back().props.push_back(p);
    } else {
      header_fail("unknown keyword '" + std::string(tok[0]) + "'");
    }
  }
  if (!have_end) throw IoError(path, "truncated PLY header (no end_header line)");
  if (!have_format) throw IoError(path, "malformed PLY header: no format line");

  // Locate the vertex and face properties we need.
  const detail::PlyElement* vert_el = nullptr;
  int xyz[3] = {-1, -1, -1};
  int face_prop = -1;
  for (const auto& e : elements) {
    if (e.name == "vertex") {
      vert_el = &e;
      for (std::size_t i = 0; i < e.props.size(); ++i)
        for (int k = 0; k < 3; ++k)
          if (e.props[i].name == std::string(1, char('x' + k)) && !e.props[i].is_list()) xyz[k] = int(i);
    } else if (e.name == "face") {
      for (std::size_t i = 0; i < e.props.size(); ++i)
        if (e.props[i].is_list() && (e.props[i].name == "vertex_indices" || e.props[i].name == "vertex_index"))
          face_prop = int(i);
      if (face_prop < 0 && e.count > 0)
        throw IoError(path, "PLY face element has no 'vertex_indices' list property");
      if (face_prop >= 0 && !detail::ply_is_int(e.props[face_prop].type))
        throw IoError(path, "PLY face indices must have an integer type");
    }
  }
  if (!vert_el) throw IoError(path, "PLY file has no 'vertex' element");
  if (xyz[0] < 0 || xyz[1] < 0 || xyz[2] < 0)
    throw IoError(path, "PLY vertex element lacks scalar x, y and z properties");
  if (vert_el->count > std::numeric_limits<std::int32_t>::max())
    throw IoError(path, "too many vertices (" + std::to_string(vert_el->count) + ")");

  // ---- body ----
  detail::PlyBodyReader rd(bytes, pos, fmt, line_no + 1, path);
  std::vector<float> verts;
  std::vector<std::int32_t> tris;
  const std::int64_t V = vert_el->count;
  for (const auto& e : elements) {
    if (e.props.empty()) continue;
    // Minimum bytes per item (binary) or per item in ascii (one char per value): a count larger
    // than the rest of the file allows is a truncated body; checked before any allocation.
    std::size_t min_item = 0;
    for (const auto& p : e.props)
      min_item += fmt == PlyFormat::Ascii ? 1 : detail::ply_size(p.is_list() ? p.count_type : p.type);
    if (static_cast<std::uint64_t>(e.count) > rd.remaining() / std::max<std::size_t>(min_item, 1)) {
      rd.set_context(e.name, 0, e.count);
      rd.fail("truncated PLY body: " + std::to_string(e.count) + " items declared but only " +
              std::to_string(rd.remaining()) + " bytes left");
    }
    const bool is_vert = &e == vert_el;
    const bool is_face = e.name == "face" && face_prop >= 0;
    if (is_vert) verts.reserve(static_cast<std::size_t>(3 * e.count));
    for (std::int64_t item = 0; item < e.count; ++item) {
      rd.set_context(e.name, item, e.count);
      for (std::size_t pi = 0; pi < e.props.size(); ++pi) {
        const auto& p = e.props[pi];
        if (!p.is_list()) {
          const double v = rd.read(p.type);
          if (is_vert) {
            for (int k = 0; k < 3; ++k)
              if (int(pi) == xyz[k]) {
                const float f = static_cast<float>(v);
                if (!std::isfinite(f)) rd.fail("non-finite vertex coordinate");
                verts.push_back(f);  // x, y, z are pushed in property order; fixed up below
              }
          }
          continue;
        }
        const double cnt_d = rd.read(p.count_type);
        if (cnt_d < 0) rd.fail("negative list length");
        if (cnt_d > static_cast<double>(rd.remaining()))  // every value takes at least one byte
          rd.fail(blendfuse::detail::concat("truncated PLY body: list of ", cnt_d,
                                            " values but only ", rd.remaining(), " bytes left"));
        const auto cnt = static_cast<std::int64_t>(cnt_d);
        if (is_face && int(pi) == face_prop) {
          if (cnt < 3) rd.fail("face with " + std::to_string(cnt) + " vertices (need at least 3)");
          std::vector<std::int32_t> idx(static_cast<std::size_t>(cnt));
          for (auto& i : idx) {
            const double d = rd.read(p.type);
            if (d < 0 || d >= static_cast<double>(V))
              rd.fail("face index " + blendfuse::detail::concat(d) +
                      " is out of range (file has " + std::to_string(V) + " vertices)");
            i = static_cast<std::int32_t>(d);
          }
          for (std::size_t k = 1; k + 1 < idx.size(); ++k) {
            tris.push_back(idx[0]);
            tris.push_back(idx[k]);
            tris.push_back(idx[k + 1]);
          }
        } else {
          for (std::int64_t k = 0; k < cnt; ++k) rd.read(p.type);
        }
      }
    }
  }
  // Vertices were appended in property order; reorder to x, y, z if the file lists them otherwise.
  int order[3] = {0, 1, 2};  // order[k] = position of coordinate k among the three
  for (int k = 0; k < 3; ++k) {
    int r = 0;
    for (int j = 0; j < 3; ++j) r += xyz[j] < xyz[k];
    order[k] = r;
  }
  if (order[0] != 0 || order[1] != 1 || order[2] != 2) {
    for (std::size_t i = 0; i + 2 < verts.size(); i += 3) {
      const float t[3] = {verts[i], verts[i + 1], verts[i + 2]};
      for (int k = 0; k < 3; ++k) verts[i + k] = t[order[k]];
    }
  }
  return detail::make_mesh(verts, tris);
}

/// Reads a PLY file (ascii or binary, triangulated); throws IoError naming the file.
inline Mesh load_ply(const std::string& path) { return parse_ply(read_file_bytes(path), path); }

/// Serialises a mesh as PLY: float x, y, z vertices and `uchar int vertex_indices` faces.
inline std::vector<std::uint8_t> serialize_ply(const Mesh& m, PlyFormat fmt = PlyFormat::BinaryLittleEndian) {
  validate_mesh(m, "serialize_ply");
  const auto v = m.vertices.contiguous();
  const auto f = m.faces.contiguous();
  std::string h = "ply\nformat ";
  h += fmt == PlyFormat::Ascii ? "ascii" : fmt == PlyFormat::BinaryLittleEndian ? "binary_little_endian" : "binary_big_endian";
  h += " 1.0\ncomment written by blendfuse\nelement vertex " + std::to_string(m.num_vertices()) +
       "\nproperty float x\nproperty float y\nproperty float z\nelement face " +
       std::to_string(m.num_faces()) + "\nproperty list uchar int vertex_indices\nend_header\n";
  std::vector<std::uint8_t> out(h.begin(), h.end());
  if (fmt == PlyFormat::Ascii) {
    std::string body;
    for (Index i = 0; i < m.num_vertices(); ++i)
      body += detail::float_str(v[3 * i]) + " " + detail::float_str(v[3 * i + 1]) + " " +
              detail::float_str(v[3 * i + 2]) + "\n";
    for (Index i = 0; i < m.num_faces(); ++i)
      body += "3 " + std::to_string(f[3 * i]) + " " + std::to_string(f[3 * i + 1]) + " " +
              std::to_string(f[3 * i + 2]) + "\n";
    out.insert(out.end(), body.begin(), body.end());
    return out;
  }
  const bool swap = fmt == PlyFormat::BinaryBigEndian;
  auto put = [&](const void* p, std::size_t n) {
    std::uint8_t tmp[4];
    std::memcpy(tmp, p, n);
    if (swap) std::reverse(tmp, tmp + n);
    out.insert(out.end(), tmp, tmp + n);
  };
  out.reserve(out.size() + static_cast<std::size_t>(v.numel()) * 4 + static_cast<std::size_t>(m.num_faces()) * 13);
  for (Index i = 0; i < v.numel(); ++i) put(&v[i], 4);
  for (Index i = 0; i < m.num_faces(); ++i) {
    out.push_back(3);
    for (int k = 0; k < 3; ++k) put(&f[3 * i + k], 4);
  }
  return out;
}

/// Writes a PLY file atomically (binary little-endian float by default).
inline void save_ply(const std::string& path, const Mesh& m, PlyFormat fmt = PlyFormat::BinaryLittleEndian) {
  const auto bytes = serialize_ply(m, fmt);
  write_file_atomic(path, [&](std::ostream& os) {
    os.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  });
}

namespace detail {
inline std::string lower_ext(const std::string& path) {
  const auto dot = path.find_last_of('.');
  const auto slash = path.find_last_of("/\\");
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string e = path.substr(dot);
  for (auto& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e;
}
}  // namespace detail

/// Reads an .obj or .ply mesh, chosen by extension. With `reject_degenerate` a triangle that uses
/// a vertex twice is an error naming the file (and for OBJ the line).
inline Mesh load_mesh(const std::string& path, bool reject_degenerate = false) {
  const std::string e = detail::lower_ext(path);
  if (e == ".obj") return load_obj(path, reject_degenerate);
  if (e != ".ply") throw IoError(path, "unknown mesh file extension '" + e + "' (expected .obj or .ply)");
  Mesh m = load_ply(path);
  for (Index i = 0; reject_degenerate && i < m.num_faces(); ++i) {
    const auto a = m.faces(i, 0), b = m.faces(i, 1), c = m.faces(i, 2);
    if (a == b || b == c || a == c)
      throw IoError(path, "degenerate face " + std::to_string(i) + " (vertices " + std::to_string(a) + " " +
                              std::to_string(b) + " " + std::to_string(c) + ", 0-based): a face needs distinct vertices");
  }
  return m;
}

/// Writes an .obj or .ply mesh (binary little-endian PLY), chosen by extension.
inline void save_mesh(const std::string& path, const Mesh& m) {
  const std::string e = detail::lower_ext(path);
  if (e == ".obj") return save_obj(path, m);
  if (e == ".ply") return save_ply(path, m);
  throw IoError(path, "unknown mesh file extension '" + e + "' (expected .obj or .ply)");
}

}  // namespace blendfuse::io
