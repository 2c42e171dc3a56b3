// blendfuse — safetensors reader and writer.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
//   { "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//     "__metadata__": {"key": "string value", ...} }
// then the raw little-endian buffers; offsets are relative to the first byte after the header.
// The reader validates everything before use: header length against the file size, JSON syntax,
// dtype names, shape × element size == byte range, ranges inside the buffer, no overlaps, and
// that the ranges cover the whole buffer (no holes, no trailing bytes).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/file.hpp"

namespace blendfuse::io {

namespace detail {
inline std::size_t dtype_size(const std::string& dt) {
  if (dt == "F64" || dt == "I64" || dt == "U64") return 8;
  if (dt == "F32" || dt == "I32" || dt == "U32") return 4;
  if (dt == "F16" || dt == "BF16" || dt == "I16" || dt == "U16") return 2;
  if (dt == "I8" || dt == "U8" || dt == "BOOL") return 1;
  return 0;
}

inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3FFu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <class Src>
Src load_le(const std::uint8_t* p) {
  Src v;
  std::memcpy(&v, p, sizeof(Src));  // x86-64 and aarch64 are little-endian
  return v;
}
}  // namespace detail

struct SafeTensorInfo {
  std::string dtype;
  Shape shape;
  std::size_t begin = 0, end = 0;  // byte range inside the data buffer
};

/// A parsed safetensors file held in memory.
class SafeTensorsFile {
 public:
  /// Reads and validates `path`; throws IoError naming the file and the problem.
  static SafeTensorsFile load(const std::string& path) {
    return parse(read_file_bytes(path), path);
  }

