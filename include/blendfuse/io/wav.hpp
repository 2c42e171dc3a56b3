// blendfuse — audio input: WAV (and any other format libsndfile reads) decoded to mono float,
// resampled with libsoxr; and a WAV writer for tests and demos.
//
// * Decoding: libsndfile (PCM 8/16/24/32, float, double, ...), integer PCM normalised to [-1, 1).
//   Multi-channel audio is down-mixed to mono by averaging the channels.
// * Resampling: libsoxr, SOXR_HQ quality, single-threaded (deterministic), one-shot; the output
//   has round(n · to / from) samples.
// * Validation: missing files, files libsndfile cannot decode, zero-length audio, sample rates
//   outside [4000, 384000] Hz and non-finite samples throw IoError("path: ..."). libsndfile
//   silently accepts a RIFF/WAVE file whose data chunk is shorter than its header declares (it
//   just reports fewer frames), so the RIFF chunk list is scanned here and a declared data size
//   larger than what the file holds is reported as truncation; a short read from libsndfile is
//   reported too.
// * Files are read into memory and decoded through libsndfile's virtual I/O; writing encodes to
//   memory the same way and stores the bytes atomically with io::write_file_atomic.
#pragma once

#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "blendfuse/core/tensor.hpp"
#include "blendfuse/io/file.hpp"

namespace blendfuse::io {

inline constexpr int kSpeechSampleRate = 16000;
/// Sample rates outside [kMinSampleRate, kMaxSampleRate] Hz are refused as implausible (a WAV
/// declaring 1 Hz would otherwise make resampling to 16 kHz allocate and run 16000 times longer).
inline constexpr int kMinSampleRate = 4000;
inline constexpr int kMaxSampleRate = 384000;

/// Mono audio.
struct Audio {
  std::vector<float> samples;
  int sample_rate = 0;          // rate of `samples`
  int source_sample_rate = 0;   // rate stored in the file
  int source_channels = 0;      // channels stored in the file (down-mixed to mono)

  double duration() const {
    return sample_rate > 0 ? static_cast<double>(samples.size()) / sample_rate : 0.0;
  }
  /// The samples as a (L,) tensor (a copy).
  Tensor<float> tensor() const {
    return Tensor<float>::from({static_cast<Index>(samples.size())}, samples);
  }
};

/// Sample encodings the writer supports.
enum class WavFormat { Float32, Float64, Pcm16, Pcm24, Pcm32 };

namespace detail {

/// An in-memory file for libsndfile's virtual I/O (read-only over `ro`, or growable `rw`).
struct SfMemFile {
  const std::uint8_t* ro = nullptr;
  std::vector<std::uint8_t>* rw = nullptr;
  sf_count_t size = 0;
  sf_count_t pos = 0;

