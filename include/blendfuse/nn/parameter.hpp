// blendfuse — named parameters shared by modules, optimisers and checkpoints.
//
// A Parameter holds a value and its accumulated gradient. Names equal the PyTorch reference
// module's state_dict keys, so a safetensors export of the reference loads without renaming.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "blendfuse/core/rng.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/safetensors.hpp"

namespace blendfuse::nn {

namespace detail {
/// A host tensor under another host backend's tag: same memory and layout, sharing ownership
/// (Tensor::rebind), so a view of a temporary stays valid. Identity when the backends agree.
template <class To, class T, class From>
Tensor<T, To> host_view(const Tensor<T, From>& t) {
  static_assert(To::host_memory && From::host_memory, "host_view: host-memory backends only");
  return t.template to<To>();  // between host backends: the same storage, no copy
}
}  // namespace detail

template <class T>
struct Parameter {
  std::string name;
  Tensor<T> value;
  Tensor<T> grad;
  /// Bumped by in-place updates inside the library (optimiser steps, initialisers). Caches derived
  /// from `value` (the oneDNN encoder's blocked weights) compare it, value's data pointer and a
  /// sample of its elements; code that writes `value` in place should call touch().
  std::uint64_t version = 0;

  Parameter() = default;
  Parameter(std::string n, Shape shape) : name(std::move(n)), value(shape), grad(shape) {}

  void touch() noexcept { ++version; }

  /// The value on backend B. Host backends: the same memory under B's tag (zero-copy). A device
  /// backend: a mirror in B's memory, uploaded on first use and again whenever `version` or the
  /// value's storage changed (touch() after writing `value` in place). The host value stays the
  /// master copy that optimisers and checkpoints read and write.
  template <class B>
  Tensor<T, B> on() const {
    if constexpr (B::host_memory) {
      return detail::host_view<B>(value);
    } else {
      auto* m = static_cast<Mirror<B>*>(mirror_.get());
      if (!m || mirror_tag_ != B::name || m->version != version || m->source != value.data() ||
          m->value.shape() != value.shape()) {
        auto fresh = std::make_shared<Mirror<B>>(Mirror<B>{value.template to<B>(), version, value.data()});
        m = fresh.get();
        mirror_ = std::move(fresh);
        mirror_tag_ = B::name;
        ++mirror_uploads_;
      }
      return m->value;
    }
  }
  /// Number of uploads a device mirror has needed so far (tests and diagnostics).
  std::uint64_t mirror_uploads() const noexcept { return mirror_uploads_; }

  void zero_grad() { grad.zero(); }
  /// grad += g for a gradient computed on any backend (device gradients are copied to the host).
  template <class B>
  void accumulate_from(const Tensor<T, B>& g) { accumulate(g.to_host()); }
  /// grad += g (shapes must agree).
  void accumulate(const Tensor<T>& g) {
    BF_CHECK(g.shape() == value.shape(), ShapeError, "parameter '", name, "': gradient shape ",
             g.shape_string(), " does not match ", value.shape_string());
    const auto c = g.contiguous();
    for (Index i = 0; i < grad.numel(); ++i) grad[i] += c[i];
  }

 private:
  template <class B>
  struct Mirror {
    Tensor<T, B> value;
    std::uint64_t version;
    const T* source;
  };
  mutable std::shared_ptr<void> mirror_;  // Mirror<B> of the last device backend asked for
  mutable const char* mirror_tag_ = nullptr;
  mutable std::uint64_t mirror_uploads_ = 0;
};

template <class T>
using ParamList = std::vector<Parameter<T>*>;

/// What a cache derived from a parameter's value remembers of it: the data pointer, the version
/// (Parameter::touch) and 65 sampled elements. A changed stamp means the value may have changed.
template <class T>
struct ParameterStamp {
  const T* data = nullptr;
  std::uint64_t version = 0;
  std::vector<T> probe;

  static ParameterStamp of(const Parameter<T>& p) {
    ParameterStamp s{p.value.data(), p.version, {}};
    const Index n = p.value.numel();
    if (n > 0 && p.value.is_contiguous()) {
      s.probe.reserve(65);
      for (Index i = 0; i < 64; ++i) s.probe.push_back(s.data[(i * n) / 64]);
      s.probe.push_back(s.data[n - 1]);
    }
    return s;
  }
  bool operator==(const ParameterStamp& o) const {
    return data == o.data && version == o.version && probe == o.probe;
  }
};

/// Kaiming-uniform initialisation as torch.nn.Conv2d/Linear use by default (a = √5), i.e.
/// U(−1/√fan_in, 1/√fan_in).
template <class T>
void init_uniform_fan_in(Parameter<T>& p, Index fan_in, Rng& rng) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  fill_uniform(p.value, rng, -bound, bound);
  p.touch();
}

template <class T>
void zero_grads(const ParamList<T>& ps) {
  for (auto* p : ps) p->zero_grad();
}

template <class T>
Index count_parameters(const ParamList<T>& ps) {
  Index n = 0;
  for (auto* p : ps) n += p->value.numel();
  return n;
}

/// Adds every parameter value to a safetensors writer under `prefix + name`.
template <class T>
void add_parameters(io::SafeTensorsWriter& w, const ParamList<T>& ps, const std::string& prefix = "") {
  for (auto* p : ps) w.add(prefix + p->name, p->value);
}

/// Where one parameter is in a file: its tensor name, and a note appended to every error about it
/// (e.g. " (wav2vec2 parameter 'encoder.layers.0.attention.q_proj.weight')"; may be empty).
struct ParameterKey {
  std::string key;
  std::string note;
};

/// The one parameter loader, transactional: every parameter's tensor (key_of(param) → a
/// ParameterKey, or a plain name) is read and checked first — present, the parameter's shape, a
/// floating-point dtype, every element finite — and only when all are good are the values
/// written (and touch()ed, so caches derived from them refresh). On any error the parameters are
/// unchanged and the IoError names the file and the tensor. Tensors of the file that no
/// parameter asks for are ignored.
template <class T, class KeyFn>
  requires std::is_invocable_v<KeyFn&, const Parameter<T>&>
void load_parameters(const io::SafeTensorsFile& f, const ParamList<T>& ps, KeyFn&& key_of) {
  std::vector<Tensor<T>> staged;
  staged.reserve(ps.size());
  for (const Parameter<T>* p : ps) {
    const ParameterKey k{key_of(*p)};
    if (!f.contains(k.key)) throw IoError(f.path(), "missing tensor '" + k.key + "'" + k.note);
    const auto& info = f.info(k.key);
    if (info.shape != p->value.shape())
      throw IoError(f.path(), "tensor '" + k.key + "' has shape " + shape_str(info.shape) + ", expected " +
                                  p->value.shape_string() + k.note);
    Tensor<T> t = f.get_weights<T>(k.key, p->value.shape());
    for (Index i = 0; i < t.numel(); ++i)
      if (!std::isfinite(static_cast<double>(t[i])))
        throw IoError(f.path(), "tensor '" + k.key + "' contains NaN or Inf at element " + std::to_string(i) + k.note);
    staged.push_back(std::move(t));
  }
  for (std::size_t i = 0; i < ps.size(); ++i) {
    ps[i]->value = std::move(staged[i]);
    ps[i]->touch();
  }
}

/// load_parameters with the tensor names `prefix` + parameter name.
template <class T>
void load_parameters(const io::SafeTensorsFile& f, const ParamList<T>& ps, const std::string& prefix = "") {
  load_parameters(f, ps, [&prefix](const Parameter<T>& p) { return ParameterKey{prefix + p.name, {}}; });
}

}  // namespace blendfuse::nn
