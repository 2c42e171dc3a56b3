#include "test_util.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "blendfuse/io/mesh.hpp"

using namespace blendfuse;
namespace fs = std::filesystem;

namespace {
std::string tmp_path(const std::string& name) {
  const auto dir = fs::temp_directory_path() / "blendfuse_tests_mesh";
  fs::create_directories(dir);
  return (dir / name).string();
}
void write_bytes(const std::string& path, const std::vector<std::uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
void write_text(const std::string& path, const std::string& s) {
  write_bytes(path, std::vector<std::uint8_t>(s.begin(), s.end()));
}
std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
std::string data(const std::string& name) { return bft::source_path("tests/data/" + name); }

// The quad fixtures: 4 corners of the unit square plus an apex, a quad and one triangle.
void check_quad_mesh(const io::Mesh& m, float apex_z) {
  REQUIRE(m.vertices.shape() == Shape{5, 3});
  REQUIRE(m.faces.shape() == Shape{3, 3});
  const std::vector<float> v = {0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0.5f, 0.5f, apex_z};
  for (Index i = 0; i < 15; ++i) CHECK(m.vertices[i] == v[static_cast<std::size_t>(i)]);
  const std::vector<std::int32_t> f = {0, 1, 2, 0, 2, 3, 0, 1, 4};  // quad fan-triangulated
  for (Index i = 0; i < 9; ++i) CHECK(m.faces[i] == f[static_cast<std::size_t>(i)]);
}

io::Mesh random_mesh(Index V, Index F, std::uint64_t seed) {
  Rng rng(seed);
  io::Mesh m;
  m.vertices = bft::random_tensor({V, 3}, rng).cast<float>();
  m.faces = Tensor<std::int32_t>({F, 3});
  for (Index i = 0; i < 3 * F; ++i) m.faces[i] = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(V)));
  return m;
}

void check_same(const io::Mesh& a, const io::Mesh& b) {
  BFT_CHECK_CLOSE(a.vertices, b.vertices, 0.0, 0.0);
  REQUIRE(a.faces.shape() == b.faces.shape());
  for (Index i = 0; i < a.faces.numel(); ++i) CHECK(a.faces[i] == b.faces[i]);
}
}  // namespace

TEST_CASE("mesh: OBJ with v/vt/vn faces, a quad and negative indices") {
  check_quad_mesh(io::load_obj(data("quad_vtvn.obj")), 0.125f);
  check_quad_mesh(io::load_mesh(data("quad_vtvn.obj")), 0.125f);
  // CRLF line endings, '+' signs, exponents, extra w coordinate and vertex colours.
  auto m = io::parse_obj("v 1 +2 3e0 1\r\nv -1.5 0 0 0.1 0.2 0.3\r\nv 0 0 1\r\nf 1/2 2/3 3/4\r\n", "crlf.obj");
  CHECK(m.vertices(0, 1) == 2.0f);
  CHECK(m.vertices(1, 0) == -1.5f);
  CHECK(m.faces(0, 2) == 2);
}

