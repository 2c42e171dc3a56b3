// blendfuse benchmarks — the LibTorch peer: the op cases of bench_ops and the models of
// bench_models, written the way one writes them in LibTorch (random weights, same shapes, same
// algorithms), registered under the same names with backend `torch`, so that bench/compare.py
// divides one by the other. Threads: torch::set_num_threads(OMP_NUM_THREADS), the count our
// programs run with.
//
// Model notes (what is identical and what is only equivalent in cost):
//  * fusion: mesh → map is a gather of 3 vertices per pixel with barycentric weights (here a
//    random valid pixel set of the same size as our map's and random triangles: same memory
//    traffic, not the same picture); + mask channel; 6 × (conv 3×3 s2 → instance norm (affine)
//    → ReLU); linear to K; decoder with fixed-norm columns computed per forward as ours does
//    (y = W (s ⊙ w), s = c/‖W_j‖); fuse mixes E_a's speech half with E_e's expression half.
//  * training step: the same losses (weighted MSE, L1 on ε, uniform Laplacian via index_add,
//    L2, and variant "full"'s subspace-overlap penalty on the speech batch, as ours), autograd
//    backward, torch::optim::Adam, 16 + 16 frames.
//  * wav2vec2-base: normalisation, 7 conv layers (GroupNorm on the first, GELU), feature
//    projection, weight-normalised grouped positional conv, 12 post-norm transformer layers
//    written out with torch::linear / matmul / softmax / layer_norm (as Hugging Face does).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "op_cases.hpp"

