// blendfuse — NumPy .npy reader and writer, and the vertex-sequence loader built on it.
//
// Format (numpy.lib.format): the magic "\x93NUMPY", major and minor version bytes, the header
// length (uint16 little-endian for version 1.0, uint32 for 2.0 and 3.0), then a Python dict
// literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (30, 5023, 3), }
// padded with spaces and a final '\n', then the raw C-order buffer. Version 3.0 only differs in
// allowing UTF-8 in the header, which this parser accepts as is.
//
// Why not xtensor's xnpy.hpp: its loader reads the data with a plain istream::read() and never
// checks how many bytes arrived, so a truncated file silently yields a partly uninitialised array;
// it requires the dict keys in one fixed order (the format says readers must not), does not know
// version 3.0, and throws std::runtime_error without the file name. Hence this small parser, which
// validates everything before use and throws IoError("path: what is wrong").
//
// Supported dtypes: '<f4', '<f8', '<i4', '<i8' (and '|u1'/'|i1' for small masks), little-endian,
// C order. Data are converted to the requested element type on load (f8 -> float is a plain
// rounding cast; floating data are never converted to an integer tensor).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/file.hpp"

namespace blendfuse::io {

/// The parsed header of a .npy file.
struct NpyHeader {
  int major = 0, minor = 0;
  std::string descr;          // e.g. "<f4"
  char kind = 0;              // 'f', 'i' or 'u'
  std::size_t itemsize = 0;   // bytes per element
  bool fortran_order = false;
  Shape shape;
  std::size_t data_offset = 0;  // byte offset of the first element
};

namespace detail {

/// A tiny recursive-descent parser for the Python dict literal of a .npy header.
class NpyDictParser {
 public:
  NpyDictParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  void parse(NpyHeader& h) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    expect('{');
    skip_ws();
    while (peek() != '}') {
      const std::string key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (peek() == '[') fail("structured dtypes (descr is a list) are not supported");
        h.descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = parse_bool();
        have_fortran = true;
      } else if (key == "shape") {
        h.shape = parse_shape();
        have_shape = true;
      } else {
        fail("unexpected key '" + key + "' in header dict");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      } else if (peek() != '}') {
        fail("expected ',' or '}' after the value of '" + key + "'");
      }
    }
    ++pos_;
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected characters after the header dict");
    if (!have_descr) fail("header dict has no 'descr' key");
    if (!have_fortran) fail("header dict has no 'fortran_order' key");
    if (!have_shape) fail("header dict has no 'shape' key");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw IoError(path_, "malformed .npy header: " + what + " (at character " +
                             std::to_string(pos_) + " of \"" + printable() + "\")");
  }
  std::string printable() const {
    std::string out;
    for (char c : s_.substr(0, 200)) out += (c >= 32 && c < 127) ? c : '?';
    return out;
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string parse_string() {
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string");
    ++pos_;
    const std::size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != q) {
      if (s_[pos_] == '\\') fail("escape sequences are not supported in header strings");
      ++pos_;
    }
    if (pos_ >= s_.size()) fail("unterminated string");
    return s_.substr(start, pos_++ - start);
  }
  bool parse_bool() {
    if (s_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (s_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    fail("fortran_order must be True or False");
  }
  Index parse_int() {
    if (!(peek() >= '0' && peek() <= '9')) fail("expected a non-negative integer in shape");
    Index v = 0;
    while (peek() >= '0' && peek() <= '9') {
      if (v > (std::numeric_limits<Index>::max() - 9) / 10) fail("shape dimension too large");
      v = v * 10 + (s_[pos_++] - '0');
    }
    if (peek() == 'L') ++pos_;  // Python 2 long suffix
    return v;
  }
  Shape parse_shape() {
    Shape shape;
    expect('(');
    skip_ws();
    while (peek() != ')') {
      shape.push_back(parse_int());
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        skip_ws();
      } else if (peek() != ')') {
        fail("expected ',' or ')' in shape");
      }
    }
    ++pos_;
    return shape;
  }

  const std::string& s_;
  const std::string& path_;
  std::size_t pos_ = 0;
};

template <class T>
constexpr const char* npy_descr() {
  if constexpr (std::is_same_v<T, float>) return "<f4";
  else if constexpr (std::is_same_v<T, double>) return "<f8";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "<i4";
  else if constexpr (std::is_same_v<T, std::int64_t>) return "<i8";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "|u1";
  else static_assert(sizeof(T) == 0, "save_npy: unsupported element type");
}

template <class Src, class T>
void npy_convert(const std::uint8_t* src, T* dst, std::size_t n, const std::string& path) {
  for (std::size_t i = 0; i < n; ++i) {
    Src v;
    std::memcpy(&v, src + i * sizeof(Src), sizeof(Src));  // host is little-endian (x86-64, aarch64)
    if constexpr (std::is_integral_v<T> && std::is_integral_v<Src>) {
      if (!std::in_range<T>(v))
        throw IoError(path, blendfuse::detail::concat("value ", +v, " at flat index ", i,
                                           " does not fit the requested integer type"));
    }
    dst[i] = static_cast<T>(v);
  }
}

}  // namespace detail

