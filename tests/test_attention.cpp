#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/ops/attention.hpp"

#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"  // before the first OneDnn use (ODR)
#endif

using namespace blendfuse;
using bft::random_tensor;

namespace {

using Grads = std::vector<Tensor<double>>;
constexpr double kInf = std::numeric_limits<double>::infinity();

// Additive causal mask (L, L): -inf above the diagonal.
Tensor<double> causal_mask(Index L) {
  Tensor<double> m({L, L});
  for (Index i = 0; i < L; ++i)
    for (Index j = i + 1; j < L; ++j) m(i, j) = -kInf;
  return m;
}

// FaceFormer-style biased causal mask (H, L, L): -slope_h * distance, -inf above the diagonal.
Tensor<double> biased_mask(Index H, Index L) {
  Tensor<double> m({H, L, L});
  for (Index h = 0; h < H; ++h)
    for (Index i = 0; i < L; ++i)
      for (Index j = 0; j < L; ++j)
        m(h, i, j) = j > i ? -kInf : -std::ldexp(1.0, -static_cast<int>(h + 1)) * static_cast<double>((i - j) / 2);
  return m;
}

// Repeats a (H, L, S) mask over the batch: (N*H, L, S), PyTorch's 3-d layout.
Tensor<double> repeat_batch(const Tensor<double>& m, Index N) {
  Tensor<double> r({N * m.dim(0), m.dim(1), m.dim(2)});
  for (Index n = 0; n < N; ++n) r.slice(0, n * m.dim(0), (n + 1) * m.dim(0)).assign(m);
  return r;
}

void gradcheck_sdpa(const Shape& qs, Index S, Index Dv, const Tensor<double>& mask,
                    std::uint64_t seed) {
  Rng rng(seed);
  const Index N = qs[0], H = qs[1], D = qs[3];
  bft::gradcheck(
      {random_tensor(qs, rng), random_tensor({N, H, S, D}, rng), random_tensor({N, H, S, Dv}, rng)},
      [&](const std::vector<Tensor<double>>& v) { return ops::sdpa(v[0], v[1], v[2], mask).out; },
      [&](const std::vector<Tensor<double>>& v, const Tensor<double>& dy) {
        const auto r = ops::sdpa(v[0], v[1], v[2], mask);
        const auto g = ops::sdpa_backward(v[0], v[1], v[2], r.probs, dy);
        return Grads{g.dq, g.dk, g.dv};
      });
}

ops::MhaWeights<double> unpack(const std::vector<Tensor<double>>& v) {
  return {v[3], v[4], v[5], v[6]};
}

void gradcheck_mha(Index N, Index L, Index S, Index E, Index H, const Tensor<double>& mask,
                   std::uint64_t seed) {
  Rng rng(seed);
  std::vector<Tensor<double>> in{random_tensor({N, L, E}, rng), random_tensor({N, S, E}, rng),
                                 random_tensor({N, S, E}, rng),
                                 random_tensor({3 * E, E}, rng, 0.4), random_tensor({3 * E}, rng, 0.2),
                                 random_tensor({E, E}, rng, 0.4), random_tensor({E}, rng, 0.2)};
  const ops::MhaParams p{H};
  bft::gradcheck(
      in,
      [&](const std::vector<Tensor<double>>& v) {
        return ops::multi_head_attention(v[0], v[1], v[2], unpack(v), p, mask).output;
      },
      [&](const std::vector<Tensor<double>>& v, const Tensor<double>& dy) {
        const auto r = ops::multi_head_attention(v[0], v[1], v[2], unpack(v), p, mask);
        const auto g = ops::multi_head_attention_backward(v[0], v[1], v[2], unpack(v), p, r.ctx, dy);
        return Grads{g.dquery, g.dkey, g.dvalue, g.din_proj_weight, g.din_proj_bias,
                     g.dout_proj_weight, g.dout_proj_bias};
      });
}

template <class T>
void compare_with_torch(double rtol, double atol) {
  const auto f = bft::vectors("attention");
  const auto cases = nlohmann::json::parse(f.meta("cases"));
  REQUIRE(cases.size() >= 6);
  for (const auto& [name, c] : cases.items()) {
    CAPTURE(name);
    auto get = [&](const char* t) { return f.get<T>(name + "." + t); };
    const Tensor<T> mask = c["mask"] == "none" ? Tensor<T>() : get("mask");
    const Tensor<T> r = get("r");
    if (name == "sdpa") {
      const Tensor<T> q = get("q"), k = get("k"), v = get("v");
      const auto res = ops::sdpa(q, k, v, mask);
      BFT_CHECK_CLOSE(res.out, get("y"), rtol, atol);
      BFT_CHECK_CLOSE(res.probs, get("probs"), rtol, atol);
      const auto g = ops::sdpa_backward(q, k, v, res.probs, r);
      BFT_CHECK_CLOSE(g.dq, get("dq"), rtol, atol);
      BFT_CHECK_CLOSE(g.dk, get("dk"), rtol, atol);
      BFT_CHECK_CLOSE(g.dv, get("dv"), rtol, atol);
      continue;
    }
    const bool self = c["self"].template get<bool>();
    const ops::MhaParams p{c["heads"].template get<Index>()};
    const Tensor<T> q = get("query");
    const Tensor<T> k = self ? q : get("key"), v = self ? q : get("value");
    const ops::MhaWeights<T> w{get("in_w"), get("in_b"), get("out_w"), get("out_b")};
    const auto res = ops::multi_head_attention(q, k, v, w, p, mask);
    BFT_CHECK_CLOSE(res.output, get("y"), rtol, atol);
    BFT_CHECK_CLOSE(res.ctx.probs, get("probs"), rtol, atol);
    const auto g = ops::multi_head_attention_backward(q, k, v, w, p, res.ctx, r);
    if (self) {
      Tensor<T> sum = g.dquery.clone();
      for (Index i = 0; i < sum.numel(); ++i) sum[i] += g.dkey[i] + g.dvalue[i];
      BFT_CHECK_CLOSE(sum, get("dquery"), rtol, atol);
    } else {
      BFT_CHECK_CLOSE(g.dquery, get("dquery"), rtol, atol);
      BFT_CHECK_CLOSE(g.dkey, get("dkey"), rtol, atol);
      BFT_CHECK_CLOSE(g.dvalue, get("dvalue"), rtol, atol);
    }
    BFT_CHECK_CLOSE(g.din_proj_weight, get("din_w"), rtol, atol);
    BFT_CHECK_CLOSE(g.din_proj_bias, get("din_b"), rtol, atol);
    BFT_CHECK_CLOSE(g.dout_proj_weight, get("dout_w"), rtol, atol);
    BFT_CHECK_CLOSE(g.dout_proj_bias, get("dout_b"), rtol, atol);
  }
}

}  // namespace

