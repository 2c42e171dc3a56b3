// The fuzz targets' inputs in the normal test suite (docs/fuzzing.md): every committed regression
// input (tests/fuzz/regressions/<target>/, inputs the fuzzers once crashed or hung on) and every
// seed (tests/fuzz/corpus/<target>/) goes through the same entry point as the fuzzer
// (tests/fuzz/targets.hpp) and must load or fail with a blendfuse exception — never crash or
// throw anything else. The seeds must also be valid inputs that load.
#include "test_util.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>

#include "fuzz/targets.hpp"

using namespace blendfuse;
namespace fs = std::filesystem;

namespace {

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename().string() != "README.md") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

void run_all_in(const std::string& folder) {
  for (const auto& t : bf_fuzz::kTargets) {
    const fs::path dir = bft::source_path("tests/fuzz/" + folder + "/" + t.name);
    for (const auto& f : files_in(dir)) {
      const auto bytes = io::read_file_bytes(f.string());
      INFO("target ", t.name, ", input ", f.string());
      const auto start = std::chrono::steady_clock::now();
      CHECK_NOTHROW(t.run(bytes.data(), bytes.size()));
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      CHECK(s < 10.0);  // the fuzzers' -timeout: an input that takes longer is a hang finding
    }
  }
}

}  // namespace

TEST_CASE("fuzz regressions: every committed input loads or fails cleanly") {
  run_all_in("regressions");
}

TEST_CASE("fuzz seeds: every seed goes through its target cleanly") {
  run_all_in("corpus");
}

TEST_CASE("fuzz seeds: every target has seeds, and each seed is a valid input") {
  for (const auto& t : bf_fuzz::kTargets) {
    INFO("target ", t.name);
    CHECK(!files_in(bft::source_path(std::string("tests/fuzz/corpus/") + t.name)).empty());
  }
  auto seeds = [](const char* t) { return files_in(bft::source_path(std::string("tests/fuzz/corpus/") + t)); };
  for (const auto& f : seeds("safetensors")) {
    INFO(f.string());
    CHECK_NOTHROW(io::SafeTensorsFile::load(f.string()));
  }
  for (const auto& f : seeds("npy")) {
    INFO(f.string());
    const auto b = io::read_file_bytes(f.string());
    CHECK_NOTHROW(io::parse_npy_header(b, f.string()));
  }
  for (const auto& f : seeds("obj")) {
    INFO(f.string());
    CHECK(io::load_obj(f.string()).num_faces() > 0);
  }
  for (const auto& f : seeds("ply")) {
    INFO(f.string());
    CHECK(io::load_ply(f.string()).num_faces() > 0);
  }
  for (const auto& f : seeds("wav")) {
    INFO(f.string());
    CHECK(io::load_wav(f.string()).samples.size() > 0);
  }
  for (const auto& f : seeds("model_file")) {
    INFO(f.string());
    const std::string n = f.filename().string();
    if (n.rfind("dfm", 0) == 0) CHECK(nn::DeformationFusionModule<float>::load(f.string()).config().vertices == 4);
    else if (n.rfind("rig_map", 0) == 0) CHECK(rig::LinearMap::load(f.string()).L.rows() == 2);
    else CHECK(rig::Rig::load(f.string()).num_shapes() == 2);
  }
  for (const auto& f : seeds("dataset")) {
    INFO(f.string());
    const auto text = io::read_file_text(f.string());
    const auto entries = bf_fuzz::split_dataset_archive(text);
    CHECK(entries.size() >= 3);
    const fs::path dir = fs::temp_directory_path() / "blendfuse_tests_fuzz_seed";
    fs::remove_all(dir);
    for (const auto& [name, content] : entries) {
      fs::create_directories((dir / name).parent_path());
      std::ofstream(dir / name, std::ios::binary).write(content.data(), static_cast<std::streamsize>(content.size()));
    }
    const auto ds = data::Dataset::load(dir.string());
    CHECK(ds.num_vertices() == 4);
    CHECK(!ds.speech.empty());
  }
}

TEST_CASE("fuzz dataset archive: only paths inside the scratch folder are written") {
  CHECK(bf_fuzz::allowed_dataset_path("template.obj"));
  CHECK(bf_fuzz::allowed_dataset_path("speech/s1_a.npy"));
  CHECK_FALSE(bf_fuzz::allowed_dataset_path("../x"));
  CHECK_FALSE(bf_fuzz::allowed_dataset_path("/etc/passwd"));
  CHECK_FALSE(bf_fuzz::allowed_dataset_path("speech/../../x"));
  CHECK_FALSE(bf_fuzz::allowed_dataset_path("other/x.npy"));
  CHECK_FALSE(bf_fuzz::allowed_dataset_path("speech/a/b.npy"));
  CHECK_FALSE(bf_fuzz::allowed_dataset_path("speech/.hidden"));
  const auto e = bf_fuzz::split_dataset_archive("@@@ a.txt\nhello\n@@@ ../evil\nx\n@@@ regions/lips.txt\n1\n");
  REQUIRE(e.size() == 2);
  CHECK(e[0].first == "a.txt");
  CHECK(e[0].second == "hello");
  CHECK(e[1].first == "regions/lips.txt");
  CHECK(e[1].second == "1\n");
}

