// blendfuse — oneDNN backend, shared plumbing: the global engine, per-thread streams, the
// primitive cache, memory-descriptor helpers and the host-memory conversions between
// Tensor<T, Cpu> and Tensor<T, OneDnn>.
//
// Targets oneDNN 2.6 (Debian's libdnnl-dev 2.6.3): primitives are built from *op descriptors*
// (`dnnl::convolution_forward::desc` → `primitive_desc` → primitive), which is the 2.x API (3.x
// builds primitive descriptors directly and would need a small port of each `make_*` below).
//
// Engine and streams. One CPU engine for the process, created on first use. Streams are
// per thread (thread_local, created lazily from that engine) so that several threads may run
// blendfuse ops concurrently. Every primitive is created with a user-managed scratchpad and
// run with a thread-local scratch buffer: Debian's oneDNN is built without
// DNNL_ENABLE_CONCURRENT_EXEC, and with the default library scratchpad two threads running the
// same cached primitive crashed (tests/test_backend_onednn.cpp covers this).
//
// Threads. oneDNN (Debian's build uses the OpenMP runtime) parallelises every primitive with the
// OpenMP defaults: callers set the thread count with OMP_NUM_THREADS=k in the environment or
// omp_set_num_threads(k) before the first op (oneDNN reads it per call, so later changes work
// too). DNNL_VERBOSE=1 prints which implementation each primitive picked (jit:avx2, ref, ...).
//
// Primitive cache. Creating a oneDNN primitive (descriptor validation, implementation dispatch,
// JIT code generation) costs from microseconds to milliseconds, so every op builds its
// primitive(s) once per (op, shapes, params) key and keeps them in a small thread-safe cache
// (FIFO eviction beyond `kCacheCapacity` entries). `cache_stats()` reports hits and misses so
// tests and benchmarks can check a second call with the same shapes reuses the primitive.
//
// Memory formats. This first version uses plain row-major layouts (nchw, oihw/goihw, ab) at
// every op edge, exactly the Tensor layout, so no reorders are ever needed and outputs are
// ordinary tensors. Where it would pay to let oneDNN pick blocked layouts (format_tag::any and
// reorders) is noted per op — mainly convolution, whose JIT kernels prefer nChw8c/nChw16c
// activations and blocked weights: a chain conv → instance norm → relu kept in the blocked layout
// would avoid the implicit plain-layout kernels.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "blendfuse/backend/backend.hpp"
#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse::onednn {

// ---- engine and stream ------------------------------------------------------------------------

/// The process-wide CPU engine (created on first use).
inline dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

/// This thread's stream on `engine()` (created on first use in each thread).
inline dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

// ---- primitive cache --------------------------------------------------------------------------

struct CacheStats {
  std::uint64_t hits = 0;    ///< lookups that found a cached primitive
  std::uint64_t misses = 0;  ///< lookups that created one
  std::size_t size = 0;      ///< entries currently cached
};

namespace detail {

inline constexpr std::size_t kCacheCapacity = 1024;

class PrimitiveCache {
 public:
  static PrimitiveCache& instance() {
    static PrimitiveCache c;
    return c;
  }

  /// The entry for `key`, created with `make()` (returning std::shared_ptr<Entry>) on a miss.
  /// A null result from `make()` is cached too (e.g. "oneDNN cannot do this shape").
  template <class Entry, class Make>
  std::shared_ptr<const Entry> get(const std::string& key, Make&& make) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      ++hits_;
      return std::static_pointer_cast<const Entry>(it->second);
    }
    ++misses_;
    std::shared_ptr<const Entry> e = make();  // under the lock: a shape is built exactly once
    if (map_.size() >= kCacheCapacity && !order_.empty()) {
      map_.erase(order_.front());
      order_.pop_front();
    }
    map_.emplace(key, std::static_pointer_cast<const void>(e));
    order_.push_back(key);
    return e;
  }

  CacheStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {hits_, misses_, map_.size()};
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    map_.clear();
    order_.clear();
  }
  void reset_stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    hits_ = misses_ = 0;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<const void>> map_;
  std::deque<std::string> order_;
  std::uint64_t hits_ = 0, misses_ = 0;
};

/// Builds a cache key "op|a,b,c|..." from integers, shapes and flags.
inline void key_part(std::string& k, Index v) {
  k += std::to_string(v);
  k += ',';
}
inline void key_part(std::string& k, const Shape& s) {
  k += '[';
  for (Index d : s) key_part(k, d);
  k += ']';
}
inline void key_part(std::string& k, float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%a,", static_cast<double>(v));
  k += buf;
}
template <class... A>
std::string make_key(const char* op, const A&... parts) {
  std::string k(op);
  k += '|';
  (key_part(k, parts), ...);
  return k;
}

}  // namespace detail

/// Hit/miss counters and size of the primitive cache (all ops together).
inline CacheStats cache_stats() { return detail::PrimitiveCache::instance().stats(); }
inline void reset_cache_stats() { detail::PrimitiveCache::instance().reset_stats(); }
/// Drops every cached primitive (they are rebuilt on the next call).
inline void clear_cache() { detail::PrimitiveCache::instance().clear(); }

