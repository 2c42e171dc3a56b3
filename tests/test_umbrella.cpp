// The umbrella header compiles on its own and exposes the main types (ODR / include hygiene).
#include "blendfuse/blendfuse.hpp"

#include "test_util.hpp"

TEST_CASE("umbrella header: core, ops, io, model types are reachable") {
  using namespace blendfuse;
  Tensor<float> x({1, 3, 8, 8});
  Tensor<float> w({2, 3, 3, 3});
  auto y = ops::conv2d(x, w, nullptr, ops::Conv2dParams{});
  CHECK(y.shape() == Shape{1, 2, 6, 6});
  nn::DfmConfig cfg;
  CHECK_NOTHROW(cfg.apply_variant("paper"));
  CHECK(!compiled_backends().empty());
}
