// The conv → instance norm → ReLU op family (ops/conv_in_relu.hpp): the reference against central
// finite differences in double (one block and stacks), the reference against the plain
// composition of the existing ops (bit for bit: the fusion encoder's Cpu results must not move),
// gradient accumulation, error reporting, the weight stamp and cache handle — and, when built,
// ConvInReluOp<OneDnn> against the reference at op level (plain loop, blocked inference with and
// without cached weights, blocked training).
#include "test_util.hpp"

#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "blendfuse/ops/conv_in_relu.hpp"
#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"
#endif

using namespace blendfuse;
using TD = Tensor<double>;
using TF = Tensor<float>;

namespace {

ops::Conv2dParams conv_p(Index stride, Index pad) {
  ops::Conv2dParams p;
  p.stride = {stride, stride};
  p.padding = {pad, pad};
  return p;
}

template <class T>
Tensor<T> random_of(const Shape& s, Rng& rng, double stddev = 1.0, double mean = 0.0) {
  Tensor<T> t(s);
  fill_normal(t, rng, stddev, mean);
  return t;
}

template <class T>
bool bit_equal(const Tensor<T>& a, const Tensor<T>& b) {
  if (a.shape() != b.shape()) return false;
  const Tensor<T> ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data(), bc.data(), static_cast<std::size_t>(ac.numel()) * sizeof(T)) == 0;
}

template <class T>
bool values_equal(const Tensor<T>& a, const Tensor<T>& b) {
  if (a.shape() != b.shape()) return false;
  const Tensor<T> ac = a.contiguous(), bc = b.contiguous();
  for (Index i = 0; i < ac.numel(); ++i)
    if (!(ac[i] == bc[i])) return false;
  return true;
}

/// A stack's weights for input channels `cin` and `channels`, k×k kernels; gamma ≈ 1 ± 0.3.
template <class T>
ops::ConvInReluStackWeights<T> stack_weights(Index cin, const std::vector<Index>& channels, Index k, Rng& rng) {
  ops::ConvInReluStackWeights<T> w;
  for (Index c : channels) {
    w.conv.emplace_back(random_of<T>({c, cin, k, k}, rng, 1.0 / std::sqrt(static_cast<double>(cin * k * k))));
    w.gamma.push_back(random_of<T>({c}, rng, 0.3, 1.0));
    w.beta.push_back(random_of<T>({c}, rng, 0.3));
    cin = c;
  }
  return w;
}

// ---- gradient checks (reference, double) -------------------------------------------------------

void gradcheck_block(const Shape& xs, Index cout, Index k, const ops::Conv2dParams& p, std::uint64_t seed) {
  Rng rng(seed);
  const Index cin = xs[1];
  std::vector<TD> inputs{bft::random_tensor(xs, rng, 1.0),
                         bft::random_tensor({cout, cin, k, k}, rng, 0.4),
                         random_of<double>({cout}, rng, 0.3, 1.0), bft::random_tensor({cout}, rng, 0.3)};
  bft::gradcheck(
      inputs,
      [&](const std::vector<TD>& in) { return ops::conv_in_relu(in[0], in[1], in[2], in[3], 1e-5, p); },
      [&](const std::vector<TD>& in, const TD& dy) {
        ops::ConvInReluState<double> s;
        ops::conv_in_relu(in[0], in[1], in[2], in[3], 1e-5, p, &s);
        const auto g = ops::conv_in_relu_backward(s, in[1], in[2], dy, p);
        return std::vector<TD>{g.dx, g.dw, g.dgamma, g.dbeta};
      });
}

TEST_CASE("conv_in_relu: gradcheck of one block (x, w, gamma, beta)") {
  gradcheck_block({2, 3, 8, 8}, 4, 3, conv_p(2, 1), 11);  // the encoder's block: stride 2, pad 1
  gradcheck_block({2, 2, 7, 5}, 3, 3, conv_p(1, 0), 12);  // stride 1, no padding, odd sizes
  gradcheck_block({1, 4, 9, 9}, 5, 5, conv_p(2, 2), 13);  // batch 1, k = 5
}

