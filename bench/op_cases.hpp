// blendfuse benchmarks — the op shapes every backend (and the LibTorch peer) runs, with their
// nominal FLOP counts. Dependency-free so the peer (bench/peers/) shares it without blendfuse.
//
// Shapes come from the two models: the fusion encoder's conv blocks (paper scale: 128×128 map,
// channels 32-64-128-256-256-256, batch 32 or 1), its decoder (V·3 = 32571 rows, K = 128), and
// wav2vec2-base on 10 s of audio where noted (T = 499 frames, E = 768, 12 heads) or its conv
// feature extractor on 1 s.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bfbench {

struct Conv2dCase {
  std::string tag;
  std::int64_t n, cin, h, w, cout, k, stride, pad;
  std::int64_t hout() const { return (h + 2 * pad - k) / stride + 1; }
  std::int64_t wout() const { return (w + 2 * pad - k) / stride + 1; }
  double flops() const { return 2.0 * n * cout * hout() * wout() * cin * k * k; }
};

struct Conv1dCase {
  std::string tag;
  std::int64_t n, cin, l, cout, k, stride;
  std::int64_t lout() const { return (l - k) / stride + 1; }
  double flops() const { return 2.0 * n * cout * lout() * cin * k; }
};

struct LinearCase {
  std::string tag;
  std::int64_t rows, in, out;
  double flops() const { return 2.0 * rows * in * out; }
};

struct MatmulCase {
  std::string tag;
  std::int64_t batch, m, k, n;
  double flops() const { return 2.0 * batch * m * k * n; }
};

struct ShapeCase {
  std::string tag;
  std::vector<std::int64_t> shape;
  double numel() const {
    double n = 1;
    for (auto d : shape) n *= static_cast<double>(d);
    return n;
  }
};

inline const std::vector<Conv2dCase>& conv2d_cases() {
  static const std::vector<Conv2dCase> c{
      {"enc1_b32", 32, 4, 128, 128, 32, 3, 2, 1},
      {"enc2_b32", 32, 32, 64, 64, 64, 3, 2, 1},
      {"enc4_b32", 32, 128, 16, 16, 256, 3, 2, 1},
      {"enc2_b1", 1, 32, 64, 64, 64, 3, 2, 1},
      {"enc4_b1", 1, 128, 16, 16, 256, 3, 2, 1},
  };
  return c;
}

inline const std::vector<Conv1dCase>& conv1d_cases() {
  static const std::vector<Conv1dCase> c{
      {"w2v_l0_1s", 1, 1, 16000, 512, 10, 5},
      {"w2v_l1_1s", 1, 512, 3199, 512, 3, 2},
  };
  return c;
}

inline const std::vector<LinearCase>& linear_cases() {
  static const std::vector<LinearCase> c{
      {"decoder_b32", 32, 128, 32571},
      {"decoder_b1", 1, 128, 32571},
      {"w2v_ffn_10s", 499, 768, 3072},
      {"w2v_qkv_10s", 499, 768, 768},
  };
  return c;
}

inline const std::vector<MatmulCase>& matmul_cases() {
  static const std::vector<MatmulCase> c{{"w2v_scores_10s", 12, 499, 64, 499}};
  return c;
}

inline const std::vector<ShapeCase>& instance_norm_cases() {
  static const std::vector<ShapeCase> c{{"enc2_b32", {32, 64, 32, 32}}, {"enc4_b32", {32, 256, 8, 8}}};
  return c;
}
inline const std::vector<ShapeCase>& relu_cases() {
  static const std::vector<ShapeCase> c{{"enc2_b32", {32, 64, 32, 32}}};
  return c;
}
inline const std::vector<ShapeCase>& layer_norm_cases() {
  static const std::vector<ShapeCase> c{{"w2v_10s", {1, 499, 768}}};
  return c;
}
inline const std::vector<ShapeCase>& gelu_cases() {
  static const std::vector<ShapeCase> c{{"w2v_ffn_10s", {1, 499, 3072}}};
  return c;
}
inline const std::vector<ShapeCase>& softmax_cases() {
  static const std::vector<ShapeCase> c{{"w2v_probs_10s", {1, 12, 499, 499}}};
  return c;
}

// ---- the models -----------------------------------------------------------------------------

/// The paper-scale fusion module the model benchmarks build (ours and the peer alike).
struct FusionScale {
  static constexpr std::int64_t grid_rows = 141, grid_cols = 77;  // 141 × 77 = 10857 vertices
  static constexpr std::int64_t vertices = grid_rows * grid_cols;
  static constexpr std::int64_t map_size = 128;
  static constexpr std::int64_t k_a = 64, k_e = 64;
  static std::vector<std::int64_t> channels() { return {32, 64, 128, 256, 256, 256}; }
};

/// Multiply-adds of one conv encoder forward per sample (convs + fc; 4 input channels).
inline double fusion_encoder_macs() {
  double m = 0;
  std::int64_t s = FusionScale::map_size, cin = 4;
  for (auto cout : FusionScale::channels()) {
    s = (s + 2 - 3) / 2 + 1;
    m += static_cast<double>(s) * s * cout * cin * 9;
    cin = cout;
  }
  return m + static_cast<double>(cin) * s * s * (FusionScale::k_a + FusionScale::k_e);
}
inline double fusion_decoder_macs() {
  return static_cast<double>(FusionScale::vertices) * 3 * (FusionScale::k_a + FusionScale::k_e);
}
/// Nominal FLOPs of one fused frame (two encoders + decoder).
inline double fusion_fuse_flops_per_frame() { return 2 * (2 * fusion_encoder_macs() + fusion_decoder_macs()); }
/// Nominal FLOPs of one training frame: forward (one encoder + decoder) and backward (2×).
inline double fusion_train_flops_per_frame() { return 3 * 2 * (fusion_encoder_macs() + fusion_decoder_macs()); }

/// wav2vec2-base (HF config) forward FLOPs for `samples` 16 kHz samples.
inline double wav2vec2_base_flops(std::int64_t samples, std::int64_t* frames_out = nullptr) {
  const std::int64_t kernel[7] = {10, 3, 3, 3, 3, 2, 2}, stride[7] = {5, 2, 2, 2, 2, 2, 2};
  double m = 0;
  std::int64_t n = samples, cin = 1;
  for (int i = 0; i < 7; ++i) {
    n = (n - kernel[i]) / stride[i] + 1;
    m += static_cast<double>(n) * 512 * cin * kernel[i];
    cin = 512;
  }
  const double T = static_cast<double>(n), E = 768, F = 3072;
  m += T * 512 * E;                  // feature projection
  m += T * E * (E / 16) * 128;       // grouped positional conv
  m += 12 * (T * (4 * E * E + 2 * E * F) + 2 * T * T * E);  // layers: projections, FFN, attention
  if (frames_out) *frames_out = n;
  return 2 * m;
}

}  // namespace bfbench
