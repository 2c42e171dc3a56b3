// blendfuse — the fuzz targets' entry points (docs/fuzzing.md).
//
// Each target is a function `void NAME(const std::uint8_t* data, std::size_t size)` that feeds the
// bytes to one loader or parser through its public entry point. A loader may refuse the input
// with a blendfuse exception (blendfuse::Error: IoError, ArgumentError, ShapeError) — that is
// the expected, clean outcome and is swallowed here. Anything else — another exception type
// (std::bad_alloc, nlohmann::json::exception, std::out_of_range, ...), a crash, a hang, a leak
// or a sanitizer report — is a finding.
//
// The same functions are used by
//   tests/fuzz/fuzz_<name>.cpp      libFuzzer binaries (clang++ -fsanitize=fuzzer,address,undefined)
//   tests/test_fuzz_regressions.cpp the normal test suite (g++): every committed regression input
//                                   in tests/fuzz/regressions/<name>/ and every seed in
//                                   tests/fuzz/corpus/<name>/ must load or fail cleanly.
// kTargets at the bottom lists them; scripts/fuzz.sh builds one binary per entry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "blendfuse/core/error.hpp"
#include "blendfuse/data/dataset.hpp"
#include "blendfuse/io/mesh.hpp"
#include "blendfuse/io/npy.hpp"
#include "blendfuse/io/safetensors.hpp"
#include "blendfuse/io/wav.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/nn/faceformer.hpp"
#include "blendfuse/nn/wav2vec2.hpp"
#include "blendfuse/rig/rig.hpp"
#include "blendfuse/rig/solve.hpp"

namespace bf_fuzz {

using Bytes = std::vector<std::uint8_t>;

/// Runs `f`, swallowing the library's own (clean) errors; everything else escapes.
template <class F>
void clean_errors_only(F&& f) {
  try {
    f();
  } catch (const blendfuse::Error&) {
  }
}

inline Bytes to_bytes(const std::uint8_t* data, std::size_t size) {
  return Bytes(data, data + size);
}

// ---- safetensors --------------------------------------------------------------------------------

/// A whole safetensors file: parse, then read every tensor as float (get and get_weights) and int.
inline void safetensors(const std::uint8_t* data, std::size_t size) {
  clean_errors_only([&] {
    const auto f = blendfuse::io::SafeTensorsFile::parse(to_bytes(data, size), "fuzz.safetensors");
    for (const auto& name : f.names()) {
      clean_errors_only([&] { (void)f.get<float>(name); });
      clean_errors_only([&] { (void)f.get_weights<double>(name); });
      clean_errors_only([&] { (void)f.get<std::int32_t>(name, {-1, 3}); });
    }
    (void)f.meta("config");
    (void)f.metadata();
  });
}

/// The JSON header of a safetensors file: the input is the header text; the first byte (if any)
/// sets the size of a data buffer (0..255 bytes of a counting pattern) appended after it.
inline void safetensors_header(const std::uint8_t* data, std::size_t size) {
  std::size_t data_bytes = 0;
  if (size > 0) {
    data_bytes = data[0];
    ++data;
    --size;
  }
  Bytes file(8 + size + data_bytes);
  const std::uint64_t n = size;
  std::memcpy(file.data(), &n, 8);
  if (size) std::memcpy(file.data() + 8, data, size);
  for (std::size_t i = 0; i < data_bytes; ++i) file[8 + size + i] = static_cast<std::uint8_t>(i * 37);
  safetensors(file.data(), file.size());
}

/// The config JSON that models keep in safetensors metadata, through each model's config parser:
/// the fusion module's "config" (DeformationFusionModule::from_safetensors, which stops at the
/// missing tensors after the config), the audio model's "config" (the steps AudioModel::
/// from_safetensors runs before it builds the model), FaceFormer's "faceformer_config" and a
/// wav2vec2 config.json (Wav2Vec2Config::from_file).
inline void model_config(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // Fusion module: a file holding only the metadata.
  clean_errors_only([&] {
    blendfuse::io::SafeTensorsWriter w;
    w.set_metadata("blendfuse.model", "dfm");
    w.set_metadata("config", text);
    const auto f = blendfuse::io::SafeTensorsFile::parse(w.serialize(), "fuzz_dfm.safetensors");
    (void)blendfuse::nn::DeformationFusionModule<float>::from_safetensors(f);
  });
  // The remaining parsers take a parsed JSON value; invalid JSON is a clean IoError in their
  // loaders (they catch nlohmann's parse error), so it ends here.
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    return;
  }
  // Audio model: AudioModel::from_safetensors's config steps (it catches json::exception and
  // ArgumentError and rethrows them as IoError naming the file).
  clean_errors_only([&] {
    try {
      if (!j.is_object() || j.value("model_type", std::string()) != "blendfuse_audio") return;
      auto cfg = blendfuse::nn::AudioModelConfig::from_json(j, "config", blendfuse::nn::AudioModelConfig{});
      cfg.validate();
      (void)cfg.total_stride();
      (void)cfg.w2v.min_samples();
      (void)cfg.to_json().dump();
    } catch (const nlohmann::json::exception& e) {
      throw blendfuse::IoError("fuzz", e.what());
    }
  });
  clean_errors_only([&] {
    auto c = blendfuse::nn::FaceFormerConfig::from_json(j, "faceformer_config");
    (void)c.to_json().dump();
  });
  clean_errors_only([&] {
    auto c = blendfuse::nn::Wav2Vec2Config::from_json(j, "config.json");
    (void)c.min_samples();
    (void)c.num_frames(16000);
  });
}