void gradcheck_stack(const Shape& xs, const std::vector<Index>& channels, Index k, std::uint64_t seed) {
  Rng rng(seed);
  const auto w0 = stack_weights<double>(xs[1], channels, k, rng);
  ops::ConvInReluStackParams p;
  p.conv = conv_p(2, k / 2);
  p.eps = 1e-5;
  p.input_grad = true;
  const std::size_t nb = channels.size();
  std::vector<TD> inputs{bft::random_tensor(xs, rng, 1.0)};
  for (std::size_t i = 0; i < nb; ++i) {
    inputs.push_back(w0.conv[i].value);
    inputs.push_back(w0.gamma[i]);
    inputs.push_back(w0.beta[i]);
  }
  auto weights_of = [nb](const std::vector<TD>& in) {
    ops::ConvInReluStackWeights<double> w;
    for (std::size_t i = 0; i < nb; ++i) {
      w.conv.emplace_back(in[1 + 3 * i]);
      w.gamma.push_back(in[2 + 3 * i]);
      w.beta.push_back(in[3 + 3 * i]);
    }
    return w;
  };
  bft::gradcheck(
      inputs, [&](const std::vector<TD>& in) { return ops::conv_in_relu_stack(in[0], weights_of(in), p); },
      [&](const std::vector<TD>& in, const TD& dy) {
        const auto w = weights_of(in);
        ops::ConvInReluStackState<double> s;
        ops::conv_in_relu_stack(in[0], w, p, &s);
        const auto g = ops::conv_in_relu_stack_backward(s, w, p, dy);
        std::vector<TD> out{g.dx};
        for (std::size_t i = 0; i < nb; ++i) {
          out.push_back(g.dw[i]);
          out.push_back(g.dgamma[i]);
          out.push_back(g.dbeta[i]);
        }
        return out;
      });
}

TEST_CASE("conv_in_relu: gradcheck of stride-2 stacks (x and every block's w, gamma, beta)") {
  gradcheck_stack({2, 4, 12, 12}, {4, 6, 5}, 3, 21);  // 12 → 6 → 3 → 2
  gradcheck_stack({3, 2, 9, 9}, {3, 4}, 3, 22);       // odd map: 9 → 5 → 3
  gradcheck_stack({1, 3, 8, 8}, {5}, 3, 23);          // one block
}

// ---- the reference is exactly the composition of the existing ops ------------------------------