TEST_CASE("sdpa: gradient check (double) without and with masks") {
  const Index N = 2, H = 2, L = 3, S = 4;
  gradcheck_sdpa({N, H, L, 3}, S, 2, Tensor<double>(), 1);
  Rng rng(20);
  auto ls = random_tensor({L, S}, rng, 0.5);
  ls(0, 2) = -kInf;
  ls(2, 0) = -kInf;
  ls(1, 3) = -kInf;
  gradcheck_sdpa({N, H, L, 3}, S, 3, ls, 2);
  auto nhls = random_tensor({N * H, L, S}, rng, 0.5);
  nhls(3, 1, 1) = -kInf;
  gradcheck_sdpa({N, H, L, 3}, S, 3, nhls, 3);
  gradcheck_sdpa({N, H, L, 3}, S, 3, random_tensor({H, L, S}, rng), 4);  // per head, shared over N
  gradcheck_sdpa({N, H, L, 3}, S, 3, random_tensor({1, H, L, S}, rng), 5);
  gradcheck_sdpa({N, H, 4, 3}, 4, 3, repeat_batch(biased_mask(H, 4), N), 6);
  gradcheck_sdpa({1, 1, 1, 3}, 1, 2, Tensor<double>(), 7);
}

TEST_CASE("multi_head_attention: gradient check (double) of inputs and all weights") {
  gradcheck_mha(2, 3, 5, 6, 2, Tensor<double>(), 30);
  gradcheck_mha(2, 4, 4, 6, 3, causal_mask(4), 31);
  gradcheck_mha(2, 4, 4, 4, 2, repeat_batch(biased_mask(2, 4), 2), 32);
}

TEST_CASE("attention: matches PyTorch nn.MultiheadAttention (double)") {
  compare_with_torch<double>(1e-10, 1e-12);
}
TEST_CASE("attention: matches PyTorch nn.MultiheadAttention (float)") {
  compare_with_torch<float>(2e-4, 2e-5);
}

