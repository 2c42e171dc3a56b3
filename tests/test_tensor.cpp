#include "test_util.hpp"

#include <cstring>
#include <map>

#include "blendfuse/backend/backend.hpp"
#include "blendfuse/nn/parameter.hpp"

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

// ---- backends own their memory -----------------------------------------------------------------
// A stand-in device backend: its "device memory" is host memory the test can see, but every byte
// is allocated, freed and copied through the tag, and the counters show which path ran.
namespace {
struct FakeDevice {
  static constexpr const char* name = "fake-device";
  static constexpr bool host_memory = false;
  static inline std::map<void*, std::size_t> live;
  static inline int uploads = 0, downloads = 0, device_copies = 0, frees = 0;
  static void* allocate(std::size_t bytes) {
    void* p = HostMemory::allocate(bytes);  // zero-filled
    live[p] = bytes;
    return p;
  }
  static void deallocate(void* p) noexcept {
    live.erase(p);
    ++frees;
    HostMemory::deallocate(p);
  }
  static void copy_to_host(void* d, const void* s, std::size_t n) { ++downloads; std::memcpy(d, s, n); }
  static void copy_from_host(void* d, const void* s, std::size_t n) { ++uploads; std::memcpy(d, s, n); }
  static void copy(void* d, const void* s, std::size_t n) { ++device_copies; std::memcpy(d, s, n); }
};
template <class T>
concept HostAccessible = requires(T t) { t[0]; t.fill(1.0f); t.begin(); };
}  // namespace

TEST_CASE("tensor: storage is allocated and freed through the backend tag") {
  FakeDevice::live.clear();
  FakeDevice::frees = 0;
  {
    Tensor<float, FakeDevice> d({3, 5});
    REQUIRE(FakeDevice::live.size() == 1);
    CHECK(FakeDevice::live.begin()->first == d.data());
    CHECK(FakeDevice::live.begin()->second == 15 * sizeof(float));
    Tensor<float, FakeDevice> v = d.reshape({5, 3}).slice(0, 1, 3);  // views share the storage
    CHECK(FakeDevice::live.size() == 1);
  }
  CHECK(FakeDevice::live.empty());
  CHECK(FakeDevice::frees == 1);
  // host backends keep host-aligned storage and reach each other without a copy
  static_assert(HostAccessible<Tensor<float, Cpu>> && HostAccessible<Tensor<float, OneDnn>>);
  static_assert(!HostAccessible<Tensor<float, FakeDevice>>, "device tensors must not be dereferenced on the host");
  static_assert(!HostAccessible<Tensor<float, Cuda>>);
  Tensor<float> h = Tensor<float>::from({2, 2}, {1, 2, 3, 4});
  Tensor<float, OneDnn> o = h.to<OneDnn>();
  CHECK(o.data() == h.data());
  CHECK(o.to_host().data() == h.data());
}

TEST_CASE("tensor: explicit host <-> backend copies round-trip, follow strides, never alias") {
  FakeDevice::uploads = FakeDevice::downloads = FakeDevice::device_copies = 0;
  Tensor<double> h({2, 3});
  for (Index i = 0; i < 6; ++i) h[i] = 0.5 * static_cast<double>(i) - 1;
  const Tensor<double> ht = h.transpose(0, 1);  // strided: copied in logical order
  auto d = Tensor<double, FakeDevice>::from_host(ht);
  CHECK(FakeDevice::uploads == 1);
  CHECK(d.shape() == Shape{3, 2});
  CHECK(d.data() != ht.data());
  auto c = d.clone();
  CHECK(FakeDevice::device_copies == 1);
  const Tensor<double> back = c.to_host();
  CHECK(FakeDevice::downloads == 1);
  for (Index i = 0; i < 3; ++i)
    for (Index j = 0; j < 2; ++j) CHECK(back(i, j) == h(j, i));
}

TEST_CASE("parameter: host backends view the value; a device backend gets a mirror re-uploaded on change") {
  nn::Parameter<float> p("w", {4});
  for (Index i = 0; i < 4; ++i) p.value[i] = static_cast<float>(i);
  CHECK(p.on<OneDnn>().data() == p.value.data());
  CHECK(p.on<Cpu>().data() == p.value.data());
  FakeDevice::uploads = 0;
  auto m1 = p.on<FakeDevice>();
  auto m2 = p.on<FakeDevice>();
  CHECK(m1.data() == m2.data());  // cached: one upload
  CHECK(FakeDevice::uploads == 1);
  CHECK(p.mirror_uploads() == 1);
  p.value[2] = 42;
  p.touch();  // an in-place write announced by touch()
  const auto m3 = p.on<FakeDevice>();
  CHECK(FakeDevice::uploads == 2);
  CHECK(m3.to_host()[2] == 42.0f);
  p.value = Tensor<float>::full({4}, 7.0f);  // new storage without touch(): still re-uploaded
  CHECK(p.on<FakeDevice>().to_host()[0] == 7.0f);
  CHECK(p.mirror_uploads() == 3);
  // gradients computed on the device accumulate into the host gradient
  p.accumulate_from(Tensor<float, FakeDevice>::from_host(Tensor<float>::full({4}, 0.25f)));
  CHECK(p.grad[3] == 0.25f);
}
