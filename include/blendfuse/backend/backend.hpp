// blendfuse — backend tags and the runtime list of compiled-in backends.
//
// Dispatch is compile-time: every op family defines a class template `XxxOp<Backend>` whose
// primary template is the portable reference implementation (valid for any host-memory backend);
// an accelerated backend specialises `XxxOp<OneDnn>` / `XxxOp<Cuda>` the way Eigen specialises
// TensorExecutor per device. A backend that lacks a specialisation for some op therefore falls
// back to the reference on host memory. Free functions `ops::xxx(tensor, ...)` deduce the backend
// from the tensor type.
//
// Which ops a backend implements natively is a compile-time trait table: `native_op<B, OpKind::x>`
// is false unless the backend's header declares it true next to its specialisation (the
// reference backend `Cpu` implements every op). `backend_supports<B>(op)` and the runtime
// `backend_supports("onednn", op)` read it; the cross-backend op suite (bench/op_runners.hpp,
// tests/test_backend_ops.cpp) reports ops that are not native as "not supported" instead of
// comparing the reference with itself. `CompiledBackends` is the same registry as
// compiled_backends(), as a type list to iterate at compile time.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "blendfuse/core/tensor.hpp"

namespace blendfuse {

/// oneDNN CPU backend (host memory; specialisations live in backends/onednn/).
struct OneDnn : HostMemory {
  static constexpr const char* name = "onednn";
};

/// Hand-written CUDA kernels (device memory; backends/cuda/). Its memory functions are defined
/// in the blendfuse_cuda library (backends/cuda/memory.cu: a caching arena over cudaMalloc), so
/// a program that creates Tensor<T, Cuda> links blendfuse::cuda.
struct Cuda {
  static constexpr const char* name = "cuda";
  static constexpr bool host_memory = false;
  static void* allocate(std::size_t bytes);                                // zero-filled
  static void deallocate(void* p) noexcept;                                // back to the arena
  static void copy_to_host(void* dst, const void* src, std::size_t bytes);  // synchronous
  static void copy_from_host(void* dst, const void* src, std::size_t bytes);
  static void copy(void* dst, const void* src, std::size_t bytes);
};

/// Names of the backends compiled into this build, reference first (ggml-style registry used by
/// tests and benchmarks to loop over all of them).
inline std::vector<std::string> compiled_backends() {
  std::vector<std::string> out{Cpu::name};
#ifdef BLENDFUSE_WITH_ONEDNN
  out.emplace_back(OneDnn::name);
#endif
#ifdef BLENDFUSE_WITH_CUDA
  out.emplace_back(Cuda::name);
#endif
  return out;
}

// ---- ops and what each backend implements --------------------------------------------------

/// Every op (or fused op) the cross-backend suite knows, one X(name) per op: add a line here
/// when adding an op family (docs/backends.md).
#define BLENDFUSE_OP_KINDS(X) \
  X(conv2d)                   \
  X(conv2d_relu)              \
  X(conv1d)                   \
  X(instance_norm)            \
  X(instance_norm_relu)       \
  X(conv_in_relu)             \
  X(group_norm)               \
  X(layer_norm)               \
  X(linear)                   \
  X(matmul)                   \
  X(relu)                     \
  X(gelu)                     \
  X(softmax)                  \
  X(dropout)                  \
  X(interp)                   \
  X(sdpa)                     \
  X(sdpa_cached)              \
  X(attention_inference)      \
  X(mha)

enum class OpKind {
#define BLENDFUSE_OP_ENUM_(name) name,
  BLENDFUSE_OP_KINDS(BLENDFUSE_OP_ENUM_)
#undef BLENDFUSE_OP_ENUM_
};

/// All op kinds, in declaration order.
inline constexpr std::array all_op_kinds{
#define BLENDFUSE_OP_LIST_(name) OpKind::name,
    BLENDFUSE_OP_KINDS(BLENDFUSE_OP_LIST_)
#undef BLENDFUSE_OP_LIST_
};

/// The op's name ("conv2d"), as the op-case table (bench/op_cases.hpp) spells it.
constexpr const char* op_name(OpKind k) {
  switch (k) {
#define BLENDFUSE_OP_NAME_(name) \
  case OpKind::name:             \
    return #name;
    BLENDFUSE_OP_KINDS(BLENDFUSE_OP_NAME_)
#undef BLENDFUSE_OP_NAME_
  }
  return "?";
}

/// The op kind named `name`, or nothing.
inline std::optional<OpKind> op_kind_from_name(std::string_view name) {
  for (OpKind k : all_op_kinds)
    if (name == op_name(k)) return k;
  return std::nullopt;
}

/// True where backend `B` implements op `K` itself. The reference backend implements every op;
/// another backend declares each op it specialises, in its own header, next to the
/// specialisation:  template <> inline constexpr bool native_op<OneDnn, OpKind::conv2d> = true;
/// (An op that is not native still runs on that backend's tensors where the backend has host
/// memory: through the reference implementation.)
template <class B, OpKind K>
inline constexpr bool native_op = false;
template <OpKind K>
inline constexpr bool native_op<Cpu, K> = true;

/// Runtime form of native_op<B, k> (for loops over ops; constexpr).
template <class B>
constexpr bool backend_supports(OpKind k) {
  bool r = false;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((k == all_op_kinds[I] ? (r = native_op<B, all_op_kinds[I]>) : false), ...);
  }(std::make_index_sequence<all_op_kinds.size()>{});
  return r;
}

/// The backends compiled into this build, reference first, as a type list (the compile-time
/// twin of compiled_backends(); tests and benchmarks iterate it with for_each_backend).
/// A translation unit that instantiates ops on these types must include every backend's header
/// (e.g. onednn/onednn.hpp; the umbrella header does), see docs/architecture.md.
using CompiledBackends = std::tuple<Cpu
#ifdef BLENDFUSE_WITH_ONEDNN
                                    , OneDnn
#endif
#ifdef BLENDFUSE_WITH_CUDA
                                    , Cuda
#endif
                                    >;

/// Calls f.template operator()<B>() for every backend B of CompiledBackends, in order.
template <class F>
void for_each_backend(F&& f) {
  [&]<class... B>(std::tuple<B...>*) { (f.template operator()<B>(), ...); }(static_cast<CompiledBackends*>(nullptr));
}

/// Runtime query by backend name (as compiled_backends() lists it): does `backend` implement
/// `op` natively? False for a backend not compiled in. (A template only so that it is
/// instantiated where it is called, after the backends' headers have declared their ops.)
template <class = void>
bool backend_supports(std::string_view backend, OpKind op) {
  bool r = false;
  for_each_backend([&]<class B>() {
    if (backend == B::name) r = backend_supports<B>(op);
  });
  return r;
}

}  // namespace blendfuse
