#include "test_util.hpp"

#include "blendfuse/ops/interp.hpp"

using namespace blendfuse;
using bft::random_tensor;

namespace {

using Grads = std::vector<Tensor<double>>;

void gradcheck_interp(const Shape& xs, Index t_out, bool ntc, std::uint64_t seed) {
  Rng rng(seed);
  const Index t_in = xs[ntc ? 1 : 2];
  bft::gradcheck(
      {random_tensor(xs, rng)},
      [&](const std::vector<Tensor<double>>& v) {
        return ntc ? ops::interp_linear_ntc(v[0], t_out) : ops::interp_linear(v[0], t_out);
      },
      [&](const std::vector<Tensor<double>>&, const Tensor<double>& dy) {
        return Grads{ntc ? ops::interp_linear_ntc_backward(dy, t_in).dx
                         : ops::interp_linear_backward(dy, t_in).dx};
      });
}

template <class T>
void compare_case(const io::SafeTensorsFile& f, const std::string& name, double rtol, double atol) {
  CAPTURE(name);
  const Tensor<T> x = f.get<T>(name + ".x"), r = f.get<T>(name + ".r");
  const Tensor<T> y = ops::interp_linear(x, f.info(name + ".y").shape.back());
  BFT_CHECK_CLOSE(y, f.get<T>(name + ".y"), rtol, atol);
  BFT_CHECK_CLOSE(ops::interp_linear_backward(r, x.dim(2)).dx, f.get<T>(name + ".dx"), rtol, atol);
  // The (N, T, C) variant agrees with transposing around the (N, C, T) one.
  const Tensor<T> yt = ops::interp_linear_ntc(x.transpose(1, 2), y.dim(2));
  BFT_CHECK_CLOSE(yt, y.transpose(1, 2).clone(), 0.0, 0.0);
  BFT_CHECK_CLOSE(ops::interp_linear_ntc_backward(r.transpose(1, 2), x.dim(2)).dx,
                  ops::interp_linear_backward(r, x.dim(2)).dx.transpose(1, 2).clone(), 1e-6, 1e-12);
}

const char* kCases[] = {"down50to30", "up", "odd", "tin1", "tout1", "same", "long"};

}  // namespace

TEST_CASE("interp_linear: gradient check (double)") {
  gradcheck_interp({2, 3, 10}, 6, false, 1);
  gradcheck_interp({1, 2, 5}, 12, false, 2);
  gradcheck_interp({2, 2, 1}, 4, false, 3);
  gradcheck_interp({1, 3, 7}, 1, false, 4);
  gradcheck_interp({1, 2, 5}, 5, false, 5);
  gradcheck_interp({2, 10, 3}, 6, true, 6);
  gradcheck_interp({1, 4, 2}, 9, true, 7);
}

TEST_CASE("interp_linear: matches PyTorch (double)") {
  const auto f = bft::vectors("interp");
  for (const char* c : kCases) compare_case<double>(f, c, 1e-12, 1e-13);
}

TEST_CASE("interp_linear: matches PyTorch (float)") {
  const auto f = bft::vectors("interp");
  for (const char* c : kCases) compare_case<float>(f, c, 1e-5, 1e-6);
  // Vectors computed by PyTorch in float32 itself: its kernel rounds source positions to float
  // (position error up to ~T_in * 1e-7), blendfuse computes them in double.
  for (const char* c : {"down50to30_f32", "up_f32", "odd_f32", "long_f32"})
    compare_case<float>(f, c, 1e-5, 2e-5);
}

TEST_CASE("interp_linear: T_in == 1, T_out == 1 and T_in == T_out are exact") {
  Rng rng(3);
  const auto x1 = random_tensor({2, 3, 1}, rng);
  const auto y1 = ops::interp_linear(x1, 4);
  for (Index i = 0; i < 4; ++i) CHECK(y1(1, 2, i) == x1(1, 2, 0));
  const auto x = random_tensor({2, 3, 7}, rng);
  const auto y = ops::interp_linear(x, 1);
  REQUIRE(y.shape() == Shape{2, 3, 1});
  CHECK(y(1, 1, 0) == x(1, 1, 0));
  BFT_CHECK_CLOSE(ops::interp_linear(x, 7), x, 0.0, 0.0);
  // Endpoints are kept (align_corners=True) and the midpoint is the average.
  const auto e = ops::interp_linear(x, 13);
  CHECK(e(0, 0, 0) == x(0, 0, 0));
  CHECK(e(0, 0, 12) == doctest::Approx(x(0, 0, 6)).epsilon(1e-14));
  CHECK(e(1, 2, 1) == doctest::Approx(0.5 * (x(1, 2, 0) + x(1, 2, 1))).epsilon(1e-14));
  // Backward of T_out == 1 puts everything on the first sample.
  const auto d = ops::interp_linear_backward(Tensor<double>::full({1, 1, 1}, 2.0), 3).dx;
  CHECK(d(0, 0, 0) == 2.0);
  CHECK(d(0, 0, 1) == 0.0);
  CHECK(d(0, 0, 2) == 0.0);
}

TEST_CASE("interp_linear: shape and argument errors") {
  CHECK_THROWS_WITH_AS(ops::interp_linear(Tensor<double>({3, 4}), 2),
                       doctest::Contains("interp_linear: expected a 3-d input (N, C, T), got (3, 4)"),
                       ShapeError);
  CHECK_THROWS_AS(ops::interp_linear(Tensor<double>({1, 2, 3, 4}), 2), ShapeError);
  CHECK_THROWS_AS(ops::interp_linear(Tensor<double>({1, 2, 0}), 2), ShapeError);
  CHECK_THROWS_AS(ops::interp_linear(Tensor<double>({1, 2, 3}), 0), ArgumentError);
  CHECK_THROWS_AS(ops::interp_linear_ntc(Tensor<double>({1, 0, 3}), 2), ShapeError);
  CHECK_THROWS_AS(ops::interp_linear_backward(Tensor<double>({2, 3}), 4), ShapeError);
  CHECK_THROWS_AS(ops::interp_linear_backward(Tensor<double>({1, 2, 3}), 0), ArgumentError);
  CHECK_THROWS_AS(ops::interp_linear_backward(Tensor<double>({1, 2, 0}), 3), ShapeError);
}
