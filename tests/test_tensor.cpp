#include "test_util.hpp"

#include "blendfuse/backend/backend.hpp"

using namespace blendfuse;

TEST_CASE("tensor: owning storage is zeroed, aligned and row-major") {
  Tensor<float> t({2, 3, 4});
  CHECK(t.numel() == 24);
  CHECK(t.ndim() == 3);
  CHECK(t.strides() == Shape{12, 4, 1});
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
  for (float v : t) CHECK(v == 0.0f);
  t(1, 2, 3) = 5.0f;
  CHECK(t[23] == 5.0f);
  CHECK(t.dim(-1) == 4);
  CHECK_THROWS_AS(t.dim(3), ShapeError);
  CHECK_THROWS_AS(Tensor<float>({2, -1}), ShapeError);
}

TEST_CASE("tensor: views share storage; reshape, slice, select, transpose") {
  auto t = Tensor<double>::from({2, 3}, {0, 1, 2, 3, 4, 5});
  auto r = t.reshape({3, -1});
  CHECK(r.shape() == Shape{3, 2});
  r(2, 1) = 50;
  CHECK(t(1, 2) == 50);
  CHECK_THROWS_AS(t.reshape({4, 2}), ShapeError);
  CHECK_THROWS_AS(t.reshape({-1, -1}), ShapeError);

  auto s = t.slice(1, 1, 3);  // columns 1..2
  CHECK(s.shape() == Shape{2, 2});
  CHECK_FALSE(s.is_contiguous());
  CHECK(s(1, 0) == 4);
  CHECK_THROWS_AS(s.reshape({4}), ShapeError);
  auto c = s.clone();
  CHECK(c.is_contiguous());
  CHECK(std::vector<double>(c.begin(), c.end()) == std::vector<double>{1, 2, 4, 50});

  auto row = t.select(1);
  CHECK(row.shape() == Shape{3});
  CHECK(row(0) == 3);

  auto tt = t.transpose(0, 1);
  CHECK(tt.shape() == Shape{3, 2});
  CHECK(tt(2, 0) == 2);
  auto ttc = tt.contiguous();
  CHECK(std::vector<double>(ttc.begin(), ttc.end()) == std::vector<double>{0, 3, 1, 4, 2, 50});

  s.fill(-1);
  CHECK(t(0, 0) == 0);
  CHECK(t(0, 1) == -1);
  CHECK(t(1, 2) == -1);
}

TEST_CASE("tensor: non-owning views wrap caller memory") {
  std::vector<float> buf(6, 1.0f);
  auto v = Tensor<float>::view(buf.data(), {2, 3});
  CHECK_FALSE(v.owns_storage());
  v(1, 1) = 7;
  CHECK(buf[4] == 7);
  CHECK_THROWS_AS(Tensor<float>::from({2, 2}, {1, 2, 3}), ShapeError);
}

TEST_CASE("tensor: assign, cast, check_shape") {
  Tensor<float> a({2, 2});
  auto b = Tensor<float>::from({2, 2}, {1, 2, 3, 4});
  a.transpose(0, 1).assign(b);
  CHECK(a(0, 1) == 3);
  auto d = a.cast<double>();
  CHECK(d(1, 0) == 2.0);
  CHECK_NOTHROW(check_shape(a, {2, -1}, "a"));
  CHECK_THROWS_WITH_AS(check_shape(a, {3, 2}, "weights"), doctest::Contains("weights: expected shape (3, 2)"), ShapeError);
}

TEST_CASE("rng: deterministic and roughly standard normal") {
  Rng a(42), b(42);
  for (int i = 0; i < 10; ++i) CHECK(a.next_u64() == b.next_u64());
  Rng r(7);
  double s = 0, s2 = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const double x = r.normal();
    s += x;
    s2 += x * x;
  }
  CHECK(std::abs(s / n) < 0.02);
  CHECK(std::abs(s2 / n - 1.0) < 0.02);
}

TEST_CASE("backend registry lists the reference first") {
  const auto b = compiled_backends();
  REQUIRE(!b.empty());
  CHECK(b.front() == "cpu");
}
