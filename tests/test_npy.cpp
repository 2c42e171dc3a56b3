#include "test_util.hpp"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "blendfuse/io/npy.hpp"

using namespace blendfuse;
namespace fs = std::filesystem;

namespace {
std::string tmp_path(const std::string& name) {
  const auto dir = fs::temp_directory_path() / "blendfuse_tests_npy";
  fs::create_directories(dir);
  return (dir / name).string();
}
void write_bytes(const std::string& path, const std::vector<std::uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
std::string data(const std::string& name) { return bft::source_path("tests/data/" + name); }

/// A v1.0 .npy image with the given header dict (padded like NumPy) and raw data bytes.
std::vector<std::uint8_t> npy_with_header(std::string dict, std::size_t data_bytes) {
  while ((10 + dict.size() + 1) % 64 != 0) dict += ' ';
  dict += '\n';
  std::vector<std::uint8_t> out(10 + dict.size() + data_bytes, 0);
  const std::uint8_t prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                   static_cast<std::uint8_t>(dict.size() & 0xFF),
                                   static_cast<std::uint8_t>(dict.size() >> 8)};
  std::memcpy(out.data(), prefix, 10);
  std::memcpy(out.data() + 10, dict.data(), dict.size());
  return out;
}
}  // namespace

TEST_CASE("npy: files written by NumPy (v1.0, v2.0, v3.0; f4, f8, i4, i8; 0-d and empty)") {
  const std::vector<float> expect = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f};
  for (const char* name : {"f4_2x3.npy", "f4_2x3_v2.npy", "f4_2x3_v3.npy"}) {
    CAPTURE(name);
    auto t = io::load_npy<float>(data(name));
    REQUIRE(t.shape() == Shape{2, 3});
    for (Index i = 0; i < 6; ++i) CHECK(t[i] == expect[static_cast<std::size_t>(i)]);
    auto d = io::load_npy<double>(data(name));
    CHECK(d(1, 2) == 1.5);
  }
  auto h = io::parse_npy_header(io::read_file_bytes(data("f4_2x3_v2.npy")), "x");
  CHECK(h.major == 2);
  CHECK(h.data_offset % 64 == 0);

  // <f8 converted to float on load: values are k / 7.
  auto s = io::load_npy<float>(data("f8_seq_2x4x3.npy"));
  REQUIRE(s.shape() == Shape{2, 4, 3});
  for (Index i = 0; i < s.numel(); ++i) CHECK(s[i] == static_cast<float>(static_cast<double>(i) / 7.0));
  auto sd = io::load_npy<double>(data("f8_seq_2x4x3.npy"));
  CHECK(sd(1, 3, 2) == 23.0 / 7.0);

  auto i4 = io::load_npy<std::int32_t>(data("i4_5.npy"));
  REQUIRE(i4.shape() == Shape{5});
  CHECK(i4[0] == -3);
  CHECK(i4[4] == 2147483647);
  auto i8 = io::load_npy<std::int64_t>(data("i8_2x2.npy"));
  CHECK(i8(1, 1) == (std::int64_t(1) << 40));
  CHECK(io::load_npy<double>(data("i8_2x2.npy"))(0, 0) == -5.0);
  CHECK_THROWS_WITH_AS(io::load_npy<std::int32_t>(data("i8_2x2.npy")),
                       doctest::Contains("i8_2x2.npy: value 1099511627776 at flat index 3 does not fit"), IoError);
  CHECK_THROWS_WITH_AS(io::load_npy<std::int32_t>(data("f4_2x3.npy")),
                       doctest::Contains("f4_2x3.npy: floating-point dtype '<f4' cannot be loaded as an integer array"), IoError);

  auto sc = io::load_npy<float>(data("f4_scalar.npy"));
  CHECK(sc.ndim() == 0);
  CHECK(sc.numel() == 1);
  CHECK(sc[0] == 2.5f);
  auto e = io::load_npy<float>(data("f4_empty_0x3.npy"));
  CHECK(e.shape() == Shape{0, 3});
}