TEST_CASE("sdpa: mask forms agree ((H,L,S) shared over the batch == (N*H,L,S) repeated)") {
  Rng rng(40);
  const Index N = 3, H = 2, L = 4, S = 4;
  const auto q = random_tensor({N, H, L, 5}, rng), k = random_tensor({N, H, S, 5}, rng),
             v = random_tensor({N, H, S, 5}, rng);
  const auto hm = biased_mask(H, L);
  const auto a = ops::sdpa(q, k, v, hm);
  const auto b = ops::sdpa(q, k, v, repeat_batch(hm, N));
  const auto c = ops::sdpa(q, k, v, hm.reshape({1, H, L, S}));
  BFT_CHECK_CLOSE(a.out, b.out, 1e-15, 1e-15);
  BFT_CHECK_CLOSE(c.out, b.out, 1e-15, 1e-15);
  // The mask changes the result and masked positions get zero probability.
  const auto none = ops::sdpa(q, k, v);
  CHECK(bft::closeness(none.out, a.out, 1e-6, 1e-6) > 1.0);
  CHECK(a.probs(2, 1, 0, 1) == 0.0);
  CHECK(a.probs(2, 1, 2, 3) == 0.0);
  CHECK(a.probs(2, 1, 3, 3) > 0.0);
}

TEST_CASE("sdpa_cached: decoding step by step against a key/value cache equals full causal sdpa") {
  Rng rng(41);
  const Index N = 2, H = 2, T = 5, Smax = 8, D = 3;
  const auto q = random_tensor({N, H, T, D}, rng), k = random_tensor({N, H, T, D}, rng),
             v = random_tensor({N, H, T, D}, rng);
  const auto hm = biased_mask(H, T);
  const auto full = ops::sdpa(q, k, v, hm).out;
  Tensor<double> kc({N, H, Smax, D}), vc({N, H, Smax, D});
  for (Index t = 0; t < T; ++t) {
    kc.slice(2, t, t + 1).assign(k.slice(2, t, t + 1));
    vc.slice(2, t, t + 1).assign(v.slice(2, t, t + 1));
    const auto m = hm.slice(1, t, t + 1).slice(2, 0, t + 1);  // strided (H, 1, t+1) view
    const auto o = ops::sdpa_cached(q.slice(2, t, t + 1), kc, vc, t + 1, m);
    REQUIRE(o.shape() == Shape{N, H, 1, D});
    BFT_CHECK_CLOSE(o, full.slice(2, t, t + 1).clone(), 1e-13, 1e-14);
  }
  CHECK_THROWS_AS(ops::sdpa_cached(q.slice(2, 0, 1), kc, vc, Smax + 1), ArgumentError);
}

TEST_CASE("sdpa: a fully masked query row gives NaN, as in PyTorch") {
  Tensor<double> q({1, 1, 2, 2}), k({1, 1, 2, 2}), v({1, 1, 2, 2});
  auto m = Tensor<double>::from({2, 2}, {0, 0, -kInf, -kInf});
  const auto r = ops::sdpa(q, k, v, m);
  CHECK(std::isfinite(r.out(0, 0, 0, 0)));
  CHECK(std::isnan(r.out(0, 0, 1, 0)));
}

TEST_CASE("split_heads / merge_heads round trip") {
  Rng rng(42);
  const auto x = random_tensor({2, 3, 6}, rng);
  const auto h = ops::split_heads(x, 3);
  REQUIRE(h.shape() == Shape{2, 3, 3, 2});
  CHECK(h(1, 2, 0, 1) == x(1, 0, 5));
  BFT_CHECK_CLOSE(ops::merge_heads(h), x, 0.0, 0.0);
  CHECK_THROWS_AS(ops::split_heads(x, 4), ShapeError);
}