namespace {

using torch::Tensor;
namespace F = torch::nn::functional;

void set_rates(benchmark::State& st, double flops, double frames = 0) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (frames > 0) st.counters["fps"] = benchmark::Counter(frames, benchmark::Counter::kIsIterationInvariantRate);
}
void set_bytes(benchmark::State& st, double bytes) {
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

Tensor rnd(std::vector<int64_t> s, double sd = 1.0, bool grad = false) {
  return (torch::randn(s) * sd).set_requires_grad(grad);
}

/// Times only the backward: the graph of `y` is built once and differentiated each iteration.
void time_backward(benchmark::State& st, const Tensor& y, const std::vector<Tensor>& inputs) {
  const Tensor dy = torch::randn_like(y);
  for (auto _ : st) {
    auto g = torch::autograd::grad({y}, inputs, {dy}, /*retain_graph=*/true);
    benchmark::DoNotOptimize(g[0].data_ptr());
  }
}

#define BF_REG(name, ...) benchmark::RegisterBenchmark((name).c_str(), __VA_ARGS__)->UseRealTime()->Unit(benchmark::kMillisecond)

void register_ops() {
  for (const auto& c : bfbench::conv2d_cases()) {
    BF_REG("conv2d_fwd/" + c.tag + "/torch", [c](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto x = rnd({c.n, c.cin, c.h, c.w}), w = rnd({c.cout, c.cin, c.k, c.k}, 0.1);
      for (auto _ : st) benchmark::DoNotOptimize(torch::conv2d(x, w, {}, c.stride, c.pad).data_ptr());
      set_rates(st, c.flops());
    });
    BF_REG("conv2d_bwd/" + c.tag + "/torch", [c](benchmark::State& st) {
      auto x = rnd({c.n, c.cin, c.h, c.w}, 1, true), w = rnd({c.cout, c.cin, c.k, c.k}, 0.1, true);
      time_backward(st, torch::conv2d(x, w, {}, c.stride, c.pad), {x, w});
      set_rates(st, 2 * c.flops());
    });
    BF_REG("conv_in_relu_fwd/" + c.tag + "/torch", [c](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto x = rnd({c.n, c.cin, c.h, c.w}), w = rnd({c.cout, c.cin, c.k, c.k}, 0.1);
      auto g = rnd({c.cout}), b = rnd({c.cout});
      for (auto _ : st) {
        auto y = torch::relu(torch::instance_norm(torch::conv2d(x, w, {}, c.stride, c.pad), g, b, {}, {}, true, 0.1, 1e-5, false));
        benchmark::DoNotOptimize(y.data_ptr());
      }
      set_rates(st, c.flops());
    });
  }
  for (const auto& c : bfbench::conv1d_cases()) {
    BF_REG("conv1d_fwd/" + c.tag + "/torch", [c](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto x = rnd({c.n, c.cin, c.l}), w = rnd({c.cout, c.cin, c.k}, 0.1);
      for (auto _ : st) benchmark::DoNotOptimize(torch::conv1d(x, w, {}, c.stride).data_ptr());
      set_rates(st, c.flops());
    });
  }
  for (const auto& c : bfbench::linear_cases()) {
    BF_REG("linear_fwd/" + c.tag + "/torch", [c](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto x = rnd({c.rows, c.in}), w = rnd({c.out, c.in}, 0.05), b = rnd({c.out});
      for (auto _ : st) benchmark::DoNotOptimize(torch::linear(x, w, b).data_ptr());
      set_rates(st, c.flops());
    });
    BF_REG("linear_bwd/" + c.tag + "/torch", [c](benchmark::State& st) {
      auto x = rnd({c.rows, c.in}, 1, true), w = rnd({c.out, c.in}, 0.05, true), b = rnd({c.out}, 1, true);
      time_backward(st, torch::linear(x, w, b), {x, w, b});
      set_rates(st, 2 * c.flops());
    });
  }
  for (const auto& c : bfbench::matmul_cases()) {
    BF_REG("matmul/" + c.tag + "/torch", [c](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto a = rnd({c.batch, c.m, c.k}), b = rnd({c.batch, c.k, c.n});
      for (auto _ : st) benchmark::DoNotOptimize(torch::matmul(a, b).data_ptr());
      set_rates(st, c.flops());
    });
  }
  for (const auto& c : bfbench::instance_norm_cases()) {
    BF_REG("instance_norm_fwd/" + c.tag + "/torch", [c](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto x = rnd(c.shape), g = rnd({c.shape[1]}), b = rnd({c.shape[1]});
      for (auto _ : st)
        benchmark::DoNotOptimize(torch::instance_norm(x, g, b, {}, {}, true, 0.1, 1e-5, false).data_ptr());
      set_bytes(st, 8 * c.numel());
    });
    BF_REG("instance_norm_bwd/" + c.tag + "/torch", [c](benchmark::State& st) {
      auto x = rnd(c.shape, 1, true), g = rnd({c.shape[1]}, 1, true), b = rnd({c.shape[1]}, 1, true);
      time_backward(st, torch::instance_norm(x, g, b, {}, {}, true, 0.1, 1e-5, false), {x, g, b});
      set_bytes(st, 12 * c.numel());
    });
  }
  for (const auto& c : bfbench::relu_cases()) {
    BF_REG("relu/" + c.tag + "/torch", [c](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto x = rnd(c.shape);
      for (auto _ : st) benchmark::DoNotOptimize(torch::relu(x).data_ptr());
      set_bytes(st, 8 * c.numel());
    });
  }
  for (const auto& c : bfbench::layer_norm_cases()) {
    const int64_t d = c.shape.back();
    BF_REG("layer_norm_fwd/" + c.tag + "/torch", [c, d](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto x = rnd(c.shape), g = rnd({d}), b = rnd({d});
      for (auto _ : st) benchmark::DoNotOptimize(torch::layer_norm(x, {d}, g, b, 1e-5).data_ptr());
      set_bytes(st, 8 * c.numel());
    });
    BF_REG("layer_norm_bwd/" + c.tag + "/torch", [c, d](benchmark::State& st) {
      auto x = rnd(c.shape, 1, true), g = rnd({d}, 1, true), b = rnd({d}, 1, true);
      time_backward(st, torch::layer_norm(x, {d}, g, b, 1e-5), {x, g, b});
      set_bytes(st, 12 * c.numel());
    });
  }
  for (const auto& c : bfbench::gelu_cases()) {
    BF_REG("gelu/" + c.tag + "/torch", [c](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto x = rnd(c.shape);
      for (auto _ : st) benchmark::DoNotOptimize(torch::gelu(x).data_ptr());
      set_bytes(st, 8 * c.numel());
    });
  }
  for (const auto& c : bfbench::softmax_cases()) {
    BF_REG("softmax/" + c.tag + "/torch", [c](benchmark::State& st) {
      torch::NoGradGuard ng;
      auto x = rnd(c.shape);
      for (auto _ : st) benchmark::DoNotOptimize(torch::softmax(x, -1).data_ptr());
      set_bytes(st, 8 * c.numel());
    });
  }
}

// ---- fusion module ----------------------------------------------------------------------------

struct Encoder {
  std::vector<Tensor> conv_w, norm_w, norm_b;
  Tensor fc_w, fc_b;
  std::vector<Tensor> params() const {
    std::vector<Tensor> p;
    for (size_t i = 0; i < conv_w.size(); ++i) p.insert(p.end(), {conv_w[i], norm_w[i], norm_b[i]});
    p.insert(p.end(), {fc_w, fc_b});
    return p;
  }
  Tensor forward(Tensor h) const {
    for (size_t i = 0; i < conv_w.size(); ++i)
      h = torch::relu(torch::instance_norm(torch::conv2d(h, conv_w[i], {}, 2, 1), norm_w[i], norm_b[i], {}, {}, true, 0.1, 1e-5, false));
    return torch::linear(h.flatten(1), fc_w, fc_b);
  }
};

struct Fusion {
  using S = bfbench::FusionScale;
  int64_t V = S::vertices, Sz = S::map_size, K = S::k_a + S::k_e;
  Encoder enc[2];
  Tensor dec_w;                   // (V·3, K)
  double column_norm = std::sqrt(static_cast<double>(S::vertices));
  Tensor pix, pix_idx, pix_w;     // valid pixels (P), their vertex indices (P·3) and weights (P, 3)
  Tensor mask;                    // (1, 1, S, S)
  Tensor edge_src, edge_dst, inv_deg;  // uniform Laplacian

  Fusion() {
    torch::manual_seed(1);
    for (auto& e : enc) {
      int64_t cin = 4, s = Sz;
      for (auto cout : S::channels()) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(cin * 9));
        e.conv_w.push_back(torch::empty({cout, cin, 3, 3}).uniform_(-bound, bound).requires_grad_());
        e.norm_w.push_back(torch::ones({cout}).requires_grad_());
        e.norm_b.push_back(torch::zeros({cout}).requires_grad_());
        cin = cout;
        s = (s + 2 - 3) / 2 + 1;
      }
      const double bound = 1.0 / std::sqrt(static_cast<double>(cin * s * s));
      e.fc_w = torch::empty({K, cin * s * s}).uniform_(-bound, bound).requires_grad_();
      e.fc_b = torch::empty({K}).uniform_(-bound, bound).requires_grad_();
    }
    dec_w = (torch::randn({V * 3, K}) / std::sqrt(static_cast<double>(V * 3))).requires_grad_();
    // ~78.5 % of the square is valid (a disk), like a face map with holes
    auto yy = torch::arange(Sz).view({Sz, 1}).expand({Sz, Sz}), xx = torch::arange(Sz).view({1, Sz}).expand({Sz, Sz});
    auto r2 = (yy - Sz / 2).pow(2) + (xx - Sz / 2).pow(2);
    auto valid = (r2 < (Sz / 2) * (Sz / 2)).flatten();
    pix = valid.nonzero().flatten();
    const int64_t P = pix.size(0);
    pix_idx = torch::randint(0, V, {P * 3}, torch::kLong);
    pix_w = torch::rand({P, 3});
    pix_w = pix_w / pix_w.sum(1, true);
    mask = valid.to(torch::kFloat).view({1, 1, Sz, Sz});
    // grid-mesh adjacency (4-neighbour + one diagonal, as the triangulated grid)
    std::vector<int64_t> src, dst;
    const int64_t R = S::grid_rows, C = S::grid_cols;
    auto add = [&](int64_t a, int64_t b) { src.push_back(a); dst.push_back(b); src.push_back(b); dst.push_back(a); };
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < C; ++j) {
        const int64_t a = i * C + j;
        if (j + 1 < C) add(a, a + 1);
        if (i + 1 < R) add(a, a + C);
        if (i + 1 < R && j + 1 < C) add(a, a + C + 1);
      }
    edge_src = torch::tensor(src, torch::kLong);
    edge_dst = torch::tensor(dst, torch::kLong);
    inv_deg = 1.0 / torch::zeros({V}).index_add_(0, edge_dst, torch::ones({static_cast<int64_t>(dst.size())})).view({1, V, 1});
  }

  std::vector<Tensor> params() const {
    std::vector<Tensor> p = enc[0].params();
    for (auto& t : enc[1].params()) p.push_back(t);
    p.push_back(dec_w);
    return p;
  }

  Tensor encoder_input(const Tensor& dv) const {  // (B, V, 3) → (B, 4, S, S)
    const int64_t B = dv.size(0);
    auto g = dv.index_select(1, pix_idx).view({B, -1, 3, 3});         // (B, P, 3 vertices, xyz)
    auto vals = (g * pix_w.view({1, -1, 3, 1})).sum(2);                 // (B, P, 3)
    auto map = torch::zeros({B, 3, Sz * Sz});
    map.index_copy_(2, pix, vals.transpose(1, 2));
    return torch::cat({map.view({B, 3, Sz, Sz}), mask.expand({B, 1, Sz, Sz})}, 1);
  }
  Tensor decode(const Tensor& w) const {
    auto s = column_norm / (at::linalg_vector_norm(dec_w, 2, at::IntArrayRef{0}, false, c10::nullopt) + 1e-12);  // (K)
    return torch::linear(w * s, dec_w).view({w.size(0), V, 3});
  }
  Tensor fuse(const Tensor& a, const Tensor& e) const {
    auto wa = enc[0].forward(encoder_input(a)), we = enc[1].forward(encoder_input(e));
    auto w = torch::cat({wa.slice(1, 0, S::k_a), we.slice(1, S::k_a, K)}, 1);
    return decode(w);
  }
  Tensor laplacian(const Tensor& x) const {
    auto nb = torch::zeros_like(x).index_add(1, edge_dst, x.index_select(1, edge_src));
    return x - nb * inv_deg;
  }
  Tensor loss(int d, const Tensor& dv) const {
    auto w = enc[d].forward(encoder_input(dv));
    auto pred = decode(w);
    const double B = static_cast<double>(dv.size(0));
    auto rec = (pred - dv).pow(2).sum() / (V * B);
    auto eps = d == 0 ? w.slice(1, S::k_a, K) : w.slice(1, 0, S::k_a);
    auto sp = eps.abs().sum() / B;
    auto lap = laplacian(pred).pow(2).sum() / (V * B);
    auto reg = pred.pow(2).sum() / (V * B);
    auto total = rec + (d == 0 ? 0.2 : 0.02) * sp + 1.0 * lap + 1e-4 * reg;
    if (d == 0) total = total + 5.0 * overlap();  // once per step, on the speech batch
    return total;
  }
  // Σ_e ‖P_A ê‖² over the unit-normalised columns (loss::cross_domain_overlap, δ = 1e-3).
  Tensor overlap() const {
    auto bn = dec_w / (at::linalg_vector_norm(dec_w, 2, at::IntArrayRef{0}, true, c10::nullopt) + 1e-12);
    auto a = bn.slice(1, 0, S::k_a), e = bn.slice(1, S::k_a, K);
    auto g = a.t().mm(a) + 1e-3 * torch::eye(S::k_a);
    auto x = at::linalg_solve(g, a.t().mm(e));
    return a.mm(x).pow(2).sum();
  }
};