  static SF_VIRTUAL_IO vio() {
    SF_VIRTUAL_IO v;
    v.get_filelen = +[](void* u) -> sf_count_t { return static_cast<SfMemFile*>(u)->size; };
    v.seek = +[](sf_count_t off, int whence, void* u) -> sf_count_t {
      auto* m = static_cast<SfMemFile*>(u);
      sf_count_t p = whence == SEEK_SET ? off : whence == SEEK_CUR ? m->pos + off : m->size + off;
      if (p < 0) return -1;
      m->pos = p;
      return p;
    };
    v.read = +[](void* dst, sf_count_t n, void* u) -> sf_count_t {
      auto* m = static_cast<SfMemFile*>(u);
      const std::uint8_t* src = m->rw ? m->rw->data() : m->ro;
      const sf_count_t k = std::max<sf_count_t>(0, std::min(n, m->size - m->pos));
      if (k > 0) std::memcpy(dst, src + m->pos, static_cast<std::size_t>(k));
      m->pos += k;
      return k;
    };
    v.write = +[](const void* src, sf_count_t n, void* u) -> sf_count_t {
      auto* m = static_cast<SfMemFile*>(u);
      if (!m->rw) return 0;
      const sf_count_t end = m->pos + n;
      if (end > static_cast<sf_count_t>(m->rw->size())) m->rw->resize(static_cast<std::size_t>(end));
      if (n > 0) std::memcpy(m->rw->data() + m->pos, src, static_cast<std::size_t>(n));
      m->pos = end;
      m->size = std::max(m->size, end);
      return n;
    };
    v.tell = +[](void* u) -> sf_count_t { return static_cast<SfMemFile*>(u)->pos; };
    return v;
  }
};

inline std::uint32_t rd_u32le(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
         (std::uint32_t(p[3]) << 24);
}

/// For RIFF/RF64 WAVE files: throws IoError if the data chunk declares more bytes than the file
/// holds. Other containers are left to libsndfile.
inline void check_riff_data_chunk(const std::vector<std::uint8_t>& b, const std::string& path) {
  if (b.size() < 12) return;
  const bool riff = std::memcmp(b.data(), "RIFF", 4) == 0, rf64 = std::memcmp(b.data(), "RF64", 4) == 0;
  if (!(riff || rf64) || std::memcmp(b.data() + 8, "WAVE", 4) != 0) return;
  std::uint64_t ds64_data = 0;
  std::size_t pos = 12;
  while (pos + 8 <= b.size()) {
    const std::uint8_t* id = b.data() + pos;
    std::uint64_t size = rd_u32le(id + 4);
    if (std::memcmp(id, "ds64", 4) == 0 && pos + 24 <= b.size())
      ds64_data = std::uint64_t(rd_u32le(id + 16)) | (std::uint64_t(rd_u32le(id + 20)) << 32);
    if (std::memcmp(id, "data", 4) == 0) {
      if (size == 0xFFFFFFFFu) size = rf64 ? ds64_data : 0;  // unknown length (streamed)
      const std::uint64_t have = b.size() - (pos + 8);
      if (size > have)
        throw IoError(path, "truncated WAV file: data chunk declares " + std::to_string(size) +
                                " bytes but only " + std::to_string(have) + " are present");
      return;
    }
    pos += 8 + size + (size & 1);
  }
}

inline int sf_subformat(WavFormat f) {
  switch (f) {
    case WavFormat::Float32: return SF_FORMAT_FLOAT;
    case WavFormat::Float64: return SF_FORMAT_DOUBLE;
    case WavFormat::Pcm16: return SF_FORMAT_PCM_16;
    case WavFormat::Pcm24: return SF_FORMAT_PCM_24;
    default: return SF_FORMAT_PCM_32;
  }
}

}  // namespace detail

/// Resamples mono audio from `from_rate` to `to_rate` Hz with libsoxr (HQ, deterministic).
/// Returns round(n · to_rate / from_rate) samples; equal rates return a copy.
inline std::vector<float> resample(const std::vector<float>& x, int from_rate, int to_rate) {
  BF_CHECK(from_rate > 0 && to_rate > 0, ArgumentError, "resample: sample rates must be positive, got ",
           from_rate, " -> ", to_rate);
  if (from_rate == to_rate || x.empty()) return x;
  const auto want = static_cast<std::size_t>(
      std::llround(static_cast<double>(x.size()) * to_rate / static_cast<double>(from_rate)));
  std::vector<float> y(want + 64);
  std::size_t idone = 0, odone = 0;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
  const soxr_runtime_spec_t rt = soxr_runtime_spec(1);
  const soxr_error_t err = soxr_oneshot(from_rate, to_rate, 1, x.data(), x.size(), &idone, y.data(),
                                        y.size(), &odone, &io, &q, &rt);
  if (err) throw ArgumentError(std::string("resample: libsoxr failed: ") + err);
  y.resize(std::min(odone, want));
  y.resize(want, 0.0f);  // pad in the (not observed) case that soxr delivered fewer samples
  return y;
}

/// Decodes an in-memory audio file (`path` names it in errors) to mono float at `target_rate`
/// Hz (`target_rate` <= 0 keeps the file's rate).
inline Audio parse_wav(const std::vector<std::uint8_t>& bytes, const std::string& path,
                       int target_rate = kSpeechSampleRate) {
  if (bytes.empty()) throw IoError(path, "empty file (0 bytes), not a WAV file");
  detail::check_riff_data_chunk(bytes, path);
  detail::SfMemFile mem;
  mem.ro = bytes.data();
  mem.size = static_cast<sf_count_t>(bytes.size());
  SF_VIRTUAL_IO vio = detail::SfMemFile::vio();
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  SNDFILE* sf = sf_open_virtual(&vio, SFM_READ, &info, &mem);
  if (!sf)
    throw IoError(path, std::string("not a readable WAV/audio file (libsndfile: ") + sf_strerror(nullptr) + ")");
  struct Closer { SNDFILE* s; ~Closer() { sf_close(s); } } closer{sf};
  if (info.channels <= 0 || info.samplerate <= 0)
    throw IoError(path, "invalid WAV header (" + std::to_string(info.channels) + " channels, " +
                            std::to_string(info.samplerate) + " Hz)");
  if (info.samplerate < kMinSampleRate || info.samplerate > kMaxSampleRate)
    throw IoError(path, "implausible sample rate " + std::to_string(info.samplerate) + " Hz (supported: " +
                            std::to_string(kMinSampleRate) + " to " + std::to_string(kMaxSampleRate) + " Hz)");
  if (info.frames <= 0) throw IoError(path, "zero-length audio (no samples)");
  const auto frames = static_cast<std::size_t>(info.frames);
  const auto ch = static_cast<std::size_t>(info.channels);
  if (frames > bytes.size())  // every frame takes at least one byte
    throw IoError(path, "corrupt WAV header: " + std::to_string(frames) + " frames declared in a " +
                            std::to_string(bytes.size()) + "-byte file");
  std::vector<float> inter(frames * ch);
  const sf_count_t got = sf_readf_float(sf, inter.data(), info.frames);
  if (got != info.frames)
    throw IoError(path, "truncated audio: read " + std::to_string(got) + " of " +
                            std::to_string(info.frames) + " frames");
  Audio a;
  a.source_sample_rate = info.samplerate;
  a.source_channels = info.channels;
  a.samples.resize(frames);
  for (std::size_t i = 0; i < frames; ++i) {
    double s = 0;
    for (std::size_t c = 0; c < ch; ++c) s += inter[i * ch + c];
    const float v = static_cast<float>(s / static_cast<double>(ch));
    if (!std::isfinite(v)) throw IoError(path, "non-finite sample at frame " + std::to_string(i));
    a.samples[i] = v;
  }
  a.sample_rate = info.samplerate;
  if (target_rate > 0 && target_rate != info.samplerate) {
    a.samples = resample(a.samples, info.samplerate, target_rate);
    a.sample_rate = target_rate;
  }
  return a;
}

/// Reads an audio file (WAV: PCM 16/24/32, float, double; any format libsndfile decodes) as mono
/// float at `target_rate` Hz (16 kHz by default; <= 0 keeps the file's rate).
inline Audio load_wav(const std::string& path, int target_rate = kSpeechSampleRate) {
  return parse_wav(read_file_bytes(path), path, target_rate);
}

/// Encodes interleaved samples (`channels` per frame) as a WAV image.
inline std::vector<std::uint8_t> serialize_wav(const std::vector<float>& interleaved, int sample_rate,
                                               int channels = 1, WavFormat fmt = WavFormat::Float32) {
  BF_CHECK(sample_rate > 0 && channels > 0, ArgumentError, "serialize_wav: bad sample rate ",
           sample_rate, " or channel count ", channels);
  BF_CHECK(interleaved.size() % static_cast<std::size_t>(channels) == 0, ArgumentError,
           "serialize_wav: ", interleaved.size(), " samples is not a multiple of ", channels, " channels");
  std::vector<std::uint8_t> out;
  detail::SfMemFile mem;
  mem.rw = &out;
  SF_VIRTUAL_IO vio = detail::SfMemFile::vio();
  SF_INFO info;
  std::memset(&info, 0, sizeof(info));
  info.samplerate = sample_rate;
  info.channels = channels;
  info.format = SF_FORMAT_WAV | detail::sf_subformat(fmt);
  SNDFILE* sf = sf_open_virtual(&vio, SFM_WRITE, &info, &mem);
  if (!sf) throw ArgumentError(std::string("serialize_wav: libsndfile: ") + sf_strerror(nullptr));
  sf_command(sf, SFC_SET_CLIPPING, nullptr, SF_TRUE);
  const sf_count_t frames = static_cast<sf_count_t>(interleaved.size() / static_cast<std::size_t>(channels));
  const sf_count_t put = frames ? sf_writef_float(sf, interleaved.data(), frames) : 0;
  const int rc = sf_close(sf);
  if (put != frames || rc != 0) throw ArgumentError("serialize_wav: libsndfile failed to encode");
  return out;
}

/// Writes a WAV file atomically (32-bit float by default).
inline void save_wav(const std::string& path, const std::vector<float>& interleaved, int sample_rate,
                     int channels = 1, WavFormat fmt = WavFormat::Float32) {
  const auto bytes = serialize_wav(interleaved, sample_rate, channels, fmt);
  write_file_atomic(path, [&](std::ostream& os) {
    os.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  });
}

inline void save_wav(const std::string& path, const Audio& a, WavFormat fmt = WavFormat::Float32) {
  save_wav(path, a.samples, a.sample_rate, 1, fmt);
}

}  // namespace blendfuse::io
