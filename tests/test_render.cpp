// The software rasteriser of `blendfuse render` (examples/render, target blendfuse_render).
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "blendfuse/core/error.hpp"
#include "render.hpp"

using namespace blendfuse::render;

namespace {

/// An orthographic-like test camera: pixel = (x, -y) * focal + centre, depth = eye_z − z.
Camera flat_camera(int w, int h, float focal = 1.0f) {
  Camera c;
  c.eye[0] = 0;
  c.eye[1] = 0;
  c.eye[2] = 1000;
  c.focal = focal * 1000;  // x / depth with depth ≈ 1000 → ≈ pixels
  c.cx = static_cast<float>(w) / 2;
  c.cy = static_cast<float>(h) / 2;
  c.near_depth = 1;
  return c;
}

int count_not(const Image& img, Rgb bg) {
  int n = 0;
  for (int y = 0; y < img.height(); ++y)
    for (int x = 0; x < img.width(); ++x) n += !(img.at(x, y) == bg);
  return n;
}

float luminance(Rgb c) { return 0.299f * c.r + 0.587f * c.g + 0.114f * c.b; }

/// A (2n+1)² grid "face" in the z = bump plane, with a lips region in the middle rows.
struct Grid {
  std::vector<float> pos;
  std::vector<std::int32_t> faces, lips;
  std::size_t V = 0;
  explicit Grid(int n, float scale) {
    const int m = 2 * n + 1;
    for (int j = 0; j < m; ++j)
      for (int i = 0; i < m; ++i) {
        const float x = static_cast<float>(i - n) / static_cast<float>(n), y = static_cast<float>(j - n) / static_cast<float>(n);
        pos.insert(pos.end(), {x * scale, y * 1.3f * scale, 0.4f * std::exp(-3 * (x * x + y * y)) * scale});
        if (std::abs(i - n) <= n / 3 && std::abs(j - n / 2) <= 1) lips.push_back(j * m + i);
      }
    for (int j = 0; j + 1 < m; ++j)
      for (int i = 0; i + 1 < m; ++i) {
        const int a = j * m + i, b = a + 1, c = a + m, d = c + 1;
        faces.insert(faces.end(), {a, b, d, a, d, c});  // counter-clockwise seen from +z
      }
    V = static_cast<std::size_t>(m * m);
  }
  MeshView view(const float* tint = nullptr) const { return {pos.data(), V, faces.data(), faces.size() / 3, tint}; }
};

}  // namespace

TEST_CASE("a known triangle covers the expected pixels") {
  Image img(20, 20);
  Rasteriser r;
  Style st;
  st.background = {0, 0, 0};
  r.clear(img, st);
  // pixel centres (x + 0.5, y + 0.5); the camera maps world (x, y) to pixel (10 + x, 10 − y)
  const float p[] = {-6, 6, 0, -6, -6, 0, 6, -6, 0};  // right triangle, CCW seen from +z
  const std::int32_t f[] = {0, 1, 2};
  r.draw(img, flat_camera(20, 20), {p, 3, f, 1, nullptr}, st);
  // covers x in [4, 16], y in [4, 16] below the diagonal from (4,4) to (16,16)
  int inside = 0, wrong = 0;
  for (int y = 0; y < 20; ++y)
    for (int x = 0; x < 20; ++x) {
      const float px = x + 0.5f, py = y + 0.5f;
      const bool expect = px > 4 && px < 16 && py > 4 && py < 16 && (py - 4) > (px - 4);
      const bool drawn = !(img.at(x, y) == st.background);
      if (std::fabs((py - 4) - (px - 4)) < 1e-3f || std::fabs(px - 4) < 1e-3f || std::fabs(py - 16) < 1e-3f) continue;
      wrong += expect != drawn;
      inside += drawn;
    }
  CHECK(wrong == 0);
  CHECK(inside == 66);  // 12·11/2 pixels strictly inside the 12-pixel right triangle
  CHECK(r.depth_at(5, 14) == doctest::Approx(1000));
  CHECK(std::isinf(r.depth_at(15, 5)));
}

TEST_CASE("two triangles sharing an edge leave no gap") {
  Image img(16, 16);
  Rasteriser r;
  Style st;
  st.background = {0, 0, 0};
  r.clear(img, st);
  const float p[] = {-5, 5, 0, -5, -5, 0, 5, -5, 0, 5, 5, 0};
  const std::int32_t f[] = {0, 1, 2, 0, 2, 3};
  r.draw(img, flat_camera(16, 16), {p, 4, f, 2, nullptr}, st);
  CHECK(count_not(img, st.background) == 100);  // the 10×10 square exactly
}

