// CUDA activation kernels against the portable reference, forward and backward.
// Without a CUDA device the whole executable reports "skipped" (exit code 77) to ctest.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>

#include "cuda/activation.hpp"
#include "cuda/common.hpp"
#include "test_util.hpp"

using namespace blendfuse;

namespace {
template <class T>
void check_kernel_pair(const char* name, void (*fwd)(const T*, T*, std::int64_t, cudaStream_t),
                       void (*bwd)(const T*, const T*, T*, std::int64_t, cudaStream_t),
                       double (*ref_f)(double), double (*ref_d)(double), double tol) {
  CAPTURE(name);
  Rng rng(5);
  const std::int64_t n = 100003;  // not a multiple of the block size
  std::vector<T> x(n), dy(n);
  for (auto& v : x) v = static_cast<T>(rng.normal() * 3);
  for (auto& v : dy) v = static_cast<T>(rng.normal());
  cuda::DeviceBuffer<T> dx_in(n), ddy(n), dout(n);
  dx_in.upload(x.data(), n);
  ddy.upload(dy.data(), n);
  fwd(dx_in.get(), dout.get(), n, nullptr);
  BF_CUDA_CHECK(cudaDeviceSynchronize());
  auto y = dout.download();
  bwd(dx_in.get(), ddy.get(), dout.get(), n, nullptr);
  BF_CUDA_CHECK(cudaDeviceSynchronize());
  auto g = dout.download();
  double worst_f = 0, worst_b = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    worst_f = std::max(worst_f, std::abs(y[i] - ref_f(x[i])));
    worst_b = std::max(worst_b, std::abs(g[i] - dy[i] * ref_d(x[i])));
  }
  CHECK(worst_f <= tol);
  CHECK(worst_b <= tol);
}

double relu_ref(double x) { return x > 0 ? x : 0; }
double relu_grad(double x) { return x > 0 ? 1 : 0; }
double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double gelu_grad(double x) {
  return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
}
}  // namespace

TEST_CASE("cuda: relu and gelu kernels match the reference (float and double)") {
  check_kernel_pair<float>("relu f32", cuda::relu_forward<float>, cuda::relu_backward<float>, relu_ref, relu_grad, 1e-6);
  check_kernel_pair<double>("relu f64", cuda::relu_forward<double>, cuda::relu_backward<double>, relu_ref, relu_grad, 1e-14);
  check_kernel_pair<float>("gelu f32", cuda::gelu_forward<float>, cuda::gelu_backward<float>, gelu_ref, gelu_grad, 1e-5);
  check_kernel_pair<double>("gelu f64", cuda::gelu_forward<double>, cuda::gelu_backward<double>, gelu_ref, gelu_grad, 1e-12);
}

int main(int argc, char** argv) {
  if (!cuda::available()) {
    std::printf("no CUDA device: CUDA kernel tests skipped\n");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