TEST_CASE("npy: writer is byte-identical to numpy.save and round trips") {
  auto a = Tensor<float>::from({2, 3}, {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f});
  CHECK(io::serialize_npy(a) == io::read_file_bytes(data("f4_2x3.npy")));
  auto i4 = Tensor<std::int32_t>::from({5}, {-3, 0, 1, 2, 2147483647});
  CHECK(io::serialize_npy(i4) == io::read_file_bytes(data("i4_5.npy")));

  Rng rng(3);
  auto d = bft::random_tensor({3, 5, 3}, rng);
  const auto pd = tmp_path("rt_f8.npy");
  io::save_npy(pd, d);
  BFT_CHECK_CLOSE(io::load_npy<double>(pd), d, 0.0, 0.0);
  auto f = d.cast<float>();
  const auto pf = tmp_path("rt_f4.npy");
  io::save_npy(pf, f);
  BFT_CHECK_CLOSE(io::load_npy<float>(pf), f, 0.0, 0.0);
  CHECK(io::parse_npy_header(io::read_file_bytes(pf), pf).descr == "<f4");
  // A non-contiguous view is written in logical (C) order.
  auto tr = f.select(0).transpose(0, 1);  // (3, 5)
  io::save_npy(pf, tr);
  BFT_CHECK_CLOSE(io::load_npy<float>(pf), tr.clone(), 0.0, 0.0);
  // Long shapes still give a 64-byte aligned header.
  auto big = Tensor<float>(Shape(20, 1));
  const auto bytes = io::serialize_npy(big);
  CHECK(io::parse_npy_header(bytes, "big").data_offset % 64 == 0);
  CHECK(io::parse_npy<float>(bytes, "big").shape() == Shape(20, 1));
}

TEST_CASE("npy: load_vertex_sequence accepts (T,V,3), (T,V*3) and (V,3)") {
  auto a = io::load_vertex_sequence(data("f8_seq_2x4x3.npy"));
  REQUIRE(a.shape() == Shape{2, 4, 3});
  auto b = io::load_vertex_sequence(data("f4_seq_flat_2x12.npy"), 4);
  REQUIRE(b.shape() == Shape{2, 4, 3});
  BFT_CHECK_CLOSE(b, a, 0.0, 0.0);
  // (V, 3): a single frame.
  Tensor<float> one({5, 3});
  one[14] = 3.0f;
  const auto p = tmp_path("single_frame.npy");
  io::save_npy(p, one);
  auto c = io::load_vertex_sequence(p, 5);
  REQUIRE(c.shape() == Shape{1, 5, 3});
  CHECK(c(0, 4, 2) == 3.0f);
  CHECK(io::load_vertex_sequence(p).shape() == Shape{1, 5, 3});
  // With V_expected == 1 an (N, 3) array is N frames of one vertex.
  CHECK(io::load_vertex_sequence(p, 1).shape() == Shape{5, 1, 3});
}