Fusion& fusion() {
  static Fusion f;
  return f;
}

void fusion_infer(benchmark::State& st, int64_t frames) {
  auto& m = fusion();
  torch::InferenceMode im;
  auto a = torch::randn({frames, m.V, 3}), e = torch::randn({frames, m.V, 3});
  benchmark::DoNotOptimize(m.fuse(a, e).data_ptr());
  for (auto _ : st) benchmark::DoNotOptimize(m.fuse(a, e).data_ptr());
  set_rates(st, frames * bfbench::fusion_fuse_flops_per_frame(), static_cast<double>(frames));
}

void fusion_train(benchmark::State& st, int64_t frames) {
  auto& m = fusion();
  auto a = torch::randn({frames / 2, m.V, 3}), e = torch::randn({frames / 2, m.V, 3});
  torch::optim::Adam opt(m.params(), torch::optim::AdamOptions(3e-4));
  auto step = [&] {
    opt.zero_grad();
    m.loss(0, a).backward();
    m.loss(1, e).backward();
    opt.step();
  };
  step();
  for (auto _ : st) step();
  set_rates(st, frames * bfbench::fusion_train_flops_per_frame(), static_cast<double>(frames));
}

// ---- wav2vec2-base ----------------------------------------------------------------------------

struct Wav2Vec2 {
  static constexpr int64_t E = 768, FF = 3072, H = 12, C = 512, KPOS = 128, GPOS = 16;
  std::vector<Tensor> conv_w;
  Tensor gn_w, gn_b, fp_ln_w, fp_ln_b, fp_w, fp_b, pos_g, pos_v, pos_b, enc_ln_w, enc_ln_b;
  struct Layer {
    Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln1_w, ln1_b, f1_w, f1_b, f2_w, f2_b, ln2_w, ln2_b;
  };
  std::vector<Layer> layers;

