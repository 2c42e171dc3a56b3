// Shared test helpers: PyTorch reference vectors, closeness checks, and the generic gradient check.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "blendfuse/core/rng.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/safetensors.hpp"

#ifndef BF_TEST_SOURCE_DIR
#error "BF_TEST_SOURCE_DIR must be defined by the build"
#endif

namespace bft {

using blendfuse::Index;
using blendfuse::Shape;
using blendfuse::Tensor;

inline std::string source_path(const std::string& rel) { return std::string(BF_TEST_SOURCE_DIR) + "/" + rel; }

/// The committed PyTorch vectors of one op family (tests/vectors/<family>.safetensors).
inline blendfuse::io::SafeTensorsFile vectors(const std::string& family) {
  return blendfuse::io::SafeTensorsFile::load(source_path("tests/vectors/" + family + ".safetensors"));
}

/// Largest |a - b| / (atol + rtol·|b|) over all elements; <= 1 means "close".
template <class T, class U>
double closeness(const Tensor<T>& a, const Tensor<U>& b, double rtol, double atol) {
  REQUIRE_MESSAGE(a.shape() == b.shape(), "shape ", a.shape_string(), " vs ", b.shape_string());
  const auto ca = a.contiguous();
  const auto cb = b.contiguous();
  double worst = 0;
  for (Index i = 0; i < ca.numel(); ++i) {
    const double x = static_cast<double>(ca[i]), y = static_cast<double>(cb[i]);
    if (!std::isfinite(x) || !std::isfinite(y)) return INFINITY;
    worst = std::max(worst, std::abs(x - y) / (atol + rtol * std::abs(y)));
  }
  return worst;
}

/// NMSE of `got` against the reference `ref`: Σ(got − ref)² / Σref² (the absolute squared error
/// when ref is all zeros), over contiguous copies of the same shape.
template <class T, class U>
double nmse(const Tensor<T>& ref, const Tensor<U>& got) {
  const auto r = ref.contiguous();
  const auto g = got.contiguous();
  double num = 0, den = 0;
  for (Index i = 0; i < r.numel(); ++i) {
    const double d = static_cast<double>(g[i]) - static_cast<double>(r[i]);
    num += d * d;
    den += static_cast<double>(r[i]) * static_cast<double>(r[i]);
  }
  return den > 0 ? num / den : num;
}

/// CHECKs that `a` matches `b` element-wise within atol + rtol·|b|.
#define BFT_CHECK_CLOSE(a, b, rtol, atol)                                                  \
  do {                                                                                     \
    const double bft_c_ = ::bft::closeness((a), (b), (rtol), (atol));                      \
    CHECK_MESSAGE(bft_c_ <= 1.0, #a " vs " #b ": worst error is ", bft_c_, "x tolerance"); \
  } while (0)

inline Tensor<double> random_tensor(Shape s, blendfuse::Rng& rng, double stddev = 1.0) {
  Tensor<double> t(std::move(s));
  blendfuse::fill_normal(t, rng, stddev);
  return t;
}

/// An (n×n)-vertex grid over [-1,1]²·50 mm with a 10 mm bump: a disk-like open face stand-in.
struct GridMesh {
  Tensor<float> vertices;             // (n·n, 3)
  Tensor<std::int32_t> faces;         // (2(n−1)², 3)
};
inline GridMesh grid_mesh(int n) {
  GridMesh g{Tensor<float>({n * n, 3}), Tensor<std::int32_t>({2 * (n - 1) * (n - 1), 3})};
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      const float x = -1.0f + 2.0f * j / (n - 1), y = -1.0f + 2.0f * i / (n - 1);
      g.vertices(i * n + j, 0) = x * 50;
      g.vertices(i * n + j, 1) = y * 50;
      g.vertices(i * n + j, 2) = 10 * std::exp(-(x * x + y * y));
    }
  Index f = 0;
  for (int i = 0; i + 1 < n; ++i)
    for (int j = 0; j + 1 < n; ++j) {
      const int a = i * n + j, b = a + 1, c = a + n, d = c + 1;
      g.faces(f, 0) = a; g.faces(f, 1) = b; g.faces(f, 2) = d; ++f;
      g.faces(f, 0) = a; g.faces(f, 1) = d; g.faces(f, 2) = c; ++f;
    }
  return g;
}

/// Generic gradient check (dlib `test_layer` style) in double precision.
///
/// `forward(inputs)` returns the output; `backward(inputs, dout)` returns one gradient per input
/// (an empty tensor for inputs that take no gradient). With a fixed random projection R the
/// scalar L = Σ out·R is differentiated by central differences and compared to the analytic
/// gradient. At most `max_checks` entries per input are probed (chosen at random, fixed seed).
struct GradCheckOptions {
  double eps = 1e-6;
  double rtol = 1e-5;
  double atol = 1e-7;
  Index max_checks = 60;
  std::uint64_t seed = 99;
};

inline void gradcheck(std::vector<Tensor<double>> inputs,
                      const std::function<Tensor<double>(const std::vector<Tensor<double>>&)>& forward,
                      const std::function<std::vector<Tensor<double>>(const std::vector<Tensor<double>>&,
                                                                      const Tensor<double>&)>& backward,
                      const GradCheckOptions& opt = {}) {
  blendfuse::Rng rng(opt.seed);
  const Tensor<double> out0 = forward(inputs);
  Tensor<double> R = random_tensor(out0.shape(), rng);
  auto loss = [&](const std::vector<Tensor<double>>& in) {
    const Tensor<double> o = forward(in).contiguous();
    double s = 0;
    for (Index i = 0; i < o.numel(); ++i) s += o[i] * R[i];
    return s;
  };
  const std::vector<Tensor<double>> grads = backward(inputs, R);
  REQUIRE(grads.size() == inputs.size());
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    if (grads[k].empty()) continue;
    REQUIRE_MESSAGE(grads[k].shape() == inputs[k].shape(), "gradient ", k, " has shape ",
                    grads[k].shape_string(), ", input has ", inputs[k].shape_string());
    const Tensor<double> g = grads[k].contiguous();
    Tensor<double>& x = inputs[k];
    const Index n = x.numel();
    std::vector<Index> probe;
    if (n <= opt.max_checks) {
      for (Index i = 0; i < n; ++i) probe.push_back(i);
    } else {
      for (Index i = 0; i < opt.max_checks; ++i) probe.push_back(static_cast<Index>(rng.below(static_cast<std::uint64_t>(n))));
    }
    double worst = 0;
    Index worst_i = -1;
    double worst_a = 0, worst_n = 0;
    for (Index i : probe) {
      const double orig = x[i];
      x[i] = orig + opt.eps;
      const double lp = loss(inputs);
      x[i] = orig - opt.eps;
      const double lm = loss(inputs);
      x[i] = orig;
      const double num = (lp - lm) / (2 * opt.eps);
      const double err = std::abs(num - g[i]) / (opt.atol + opt.rtol * std::max(std::abs(num), std::abs(g[i])));
      if (err > worst) {
        worst = err;
        worst_i = i;
        worst_a = g[i];
        worst_n = num;
      }
    }
    CHECK_MESSAGE(worst <= 1.0, "input ", k, " element ", worst_i, ": analytic ", worst_a,
                  " vs numeric ", worst_n, " (", worst, "x tolerance)");
  }
}

}  // namespace bft

