#include "test_util.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "blendfuse/io/safetensors.hpp"

using namespace blendfuse;
namespace fs = std::filesystem;

namespace {
std::string tmp_path(const std::string& name) {
  const auto dir = fs::temp_directory_path() / "blendfuse_tests";
  fs::create_directories(dir);
  return (dir / name).string();
}
void write_bytes(const std::string& path, const std::vector<std::uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
std::vector<std::uint8_t> make_header_file(const std::string& json, std::size_t data_bytes) {
  std::vector<std::uint8_t> out(8 + json.size() + data_bytes, 0);
  const std::uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, json.data(), json.size());
  return out;
}
}  // namespace

TEST_CASE("safetensors: round trip with metadata, f32/f64/i64") {
  Rng rng(1);
  Tensor<float> a({3, 4});
  fill_normal(a, rng);
  Tensor<double> b({5});
  fill_normal(b, rng);
  auto c = Tensor<std::int64_t>::from({2}, {7, -9});
  io::SafeTensorsWriter w;
  w.add("enc.weight", a);
  w.add("b", b);
  w.add("idx", c);
  w.set_metadata("config", R"({"k":64})");
  const auto path = tmp_path("rt.safetensors");
  w.save(path);
  auto f = io::SafeTensorsFile::load(path);
  CHECK(f.meta("config") == R"({"k":64})");
  CHECK(f.names().size() == 3);
  CHECK(f.info("enc.weight").dtype == "F32");
  auto a2 = f.get<float>("enc.weight", {3, 4});
  BFT_CHECK_CLOSE(a2, a, 0.0, 0.0);
  auto b2 = f.get<double>("b");
  BFT_CHECK_CLOSE(b2, b, 0.0, 0.0);
  CHECK(f.get<double>("idx")[1] == -9.0);
  CHECK_THROWS_WITH_AS(f.get<float>("enc.weight", {4, 3}), doctest::Contains("has shape (3, 4), expected (4, 3)"), IoError);
  CHECK_THROWS_WITH_AS(f.get<float>("missing"), doctest::Contains("no tensor named 'missing'"), IoError);
}

TEST_CASE("safetensors: reads files written by the Python reference writer (F16/BF16 too)") {
  // tests/vectors/* are written by tests/torch/stio.py; any of them must parse.
  for (const auto& e : fs::directory_iterator(bft::source_path("tests/vectors"))) {
    if (e.path().extension() != ".safetensors") continue;
    CAPTURE(e.path().string());
    CHECK_NOTHROW(io::SafeTensorsFile::load(e.path().string()));
  }
  // A hand-made F16/BF16 file: 1.5 in half is 0x3E00, -2.0 in bf16 is 0xC000.
  const std::string json = R"({"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"g":{"dtype":"BF16","shape":[1],"data_offsets":[2,4]}})";
  auto bytes = make_header_file(json, 4);
  const std::size_t d = 8 + json.size();
  bytes[d] = 0x00; bytes[d + 1] = 0x3E; bytes[d + 2] = 0x00; bytes[d + 3] = 0xC0;
  auto f = io::SafeTensorsFile::parse(bytes, "mem");
  CHECK(f.get<float>("h")[0] == 1.5f);
  CHECK(f.get<float>("g")[0] == -2.0f);
}

TEST_CASE("safetensors: bad files give errors that name the file and the problem") {
  Tensor<float> a({4, 4});
  io::SafeTensorsWriter w;
  w.add("w", a);
  const auto good = w.serialize();

  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::load(tmp_path("nope.safetensors")),
                         doctest::Contains("nope.safetensors: file not found"), IoError);
  }
  SUBCASE("truncated data") {
    const auto p = tmp_path("trunc.safetensors");
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.end() - 10));
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::load(p), doctest::Contains("trunc.safetensors: tensor 'w': data_offsets"), IoError);
  }
  SUBCASE("truncated header") {
    const auto p = tmp_path("trunc_header.safetensors");
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.begin() + 20));
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::load(p), doctest::Contains("header length"), IoError);
  }
  SUBCASE("too short") {
    const auto p = tmp_path("short.safetensors");
    write_bytes(p, {1, 2, 3});
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::load(p), doctest::Contains("short.safetensors: truncated"), IoError);
  }
  SUBCASE("corrupt JSON") {
    auto b = good;
    b[9] = '!';
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::parse(b, "bad.st"), doctest::Contains("bad.st: corrupt safetensors header (invalid JSON)"), IoError);
  }
  SUBCASE("shape does not match byte range") {
    auto b = make_header_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::parse(b, "x"), doctest::Contains("does not match shape (3,) of F32"), IoError);
  }
  SUBCASE("unknown dtype") {
    auto b = make_header_file(R"({"w":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", 1);
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::parse(b, "x"), doctest::Contains("unsupported dtype 'F8'"), IoError);
  }
  SUBCASE("overlap and holes and trailing bytes") {
    auto o = make_header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8);
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::parse(o, "x"), doctest::Contains("overlap"), IoError);
    auto h = make_header_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8);
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::parse(h, "x"), doctest::Contains("hole"), IoError);
    auto t = make_header_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8);
    CHECK_THROWS_WITH_AS(io::SafeTensorsFile::parse(t, "x"), doctest::Contains("trailing bytes"), IoError);
  }
  SUBCASE("integer data are not read as float weights") {
    auto b = make_header_file(R"({"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", 8);
    const auto f = io::SafeTensorsFile::parse(b, "relabelled.safetensors");
    CHECK_THROWS_WITH_AS(f.get_weights<float>("w"), doctest::Contains("relabelled.safetensors: tensor 'w' has dtype I32, expected floating-point values"), IoError);
    CHECK_THROWS_AS(f.get_weights<double>("w"), IoError);
    CHECK(f.get<float>("w").numel() == 2);  // an explicit conversion is still possible
    auto g = make_header_file(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8);
    CHECK(io::SafeTensorsFile::parse(g, "ok").get_weights<float>("w").numel() == 1);
  }
  SUBCASE("failed write leaves no file behind") {
    CHECK_THROWS_AS(w.save(tmp_path("no_such_dir/out.safetensors")), IoError);
    CHECK_FALSE(fs::exists(tmp_path("no_such_dir")));
  }
}