/// Parses and validates the header of an in-memory .npy image (`path` names it in errors):
/// magic, version, header length, dict syntax, dtype, byte order, memory order, and that the file
/// holds exactly shape × itemsize data bytes.
inline NpyHeader parse_npy_header(const std::vector<std::uint8_t>& bytes, const std::string& path) {
  static const std::uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (bytes.size() < 10 || std::memcmp(bytes.data(), magic, 6) != 0)
    throw IoError(path, bytes.size() < 10 && bytes.size() >= 1 && bytes[0] == 0x93
                            ? "truncated .npy file (" + std::to_string(bytes.size()) + " bytes)"
                            : "not a .npy file (bad magic, expected \\x93NUMPY)");
  NpyHeader h;
  h.major = bytes[6];
  h.minor = bytes[7];
  std::size_t header_len = 0, start = 0;
  if (h.major == 1 && h.minor == 0) {
    header_len = std::size_t(bytes[8]) | (std::size_t(bytes[9]) << 8);
    start = 10;
  } else if ((h.major == 2 || h.major == 3) && h.minor == 0) {
    if (bytes.size() < 12) throw IoError(path, "truncated .npy file (header length cut off)");
    header_len = std::size_t(bytes[8]) | (std::size_t(bytes[9]) << 8) |
                 (std::size_t(bytes[10]) << 16) | (std::size_t(bytes[11]) << 24);
    start = 12;
  } else {
    throw IoError(path, "unsupported .npy format version " + std::to_string(h.major) + "." +
                            std::to_string(h.minor) + " (supported: 1.0, 2.0, 3.0)");
  }
  if (start + header_len > bytes.size())
    throw IoError(path, "truncated .npy file: header length " + std::to_string(header_len) +
                            " exceeds the file size " + std::to_string(bytes.size()));
  const std::string text(bytes.begin() + static_cast<std::ptrdiff_t>(start),
                         bytes.begin() + static_cast<std::ptrdiff_t>(start + header_len));
  detail::NpyDictParser(text, path).parse(h);
  h.data_offset = start + header_len;

  const std::string& d = h.descr;
  if (d.size() < 3) throw IoError(path, "unsupported dtype '" + d + "'");
  if (d[0] == '>')
    throw IoError(path, "big-endian dtype '" + d + "' is not supported (save with '<' byte order)");
  h.kind = d[1];
  const std::string code = d.substr(1);
  const bool le_ok = d[0] == '<' || d[0] == '=' || d[0] == '|';
  if (le_ok && (code == "f4" || code == "i4") && d[0] != '|') h.itemsize = 4;
  else if (le_ok && (code == "f8" || code == "i8") && d[0] != '|') h.itemsize = 8;
  else if ((d[0] == '|') && (code == "u1" || code == "i1")) h.itemsize = 1;
  else
    throw IoError(path, "unsupported dtype '" + d + "' (supported: <f4, <f8, <i4, <i8, |u1, |i1)");
  if (h.fortran_order) {
    int big = 0;  // Fortran order equals C order when at most one dimension exceeds 1
    for (Index s : h.shape) big += s > 1;
    if (big > 1)
      throw IoError(path, "fortran_order=True arrays are not supported (save with C order: "
                          "np.save(f, np.ascontiguousarray(a)))");
    h.fortran_order = false;
  }

  // Expected data size, guarding against overflow from absurd shapes.
  const std::size_t avail = bytes.size() - h.data_offset;
  std::size_t need = h.itemsize;
  bool zero = false, overflow = false;
  for (Index s : h.shape) zero = zero || s == 0;
  if (zero) {
    need = 0;
  } else {
    for (Index s : h.shape)
      if (__builtin_mul_overflow(need, static_cast<std::size_t>(s), &need)) overflow = true;
  }
  if (overflow || need > avail)
    throw IoError(path, "truncated data: shape " + shape_str(h.shape) + " of " + d + " needs " +
                            (overflow ? std::string("more than 2^64") : std::to_string(need)) +
                            " bytes, file has " + std::to_string(avail) + " after the header");
  if (!shape_fits_int64(h.shape))  // zero-sized, but (0, 2^42, 2^42) would overflow the strides
    throw IoError(path, "shape " + shape_str(h.shape) + " is too large (more than 2^63 elements)");
  if (need < avail)
    throw IoError(path, std::to_string(avail - need) + " trailing bytes after the data of shape " +
                            shape_str(h.shape) + " " + d + " (corrupt file?)");
  return h;
}