TEST_CASE("z-buffer: the nearer of two overlapping triangles wins, whatever the order") {
  const float p[] = {-8, 8, 0, -8, -8, 0, 8, -8, 0,     // far (z = 0), skin
                     -8, 8, 50, -8, -8, 50, 8, -8, 50};  // near (z = 50), tinted
  const float tint[] = {0, 0, 0, 1, 1, 1};
  for (int order = 0; order < 2; ++order) {
    const std::int32_t f[] = {order ? 3 : 0, order ? 4 : 1, order ? 5 : 2, order ? 0 : 3, order ? 1 : 4, order ? 2 : 5};
    Image img(20, 20);
    Rasteriser r;
    Style st;
    st.light[0] = 0, st.light[1] = 0, st.light[2] = 1;
    r.clear(img, st);
    r.draw(img, flat_camera(20, 20), {p, 6, f, 2, tint}, st);
    const Rgb c = img.at(6, 14);
    CHECK(r.depth_at(6, 14) == doctest::Approx(950));
    CHECK(c.r > c.g + 40);  // the tint (reddish), not the skin
  }
}

TEST_CASE("Lambert: a face turned away from the light is darker; back faces use the inside colour") {
  auto shade_of = [](float nx, float nz, bool flip) {
    // a square with normal (nx, 0, nz): tilt it about the y axis
    const float len = std::sqrt(nx * nx + nz * nz), c = nz / len, s = nx / len;
    std::vector<float> p;
    for (float q : {-1.f, 1.f})
      for (float u : {-1.f, 1.f}) {
        // (x, y) = (u·c·6, q·6), z = −u·s·6: normal ∝ (s, 0, c)
        p.insert(p.end(), {u * c * 6, q * 6, -u * s * 6});
      }
    std::vector<std::int32_t> f = {0, 1, 3, 0, 3, 2};
    if (flip) f = {0, 3, 1, 0, 2, 3};
    Image img(20, 20);
    Rasteriser r;
    Style st;
    st.light[0] = 0.6f, st.light[1] = 0, st.light[2] = 0.8f;
    r.clear(img, st);
    r.draw(img, flat_camera(20, 20), {p.data(), 4, f.data(), 2, nullptr}, st);
    return img.at(10, 10);
  };
  const Rgb towards = shade_of(0.6f, 0.8f, false), frontal = shade_of(0, 1, false), away = shade_of(-0.6f, 0.8f, false);
  CHECK(luminance(towards) > luminance(frontal) + 5);
  CHECK(luminance(frontal) > luminance(away) + 5);
  const Rgb back = shade_of(0, 1, true);
  Style st;
  CHECK(luminance(back) < luminance(frontal));
  CHECK(back.r > back.g);  // the inside colour
  // culled when one-sided
  {
    const float p[] = {-6, 6, 0, 6, -6, 0, -6, -6, 0};  // clockwise seen from +z: a back face
    const std::int32_t f[] = {0, 1, 2};
    Image img(20, 20);
    Rasteriser r;
    st.two_sided = false;
    r.clear(img, st);
    r.draw(img, flat_camera(20, 20), {p, 3, f, 1, nullptr}, st);
    CHECK(count_not(img, st.background) == 0);
  }
}

TEST_CASE("lips get the tint, smoothly, and only near the region") {
  const Grid g(12, 100.0f);
  const auto w = region_weights(g.view(), g.lips);
  REQUIRE(w.size() == g.V);
  float in_min = 1, far_max = 0;
  int partial = 0;
  for (std::size_t v = 0; v < g.V; ++v) {
    const bool lip = std::find(g.lips.begin(), g.lips.end(), static_cast<std::int32_t>(v)) != g.lips.end();
    if (lip) in_min = std::min(in_min, w[v]);
    if (!lip && std::fabs(g.pos[v * 3 + 1] - g.pos[static_cast<std::size_t>(g.lips[0]) * 3 + 1]) > 60) far_max = std::max(far_max, w[v]);
    partial += w[v] > 0.05f && w[v] < 0.95f;
  }
  CHECK(in_min > 0.5f);
  CHECK(far_max == 0.0f);
  CHECK(partial > 0);  // a soft border
  // rendered: the lip area is redder than the cheek
  Bounds b;
  b.add(g.pos.data(), g.V);
  const Camera cam = Camera::frame(b, 200, 200);
  Image img(200, 200);
  Rasteriser r;
  Style st;
  r.clear(img, st);
  r.draw(img, cam, g.view(w.data()), st);
  float sx, sy, d;
  cam.project(&g.pos[static_cast<std::size_t>(g.lips[g.lips.size() / 2]) * 3], sx, sy, d);
  const Rgb lip = img.at(static_cast<int>(sx), static_cast<int>(sy));
  cam.project(&g.pos[static_cast<std::size_t>(g.lips[g.lips.size() / 2] + 7 * 25) * 3], sx, sy, d);
  const Rgb cheek = img.at(static_cast<int>(sx), static_cast<int>(sy));
  const auto redness = [](Rgb c) { return static_cast<float>(c.r) / (1.0f + c.g); };
  CHECK(redness(lip) > redness(cheek) * 1.3f);
  CHECK(std::abs(static_cast<int>(cheek.r) - static_cast<int>(st.skin.r)) < 80);
}