TEST_CASE("conv_in_relu: the reference stack is bit-identical to conv2d → instance_norm → relu_ per block") {
  // What the fusion encoder computed before the op existed (float, the trainer's type): the same
  // float results are required, forward and backward.
  Rng rng(31);
  const std::vector<Index> channels{8, 16, 12};
  const auto w = stack_weights<float>(4, channels, 3, rng);
  const TF x = random_of<float>({3, 4, 20, 20}, rng);
  ops::ConvInReluStackParams p;
  p.conv = conv_p(2, 1);
  p.eps = 1e-5;
  p.input_grad = false;
  ops::ConvInReluStackState<float> s;
  const TF y = ops::conv_in_relu_stack(x, w, p, &s);
  REQUIRE(s.blocks.size() == channels.size());
  CHECK(s.backend == nullptr);

  // the plain composition, by hand
  std::vector<TF> xs, cs, ys, means, rstds;
  TF h = x;
  for (std::size_t i = 0; i < channels.size(); ++i) {
    TF c = ops::conv2d(h, w.conv[i].value, nullptr, p.conv);
    auto r = ops::instance_norm(c, w.gamma[i], w.beta[i], p.eps);
    ops::relu_(r.y);
    xs.push_back(h), cs.push_back(c), ys.push_back(r.y), means.push_back(r.mean), rstds.push_back(r.rstd);
    h = r.y;
  }
  CHECK(bit_equal(y, h));
  for (std::size_t i = 0; i < channels.size(); ++i) {
    CHECK(bit_equal(s.blocks[i].conv, cs[i]));
    CHECK(bit_equal(s.blocks[i].y, ys[i]));
    CHECK(bit_equal(s.blocks[i].mean, means[i]));
    CHECK(bit_equal(s.blocks[i].rstd, rstds[i]));
  }

  // backward: accumulated into existing gradients, as a module's parameters hold them
  const TF dy = random_of<float>(y.shape(), rng);
  ops::ConvInReluStackGrads<float> acc;
  std::vector<TF> dw_ref, dg_ref, db_ref;
  for (std::size_t i = 0; i < channels.size(); ++i) {
    acc.dw.push_back(random_of<float>(w.conv[i].value.shape(), rng, 0.1));
    acc.dgamma.push_back(random_of<float>(w.gamma[i].shape(), rng, 0.1));
    acc.dbeta.push_back(random_of<float>(w.beta[i].shape(), rng, 0.1));
    dw_ref.push_back(acc.dw.back().clone());
    dg_ref.push_back(acc.dgamma.back().clone());
    db_ref.push_back(acc.dbeta.back().clone());
  }
  ops::conv_in_relu_stack_backward_into(s, w, p, dy, acc);
  CHECK(acc.dx.empty());  // input_grad off
  TF d = dy;
  std::vector<TF> dw_pure(channels.size()), dg_pure(channels.size()), db_pure(channels.size());
  for (std::size_t k = channels.size(); k-- > 0;) {
    auto ng = ops::instance_norm_backward(cs[k], w.gamma[k], means[k], rstds[k], ops::relu_backward(ys[k], d));
    auto cg = ops::conv2d_backward(xs[k], w.conv[k].value, ng.dx, p.conv, false);
    dw_pure[k] = cg.dw, dg_pure[k] = ng.dgamma, db_pure[k] = ng.dbeta;
    for (Index j = 0; j < dg_ref[k].numel(); ++j) dg_ref[k][j] += ng.dgamma[j];
    for (Index j = 0; j < db_ref[k].numel(); ++j) db_ref[k][j] += ng.dbeta[j];
    for (Index j = 0; j < dw_ref[k].numel(); ++j) dw_ref[k][j] += cg.dw[j];
    d = cg.dx;
  }
  for (std::size_t i = 0; i < channels.size(); ++i) {
    CAPTURE(i);
    CHECK(bit_equal(acc.dw[i], dw_ref[i]));
    CHECK(bit_equal(acc.dgamma[i], dg_ref[i]));
    CHECK(bit_equal(acc.dbeta[i], db_ref[i]));
  }

  // the returning variant: the same gradients from zero, plus dx when asked for
  p.input_grad = true;
  const auto g = ops::conv_in_relu_stack_backward(s, w, p, dy);
  CHECK(bit_equal(g.dx, d));
  for (std::size_t i = 0; i < channels.size(); ++i) {
    CAPTURE(i);
    CHECK(values_equal(g.dw[i], dw_pure[i]));  // 0 + g: equal values (−0 may become +0)
    CHECK(values_equal(g.dgamma[i], dg_pure[i]));
    CHECK(values_equal(g.dbeta[i], db_pure[i]));
  }
}

TEST_CASE("conv_in_relu: one block equals the first block of a stack") {
  Rng rng(41);
  const auto w = stack_weights<float>(3, {6, 6}, 3, rng);
  const TF x = random_of<float>({2, 3, 10, 10}, rng);
  ops::ConvInReluStackParams p;
  p.conv = conv_p(2, 1);
  ops::ConvInReluStackState<float> s;
  ops::conv_in_relu_stack(x, w, p, &s);
  ops::ConvInReluState<float> b;
  const TF y = ops::conv_in_relu(x, w.conv[0].value, w.gamma[0], w.beta[0], p.eps, p.conv, &b);
  CHECK(bit_equal(y, s.blocks[0].y));
  CHECK(bit_equal(b.conv, s.blocks[0].conv));
}

// ---- errors ------------------------------------------------------------------------------------