/// Parses an in-memory .npy image into a Tensor<T> (`path` names it in errors).
template <class T>
Tensor<T> parse_npy(const std::vector<std::uint8_t>& bytes, const std::string& path) {
  static_assert(std::is_arithmetic_v<T>, "parse_npy: T must be arithmetic");
  const NpyHeader h = parse_npy_header(bytes, path);
  if constexpr (std::is_integral_v<T>) {
    if (h.kind == 'f')
      throw IoError(path, "floating-point dtype '" + h.descr + "' cannot be loaded as an integer array");
  }
  Tensor<T> t(h.shape);
  const std::size_t n = static_cast<std::size_t>(t.numel());
  const std::uint8_t* src = bytes.data() + h.data_offset;
  const std::string code = h.descr.substr(1);
  if (code == "f4") detail::npy_convert<float>(src, t.data(), n, path);
  else if (code == "f8") detail::npy_convert<double>(src, t.data(), n, path);
  else if (code == "i4") detail::npy_convert<std::int32_t>(src, t.data(), n, path);
  else if (code == "i8") detail::npy_convert<std::int64_t>(src, t.data(), n, path);
  else if (code == "u1") detail::npy_convert<std::uint8_t>(src, t.data(), n, path);
  else detail::npy_convert<std::int8_t>(src, t.data(), n, path);
  return t;
}

/// Reads a .npy file as Tensor<T>. Throws IoError("path: ...") for missing, truncated or corrupt
/// files, unsupported dtypes, big-endian data and Fortran order.
template <class T>
Tensor<T> load_npy(const std::string& path) {
  return parse_npy<T>(read_file_bytes(path), path);
}

/// Serialises a tensor as a version 1.0 .npy image (version 2.0 if the header would not fit),
/// header padded so the data start at a multiple of 64 bytes — byte-identical to numpy.save.
/// T ∈ {float (<f4), double (<f8), int32 (<i4), int64 (<i8), uint8 (|u1)}.
template <class T, class B>
std::vector<std::uint8_t> serialize_npy(const Tensor<T, B>& t) {
  std::string dict = std::string("{'descr': '") + detail::npy_descr<T>() +
                     "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < t.shape().size(); ++i) {
    if (i) dict += ", ";
    dict += std::to_string(t.shape()[i]);
  }
  if (t.shape().size() == 1) dict += ",";
  dict += "), }";
  int major = 1;
  std::size_t prefix = 10;
  auto padded = [&] {
    std::size_t total = prefix + dict.size() + 1;  // + '\n'
    return ((total + 63) / 64) * 64 - prefix;
  };
  std::size_t header_len = padded();
  if (header_len > 65535) {
    major = 2;
    prefix = 12;
    header_len = padded();
  }
  dict.resize(header_len - 1, ' ');
  dict += '\n';
  const Tensor<T, B> c = t.contiguous();
  const std::size_t nbytes = static_cast<std::size_t>(c.numel()) * sizeof(T);
  std::vector<std::uint8_t> out(prefix + header_len + nbytes);
  const std::uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  std::memcpy(out.data(), magic, 6);
  out[6] = static_cast<std::uint8_t>(major);
  out[7] = 0;
  for (std::size_t i = 0; i < prefix - 8; ++i)
    out[8 + i] = static_cast<std::uint8_t>((header_len >> (8 * i)) & 0xFFu);
  std::memcpy(out.data() + prefix, dict.data(), dict.size());
  if (nbytes) std::memcpy(out.data() + prefix + header_len, c.data(), nbytes);
  return out;
}