  /// Parses an in-memory safetensors image; `name` is used in error messages.
  static SafeTensorsFile parse(std::vector<std::uint8_t> bytes, const std::string& name) {
    SafeTensorsFile f;
    f.path_ = name;
    if (bytes.size() < 8)
      throw IoError(name, "truncated safetensors file: " + std::to_string(bytes.size()) +
                              " bytes, the 8-byte header length is missing");
    const auto n = detail::load_le<std::uint64_t>(bytes.data());
    if (n > bytes.size() - 8)
      throw IoError(name, "truncated or corrupt safetensors file: header length " +
                              std::to_string(n) + " exceeds the " + std::to_string(bytes.size() - 8) +
                              " bytes after it");
    if (n < 2) throw IoError(name, "corrupt safetensors file: header length " + std::to_string(n));
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
    } catch (const nlohmann::json::exception& e) {
      throw IoError(name, std::string("corrupt safetensors header (invalid JSON): ") + e.what());
    }
    if (!header.is_object()) throw IoError(name, "corrupt safetensors header: not a JSON object");
    const std::size_t data_start = 8 + static_cast<std::size_t>(n);
    const std::size_t data_size = bytes.size() - data_start;
    std::vector<std::pair<std::size_t, std::size_t>> ranges;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it.value().is_object())
          throw IoError(name, "corrupt safetensors header: __metadata__ is not an object");
        for (auto m = it.value().begin(); m != it.value().end(); ++m) {
          if (!m.value().is_string())
            throw IoError(name, "corrupt safetensors header: metadata value '" + m.key() +
                                    "' is not a string");
          f.metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      const auto& v = it.value();
      const std::string where = "tensor '" + it.key() + "'";
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
          !v.contains("data_offsets"))
        throw IoError(name, "corrupt safetensors header: " + where +
                                " lacks dtype, shape or data_offsets");
      SafeTensorInfo info;
      if (!v["dtype"].is_string()) throw IoError(name, where + ": dtype is not a string");
      info.dtype = v["dtype"].get<std::string>();
      const std::size_t es = detail::dtype_size(info.dtype);
      if (es == 0) throw IoError(name, where + ": unsupported dtype '" + info.dtype + "'");
      if (!v["shape"].is_array()) throw IoError(name, where + ": shape is not an array");
      std::size_t count = 1;
      for (const auto& d : v["shape"]) {
        if (!d.is_number_integer() || d.get<std::int64_t>() < 0)
          throw IoError(name, where + ": shape has a non-integer or negative dimension");
        info.shape.push_back(d.get<Index>());
      }
      // absurd shapes: the element count (and the bytes) must not overflow
      if (!shape_fits_int64(info.shape) ||
          static_cast<std::size_t>(shape_numel(info.shape)) > std::numeric_limits<std::size_t>::max() / es)
        throw IoError(name, where + ": shape " + shape_str(info.shape) + " is too large");
      count = static_cast<std::size_t>(shape_numel(info.shape));
      const auto& off = v["data_offsets"];
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
          !off[1].is_number_unsigned())
        throw IoError(name, where + ": data_offsets must be two non-negative integers");
      info.begin = off[0].get<std::size_t>();
      info.end = off[1].get<std::size_t>();
      if (info.end < info.begin)
        throw IoError(name, where + ": data_offsets end before begin");
      if (info.end > data_size)
        throw IoError(name, where + ": data_offsets [" + std::to_string(info.begin) + ", " +
                                std::to_string(info.end) + ") run past the " +
                                std::to_string(data_size) + "-byte data buffer (truncated file?)");
      if (info.end - info.begin != count * es)
        throw IoError(name, where + ": byte range of " + std::to_string(info.end - info.begin) +
                                " does not match shape " + shape_str(info.shape) + " of " +
                                info.dtype);
      ranges.emplace_back(info.begin, info.end);
      f.tensors_.emplace(it.key(), std::move(info));
    }
    std::sort(ranges.begin(), ranges.end());
    std::size_t pos = 0;
    for (const auto& [b, e] : ranges) {
      if (b < pos) throw IoError(name, "corrupt safetensors file: tensor data ranges overlap");
      if (b > pos) throw IoError(name, "corrupt safetensors file: hole in the data buffer at byte " + std::to_string(pos));
      pos = e;
    }
    if (pos != data_size)
      throw IoError(name, "corrupt safetensors file: " + std::to_string(data_size - pos) +
                              " trailing bytes not covered by any tensor");
    f.bytes_ = std::move(bytes);
    f.data_start_ = data_start;
    return f;
  }

  const std::string& path() const noexcept { return path_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : tensors_) out.push_back(kv.first);
    return out;
  }
  const SafeTensorInfo& info(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw IoError(path_, "no tensor named '" + name + "'");
    return it->second;
  }

  /// Tensor `name` converted to element type T. If `expected` is non-empty the shape must match
  /// (-1 entries match any size). Any dtype converts (I64 → double, ...); use get_weights for
  /// model weights.
  template <class T>
  Tensor<T> get(const std::string& name, const Shape& expected = {}) const {
    const SafeTensorInfo& in = info(name);
    if (!expected.empty()) {
      bool ok = in.shape.size() == expected.size();
      for (std::size_t i = 0; ok && i < expected.size(); ++i)
        ok = expected[i] < 0 || expected[i] == in.shape[i];
      if (!ok)
        throw IoError(path_, "tensor '" + name + "' has shape " + shape_str(in.shape) +
                                 ", expected " + shape_str(expected));
    }
    Tensor<T> t(in.shape);
    const std::uint8_t* p = bytes_.data() + data_start_ + in.begin;
    const std::size_t n = static_cast<std::size_t>(t.numel());
    const std::string& dt = in.dtype;
    for (std::size_t i = 0; i < n; ++i) {
      double v;
      if (dt == "F32") v = detail::load_le<float>(p + 4 * i);
      else if (dt == "F64") v = detail::load_le<double>(p + 8 * i);
      else if (dt == "F16") v = detail::half_to_float(detail::load_le<std::uint16_t>(p + 2 * i));
      else if (dt == "BF16") {
        const std::uint32_t bits = static_cast<std::uint32_t>(detail::load_le<std::uint16_t>(p + 2 * i)) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        v = f;
      } else if (dt == "I64") v = static_cast<double>(detail::load_le<std::int64_t>(p + 8 * i));
      else if (dt == "U64") v = static_cast<double>(detail::load_le<std::uint64_t>(p + 8 * i));
      else if (dt == "I32") v = detail::load_le<std::int32_t>(p + 4 * i);
      else if (dt == "U32") v = detail::load_le<std::uint32_t>(p + 4 * i);
      else if (dt == "I16") v = detail::load_le<std::int16_t>(p + 2 * i);
      else if (dt == "U16") v = detail::load_le<std::uint16_t>(p + 2 * i);
      else if (dt == "I8") v = static_cast<std::int8_t>(p[i]);
      else v = p[i];  // U8, BOOL
      if constexpr (std::is_integral_v<T>) {
        // a float tensor read as integers (e.g. faces relabelled F32): only exact, in-range values
        const double lo = static_cast<double>(std::numeric_limits<T>::min());   // exact
        const double hi = std::ldexp(1.0, std::numeric_limits<T>::digits);      // max + 1, exact
        if (!(v == std::floor(v) && v >= lo && v < hi))
          throw IoError(path_, "tensor '" + name + "' (" + dt + ") holds " + blendfuse::detail::concat(v) +
                                   " at element " + std::to_string(i) +
                                   ", not an integer in the range of the requested integer type");
      }
      t[static_cast<Index>(i)] = static_cast<T>(v);
    }
    return t;
  }

  /// Tensor `name` as floating-point weights: like get<T>, but the stored dtype must be a float
  /// type (F32, F64, F16, BF16) — integer data (e.g. a weight relabelled I32) are an error naming
  /// the file and the tensor, not silently converted.
  template <class T>
  Tensor<T> get_weights(const std::string& name, const Shape& expected = {}) const {
    static_assert(std::is_floating_point_v<T>, "get_weights: T must be a floating-point type");
    const std::string& dt = info(name).dtype;
    if (!(dt == "F32" || dt == "F64" || dt == "F16" || dt == "BF16"))
      throw IoError(path_, "tensor '" + name + "' has dtype " + dt +
                               ", expected floating-point values (F32, F64, F16 or BF16)");
    return get<T>(name, expected);
  }

  /// Metadata value, or `fallback` if absent.
  std::string meta(const std::string& key, const std::string& fallback = "") const {
    auto it = metadata_.find(key);
    return it == metadata_.end() ? fallback : it->second;
  }

 private:
  std::string path_;
  std::vector<std::uint8_t> bytes_;
  std::size_t data_start_ = 0;
  std::map<std::string, SafeTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// Collects tensors and metadata, then writes a safetensors file atomically.