  Wav2Vec2() {
    torch::manual_seed(5);
    const int64_t kernel[7] = {10, 3, 3, 3, 3, 2, 2};
    int64_t cin = 1;
    for (auto k : kernel) {
      conv_w.push_back(rnd({C, cin, k}, 1.0 / std::sqrt(static_cast<double>(cin * k))));
      cin = C;
    }
    gn_w = torch::ones({C}), gn_b = torch::zeros({C});
    fp_ln_w = torch::ones({C}), fp_ln_b = torch::zeros({C});
    fp_w = rnd({E, C}, 0.04), fp_b = torch::zeros({E});
    pos_v = rnd({E, E / GPOS, KPOS}, 0.02), pos_g = torch::ones({1, 1, KPOS}), pos_b = torch::zeros({E});
    enc_ln_w = torch::ones({E}), enc_ln_b = torch::zeros({E});
    for (int n = 0; n < 12; ++n) {
      Layer l;
      l.q_w = rnd({E, E}, 0.03), l.q_b = torch::zeros({E});
      l.k_w = rnd({E, E}, 0.03), l.k_b = torch::zeros({E});
      l.v_w = rnd({E, E}, 0.03), l.v_b = torch::zeros({E});
      l.o_w = rnd({E, E}, 0.03), l.o_b = torch::zeros({E});
      l.ln1_w = torch::ones({E}), l.ln1_b = torch::zeros({E});
      l.f1_w = rnd({FF, E}, 0.03), l.f1_b = torch::zeros({FF});
      l.f2_w = rnd({E, FF}, 0.02), l.f2_b = torch::zeros({E});
      l.ln2_w = torch::ones({E}), l.ln2_b = torch::zeros({E});
      layers.push_back(l);
    }
  }

