// blendfuse CLI — argument checks shared by every subcommand, run before any work so that a bad
// argument never costs a training run or leaves a half-done output (docs/errors.md lists them):
//   * check_outputs: every output path is a file path in an existing, writable folder, is not an
//     existing folder, differs from every other output and from every input (compared as
//     std::filesystem::weakly_canonical paths, and by inode when both exist).
//   * number checks: finite, in range, integer — each error names the subcommand and the option.
//   * check_finite_output: nothing non-finite is ever written.
#pragma once

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <system_error>
#include <vector>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse::cli {

/// An option and the path given to it, e.g. {"--out", "model.safetensors"}.
struct PathArg {
  std::string option;
  std::string path;
};

namespace detail {

inline std::filesystem::path canonical_or_self(const std::string& p) {
  std::error_code ec;
  auto c = std::filesystem::weakly_canonical(std::filesystem::path(p), ec);
  return ec ? std::filesystem::absolute(std::filesystem::path(p), ec).lexically_normal() : c;
}

/// True when `a` and `b` name the same file (same canonical path, or the same inode).
inline bool same_path(const std::string& a, const std::string& b) {
  if (canonical_or_self(a) == canonical_or_self(b)) return true;
  std::error_code ec;
  return std::filesystem::exists(a, ec) && std::filesystem::exists(b, ec) &&
         std::filesystem::equivalent(a, b, ec) && !ec;
}

/// The folder a file path lives in ("." for a bare name).
inline std::filesystem::path parent_folder(const std::string& p) {
  const std::filesystem::path fp(p);
  return fp.has_parent_path() ? fp.parent_path() : std::filesystem::path(".");
}

/// Creates and removes a probe file in `dir`; false if that is impossible (read-only, /proc, ...).
inline bool folder_writable(const std::filesystem::path& dir) {
  std::random_device rd;
  const auto probe = dir / (".blendfuse-write-probe-" + std::to_string(rd() % 1000000u));
  {
    std::ofstream f(probe, std::ios::binary | std::ios::trunc);
    if (!f) return false;
    f << 'x';
    f.flush();
    if (!f) {
      std::error_code ec;
      std::filesystem::remove(probe, ec);
      return false;
    }
  }
  std::error_code ec;
  std::filesystem::remove(probe, ec);
  return true;
}

}  // namespace detail

/// Checks output file paths before any work (see the top of this file). Empty paths are skipped.
/// Errors are IoError(path, "<cmd>: <option> ...").
inline void check_outputs(const std::string& cmd, const std::vector<PathArg>& outputs,
                          const std::vector<PathArg>& inputs) {
  namespace fs = std::filesystem;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const auto& o = outputs[i];
    if (o.path.empty()) continue;
    const std::string who = cmd + ": " + o.option + " ";
    std::error_code ec;
    if (fs::is_directory(o.path, ec))
      throw IoError(o.path, who + "is an existing folder; give a file path");
    const fs::path dir = detail::parent_folder(o.path);
    if (!fs::is_directory(dir, ec))
      throw IoError(o.path, who + "cannot be written: folder '" + dir.string() + "' does not exist");
    if (!detail::folder_writable(dir))
      throw IoError(o.path, who + "cannot be written: folder '" + dir.string() + "' is not writable");
    for (const auto& in : inputs)
      if (!in.path.empty() && detail::same_path(o.path, in.path))
        throw IoError(o.path, who + "is the same file as the input " + in.option +
                                  " (refusing to overwrite an input)");
    for (std::size_t k = 0; k < i; ++k)
      if (!outputs[k].path.empty() && detail::same_path(o.path, outputs[k].path))
        throw IoError(o.path, who + "is the same file as " + outputs[k].option + " (outputs must differ)");
  }
}

/// CLI11 validator of --seed: a non-negative integer (CLI11 would read "-1" as 2^64 - 1).
inline const CLI::Validator kSeedCheck(
    [](std::string& v) -> std::string {
      if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos)
        return "--seed must be a non-negative integer, got '" + v + "'";
      return {};
    },
    "SEED");

/// Strips a leading "<path>: " from a message that will be wrapped in IoError(path, ...).
inline std::string without_prefix(const std::string& msg, const std::string& path) {
  const std::string p = path + ": ";
  return msg.rfind(p, 0) == 0 ? msg.substr(p.size()) : msg;
}

/// Requires a finite value in [lo, hi]; ArgumentError "<cmd>: <option> must be ..." otherwise.
inline void require_range(const std::string& cmd, const std::string& option, double v, double lo, double hi) {
  if (!std::isfinite(v) || v < lo || v > hi) {
    std::string range;
    if (hi == std::numeric_limits<double>::max()) range = ">= " + blendfuse::detail::concat(lo);
    else range = "in [" + blendfuse::detail::concat(lo) + ", " + blendfuse::detail::concat(hi) + "]";
    throw ArgumentError(cmd + ": " + option + " must be a finite number " + range + ", got " + blendfuse::detail::concat(v));
  }
}

/// Requires an integer count in [lo, hi].
inline void require_count(const std::string& cmd, const std::string& option, long long v, long long lo, long long hi) {
  if (v < lo || v > hi)
    throw ArgumentError(cmd + ": " + option + " must be an integer in [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "], got " + std::to_string(v));
}

/// Throws IoError(out_path, ...) when `t` holds NaN/Inf: nothing non-finite is ever written.
/// `cause` says where the values came from (e.g. "the fusion model m.safetensors").
template <class T>
void check_finite_output(const Tensor<T>& t, const std::string& out_path, const std::string& cause) {
  for (Index i = 0; i < t.numel(); ++i)
    if (!std::isfinite(static_cast<double>(t[i])))
      throw IoError(out_path, "not written: the result has a non-finite value (" + blendfuse::detail::concat(t[i]) +
                                  " at flat index " + std::to_string(i) + ", shape " + t.shape_string() +
                                  "); it comes from " + cause);
}

}  // namespace blendfuse::cli