// ---- npy ----------------------------------------------------------------------------------------

/// A .npy file as float, double, int32, int64 and uint8 arrays, and as a vertex sequence.
inline void npy(const std::uint8_t* data, std::size_t size) {
  const Bytes b = to_bytes(data, size);
  using namespace blendfuse::io;
  clean_errors_only([&] {
    const auto t = parse_npy<float>(b, "fuzz.npy");
    clean_errors_only([&] { (void)to_vertex_sequence(t, "fuzz.npy"); });
    clean_errors_only([&] { (void)to_vertex_sequence(t, "fuzz.npy", 4); });
  });
  clean_errors_only([&] { (void)parse_npy<double>(b, "fuzz.npy"); });
  clean_errors_only([&] { (void)parse_npy<std::int32_t>(b, "fuzz.npy"); });
  clean_errors_only([&] { (void)parse_npy<std::int64_t>(b, "fuzz.npy"); });
  clean_errors_only([&] { (void)parse_npy<std::uint8_t>(b, "fuzz.npy"); });
}

// ---- meshes -------------------------------------------------------------------------------------

inline void check_mesh(const blendfuse::io::Mesh& m) {
  blendfuse::io::validate_mesh(m, "fuzz");  // the parsers promise in-range indices, finite values
}

/// OBJ text, with and without rejecting degenerate faces; a parsed mesh must validate.
inline void obj(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  clean_errors_only([&] { check_mesh(blendfuse::io::parse_obj(text, "fuzz.obj")); });
  clean_errors_only([&] { check_mesh(blendfuse::io::parse_obj(text, "fuzz.obj", true)); });
}

/// A PLY file (ascii, binary little- or big-endian); a parsed mesh must validate.
inline void ply(const std::uint8_t* data, std::size_t size) {
  clean_errors_only([&] { check_mesh(blendfuse::io::parse_ply(to_bytes(data, size), "fuzz.ply")); });
}

// ---- audio --------------------------------------------------------------------------------------

/// A WAV (or any libsndfile) file, resampled to 16 kHz and at its own rate.
inline void wav(const std::uint8_t* data, std::size_t size) {
  const Bytes b = to_bytes(data, size);
  clean_errors_only([&] { (void)blendfuse::io::parse_wav(b, "fuzz.wav"); });
  clean_errors_only([&] { (void)blendfuse::io::parse_wav(b, "fuzz.wav", 0); });
}

// ---- dataset folders ----------------------------------------------------------------------------

/// A per-process scratch folder (removed at exit).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bf_fuzz_dataset_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) std::abort();
    static std::string keep = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