  Tensor forward(const Tensor& audio) const {  // (B, L) → (B, T, E)
    const int64_t stride[7] = {5, 2, 2, 2, 2, 2, 2};
    auto mean = audio.mean(1, true);
    auto var = audio.var(1, /*unbiased=*/false, true);
    Tensor x = ((audio - mean) / torch::sqrt(var + 1e-7)).unsqueeze(1);
    for (int i = 0; i < 7; ++i) {
      x = torch::conv1d(x, conv_w[i], {}, stride[i]);
      if (i == 0) x = torch::group_norm(x, C, gn_w, gn_b, 1e-5);
      x = torch::gelu(x);
    }
    auto feats = x.transpose(1, 2);  // (B, T, C)
    const int64_t B = feats.size(0), T = feats.size(1);
    auto proj = torch::linear(torch::layer_norm(feats, {C}, fp_ln_w, fp_ln_b, 1e-5), fp_w, fp_b);
    auto w = pos_g * pos_v / at::linalg_vector_norm(pos_v, 2, at::IntArrayRef{0, 1}, true, c10::nullopt);
    auto pc = torch::conv1d(proj.transpose(1, 2), w, pos_b, 1, KPOS / 2, 1, GPOS).slice(2, 0, T);
    auto h = torch::layer_norm(proj + torch::gelu(pc).transpose(1, 2), {E}, enc_ln_w, enc_ln_b, 1e-5);
    const double scale = 1.0 / std::sqrt(static_cast<double>(E / H));
    for (const auto& l : layers) {
      auto heads = [&](const Tensor& t) { return t.view({B, T, H, E / H}).transpose(1, 2); };
      Tensor q = heads(torch::linear(h, l.q_w, l.q_b));
      Tensor k = heads(torch::linear(h, l.k_w, l.k_b));
      Tensor v = heads(torch::linear(h, l.v_w, l.v_b));
      auto p = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * scale, -1);
      auto a = torch::matmul(p, v).transpose(1, 2).reshape({B, T, E});
      auto h1 = torch::layer_norm(h + torch::linear(a, l.o_w, l.o_b), {E}, l.ln1_w, l.ln1_b, 1e-5);
      auto f = torch::linear(torch::gelu(torch::linear(h1, l.f1_w, l.f1_b)), l.f2_w, l.f2_b);
      h = torch::layer_norm(h1 + f, {E}, l.ln2_w, l.ln2_b, 1e-5);
    }
    return h;
  }
};