TEST_CASE("conv_in_relu: bad input gives clear errors") {
  Rng rng(51);
  auto w = stack_weights<float>(4, {8, 8}, 3, rng);
  const TF x = random_of<float>({2, 4, 8, 8}, rng);
  ops::ConvInReluStackParams p;
  p.conv = conv_p(2, 1);

  ops::ConvInReluStackWeights<float> none;
  CHECK_THROWS_WITH_AS(ops::conv_in_relu_stack(x, none, p), doctest::Contains("the stack has no blocks"), ArgumentError);
  auto short_gamma = w;
  short_gamma.gamma.pop_back();
  CHECK_THROWS_WITH_AS(ops::conv_in_relu_stack(x, short_gamma, p), doctest::Contains("2 conv weights but 1 gammas"),
                       ArgumentError);
  // wrong input channels: the conv names both shapes
  const TF x3 = random_of<float>({2, 3, 8, 8}, rng);
  CHECK_THROWS_AS(ops::conv_in_relu_stack(x3, w, p), ShapeError);
  // gamma of the wrong size: the norm says so
  auto bad_gamma = w;
  bad_gamma.gamma[1] = random_of<float>({7}, rng);
  CHECK_THROWS_WITH_AS(ops::conv_in_relu_stack(x, bad_gamma, p), doctest::Contains("gamma must have shape (8,)"),
                       ShapeError);
  CHECK_THROWS_AS(ops::conv_in_relu(x, w.conv[0].value, w.gamma[0], w.beta[0], -1.0, p.conv), ArgumentError);

  ops::ConvInReluStackState<float> s;
  const TF y = ops::conv_in_relu_stack(x, w, p, &s);
  ops::ConvInReluStackState<float> empty;
  CHECK_THROWS_WITH_AS(ops::conv_in_relu_stack_backward(empty, w, p, y), doctest::Contains("saved state has 0 blocks"),
                       ArgumentError);
  ops::ConvInReluStackGrads<float> acc = ops::conv_in_relu_stack_backward(s, w, p, y);
  acc.dw[1] = TF({8, 8, 3, 2});
  CHECK_THROWS_WITH_AS(ops::conv_in_relu_stack_backward_into(s, w, p, y, acc), doctest::Contains("block 1: dw"),
                       ShapeError);
  acc.dgamma.pop_back();
  CHECK_THROWS_WITH_AS(ops::conv_in_relu_stack_backward_into(s, w, p, y, acc), doctest::Contains("gradients for"),
                       ArgumentError);
}

// ---- weight stamps and the cache handle ---------------------------------------------------------

TEST_CASE("conv_in_relu: WeightStamp follows pointer, version and contents; a copied cache handle is empty") {
  Rng rng(61);
  TF w = random_of<float>({8, 4, 3, 3}, rng);
  const auto s0 = ops::WeightStamp<float>::of(ops::WeightRef<float>(w, 3));
  CHECK(s0 == ops::WeightStamp<float>::of(ops::WeightRef<float>(w, 3)));
  CHECK_FALSE(s0 == ops::WeightStamp<float>::of(ops::WeightRef<float>(w, 4)));        // version
  CHECK_FALSE(s0 == ops::WeightStamp<float>::of(ops::WeightRef<float>(w.clone(), 3)));  // storage
  w[w.numel() - 1] += 1.0f;                                                             // a sampled element
  CHECK_FALSE(s0 == ops::WeightStamp<float>::of(ops::WeightRef<float>(w, 3)));

  struct Payload {
    int v = 7;
  };
  ops::BackendWeightCache c;
  CHECK(c.empty());
  c.get<Payload>()->v = 9;
  CHECK_FALSE(c.empty());
  CHECK(c.get<Payload>()->v == 9);  // the same object on the next call
  const ops::BackendWeightCache copy = c;
  CHECK(copy.empty());
  ops::BackendWeightCache assigned;
  assigned.get<Payload>();
  assigned = c;
  CHECK(assigned.empty());
  c.clear();
  CHECK(c.empty());
}

#ifdef BLENDFUSE_WITH_ONEDNN

// ---- ConvInReluOp<OneDnn> against the reference -------------------------------------------------