// Helpers of the in-place / output-argument op tests (activation, attention, linear, norm).
namespace bft_into {
// Exact (bit-for-bit) equality of two tensors of the same shape.
template <class T, class B1, class B2>
bool same(const blendfuse::Tensor<T, B1>& a, const blendfuse::Tensor<T, B2>& b) {
  if (a.shape() != b.shape()) return false;
  const auto ac = a.contiguous();
  const auto bc = b.contiguous();
  for (blendfuse::Index i = 0; i < ac.numel(); ++i)
    if (!(ac.data()[i] == bc.data()[i])) return false;
  return true;
}
inline blendfuse::Tensor<float> to_float(const blendfuse::Tensor<double>& d) {
  blendfuse::Tensor<float> f(d.shape());
  const auto dc = d.contiguous();
  for (blendfuse::Index i = 0; i < f.numel(); ++i) f[i] = static_cast<float>(dc[i]);
  return f;
}
inline blendfuse::Tensor<double> to_double(const blendfuse::Tensor<float>& f) {
  blendfuse::Tensor<double> d(f.shape());
  const auto fc = f.contiguous();
  for (blendfuse::Index i = 0; i < d.numel(); ++i) d[i] = static_cast<double>(fc[i]);
  return d;
}
}  // namespace bft_into
