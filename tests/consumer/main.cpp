// The install consumer: compiled against an installed blendfuse (tests/consumer/CMakeLists.txt).
// Runs a 2-D convolution with a hand-computed result on the reference backend, on oneDNN when the
// install has it, and touches the CUDA library when asked; exits non-zero on any mismatch.
// Includes only what it uses (not the umbrella header) to keep the test's compile short.
#include <blendfuse/backend/backend.hpp>
#include <blendfuse/core/tensor.hpp>
#include <blendfuse/ops/conv.hpp>

#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"  // installed under include/blendfuse/backends, as in the source tree
#endif
#ifdef BF_CONSUMER_CUDA
#include "cuda/activation.hpp"
#include "cuda/common.hpp"
#endif

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace bf = blendfuse;

#ifdef BLENDFUSE_WITH_ONEDNN
static_assert(BF_CONSUMER_EXPECT_ONEDNN == 1, "target defines BLENDFUSE_WITH_ONEDNN, config says OFF");
#else
static_assert(BF_CONSUMER_EXPECT_ONEDNN == 0, "config says blendfuse_WITH_ONEDNN, target lacks the define");
#endif

namespace {

int failures = 0;

// x = 1..9 as (1, 1, 3, 3), w = [[1, 2], [3, 4]], bias 0.5, stride 1, no padding:
// y[i][j] = x[i][j] + 2 x[i][j+1] + 3 x[i+1][j] + 4 x[i+1][j+1] + 0.5.
const std::vector<float> kExpected{37.5f, 47.5f, 67.5f, 77.5f};

template <class B>
void check_conv(const char* name) {
  const auto x = bf::Tensor<float, B>::from({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  const auto w = bf::Tensor<float, B>::from({1, 1, 2, 2}, {1, 2, 3, 4});
  const auto b = bf::Tensor<float, B>::from({1}, {0.5f});
  const auto y = bf::ops::conv2d(x, w, &b);
  bool ok = y.shape() == bf::Shape{1, 1, 2, 2};
  for (std::size_t i = 0; ok && i < kExpected.size(); ++i)
    ok = std::fabs(y.data()[i] - kExpected[i]) < 1e-5f;
  std::printf("conv2d on %-6s %s: [%g %g %g %g]\n", name, ok ? "ok" : "MISMATCH", y.numel() > 0 ? y.data()[0] : 0.f,
              y.numel() > 1 ? y.data()[1] : 0.f, y.numel() > 2 ? y.data()[2] : 0.f, y.numel() > 3 ? y.data()[3] : 0.f);
  if (!ok) ++failures;
}

}  // namespace

int main() {
  std::string backends;
  for (const auto& n : bf::compiled_backends()) backends += " " + n;
  std::printf("blendfuse consumer: compiled backends:%s\n", backends.c_str());

  check_conv<bf::Cpu>("cpu");
#ifdef BLENDFUSE_WITH_ONEDNN
  check_conv<bf::OneDnn>("onednn");
#endif

#ifdef BF_CONSUMER_CUDA
  // Links the static library's kernels in any case; runs them only where a GPU is present.
  const int devices = bf::cuda::device_count();
  if (devices == 0) {
    std::printf("cuda: linked, no device (kernel not run)\n");
  } else {
    const std::vector<float> in{-1.f, 0.f, 2.f};
    bf::cuda::DeviceBuffer<float> dx(in.size()), dy(in.size());
    dx.upload(in.data(), in.size());
    bf::cuda::relu_forward<float>(dx.get(), dy.get(), static_cast<std::int64_t>(in.size()));
    const std::vector<float> out = dy.download();
    const bool ok = out == std::vector<float>{0.f, 0.f, 2.f};
    std::printf("cuda relu on %d device(s) %s\n", devices, ok ? "ok" : "MISMATCH");
    if (!ok) ++failures;
  }
#endif

  if (failures) {
    std::printf("blendfuse consumer: %d check(s) FAILED\n", failures);
    return 1;
  }
  std::printf("blendfuse consumer: all checks passed\n");
  return 0;
}