class SafeTensorsWriter {
 public:
  template <class T, class B>
  void add(const std::string& name, const Tensor<T, B>& t) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> ||
                      std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::int32_t>,
                  "SafeTensorsWriter: unsupported element type");
    BF_CHECK(name != "__metadata__" && !name.empty(), ArgumentError,
             "SafeTensorsWriter: invalid tensor name '", name, "'");
    Entry e;
    e.shape = t.shape();
    e.dtype = std::is_same_v<T, float> ? "F32" : std::is_same_v<T, double> ? "F64"
              : std::is_same_v<T, std::int64_t> ? "I64" : "I32";
    const Tensor<T, B> c = t.contiguous();
    e.bytes.resize(static_cast<std::size_t>(c.numel()) * sizeof(T));
    if (!e.bytes.empty()) std::memcpy(e.bytes.data(), c.data(), e.bytes.size());
    entries_[name] = std::move(e);
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  /// Serialises to bytes (tensors in name order, header padded with spaces to 8 bytes).
  std::vector<std::uint8_t> serialize() const {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::size_t off = 0;
    for (const auto& [name, e] : entries_) {
      header[name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {off, off + e.bytes.size()}}};
      off += e.bytes.size();
    }
    std::string h;
    try {
      h = header.dump();
    } catch (const nlohmann::json::type_error& e) {  // strings that are not valid UTF-8
      throw ArgumentError(std::string("SafeTensorsWriter: a tensor name or metadata value is not valid UTF-8 (") +
                          e.what() + ")");
    }
    while ((h.size() + 8) % 8 != 0) h.push_back(' ');
    std::vector<std::uint8_t> out(8 + h.size() + off);
    const std::uint64_t n = h.size();
    std::memcpy(out.data(), &n, 8);
    std::memcpy(out.data() + 8, h.data(), h.size());
    std::size_t pos = 8 + h.size();
    for (const auto& kv : entries_) {
      if (!kv.second.bytes.empty()) std::memcpy(out.data() + pos, kv.second.bytes.data(), kv.second.bytes.size());
      pos += kv.second.bytes.size();
    }
    return out;
  }

  void save(const std::string& path) const {
    const auto bytes = serialize();
    write_file_atomic(path, [&](std::ostream& os) {
      os.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    });
  }

 private:
  struct Entry {
    std::string dtype;
    Shape shape;
    std::vector<std::uint8_t> bytes;
  };
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace blendfuse::io