TEST_CASE("attention: shape errors") {
  const Index N = 2, L = 3, S = 4, E = 6;
  Tensor<double> q({N, L, E}), k({N, S, E}), v({N, S, E});
  ops::MhaWeights<double> w{Tensor<double>({3 * E, E}), Tensor<double>({3 * E}), Tensor<double>({E, E}),
                       Tensor<double>({E})};
  const ops::MhaParams p{2};
  CHECK_NOTHROW(ops::multi_head_attention(q, k, v, w, p));
  CHECK_NOTHROW(ops::multi_head_attention(q, k, v, w, p, Tensor<double>({N * 2, L, S})));
  CHECK_THROWS_WITH_AS(ops::multi_head_attention(q, k, v, w, p, Tensor<double>({S, L})),
                       doctest::Contains("attn_mask (4, 3)"), ShapeError);
  CHECK_THROWS_AS(ops::multi_head_attention(q, k, v, w, p, Tensor<double>({5, L, S})), ShapeError);
  CHECK_THROWS_AS(ops::multi_head_attention(q, k, v, w, p, Tensor<double>({S})), ShapeError);
  CHECK_THROWS_WITH_AS(ops::multi_head_attention(q, k, v, w, ops::MhaParams{4}),
                       doctest::Contains("not divisible by num_heads 4"), ArgumentError);
  CHECK_THROWS_AS(ops::multi_head_attention(q, k, v, w, ops::MhaParams{0}), ArgumentError);
  CHECK_THROWS_WITH_AS(ops::multi_head_attention(q, Tensor<double>({N, S, E + 1}), v, w, p),
                       doctest::Contains("key (2, 4, 7)"), ShapeError);
  CHECK_THROWS_AS(ops::multi_head_attention(q, k, Tensor<double>({N, S + 1, E}), w, p), ShapeError);
  CHECK_THROWS_AS(ops::multi_head_attention(Tensor<double>({L, E}), k, v, w, p), ShapeError);
  auto w2 = w;
  w2.in_proj_weight = Tensor<double>({E, E});
  CHECK_THROWS_WITH_AS(ops::multi_head_attention(q, k, v, w2, p),
                       doctest::Contains("in_proj_weight: expected shape (18, 6)"), ShapeError);
  w2 = w;
  w2.out_proj_bias = Tensor<double>({E + 1});
  CHECK_THROWS_AS(ops::multi_head_attention(q, k, v, w2, p), ShapeError);
  w2 = w;
  w2.in_proj_bias = Tensor<double>();  // bias is optional
  w2.out_proj_bias = Tensor<double>();
  CHECK_NOTHROW(ops::multi_head_attention(q, k, v, w2, p));
  const auto r = ops::multi_head_attention(q, k, v, w, p);
  CHECK_THROWS_WITH_AS(ops::multi_head_attention_backward(q, k, v, w, p, r.ctx, Tensor<double>({N, S, E})),
                       doctest::Contains("dout (2, 4, 6)"), ShapeError);

  Tensor<double> qh({N, 2, L, 3}), kh({N, 2, S, 3}), vh({N, 2, S, 5});
  CHECK_NOTHROW(ops::sdpa(qh, kh, vh));
  CHECK_THROWS_AS(ops::sdpa(qh, Tensor<double>({N, 2, S, 4}), vh), ShapeError);
  CHECK_THROWS_AS(ops::sdpa(qh, kh, Tensor<double>({N, 2, S + 1, 5})), ShapeError);
  CHECK_THROWS_AS(ops::sdpa(Tensor<double>({2, L, 3}), kh, vh), ShapeError);
  const auto rs = ops::sdpa(qh, kh, vh);
  CHECK_THROWS_WITH_AS(ops::sdpa_backward(qh, kh, vh, rs.probs, Tensor<double>({N, 2, L, 3})),
                       doctest::Contains("sdpa_backward: dout"), ShapeError);
  CHECK_THROWS_AS(ops::sdpa_backward(qh, kh, vh, Tensor<double>({N, 2, S, L}), rs.out), ShapeError);
}