void wav2vec2_forward(benchmark::State& st, int64_t seconds) {
  static Wav2Vec2 m;
  torch::InferenceMode im;
  auto audio = torch::randn({1, 16000 * seconds}) * 0.1;
  int64_t frames = 0;
  const double flops = bfbench::wav2vec2_base_flops(16000 * seconds, &frames);
  benchmark::DoNotOptimize(m.forward(audio).data_ptr());
  for (auto _ : st) benchmark::DoNotOptimize(m.forward(audio).data_ptr());
  set_rates(st, flops, static_cast<double>(seconds));
  st.counters["frames"] = static_cast<double>(frames);
}

void register_models() {
  BF_REG(std::string("fusion/infer/b1/torch"), [](benchmark::State& st) { fusion_infer(st, 1); })->MinTime(1.0);
  BF_REG(std::string("fusion/infer/b32/torch"), [](benchmark::State& st) { fusion_infer(st, 32); })->MinTime(2.0);
  BF_REG(std::string("fusion/train/b32/torch"), [](benchmark::State& st) { fusion_train(st, 32); })->MinTime(2.0);
  BF_REG(std::string("wav2vec2/base/1s/torch"), [](benchmark::State& st) { wav2vec2_forward(st, 1); })->MinTime(2.0);
  BF_REG(std::string("wav2vec2/base/10s/torch"), [](benchmark::State& st) { wav2vec2_forward(st, 10); })->Iterations(1);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  int threads = 1;
  if (const char* t = std::getenv("OMP_NUM_THREADS")) threads = std::max(1, std::atoi(t));
  torch::set_num_threads(threads);
  torch::set_num_interop_threads(1);
  benchmark::AddCustomContext("omp_threads", std::to_string(torch::get_num_threads()));
  benchmark::AddCustomContext("implementation", "libtorch " TORCH_VERSION);
  benchmark::AddCustomContext("torch_parallel_info", at::get_parallel_info());
  const char* ld = std::getenv("LD_LIBRARY_PATH");
  benchmark::AddCustomContext("ld_library_path", ld ? ld : "");
  register_ops();
  register_models();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