/// Writes a tensor to `path` as .npy, atomically (temp file + rename).
template <class T, class B>
void save_npy(const std::string& path, const Tensor<T, B>& t) {
  const auto bytes = serialize_npy(t);
  write_file_atomic(path, [&](std::ostream& os) {
    os.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  });
}

/// Interprets a loaded array as a vertex sequence (T, V, 3); see load_vertex_sequence.
inline Tensor<float> to_vertex_sequence(const Tensor<float>& a, const std::string& path,
                                        Index V_expected = -1) {
  Tensor<float> seq;
  if (a.ndim() == 3) {
    if (a.dim(2) != 3)
      throw IoError(path, "vertex sequence of shape " + a.shape_string() +
                              " must have 3 coordinates in its last dimension");
    seq = a;
  } else if (a.ndim() == 2) {
    const Index rows = a.dim(0), cols = a.dim(1);
    if (cols == 3 && V_expected != 1) {
      seq = a.reshape({1, rows, 3});  // a single frame (V, 3)
    } else {
      if (cols % 3 != 0)
        throw IoError(path, "vertex sequence of shape " + a.shape_string() +
                                ": second dimension " + std::to_string(cols) +
                                " is not a multiple of 3 (expected (T, V*3) or (T, V, 3))");
      seq = a.reshape({rows, cols / 3, 3});
    }
  } else {
    throw IoError(path, "vertex sequence must have shape (T, V, 3), (T, V*3) or (V, 3), got " +
                            a.shape_string());
  }
  if (V_expected >= 0 && seq.dim(1) != V_expected)
    throw IoError(path, "vertex count mismatch: file has " + std::to_string(seq.dim(1)) +
                            " vertices per frame (shape " + a.shape_string() + "), expected " +
                            std::to_string(V_expected));
  if (seq.dim(0) == 0) throw IoError(path, "vertex sequence has no frames (shape " + a.shape_string() + ")");
  if (seq.dim(1) == 0) throw IoError(path, "vertex sequence has no vertices (shape " + a.shape_string() + ")");
  const Index V = seq.dim(1);
  for (Index i = 0; i < seq.numel(); ++i) {
    if (!std::isfinite(seq[i])) {
      const Index frame = i / (V * 3), v = (i / 3) % V, c = i % 3;
      throw IoError(path, blendfuse::detail::concat("non-finite vertex value ", seq[i], " at frame ", frame,
                                         ", vertex ", v, ", coordinate ", c, " (flat index ", i, ")"));
    }
  }
  return seq;
}

/// Loads a vertex sequence from a .npy file as Tensor<float> of shape (T, V, 3).
/// Accepted layouts: (T, V, 3); (T, V*3) as FaceFormer's VOCAset files; (V, 3) as a single frame
/// (T = 1). A 2-d (N, 3) array is read as one frame of N vertices unless `V_expected` == 1. `<f8` data are rounded to float. With `V_expected` >= 0 a different vertex
/// count is an error naming both counts. NaN/Inf values and empty (0-frame or
/// 0-vertex) arrays are rejected, naming the file (and the first bad index).
inline Tensor<float> load_vertex_sequence(const std::string& path, Index V_expected = -1) {
  return to_vertex_sequence(load_npy<float>(path), path, V_expected);
}

}  // namespace blendfuse::io
