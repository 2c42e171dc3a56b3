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