// ---- the findings, one by one, with the messages they now give ------------------------------------

TEST_CASE("finding: a float tensor read as integers must hold exact in-range integers") {
  io::SafeTensorsWriter w;
  w.add("ok", Tensor<float>::from({3}, {0.f, -2.f, 2147483520.f}));
  w.add("big", Tensor<float>::from({2}, {1.f, 6.25e28f}));
  w.add("frac", Tensor<double>::from({1}, {2.5}));
  w.add("nan", Tensor<float>::from({1}, {std::nanf("")}));
  w.add("i64", Tensor<std::int64_t>::from({1}, {std::int64_t(1) << 40}));
  const auto f = io::SafeTensorsFile::parse(w.serialize(), "m.safetensors");
  const auto ok = f.get<std::int32_t>("ok");
  CHECK(ok[2] == 2147483520);
  CHECK_THROWS_WITH_AS(f.get<std::int32_t>("big"),
                       doctest::Contains("m.safetensors: tensor 'big' (F32) holds 6.25"), IoError);
  CHECK_THROWS_WITH_AS(f.get<std::int32_t>("big"), doctest::Contains("at element 1, not an integer"), IoError);
  CHECK_THROWS_AS(f.get<std::int32_t>("frac"), IoError);
  CHECK_THROWS_AS(f.get<std::int64_t>("nan"), IoError);
  CHECK_THROWS_AS(f.get<std::int32_t>("i64"), IoError);
  CHECK(f.get<std::int64_t>("i64")[0] == (std::int64_t(1) << 40));
}

TEST_CASE("finding: SafeTensorsWriter refuses names and metadata that are not UTF-8") {
  io::SafeTensorsWriter w;
  w.add("x", Tensor<float>({1}));
  w.set_metadata("config", std::string("{\"a\": \"\x8d\"}"));
  CHECK_THROWS_WITH_AS(w.serialize(), doctest::Contains("not valid UTF-8"), ArgumentError);
  io::SafeTensorsWriter w2;
  w2.add(std::string("bad\xff"), Tensor<float>({1}));
  CHECK_THROWS_AS(w2.serialize(), ArgumentError);
}

TEST_CASE("finding: an absurd PLY face index is reported, not cast") {
  const std::string ply =
      "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
      "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
      "0 0 0\n1 0 0\n0 1 0\n3 0 1 333333333333333333333333333333333333333333333333333333\n";
  CHECK_THROWS_WITH_AS(io::parse_ply(std::vector<std::uint8_t>(ply.begin(), ply.end()), "m.ply"),
                       doctest::Contains("m.ply: face index 3.33333e+53 is out of range (file has 3 vertices)"),
                       IoError);
}

TEST_CASE("finding: shapes whose element count or strides overflow are refused") {
  // found by reading the loaders while fuzzing (the fuzzers did not reach these in minutes):
  // a (2^32, 2^32) F32 tensor claimed 0 bytes (the count wrapped to 0), and zero-sized arrays
  // such as (0, 2^42, 2^42) passed the size check but overflowed the Tensor's strides.
  const std::string big = "4294967296000";
  auto st = [](const std::string& shape) {
    const std::string h = "{\"x\":{\"dtype\":\"F32\",\"shape\":[" + shape + "],\"data_offsets\":[0,0]}}";
    std::vector<std::uint8_t> b(8 + h.size());
    const std::uint64_t n = h.size();
    std::memcpy(b.data(), &n, 8);
    std::memcpy(b.data() + 8, h.data(), h.size());
    return b;
  };
  CHECK_THROWS_WITH_AS(io::SafeTensorsFile::parse(st("4294967296,4294967296"), "w.safetensors"),
                       "w.safetensors: tensor 'x': shape (4294967296, 4294967296) is too large", IoError);
  CHECK_THROWS_AS(io::SafeTensorsFile::parse(st("0," + big + "," + big), "w.safetensors"), IoError);
  CHECK(io::SafeTensorsFile::parse(st("0,4294967296"), "w.safetensors").get<float>("x").numel() == 0);
  auto npy = [](const std::string& shape) {
    std::string d = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
    while ((10 + d.size() + 1) % 64) d += ' ';
    d += '\n';
    std::vector<std::uint8_t> b = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                   static_cast<std::uint8_t>(d.size() & 0xff), static_cast<std::uint8_t>(d.size() >> 8)};
    b.insert(b.end(), d.begin(), d.end());
    return b;
  };
  CHECK_THROWS_WITH_AS(io::parse_npy<float>(npy(big + ", " + big + ", 0"), "a.npy"),
                       doctest::Contains("a.npy: shape (4294967296000, 4294967296000, 0) is too large"), IoError);
  CHECK_THROWS_AS(io::parse_npy<float>(npy("0, " + big + ", " + big), "a.npy"), IoError);
  CHECK(io::parse_npy<float>(npy("0, " + big), "a.npy").numel() == 0);
}