using DT = Tensor<float, OneDnn>;

DT dnn(const TF& t) { return onednn::to_onednn(t); }

ops::ConvInReluStackWeights<float, OneDnn> dnn_weights(const ops::ConvInReluStackWeights<float>& w) {
  ops::ConvInReluStackWeights<float, OneDnn> d;
  for (std::size_t i = 0; i < w.conv.size(); ++i) {
    d.conv.emplace_back(onednn::view_as_onednn(w.conv[i].value), w.conv[i].version);
    d.gamma.push_back(onednn::view_as_onednn(w.gamma[i]));
    d.beta.push_back(onednn::view_as_onednn(w.beta[i]));
  }
  return d;
}

void expect_close(const std::string& what, const TF& ref, const DT& got, double bound) {
  const TF g = onednn::to_cpu(got);
  REQUIRE_MESSAGE(g.shape() == ref.shape(), what, ": shape ", g.shape_string(), " vs ", ref.shape_string());
  const double e = bft::nmse(ref.contiguous(), g);
  CHECK_MESSAGE(e < bound, what, ": NMSE ", e, " >= ", bound);
}

TEST_CASE("conv_in_relu on oneDNN: one block forward and backward match the reference") {
  Rng rng(71);
  const auto w = stack_weights<float>(4, {16}, 3, rng);
  const TF x = random_of<float>({3, 4, 11, 11}, rng);
  const auto p = conv_p(2, 1);
  ops::ConvInReluState<float> sr;
  ops::ConvInReluState<float, OneDnn> sd;
  const TF yr = ops::conv_in_relu(x, w.conv[0].value, w.gamma[0], w.beta[0], 1e-5, p, &sr);
  const auto wd = dnn_weights(w);
  const DT yd = ops::conv_in_relu(dnn(x), wd.conv[0].value, wd.gamma[0], wd.beta[0], 1e-5, p, &sd);
  expect_close("block y", yr, yd, 1e-6);
  const TF dy = random_of<float>(yr.shape(), rng);
  const auto gr = ops::conv_in_relu_backward(sr, w.conv[0].value, w.gamma[0], dy, p);
  const auto gd = ops::conv_in_relu_backward(sd, wd.conv[0].value, wd.gamma[0], dnn(dy), p);
  expect_close("block dx", gr.dx, gd.dx, 1e-5);
  expect_close("block dw", gr.dw, gd.dw, 1e-5);
  expect_close("block dgamma", gr.dgamma, gd.dgamma, 1e-5);
  expect_close("block dbeta", gr.dbeta, gd.dbeta, 1e-5);
}