TEST_CASE("framing is unit-agnostic: the same face in mm and in metres gives the same image") {
  const Grid mm(12, 100.0f);  // ~200 mm
  Grid m = mm;
  for (auto& x : m.pos) x *= 0.001f;
  auto shot = [](const Grid& g, float offset) {
    std::vector<float> p = g.pos;
    for (std::size_t i = 0; i < p.size(); i += 3) p[i + 2] += offset;  // anywhere in space
    Bounds b;
    b.add(p.data(), g.V);
    const Camera cam = Camera::frame(b, 160, 200);
    Image img(160, 200);
    Rasteriser r;
    Style st;
    r.clear(img, st);
    r.draw(img, cam, {p.data(), g.V, g.faces.data(), g.faces.size() / 3, nullptr}, st);
    return img;
  };
  const Image a = shot(mm, 0), b = shot(m, 0), c = shot(m, 3.0f * 0.001f * 100);
  int diff_ab = 0, diff_ac = 0;
  for (int y = 0; y < a.height(); ++y)
    for (int x = 0; x < a.width(); ++x) {
      const Rgb p = a.at(x, y), q = b.at(x, y), s = c.at(x, y);
      diff_ab += std::abs(p.r - q.r) + std::abs(p.g - q.g) + std::abs(p.b - q.b) > 6;
      diff_ac += std::abs(p.r - s.r) + std::abs(p.g - s.g) + std::abs(p.b - s.b) > 6;
    }
  const int covered = count_not(a, Style{}.background);
  CHECK(covered > 160 * 200 / 3);       // the face fills the frame
  CHECK(diff_ab <= covered / 500);      // a few edge pixels at most (float rounding)
  CHECK(diff_ac <= covered / 500);
  // nothing clipped: the border rows/columns are background
  for (int x = 0; x < a.width(); ++x) CHECK((a.at(x, 0) == Style{}.background && a.at(x, a.height() - 1) == Style{}.background));
}

TEST_CASE("PNG written then read back with libpng gives the same pixels") {
  Image img(37, 23);
  for (int y = 0; y < img.height(); ++y)
    for (int x = 0; x < img.width(); ++x)
      img.set(x, y, {static_cast<std::uint8_t>(x * 7), static_cast<std::uint8_t>(y * 11), static_cast<std::uint8_t>(x ^ y)});
  const auto dir = std::filesystem::temp_directory_path() / ("bf_render_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "a.png").string();
  write_png(path, img);
  const Image back = read_png(path);
  REQUIRE(back.width() == 37);
  REQUIRE(back.height() == 23);
  CHECK(std::equal(img.data(), img.data() + img.bytes(), back.data()));
  // errors name the file
  {
    std::FILE* f = std::fopen((dir / "bad.png").c_str(), "wb");
    std::fputs("not a png", f);
    std::fclose(f);
  }
  try {
    read_png((dir / "bad.png").string());
    FAIL("read_png accepted a non-PNG file");
  } catch (const blendfuse::IoError& e) {
    CHECK(std::string(e.what()).find("bad.png") != std::string::npos);
  }
  CHECK_THROWS_AS(write_png((dir / "no_such_dir" / "x.png").string(), img), blendfuse::IoError);
  std::filesystem::remove_all(dir);
}

TEST_CASE("bitmap font: every printable glyph but space has ink, and text is drawn") {
  for (char c = 33; c < 127; ++c) {
    const std::uint8_t* rows = glyph_rows(c);
    int ink = 0;
    for (int r = 0; r < kGlyphH; ++r) ink += __builtin_popcount(rows[r]);
    CHECK_MESSAGE(ink > 0, "glyph '", c, "' is empty");
  }
  // distinct glyphs for look-alikes
  CHECK(std::memcmp(glyph_rows('0'), glyph_rows('O'), kGlyphH) != 0);
  CHECK(std::memcmp(glyph_rows('1'), glyph_rows('l'), kGlyphH) != 0);
  CHECK(std::memcmp(glyph_rows('\x01'), glyph_rows('?'), kGlyphH) == 0);  // non-printable → '?'
  Image img(80, 20);
  draw_text(img, 2, 2, "t 1.23 s", 2, {255, 255, 255});
  CHECK(count_not(img, {}) > 40);
  CHECK(text_width("abc", 2) == (3 * kAdvanceX - 1) * 2);
  CHECK(fit_text("a long caption here", 1, 40).size() < 19);
  CHECK(text_width(fit_text("a long caption here", 1, 40), 1) <= 40);
}

TEST_CASE("downsample averages blocks") {
  Image img(4, 2, {0, 0, 0});
  img.set(0, 0, {200, 100, 40});
  img.set(3, 1, {255, 255, 255});
  const Image d = img.downsample(2);
  REQUIRE(d.width() == 2);
  CHECK(d.at(0, 0) == Rgb{50, 25, 10});
  CHECK(d.at(1, 0) == Rgb{64, 64, 64});
}
