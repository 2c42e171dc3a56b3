// blendfuse — error types.
//
// Error policy (see docs/architecture.md): inside the library every failure throws a subclass of
// blendfuse::Error. Messages always name the offending object (file path, tensor name, op) and
// what is wrong with it. The embedding API (later) converts these to std::error_code at its edge.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace blendfuse {

/// Base class of every exception blendfuse throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// Tensor shapes or arguments that do not fit an operation.
class ShapeError : public Error {
 public:
  explicit ShapeError(const std::string& what) : Error(what) {}
};

/// Invalid argument values (negative stride, unknown option, NaN where forbidden, ...).
class ArgumentError : public Error {
 public:
  explicit ArgumentError(const std::string& what) : Error(what) {}
};

/// A file could not be read or written, or its content is malformed. `path()` names the file.
class IoError : public Error {
 public:
  IoError(std::string path, const std::string& problem)
      : Error(path + ": " + problem), path_(std::move(path)) {}
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

}  // namespace blendfuse

/// Throws `ExcType` with a message built from the streamed arguments when `cond` is false.
#define BF_CHECK(cond, ExcType, ...)                                   \
  do {                                                                 \
    if (!(cond)) throw ExcType(::blendfuse::detail::concat(__VA_ARGS__)); \
  } while (0)