TEST_CASE("attention_inference: merged sdpa over the heads (the reference is exactly sdpa)") {
  Rng rng(101);
  const Index N = 2, L = 5, S = 7, E = 12, H = 3;
  const auto q = random_tensor({N, L, E}, rng), k = random_tensor({N, S, E}, rng), v = random_tensor({N, S, E}, rng);
  const auto got = ops::attention_inference(q, k, v, H);
  REQUIRE(got.shape() == Shape{N, L, E});
  const auto ref = ops::merge_heads(ops::sdpa(ops::split_heads(q, H), ops::split_heads(k, H), ops::split_heads(v, H)).out);
  CHECK(bft_into::same(got, ref));
  // Against the formula: out[n, l, h·D + j] = Σ_s softmax_s(q·k / sqrt(D)) v[n, s, h·D + j].
  const Index D = E / H;
  double worst = 0;
  for (Index n = 0; n < N; ++n)
    for (Index h = 0; h < H; ++h)
      for (Index l = 0; l < L; ++l) {
        std::vector<double> p(static_cast<std::size_t>(S));
        double mx = -kInf, sum = 0;
        for (Index s = 0; s < S; ++s) {
          double dot = 0;
          for (Index j = 0; j < D; ++j) dot += q(n, l, h * D + j) * k(n, s, h * D + j);
          p[static_cast<std::size_t>(s)] = dot / std::sqrt(double(D));
          mx = std::max(mx, p[static_cast<std::size_t>(s)]);
        }
        for (auto& e : p) sum += (e = std::exp(e - mx));
        for (Index j = 0; j < D; ++j) {
          double o = 0;
          for (Index s = 0; s < S; ++s) o += p[static_cast<std::size_t>(s)] / sum * v(n, s, h * D + j);
          worst = std::max(worst, std::abs(o - got(n, l, h * D + j)));
        }
      }
  CHECK(worst < 1e-12);
  CHECK_THROWS_AS(ops::attention_inference(q, k, v, 5), ArgumentError);
  CHECK_THROWS_AS(ops::attention_inference(q, k, random_tensor({N, S + 1, E}, rng), H), ShapeError);
  CHECK_THROWS_AS(ops::attention_inference(random_tensor({N, L}, rng), k, v, H), ShapeError);
}

TEST_CASE("sdpa_cached_into: exactly sdpa_cached, with masks of length S or S_max, into preallocated buffers") {
  Rng rng(102);
  const Index N = 1, H = 2, Smax = 9, D = 4;
  const auto q = random_tensor({N, H, 1, D}, rng);
  const auto kc = random_tensor({N, H, Smax, D}, rng), vc = random_tensor({N, H, Smax, D}, rng);
  const auto mfull = random_tensor({H, 1, Smax}, rng);  // any additive values
  Tensor<double> out({N, H, 1, D}), scratch({1, Smax});
  for (Index len = 1; len <= Smax; ++len) {
    const auto ref = ops::sdpa_cached(q, kc, vc, len, mfull.slice(2, 0, len));
    ops::sdpa_cached_into(out, q, kc, vc, len, mfull, ops::SdpaParams{}, scratch);  // S_max-wide mask
    CHECK(bft_into::same(out, ref));
    ops::sdpa_cached_into(out, q, kc, vc, len, mfull.slice(2, 0, len), ops::SdpaParams{}, scratch);
    CHECK(bft_into::same(out, ref));
    ops::sdpa_cached_into(out, q, kc, vc, len, Tensor<double>(), ops::SdpaParams{}, scratch);
    CHECK(bft_into::same(out, ops::sdpa_cached(q, kc, vc, len)));
  }
  Tensor<double> small({1, 3});
  CHECK_THROWS_AS(ops::sdpa_cached_into(out, q, kc, vc, 5, Tensor<double>(), ops::SdpaParams{}, small), ShapeError);
  Tensor<double> wrong({N, H, 2, D});
  CHECK_THROWS_AS(ops::sdpa_cached_into(wrong, q, kc, vc, 5, Tensor<double>(), ops::SdpaParams{}, scratch), ShapeError);
  CHECK_THROWS_AS(ops::sdpa_cached_into(out, q, kc, vc, Smax + 1, Tensor<double>(), ops::SdpaParams{}, scratch), ArgumentError);
  CHECK_THROWS_AS(ops::sdpa_cached_into(out, q, kc, vc, 5, random_tensor({H, 1, 4}, rng), ops::SdpaParams{}, scratch), ShapeError);
}

#ifdef BLENDFUSE_WITH_ONEDNN
TEST_CASE("attention_inference on oneDNN (batched GEMMs) matches the reference") {
  Rng rng(103);
  const Index N = 2, L = 6, E = 16, H = 4;
  const Tensor<float> q = bft_into::to_float(random_tensor({N, L, E}, rng)), k = bft_into::to_float(random_tensor({N, L, E}, rng)),
                      v = bft_into::to_float(random_tensor({N, L, E}, rng));
  const auto got = ops::attention_inference(onednn::to_onednn(q), onednn::to_onednn(k), onednn::to_onednn(v), H);
  BFT_CHECK_CLOSE(bft_into::to_double(onednn::to_cpu(got)), bft_into::to_double(ops::attention_inference(q, k, v, H)), 1e-5, 1e-6);
  CHECK_THROWS_AS(ops::attention_inference(onednn::to_onednn(q), onednn::to_onednn(k), onednn::to_onednn(v), 3), ArgumentError);
}
#endif