// ---- conversions between the reference and the oneDNN tensors ---------------------------------
// Both backends hold host memory with the same layout, so conversions are plain copies, and
// non-owning views are free (the caller keeps the source alive).

/// Owning contiguous copy of a reference tensor as a oneDNN tensor (empty stays empty).
template <class T>
Tensor<T, OneDnn> to_onednn(const Tensor<T, Cpu>& t) {
  if (t.ndim() == 0 && t.data() == nullptr) return {};
  Tensor<T, OneDnn> out(t.shape());
  const Tensor<T, Cpu> c = t.contiguous();
  if (c.numel() > 0) std::memcpy(out.data(), c.data(), sizeof(T) * static_cast<std::size_t>(c.numel()));
  return out;
}

/// Owning contiguous copy of a oneDNN tensor as a reference tensor (empty stays empty).
template <class T>
Tensor<T, Cpu> to_cpu(const Tensor<T, OneDnn>& t) {
  if (t.ndim() == 0 && t.data() == nullptr) return {};
  Tensor<T, Cpu> out(t.shape());
  const Tensor<T, OneDnn> c = t.contiguous();
  if (c.numel() > 0) std::memcpy(out.data(), c.data(), sizeof(T) * static_cast<std::size_t>(c.numel()));
  return out;
}

/// Non-owning views with the other backend tag (same data, shape and strides).
template <class T>
Tensor<T, Cpu> view_as_cpu(const Tensor<T, OneDnn>& t) {
  if (t.ndim() == 0 && t.data() == nullptr) return {};
  return Tensor<T, Cpu>::view(const_cast<T*>(t.data()), t.shape(), t.strides());
}
template <class T>
Tensor<T, OneDnn> view_as_onednn(const Tensor<T, Cpu>& t) {
  if (t.ndim() == 0 && t.data() == nullptr) return {};
  return Tensor<T, OneDnn>::view(const_cast<T*>(t.data()), t.shape(), t.strides());
}

namespace detail {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

inline dnnl::memory::dims dims_of(const Shape& s) { return dnnl::memory::dims(s.begin(), s.end()); }

/// f32 descriptor with the given dims and row-major (plain) strides.
inline dnnl::memory::desc plain_md(const dnnl::memory::dims& d) {
  Shape s(d.begin(), d.end());
  const Shape st = contiguous_strides(s);
  return dnnl::memory::desc(d, dt::f32, dnnl::memory::dims(st.begin(), st.end()));
}

/// f32 descriptor with explicit strides (transposed views for matmul).
inline dnnl::memory::desc strided_md(const dnnl::memory::dims& d, const dnnl::memory::dims& st) {
  return dnnl::memory::desc(d, dt::f32, st);
}

/// Wraps caller memory (never copied; inputs are const-cast because oneDNN takes void*).
inline dnnl::memory wrap(const dnnl::memory::desc& md, const void* p) {
  return dnnl::memory(md, engine(), const_cast<void*>(p));
}

/// Attributes every executed primitive is created with: user-managed scratchpad, so that
/// concurrent calls from several threads never share oneDNN's library scratchpad (Debian's build
/// does not enable DNNL_ENABLE_CONCURRENT_EXEC).
inline dnnl::primitive_attr scratch_attr() {
  dnnl::primitive_attr a;
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return a;
}

/// This thread's scratchpad buffer, grown to at least `bytes` (64-byte aligned).
inline void* thread_scratch(std::size_t bytes) {
  struct Buf {
    void* p = nullptr;
    std::size_t size = 0;
    ~Buf() {
      if (p) ::operator delete(p, std::align_val_t(64));
    }
  };
  thread_local Buf b;
  if (bytes > b.size) {
    if (b.p) ::operator delete(b.p, std::align_val_t(64));
    b.p = nullptr;
    b.p = ::operator new(bytes, std::align_val_t(64));
    b.size = bytes;
  }
  return b.p;
}

/// Runs `prim` on this thread's stream (with this thread's scratchpad) and waits.
inline void run(const dnnl::primitive& prim, std::unordered_map<int, dnnl::memory> args) {
  const dnnl_memory_desc_t* smd =
      dnnl_primitive_desc_query_md(prim.get_primitive_desc(), dnnl_query_scratchpad_md, 0);
  if (smd != nullptr) {
    const dnnl::memory::desc md(*smd);
    const std::size_t bytes = md.get_size();
    if (bytes > 0) args.insert_or_assign(DNNL_ARG_SCRATCHPAD, dnnl::memory(md, engine(), thread_scratch(bytes)));
  }
  prim.execute(stream(), args);
  stream().wait();
}

/// Copies a reference result back into a oneDNN tensor (used by the double fallbacks).
template <class T>
Tensor<T, OneDnn> back(const Tensor<T, Cpu>& t) {
  return to_onednn(t);
}

/// True for shapes oneDNN should not see (zero-sized dims): such calls go to the reference.
inline bool has_zero(const Shape& s) {
  for (Index d : s)
    if (d == 0) return true;
  return false;
}

}  // namespace detail
}  // namespace blendfuse::onednn
