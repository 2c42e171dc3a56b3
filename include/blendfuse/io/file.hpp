// blendfuse — small file helpers shared by every loader/writer: whole-file reads with errors that
// name the file, and atomic writes (temp file in the same folder + rename) so that a failed or
// interrupted write never leaves a half-written output behind.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "blendfuse/core/error.hpp"

namespace blendfuse::io {

/// Whether a shape read from a file can be a Tensor: every dimension >= 0 and the product of the
/// non-zero dimensions fits in int64, so the element count and every stride do (a zero-sized
/// (0, 2^42, 2^42) array would otherwise overflow the strides). Loaders check this before they
/// build the tensor.
inline bool shape_fits_int64(const std::vector<std::int64_t>& dims) {
  std::int64_t n = 1;
  for (std::int64_t d : dims) {
    if (d < 0) return false;
    if (d != 0 && __builtin_mul_overflow(n, d, &n)) return false;
  }
  return true;
}

/// Reads a whole file into memory; throws IoError naming the file if it is missing or unreadable.
inline std::vector<std::uint8_t> read_file_bytes(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) throw IoError(path, "file not found");
  if (std::filesystem::is_directory(status)) throw IoError(path, "is a directory, expected a file");
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw IoError(path, "cannot open for reading");
  const std::streamoff size = f.tellg();
  if (size < 0) throw IoError(path, "cannot determine file size");
  std::vector<std::uint8_t> buf(static_cast<std::size_t>(size));
  f.seekg(0);
  if (size > 0 && !f.read(reinterpret_cast<char*>(buf.data()), size))
    throw IoError(path, "read error");
  return buf;
}

inline std::string read_file_text(const std::string& path) {
  const auto bytes = read_file_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

/// Writes a file atomically: `writer` fills a stream opened on a temporary file next to `path`;
/// on success the temporary file is renamed over `path`, on any failure it is removed and the
/// exception propagates. An existing `path` is left untouched unless the write succeeds.
inline void write_file_atomic(const std::string& path,
                              const std::function<void(std::ostream&)>& writer) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw IoError(path, "output folder does not exist");
  std::random_device rd;
  const fs::path tmp =
      dir / (target.filename().string() + ".tmp" + std::to_string(rd() % 1000000u));
  try {
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      if (!f) throw IoError(path, "cannot open temporary file " + tmp.string() + " for writing");
      writer(f);
      f.flush();
      if (!f) throw IoError(path, "write error (disk full?)");
    }
    fs::rename(tmp, target, ec);
    if (ec) throw IoError(path, "cannot rename temporary file: " + ec.message());
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
}

inline void write_file_atomic(const std::string& path, const std::string& content) {
  write_file_atomic(path, [&](std::ostream& os) { os.write(content.data(), static_cast<std::streamsize>(content.size())); });
}

}  // namespace blendfuse::io