TEST_CASE("conv_in_relu on oneDNN: stack inference and training (blocked and plain routes) match the reference") {
  struct Case {
    Index batch, map;
    std::vector<Index> channels;
    bool cache, input_grad;
  };
  const std::vector<Case> cases{
      {5, 20, {8, 16, 24}, false, false},  // inference and training on blocked layouts (where the ISA has them)
      {1, 16, {8, 16}, false, false},      // batch 1, no cache: plain loop
      {1, 16, {8, 16}, true, false},       // batch 1, cached weights: blocked inference
      {5, 16, {8, 16}, false, true},       // input gradient asked for: plain loop in training
  };
  std::uint64_t seed = 80;
  for (const auto& c : cases) {
    std::ostringstream rs;
    rs << "stack batch=" << c.batch << " map=" << c.map << " blocks=" << c.channels.size() << " cache=" << c.cache
       << " input_grad=" << c.input_grad;
    const std::string r = rs.str();
    CAPTURE(r);
    Rng rng(seed++);
    const auto w = stack_weights<float>(4, c.channels, 3, rng);
    const auto wd = dnn_weights(w);
    const TF x = random_of<float>({c.batch, 4, c.map, c.map}, rng);
    ops::ConvInReluStackParams p;
    p.conv = conv_p(2, 1);
    p.cache_weights = c.cache;
    p.input_grad = c.input_grad;
    ops::BackendWeightCache cache;
    const TF yr = ops::conv_in_relu_stack(x, w, p);
    for (int call = 0; call < 2; ++call)  // the second call reuses cached weights
      expect_close(r + " inference", yr, ops::conv_in_relu_stack(dnn(x), wd, p, nullptr, &cache), 1e-6);
    CHECK(cache.empty() == !c.cache);

    ops::ConvInReluStackState<float> sr;
    ops::ConvInReluStackState<float, OneDnn> sd;
    const TF yr2 = ops::conv_in_relu_stack(x, w, p, &sr);
    const DT yd2 = ops::conv_in_relu_stack(dnn(x), wd, p, &sd);
    expect_close(r + " training y", yr2, yd2, 1e-6);
    if (c.batch < 4 || c.input_grad) CHECK_MESSAGE(sd.backend == nullptr, r, ": blocked training state");
    if (sd.backend == nullptr) CHECK(sd.blocks.size() == c.channels.size());
    const TF dy = random_of<float>(yr2.shape(), rng);
    const auto gr = ops::conv_in_relu_stack_backward(sr, w, p, dy);
    const auto gd = ops::conv_in_relu_stack_backward(sd, wd, p, dnn(dy));
    CHECK(gd.dx.empty() == !c.input_grad);
    if (c.input_grad) expect_close(r + " dx", gr.dx, gd.dx, 1e-5);
    for (std::size_t i = 0; i < c.channels.size(); ++i) {
      expect_close(r + " dw" + std::to_string(i), gr.dw[i], gd.dw[i], 1e-5);
      expect_close(r + " dgamma" + std::to_string(i), gr.dgamma[i], gd.dgamma[i], 1e-5);
      expect_close(r + " dbeta" + std::to_string(i), gr.dbeta[i], gd.dbeta[i], 1e-5);
    }
  }
}

TEST_CASE("conv_in_relu on oneDNN: cached weights follow version and contents; double runs the reference") {
  Rng rng(91);
  auto w = stack_weights<float>(4, {8, 16}, 3, rng);
  const TF x = random_of<float>({1, 4, 16, 16}, rng);
  ops::ConvInReluStackParams p;
  p.conv = conv_p(2, 1);
  p.cache_weights = true;
  ops::BackendWeightCache cache;
  auto run = [&] { return ops::conv_in_relu_stack(dnn(x), dnn_weights(w), p, nullptr, &cache); };
  expect_close("initial", ops::conv_in_relu_stack(x, w, p), run(), 1e-6);
  // in place with a version bump
  for (Index j = 0; j < w.conv[1].value.numel(); ++j) w.conv[1].value[j] *= -1.0f;
  w.conv[1].version++;
  expect_close("after a versioned update", ops::conv_in_relu_stack(x, w, p), run(), 1e-6);
  // in place without one: the sampled elements see it
  fill_normal(w.conv[0].value, rng, 0.3);
  expect_close("after an unversioned overwrite", ops::conv_in_relu_stack(x, w, p), run(), 1e-6);

  // double on oneDNN: the reference on the same memory, exactly
  Rng rd(92);
  const auto wdbl = stack_weights<double>(4, {8, 8}, 3, rd);
  const TD xd = random_of<double>({5, 4, 12, 12}, rd);
  ops::ConvInReluStackWeights<double, OneDnn> wdd;
  for (std::size_t i = 0; i < 2; ++i) {
    wdd.conv.emplace_back(onednn::view_as_onednn(wdbl.conv[i].value));
    wdd.gamma.push_back(onednn::view_as_onednn(wdbl.gamma[i]));
    wdd.beta.push_back(onednn::view_as_onednn(wdbl.beta[i]));
  }
  ops::ConvInReluStackParams pd;
  pd.conv = conv_p(2, 1);
  const TD yref = ops::conv_in_relu_stack(xd, wdbl, pd);
  const TD ygot = onednn::to_cpu(ops::conv_in_relu_stack(onednn::to_onednn(xd), wdd, pd));
  CHECK(bit_equal(yref, ygot));
}

#endif  // BLENDFUSE_WITH_ONEDNN

}  // namespace