/// Whether `name` is an allowed relative path inside the scratch dataset: one optional folder
/// level from a fixed list, a file name of [A-Za-z0-9_.-] characters, no "..".
inline bool allowed_dataset_path(std::string_view name) {
  if (name.empty() || name.size() > 64 || name.find("..") != std::string_view::npos) return false;
  std::string_view file = name;
  if (const auto slash = name.find('/'); slash != std::string_view::npos) {
    const std::string_view dir = name.substr(0, slash);
    if (dir != "regions" && dir != "templates" && dir != "speech" && dir != "expression" &&
        dir != "vertices_npy" && dir != "wav")
      return false;
    file = name.substr(slash + 1);
  }
  if (file.empty() || file[0] == '.') return false;
  for (char c : file)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) return false;
  return true;
}

/// Splits a dataset archive into (path, content) entries. Format: sections, each starting with a
/// line "@@@ <relative path>\n" followed by the file's bytes up to the next "\n@@@ " (or the end).
/// Entries with a path allowed_dataset_path refuses are skipped.
inline std::vector<std::pair<std::string, std::string>> split_dataset_archive(std::string_view in) {
  std::vector<std::pair<std::string, std::string>> out;
  static constexpr std::string_view kMark = "@@@ ";
  std::size_t pos = in.rfind(kMark, 0) == 0 ? 0 : in.find(std::string("\n") + std::string(kMark));
  if (pos != 0 && pos != std::string_view::npos) ++pos;
  while (pos != std::string_view::npos && pos < in.size()) {
    const std::size_t name_begin = pos + kMark.size();
    const std::size_t nl = in.find('\n', name_begin);
    if (nl == std::string_view::npos) break;
    const std::string_view name = in.substr(name_begin, nl - name_begin);
    std::size_t next = in.find(std::string("\n") + std::string(kMark), nl);
    const std::size_t end = next == std::string_view::npos ? in.size() : next;
    if (allowed_dataset_path(name))
      out.emplace_back(std::string(name), std::string(in.substr(nl + 1, end - (nl + 1))));
    pos = next == std::string_view::npos ? next : next + 1;
  }
  return out;
}

/// A dataset folder: the input (a dataset archive, see split_dataset_archive) is written to a
/// fresh scratch folder, which Dataset::load reads with the default options and, when a
/// units.txt is absent, with units forced to "mm".
inline void dataset(const std::uint8_t* data, std::size_t size) {
  namespace fs = std::filesystem;
  const fs::path& dir = scratch_dir();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) fs::remove_all(e.path(), ec);
  const auto entries =
      split_dataset_archive(std::string_view(reinterpret_cast<const char*>(data), size));
  for (const auto& [name, content] : entries) {
    const fs::path p = dir / name;
    fs::create_directories(p.parent_path(), ec);
    std::ofstream(p, std::ios::binary).write(content.data(), static_cast<std::streamsize>(content.size()));
  }
  clean_errors_only([&] { (void)blendfuse::data::Dataset::load(dir.string()); });
  clean_errors_only([&] {
    blendfuse::data::DatasetOptions opt;
    opt.units = "mm";
    (void)blendfuse::data::Dataset::load(dir.string(), opt);
  });
}

// ---- model files --------------------------------------------------------------------------------

/// A model file written to the scratch folder and read by the loaders that take a path: the
/// fusion module (DeformationFusionModule::load: config, geometry map, faces, parameters), a rig
/// (rig::Rig::load) and a rig map (rig::LinearMap::load).
inline void model_file(const std::uint8_t* data, std::size_t size) {
  const std::string path = (scratch_dir() / "model.safetensors").string();
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  clean_errors_only([&] { (void)blendfuse::nn::DeformationFusionModule<float>::load(path); });
  clean_errors_only([&] { (void)blendfuse::rig::Rig::load(path); });
  clean_errors_only([&] { (void)blendfuse::rig::LinearMap::load(path); });
}

/// Every target: name (the corpus and regression folder name, fuzz_<name> the binary) and entry.
struct Target {
  const char* name;
  void (*run)(const std::uint8_t*, std::size_t);
};
inline constexpr Target kTargets[] = {
    {"safetensors", safetensors}, {"safetensors_header", safetensors_header},
    {"model_config", model_config}, {"npy", npy}, {"obj", obj}, {"ply", ply}, {"wav", wav},
    {"dataset", dataset}, {"model_file", model_file},
};

}  // namespace bf_fuzz