TEST_CASE("npy: bad files give errors that name the file and the problem") {
  const auto good = io::serialize_npy(Tensor<float>::from({2, 3}, {1, 2, 3, 4, 5, 6}));

  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(io::load_npy<float>(tmp_path("nope.npy")),
                         doctest::Contains("nope.npy: file not found"), IoError);
  }
  SUBCASE("truncated data") {
    const auto p = tmp_path("trunc.npy");
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.end() - 5));
    CHECK_THROWS_WITH_AS(io::load_npy<float>(p),
                         doctest::Contains("trunc.npy: truncated data: shape (2, 3) of <f4 needs 24 bytes, file has 19"),
                         IoError);
  }
  SUBCASE("truncated header") {
    const auto p = tmp_path("trunc_header.npy");
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.begin() + 40));
    CHECK_THROWS_WITH_AS(io::load_npy<float>(p), doctest::Contains("trunc_header.npy: truncated .npy file: header length 118"),
                         IoError);
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.begin() + 7));
    CHECK_THROWS_WITH_AS(io::load_npy<float>(p), doctest::Contains("trunc_header.npy: truncated .npy file (7 bytes)"), IoError);
  }
  SUBCASE("trailing bytes") {
    auto b = good;
    b.push_back(0);
    CHECK_THROWS_WITH_AS(io::parse_npy<float>(b, "t.npy"), doctest::Contains("t.npy: 1 trailing bytes"), IoError);
  }
  SUBCASE("bad magic") {
    const auto p = tmp_path("magic.npy");
    auto b = good;
    b[1] = 'X';
    write_bytes(p, b);
    CHECK_THROWS_WITH_AS(io::load_npy<float>(p), doctest::Contains("magic.npy: not a .npy file (bad magic"), IoError);
  }
  SUBCASE("unsupported version") {
    auto b = good;
    b[6] = 4;
    CHECK_THROWS_WITH_AS(io::parse_npy<float>(b, "v.npy"), doctest::Contains("v.npy: unsupported .npy format version 4.0"), IoError);
  }
  SUBCASE("corrupt header dict") {
    const auto p = tmp_path("corrupt_header.npy");
    auto b = good;
    // 'shape': (2, 3) -> 'shape': (2; 3)
    const std::string s(b.begin(), b.end());
    b[s.find("(2, 3)") + 2] = ';';
    write_bytes(p, b);
    CHECK_THROWS_WITH_AS(io::load_npy<float>(p),
                         doctest::Contains("corrupt_header.npy: malformed .npy header: expected ',' or ')' in shape"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_npy<float>(npy_with_header("{'descr': '<f4', 'shape': (1,), }", 4), "k.npy"),
                         doctest::Contains("k.npy: malformed .npy header: header dict has no 'fortran_order' key"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_npy<float>(npy_with_header("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", 4), "m.npy"),
                         doctest::Contains("m.npy: malformed .npy header: fortran_order must be True or False"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_npy<float>(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", 4), "u.npy"),
                         doctest::Contains("u.npy: malformed .npy header: expected ',' or '}'"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_npy<float>(npy_with_header("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", 4), "s.npy"),
                         doctest::Contains("s.npy: malformed .npy header: structured dtypes"), IoError);
  }
  SUBCASE("keys in any order are fine; absurd shapes are truncation, not a crash") {
    auto t = io::parse_npy<float>(npy_with_header("{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}", 8), "o.npy");
    CHECK(t.shape() == Shape{2});
    CHECK_THROWS_WITH_AS(io::parse_npy<float>(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", 8), "huge.npy"),
                         doctest::Contains("huge.npy: truncated data: shape (4294967296, 4294967296, 4294967296) of <f4 needs more than 2^64 bytes"), IoError);
  }
  SUBCASE("wrong dtype, big-endian and fortran order written by NumPy") {
    CHECK_THROWS_WITH_AS(io::load_npy<float>(data("f2_3.npy")),
                         doctest::Contains("f2_3.npy: unsupported dtype '<f2'"), IoError);
    CHECK_THROWS_WITH_AS(io::load_npy<float>(data("bigendian_2x3.npy")),
                         doctest::Contains("bigendian_2x3.npy: big-endian dtype '>f4' is not supported"), IoError);
    CHECK_THROWS_WITH_AS(io::load_npy<float>(data("fortran_2x3.npy")),
                         doctest::Contains("fortran_2x3.npy: fortran_order=True arrays are not supported"), IoError);
  }
  SUBCASE("NaN vertex names the first bad index") {
    CHECK_THROWS_WITH_AS(io::load_vertex_sequence(data("nan_seq_2x4x3.npy")),
                         doctest::Contains("nan_seq_2x4x3.npy: non-finite vertex value nan at frame 1, vertex 2, coordinate 1 (flat index 19)"),
                         IoError);
    Tensor<float> inf({1, 6});
    inf[4] = -std::numeric_limits<float>::infinity();
    const auto p = tmp_path("inf_seq.npy");
    io::save_npy(p, inf);
    CHECK_THROWS_WITH_AS(io::load_vertex_sequence(p), doctest::Contains("inf_seq.npy: non-finite vertex value -inf at frame 0, vertex 1, coordinate 1"), IoError);
  }
  SUBCASE("mismatched vertex count names both counts") {
    CHECK_THROWS_WITH_AS(io::load_vertex_sequence(data("f4_seq_flat_2x12.npy"), 5023),
                         doctest::Contains("f4_seq_flat_2x12.npy: vertex count mismatch: file has 4 vertices per frame (shape (2, 12)), expected 5023"),
                         IoError);
    CHECK_THROWS_WITH_AS(io::load_vertex_sequence(data("f8_seq_2x4x3.npy"), 3),
                         doctest::Contains("file has 4 vertices per frame (shape (2, 4, 3)), expected 3"), IoError);
    const auto p = tmp_path("seq_bad_cols.npy");
    io::save_npy(p, Tensor<float>({2, 10}));
    CHECK_THROWS_WITH_AS(io::load_vertex_sequence(p), doctest::Contains("seq_bad_cols.npy: vertex sequence of shape (2, 10): second dimension 10 is not a multiple of 3"), IoError);
    io::save_npy(p, Tensor<float>({2, 4, 2}));
    CHECK_THROWS_WITH_AS(io::load_vertex_sequence(p), doctest::Contains("must have 3 coordinates"), IoError);
  }
  SUBCASE("empty vertex sequences name the file (not a later interpolation error)") {
    const auto p = tmp_path("zero_frames.npy");
    io::save_npy(p, Tensor<float>({0, 4, 3}));
    CHECK_THROWS_WITH_AS(io::load_vertex_sequence(p, 4), doctest::Contains("zero_frames.npy: vertex sequence has no frames (shape (0, 4, 3))"), IoError);
    io::save_npy(p, Tensor<float>({2, 0, 3}));
    CHECK_THROWS_WITH_AS(io::load_vertex_sequence(p), doctest::Contains("zero_frames.npy: vertex sequence has no vertices"), IoError);
  }
  SUBCASE("failed write leaves no file behind") {
    CHECK_THROWS_AS(io::save_npy(tmp_path("no_such_dir/out.npy"), Tensor<float>({2})), IoError);
    CHECK_FALSE(fs::exists(tmp_path("no_such_dir")));
  }
}
