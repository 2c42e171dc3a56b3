// blendfuse — deterministic, platform-independent random numbers (xoshiro256** seeded by
// splitmix64; Box–Muller normals). Same seed → same numbers on every compiler and libc, unlike
// std::normal_distribution, so procedural data and initialisations are reproducible everywhere.
#pragma once

#include <cmath>
#include <cstdint>

namespace blendfuse {

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0x5eedULL) { reseed(seed); }

  void reseed(std::uint64_t seed) {
    std::uint64_t x = seed;
    for (auto& s : s_) s = splitmix(x);
    has_spare_ = false;
  }

  std::uint64_t next_u64() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) { return n ? next_u64() % n : 0; }

  /// Standard normal.
  double normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    while (u1 <= 1e-300) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double th = 6.283185307179586476925286766559 * u2;
    spare_ = r * std::sin(th);
    has_spare_ = true;
    return r * std::cos(th);
  }
  double normal(double mean, double stddev) { return mean + stddev * normal(); }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  std::uint64_t s_[4]{};
  double spare_ = 0;
  bool has_spare_ = false;
};

/// Fills a tensor with N(0, stddev²) values.
template <class TensorT>
void fill_normal(TensorT& t, Rng& rng, double stddev = 1.0, double mean = 0.0) {
  t.for_each_offset([&](auto off) { t.data()[off] = static_cast<typename TensorT::value_type>(rng.normal(mean, stddev)); });
}

/// Fills a tensor with U(lo, hi) values.
template <class TensorT>
void fill_uniform(TensorT& t, Rng& rng, double lo, double hi) {
  t.for_each_offset([&](auto off) { t.data()[off] = static_cast<typename TensorT::value_type>(rng.uniform(lo, hi)); });
}

}  // namespace blendfuse
