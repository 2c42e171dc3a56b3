// blendfuse — FaceFormer's fixed tensors: ALiBi slopes, the biased causal self-attention mask, the
// audio alignment mask and the periodic positional encoding (see nn/faceformer.hpp). Computed
// for any length (FaceFormer precomputes 600 frames).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"

namespace blendfuse::nn {

/// ALiBi's / FaceFormer's get_slopes(n): for n a power of two the geometric sequence
/// start·start^i with start = 2^(−8/n); otherwise the slopes of the closest lower power of two
/// followed by every other slope of twice that power.
inline std::vector<double> faceformer_alibi_slopes(Index n) {
  BF_CHECK(n > 0, ArgumentError, "faceformer_alibi_slopes: n must be positive, got ", n);
  auto pow2 = [](Index m) {
    const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(m)) - 3)));
    std::vector<double> s(static_cast<std::size_t>(m));
    for (Index i = 0; i < m; ++i) s[static_cast<std::size_t>(i)] = start * std::pow(start, static_cast<double>(i));
    return s;
  };
  Index closest = 1;
  while (closest * 2 <= n) closest *= 2;
  if (closest == n) return pow2(n);
  std::vector<double> s = pow2(closest);
  const std::vector<double> more = faceformer_alibi_slopes(2 * closest);
  for (Index i = 0; i < n - closest; ++i) s.push_back(more[static_cast<std::size_t>(2 * i)]);
  return s;
}

/// The biased causal self-attention mask (heads, T, T): −slope_h·floor((i − j)/period) for
/// i − window < j ≤ i (window 0: every j ≤ i), −inf elsewhere.
template <class T>
Tensor<T> faceformer_biased_mask(Index heads, Index frames, Index period, Index window = 0) {
  BF_CHECK(frames >= 0 && period > 0 && window >= 0, ArgumentError,
           "faceformer_biased_mask: bad frames ", frames, ", period ", period, " or window ", window);
  const std::vector<double> slopes = faceformer_alibi_slopes(heads);
  Tensor<T> m({heads, frames, frames});
  const T ninf = -std::numeric_limits<T>::infinity();
  for (Index h = 0; h < heads; ++h)
    for (Index i = 0; i < frames; ++i) {
      T* row = m.data() + (h * frames + i) * frames;
      for (Index j = 0; j < frames; ++j)
        row[j] = j > i || (window > 0 && i - j >= window)
                     ? ninf
                     : static_cast<T>(-slopes[static_cast<std::size_t>(h)] *
                                        static_cast<double>((i - j) / period));
    }
  return m;
}

/// FaceFormer's "vocaset" encoder-decoder alignment mask (T, S): 0 where j == i, −inf elsewhere.
template <class T>
Tensor<T> faceformer_alignment_mask(Index frames, Index audio_frames) {
  Tensor<T> m = Tensor<T>::full({frames, audio_frames}, -std::numeric_limits<T>::infinity());
  for (Index i = 0; i < std::min(frames, audio_frames); ++i) m(i, i) = T(0);
  return m;
}

/// One period of the periodic positional encoding, (period, d); row t mod period is added to
/// frame t.
template <class T>
Tensor<T> faceformer_ppe_table(Index d, Index period) {
  BF_CHECK(d > 0 && d % 2 == 0 && period > 0, ArgumentError,
           "faceformer_ppe_table: d must be even and positive, period positive; got d = ", d,
           ", period = ", period);
  Tensor<T> pe({period, d});
  for (Index t = 0; t < period; ++t)
    for (Index i = 0; i < d; i += 2) {
      const double w = std::exp(static_cast<double>(i) * (-std::log(10000.0) / static_cast<double>(d)));
      pe(t, i) = static_cast<T>(std::sin(static_cast<double>(t) * w));
      pe(t, i + 1) = static_cast<T>(std::cos(static_cast<double>(t) * w));
    }
  return pe;
}

}  // namespace blendfuse::nn