TEST_CASE("mesh: PLY ascii, binary little- and big-endian double with extra properties") {
  check_quad_mesh(io::load_ply(data("quad_ascii.ply")), -2.5f);
  check_quad_mesh(io::load_ply(data("quad_binary_le_double.ply")), -2.5f);
  check_quad_mesh(io::load_ply(data("quad_binary_be_double.ply")), -2.5f);
  check_quad_mesh(io::load_mesh(data("quad_binary_le_double.ply")), -2.5f);
  // Coordinates listed in another order, vertex_index name, ushort count, int8 indices.
  const std::string ply =
      "ply\r\nformat ascii 1.0\r\nelement vertex 3\r\nproperty double z\r\nproperty float x\r\n"
      "property list uchar int extra\r\nproperty float y\r\nelement face 1\r\n"
      "property list ushort char vertex_index\r\nend_header\r\n"
      "3 1 2 7 8 2\n6 4 0 5\n9 7 0 8\n3 2 1 0\n";
  auto m = io::parse_ply(bytes_of(ply), "order.ply");
  REQUIRE(m.vertices.shape() == Shape{3, 3});
  CHECK(m.vertices(0, 0) == 1.0f);
  CHECK(m.vertices(0, 1) == 2.0f);
  CHECK(m.vertices(0, 2) == 3.0f);
  CHECK(m.vertices(2, 0) == 7.0f);
  CHECK(m.vertices(2, 2) == 9.0f);
  CHECK(m.faces(0, 0) == 2);
  // A point cloud (no face element) gives (0, 3) faces.
  auto pc = io::parse_ply(bytes_of("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                                   "property float z\nend_header\n1 2 3\n"), "pc.ply");
  CHECK(pc.faces.shape() == Shape{0, 3});
}

TEST_CASE("mesh: OBJ and PLY round trips are exact") {
  const auto m = random_mesh(50, 80, 7);
  const auto po = tmp_path("rt.obj");
  io::save_obj(po, m);
  check_same(io::load_obj(po), m);
  for (auto fmt : {io::PlyFormat::BinaryLittleEndian, io::PlyFormat::BinaryBigEndian, io::PlyFormat::Ascii}) {
    const auto pp = tmp_path("rt.ply");
    io::save_ply(pp, m, fmt);
    check_same(io::load_ply(pp), m);
  }
  const auto pm = tmp_path("rt_mesh.PLY");
  io::save_mesh(pm, m);
  check_same(io::load_mesh(pm), m);
  // The default PLY is binary little-endian float: header + 12 bytes/vertex + 13 bytes/face.
  const auto bytes = io::serialize_ply(m);
  const std::string head(bytes.begin(), bytes.begin() + 40);
  CHECK(head.find("format binary_little_endian 1.0") != std::string::npos);
  const std::string s(bytes.begin(), bytes.end());
  CHECK(bytes.size() == s.find("end_header\n") + 11 + 50 * 12 + 80 * 13);
}

TEST_CASE("mesh: bad OBJ files name the file and line") {
  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(io::load_obj(tmp_path("nope.obj")), doctest::Contains("nope.obj: file not found"), IoError);
    CHECK_THROWS_WITH_AS(io::load_mesh(tmp_path("mesh.stl")), doctest::Contains("mesh.stl: unknown mesh file extension '.stl'"), IoError);
  }
  SUBCASE("bad number") {
    const auto p = tmp_path("bad_number.obj");
    write_text(p, "# c\nv 0 0 0\nv 1 2 x\n");
    CHECK_THROWS_WITH_AS(io::load_obj(p), doctest::Contains("bad_number.obj: line 3: bad number 'x' in vertex"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_obj("v 1 2\n", "short.obj"), doctest::Contains("short.obj: line 1: vertex needs 3 coordinates, got 2"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_obj("v 1 2 3\nv 1 nan 3\n", "nan.obj"), doctest::Contains("nan.obj: line 2: non-finite vertex coordinate 'nan'"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_obj("v 1 2 3\nf 1 a/2 1\n", "fi.obj"), doctest::Contains("fi.obj: line 2: bad face index 'a/2'"), IoError);
  }
  SUBCASE("out-of-range face index") {
    const auto p = tmp_path("bad_index.obj");
    write_text(p, "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n\nf 1/1/1 2/2/2 9/9/9\n");
    CHECK_THROWS_WITH_AS(io::load_obj(p), doctest::Contains("bad_index.obj: line 6: face index 9 is out of range (file has 3 vertices)"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_obj("v 0 0 0\nf -1 -2 -1\n", "rel.obj"),
                         doctest::Contains("rel.obj: line 2: relative face index -2 is out of range (only 1 vertices so far)"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_obj("v 0 0 0\nf 0 1 1\n", "zero.obj"), doctest::Contains("zero.obj: line 2: face index 0 is invalid"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_obj("v 0 0 0\nf 1 1\n", "two.obj"), doctest::Contains("two.obj: line 2: face needs at least 3 vertices, got 2"), IoError);
    // degenerate faces: kept by default (a plain mesh may have them), an error where a topology is needed
    const std::string degen = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nv 2 2 0\nf 1 2 3\nf 5 5 5\n";
    CHECK(io::parse_obj(degen, "degen.obj").num_faces() == 2);
    CHECK_THROWS_WITH_AS(io::parse_obj(degen, "degen.obj", true),
                         doctest::Contains("degen.obj: line 7: degenerate face: vertex 5 is used twice"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_obj("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3 2\n", "quad.obj", true),
                         doctest::Contains("quad.obj: line 4: degenerate face: vertex 2 is used twice"), IoError);
  }
  SUBCASE("invalid meshes are not written") {
    auto m = random_mesh(4, 2, 1);
    m.faces[5] = 4;
    const auto p = tmp_path("invalid.obj");
    fs::remove(p);
    CHECK_THROWS_WITH_AS(io::save_obj(p, m), doctest::Contains("face 1 references vertex 4, mesh has 4 vertices"), ArgumentError);
    CHECK_THROWS_AS(io::save_ply(tmp_path("invalid.ply"), m), ArgumentError);
    CHECK_FALSE(fs::exists(p));
  }
}

TEST_CASE("mesh: bad PLY files name the file and the problem") {
  const auto good = io::read_file_bytes(data("quad_binary_le_double.ply"));
  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(io::load_ply(tmp_path("nope.ply")), doctest::Contains("nope.ply: file not found"), IoError);
  }
  SUBCASE("truncated binary body") {
    const auto p = tmp_path("trunc.ply");
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.end() - 20));  // cuts into the faces
    CHECK_THROWS_WITH_AS(io::load_ply(p), doctest::Contains("trunc.ply: truncated PLY body: file ends after 550 bytes in element 'face' item 0 of 2"), IoError);
    const std::string s(good.begin(), good.end());
    const std::size_t body = s.find("end_header\n") + 11;
    write_bytes(p, std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(body + 180)));
    CHECK_THROWS_WITH_AS(io::load_ply(p), doctest::Contains("trunc.ply: truncated PLY body"), IoError);
    CHECK_THROWS_WITH_AS(io::load_ply(p), doctest::Contains("element 'vertex' item 4 of 5"), IoError);
  }
  SUBCASE("truncated ascii body") {
    const auto a = io::read_file_bytes(data("quad_ascii.ply"));
    const auto p = tmp_path("trunc_ascii.ply");
    write_bytes(p, std::vector<std::uint8_t>(a.begin(), a.end() - 12));
    CHECK_THROWS_WITH_AS(io::load_ply(p), doctest::Contains("trunc_ascii.ply: truncated PLY body: unexpected end of file in line 20, element 'face' item 0 of 2"), IoError);
  }
  SUBCASE("huge element count is reported before allocating") {
    std::string s(good.begin(), good.end());
    s.replace(s.find("element vertex 5"), 16, "element vertex 2000000000");
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of(s), "huge.ply"),
                         doctest::Contains("huge.ply: truncated PLY body: 2000000000 items declared"), IoError);
  }
  SUBCASE("corrupt header") {
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of("plx\nformat ascii 1.0\n"), "magic.ply"), doctest::Contains("magic.ply: not a PLY file"), IoError);
    std::string s(good.begin(), good.end());
    s.replace(s.find("property double nx"), 18, "property dbl nx");
    const auto p = tmp_path("corrupt_header.ply");
    write_bytes(p, bytes_of(s));
    CHECK_THROWS_WITH_AS(io::load_ply(p), doctest::Contains("corrupt_header.ply: malformed PLY header (line 8): unknown type 'dbl'"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of("ply\nformat ascii 1.0\nelement vertex 1\n"), "noend.ply"),
                         doctest::Contains("noend.ply: truncated PLY header (no end_header line)"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of("ply\nformat binary_middle_endian 1.0\nend_header\n"), "fmt.ply"),
                         doctest::Contains("fmt.ply: malformed PLY header (line 2): unknown format 'binary_middle_endian'"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n1 2\n"), "noz.ply"),
                         doctest::Contains("noz.ply: PLY vertex element lacks scalar x, y and z"), IoError);
  }
  SUBCASE("bad values in the body") {
    const std::string head = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                             "element face 1\nproperty list uchar int vertex_indices\nend_header\n";
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of(head + "0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n"), "range.ply"),
                         doctest::Contains("range.ply: face index 3 is out of range (file has 3 vertices) in line 13, element 'face' item 0 of 1"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of(head + "0 0 0\n1 zero 0\n0 1 0\n3 0 1 2\n"), "num.ply"),
                         doctest::Contains("num.ply: bad number 'zero' in line 11, element 'vertex' item 1 of 3"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of(head + "0 0 0\n1 0 0\n0 1 inf\n3 0 1 2\n"), "inf.ply"),
                         doctest::Contains("inf.ply: non-finite vertex coordinate in line 12, element 'vertex' item 2 of 3"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of(head + "0 0 0\n1 0 0\n0 1 0\n1e30 0 1\n"), "long.ply"),
                         doctest::Contains("long.ply: truncated PLY body: list of 1e+30 values but only 5 bytes left in line 13"), IoError);
    CHECK_THROWS_WITH_AS(io::parse_ply(bytes_of(head + "0 0 0\n1 0 0\n0 1 0\n2 0 1\n"), "deg.ply"),
                         doctest::Contains("deg.ply: face with 2 vertices (need at least 3)"), IoError);
    // Binary out-of-range index.
    auto b = good;
    const std::string s(good.begin(), good.end());
    const std::size_t faces_at = s.find("end_header\n") + 11 + 5 * (4 * 8 + 1 + 2 * 4);
    b[faces_at + 4] = 77;  // first index of the first face
    CHECK_THROWS_WITH_AS(io::parse_ply(b, "range_bin.ply"), doctest::Contains("range_bin.ply: face index 77 is out of range (file has 5 vertices) in element 'face' item 0 of 2"), IoError);
  }
}
