// blendfuse_render — image, camera, normals and the z-buffered triangle rasteriser.
#include <algorithm>
#include <cmath>
#include <limits>

#include "blendfuse/core/error.hpp"
#include "render.hpp"

namespace blendfuse::render {

// ---- Image ---------------------------------------------------------------------------------------
Image::Image(int width, int height, Rgb fill_color) {
  BF_CHECK(width >= 0 && height >= 0, ArgumentError, "Image: negative size ", width, "x", height);
  w_ = width;
  h_ = height;
  px_.resize(static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3);
  fill(fill_color);
}

void Image::fill(Rgb c) {
  for (std::size_t i = 0; i < px_.size(); i += 3) {
    px_[i] = c.r;
    px_[i + 1] = c.g;
    px_[i + 2] = c.b;
  }
}

void Image::fill_rect(int x, int y, int w, int h, Rgb c) {
  const int x0 = std::max(x, 0), y0 = std::max(y, 0);
  const int x1 = std::min(x + w, w_), y1 = std::min(y + h, h_);
  for (int yy = y0; yy < y1; ++yy)
    for (int xx = x0; xx < x1; ++xx) set(xx, yy, c);
}

void Image::blit(const Image& src, int x, int y) {
  const int x0 = std::max(x, 0), x1 = std::min(x + src.width(), w_);
  if (x0 >= x1) return;
  for (int sy = 0; sy < src.height(); ++sy) {
    const int ty = y + sy;
    if (ty < 0 || ty >= h_) continue;
    const std::uint8_t* s = src.data() + (static_cast<std::size_t>(sy) * static_cast<std::size_t>(src.width()) +
                                          static_cast<std::size_t>(x0 - x)) * 3;
    std::uint8_t* d = px_.data() + (static_cast<std::size_t>(ty) * static_cast<std::size_t>(w_) + static_cast<std::size_t>(x0)) * 3;
    std::copy(s, s + static_cast<std::size_t>(x1 - x0) * 3, d);
  }
}

Image Image::downsample(int f) const {
  Image out(w_ / std::max(f, 1), h_ / std::max(f, 1));
  downsample_into(out, 0, 0, f);
  return out;
}

void Image::downsample_into(Image& dst, int dx, int dy, int f) const {
  BF_CHECK(f >= 1 && w_ % f == 0 && h_ % f == 0, ArgumentError, "Image::downsample: ", w_, "x", h_,
           " is not a multiple of ", f);
  const int ow = w_ / f, oh = h_ / f;
  BF_CHECK(dx >= 0 && dy >= 0 && dx + ow <= dst.w_ && dy + oh <= dst.h_, ArgumentError, "Image::downsample_into: ",
           ow, "x", oh, " at (", dx, ", ", dy, ") does not fit in ", dst.w_, "x", dst.h_);
  const std::size_t W = static_cast<std::size_t>(w_) * 3;
  if (f == 1) {
    for (int y = 0; y < oh; ++y)
      std::copy_n(px_.data() + static_cast<std::size_t>(y) * W, W,
                  dst.px_.data() + (static_cast<std::size_t>(dy + y) * static_cast<std::size_t>(dst.w_) + static_cast<std::size_t>(dx)) * 3);
    return;
  }
  const unsigned n = static_cast<unsigned>(f * f), half = n / 2;
  for (int oy = 0; oy < oh; ++oy) {
    std::uint8_t* d = dst.px_.data() + (static_cast<std::size_t>(dy + oy) * static_cast<std::size_t>(dst.w_) + static_cast<std::size_t>(dx)) * 3;
    const std::uint8_t* src = px_.data() + static_cast<std::size_t>(oy * f) * W;
    if (f == 2) {
      const std::uint8_t* r0 = src;
      const std::uint8_t* r1 = src + W;
      for (int ox = 0; ox < ow; ++ox, r0 += 6, r1 += 6, d += 3)
        for (int c = 0; c < 3; ++c) d[c] = static_cast<std::uint8_t>((r0[c] + r0[c + 3] + r1[c] + r1[c + 3] + 2u) >> 2);
      continue;
    }
    for (int ox = 0; ox < ow; ++ox, d += 3) {
      unsigned a[3] = {0, 0, 0};
      for (int k = 0; k < f; ++k) {
        const std::uint8_t* q = src + static_cast<std::size_t>(k) * W + static_cast<std::size_t>(ox * f) * 3;
        for (int j = 0; j < f; ++j, q += 3) {
          a[0] += q[0];
          a[1] += q[1];
          a[2] += q[2];
        }
      }
      for (int c = 0; c < 3; ++c) d[c] = static_cast<std::uint8_t>((a[c] + half) / n);
    }
  }
}

// ---- Bounds / Camera -----------------------------------------------------------------------------
void Bounds::add(const float* xyz, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const float* p = xyz + i * 3;
    if (!valid) {
      for (int a = 0; a < 3; ++a) lo[a] = hi[a] = p[a];
      valid = true;
      continue;
    }
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::min(lo[a], p[a]);
      hi[a] = std::max(hi[a], p[a]);
    }
  }
}

float Bounds::max_extent() const { return std::max({extent(0), extent(1), extent(2)}); }

Camera Camera::frame(const Bounds& box, int width, int height, float margin, float distance_factor) {
  BF_CHECK(box.valid, ArgumentError, "Camera::frame: empty bounding box");
  BF_CHECK(width > 0 && height > 0, ArgumentError, "Camera::frame: viewport ", width, "x", height);
  BF_CHECK(margin >= 0 && margin < 0.5f && distance_factor > 0, ArgumentError,
           "Camera::frame: margin ", margin, ", distance factor ", distance_factor);
  // Work relative to the box centre in units of its largest extent: the result does not depend
  // on the data's unit (a box in metres frames exactly like the same box in millimetres).
  double ext = box.max_extent();
  if (!(ext > 0)) ext = std::max({std::fabs(box.lo[0]), std::fabs(box.lo[1]), std::fabs(box.lo[2]), 1e-30f});
  const double c[3] = {0.5 * (box.lo[0] + box.hi[0]), 0.5 * (box.lo[1] + box.hi[1]), 0.5 * (box.lo[2] + box.hi[2])};
  const double dist = distance_factor * ext;  // eye in front of the box's front face
  const double eye_z = box.hi[2] + dist;
  double umin = 1e300, umax = -1e300, vmin = 1e300, vmax = -1e300;
  for (int k = 0; k < 8; ++k) {
    const double x = (k & 1) ? box.hi[0] : box.lo[0];
    const double y = (k & 2) ? box.hi[1] : box.lo[1];
    const double z = (k & 4) ? box.hi[2] : box.lo[2];
    const double d = eye_z - z;
    const double u = (x - c[0]) / d, v = (y - c[1]) / d;
    umin = std::min(umin, u);
    umax = std::max(umax, u);
    vmin = std::min(vmin, v);
    vmax = std::max(vmax, v);
  }
  const double aw = width * (1.0 - 2.0 * margin), ah = height * (1.0 - 2.0 * margin);
  const double du = umax - umin, dv = vmax - vmin;
  double focal;
  if (du > 0 && dv > 0) focal = std::min(aw / du, ah / dv);
  else if (du > 0) focal = aw / du;
  else if (dv > 0) focal = ah / dv;
  else focal = std::min(aw, ah) / (2.0 * ext / dist);  // a single point: anything sensible
  Camera cam;
  cam.eye[0] = static_cast<float>(c[0]);
  cam.eye[1] = static_cast<float>(c[1]);
  cam.eye[2] = static_cast<float>(eye_z);
  cam.focal = static_cast<float>(focal);
  cam.cx = static_cast<float>(0.5 * width - focal * 0.5 * (umin + umax));
  cam.cy = static_cast<float>(0.5 * height + focal * 0.5 * (vmin + vmax));
  cam.near_depth = static_cast<float>(0.05 * dist);
  return cam;
}

// ---- normals -------------------------------------------------------------------------------------
void vertex_normals(const MeshView& m, std::vector<float>& n) {
  n.assign(m.num_vertices * 3, 0.0f);
  const float* p = m.positions;
  for (std::size_t f = 0; f < m.num_faces; ++f) {
    const std::int32_t* t = m.faces + f * 3;
    if (t[0] < 0 || t[1] < 0 || t[2] < 0 || static_cast<std::size_t>(t[0]) >= m.num_vertices ||
        static_cast<std::size_t>(t[1]) >= m.num_vertices || static_cast<std::size_t>(t[2]) >= m.num_vertices)
      continue;
    const float* a = p + t[0] * 3;
    const float* b = p + t[1] * 3;
    const float* c = p + t[2] * 3;
    const float e1[3] = {b[0] - a[0], b[1] - a[1], b[2] - a[2]};
    const float e2[3] = {c[0] - a[0], c[1] - a[1], c[2] - a[2]};
    const float fn[3] = {e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]};
    for (int k = 0; k < 3; ++k)
      for (int a2 = 0; a2 < 3; ++a2) n[static_cast<std::size_t>(t[k]) * 3 + static_cast<std::size_t>(a2)] += fn[a2];
  }
  for (std::size_t v = 0; v < m.num_vertices; ++v) {
    float* q = &n[v * 3];
    const float len = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]);
    if (len > 0) {
      q[0] /= len;
      q[1] /= len;
      q[2] /= len;
    }
  }
}

// ---- region weights ------------------------------------------------------------------------------
std::vector<float> region_weights(const MeshView& m, const std::vector<std::int32_t>& region, float softness) {
  const std::size_t V = m.num_vertices;
  std::vector<float> w(V, 0.0f);
  std::vector<char> in(V, 0);
  for (auto i : region)
    if (i >= 0 && static_cast<std::size_t>(i) < V) in[static_cast<std::size_t>(i)] = 1;
  std::vector<std::size_t> inside, outside;
  for (std::size_t v = 0; v < V; ++v) (in[v] ? inside : outside).push_back(v);
  if (inside.empty()) return w;
  const float* p = m.positions;
  auto dist = [&](std::size_t a, std::size_t b) {
    const float dx = p[a * 3] - p[b * 3], dy = p[a * 3 + 1] - p[b * 3 + 1], dz = p[a * 3 + 2] - p[b * 3 + 2];
    return std::sqrt(dx * dx + dy * dy + dz * dz);
  };
  std::vector<float> edges;
  for (std::size_t f = 0; f < m.num_faces; ++f) {
    const std::int32_t* t = m.faces + f * 3;
    for (int k = 0; k < 3; ++k) {
      const auto a = static_cast<std::size_t>(t[k]), b = static_cast<std::size_t>(t[(k + 1) % 3]);
      if (a < V && b < V && (in[a] || in[b])) edges.push_back(dist(a, b));
    }
  }
  float r = 0;
  if (!edges.empty()) {
    std::nth_element(edges.begin(), edges.begin() + static_cast<std::ptrdiff_t>(edges.size() / 2), edges.end());
    r = softness * edges[edges.size() / 2];
  }
  if (!(r > 0)) {  // no edges: a hard region
    for (auto v : inside) w[v] = 1.0f;
    return w;
  }
  // Only vertices within r of the region's bounding box can be near its border.
  Bounds box;
  for (auto v : inside) box.add(p + v * 3, 1);
  std::vector<std::size_t> near_out;
  for (auto v : outside) {
    bool close = true;
    for (int a = 0; a < 3; ++a) close = close && p[v * 3 + static_cast<std::size_t>(a)] >= box.lo[a] - r && p[v * 3 + static_cast<std::size_t>(a)] <= box.hi[a] + r;
    if (close) near_out.push_back(v);
  }
  auto step = [&](float d) {  // signed distance (negative inside) → weight
    const float t = std::clamp((d + r) / (2 * r), 0.0f, 1.0f);
    return 1.0f - t * t * (3 - 2 * t);
  };
  for (auto v : inside) {
    float d = r;
    for (auto o : near_out) d = std::min(d, dist(v, o));
    w[v] = step(-d);
  }
  for (auto v : near_out) {
    float d = r;
    for (auto i : inside) d = std::min(d, dist(v, i));
    w[v] = step(d);
  }
  return w;
}

// ---- Rasteriser ----------------------------------------------------------------------------------
void Rasteriser::clear(Image& target, const Style& style) {
  target.fill(style.background);
  w_ = target.width();
  h_ = target.height();
  depth_.assign(static_cast<std::size_t>(w_) * static_cast<std::size_t>(h_), std::numeric_limits<float>::infinity());
}

namespace {
inline float lerp_channel(std::uint8_t a, std::uint8_t b, float t) { return a + (b - a) * t; }
inline std::uint8_t to_u8(float v) { return static_cast<std::uint8_t>(std::min(std::max(v, 0.0f) + 0.5f, 255.0f)); }
}  // namespace

void Rasteriser::draw(Image& target, const Camera& cam, const MeshView& m, const Style& st) {
  BF_CHECK(target.width() == w_ && target.height() == h_, ArgumentError,
           "Rasteriser::draw: call clear() on a ", target.width(), "x", target.height(), " image first");
  if (m.num_vertices == 0 || m.num_faces == 0) return;
  vertex_normals(m, normals_);
  screen_.resize(m.num_vertices * 3);
  for (std::size_t v = 0; v < m.num_vertices; ++v)
    cam.project(m.positions + v * 3, screen_[v * 3], screen_[v * 3 + 1], screen_[v * 3 + 2]);
  float L[3] = {st.light[0], st.light[1], st.light[2]};
  {
    const float len = std::sqrt(L[0] * L[0] + L[1] * L[1] + L[2] * L[2]);
    for (float& x : L) x = len > 0 ? x / len : 0.0f;
  }
  for (std::size_t f = 0; f < m.num_faces; ++f) {
    std::int32_t idx[3] = {m.faces[f * 3], m.faces[f * 3 + 1], m.faces[f * 3 + 2]};
    bool ok = true;
    for (auto i : idx) ok = ok && i >= 0 && static_cast<std::size_t>(i) < m.num_vertices;
    if (!ok) continue;
    const float* s[3] = {&screen_[static_cast<std::size_t>(idx[0]) * 3], &screen_[static_cast<std::size_t>(idx[1]) * 3],
                         &screen_[static_cast<std::size_t>(idx[2]) * 3]};
    if (s[0][2] <= cam.near_depth || s[1][2] <= cam.near_depth || s[2][2] <= cam.near_depth) continue;
    float area = (s[1][0] - s[0][0]) * (s[2][1] - s[0][1]) - (s[2][0] - s[0][0]) * (s[1][1] - s[0][1]);
    if (!(std::fabs(area) > 1e-12f)) continue;
    // Counter-clockwise seen from the camera (y up) is clockwise on screen (y down): area < 0.
    const bool back = area > 0;
    if (back && !st.two_sided) continue;
    if (area < 0) {  // make the screen orientation positive so interior edge functions are >= 0
      std::swap(idx[1], idx[2]);
      std::swap(s[1], s[2]);
      area = -area;
    }
    const float xmin = std::min({s[0][0], s[1][0], s[2][0]}), xmax = std::max({s[0][0], s[1][0], s[2][0]});
    const float ymin = std::min({s[0][1], s[1][1], s[2][1]}), ymax = std::max({s[0][1], s[1][1], s[2][1]});
    const int x0 = std::max(0, static_cast<int>(std::floor(xmin))), x1 = std::min(w_ - 1, static_cast<int>(std::ceil(xmax)));
    const int y0 = std::max(0, static_cast<int>(std::floor(ymin))), y1 = std::min(h_ - 1, static_cast<int>(std::ceil(ymax)));
    if (x0 > x1 || y0 > y1) continue;
    // Edge k is opposite vertex k: from s[k+1] to s[k+2]. E(p) = A·px + B·py + C, interior > 0.
    float A[3], B[3], C[3];
    bool top_left[3];
    for (int k = 0; k < 3; ++k) {
      const float* a = s[(k + 1) % 3];
      const float* b = s[(k + 2) % 3];
      const float dx = b[0] - a[0], dy = b[1] - a[1];
      A[k] = -dy;
      B[k] = dx;
      C[k] = dy * a[0] - dx * a[1];
      top_left[k] = (dy == 0 && dx > 0) || dy < 0;  // fill rule: pixels exactly on shared edges drawn once
    }
    const float inv_area = 1.0f / area;
    const float iz[3] = {1.0f / s[0][2], 1.0f / s[1][2], 1.0f / s[2][2]};
    const float* nrm[3] = {&normals_[static_cast<std::size_t>(idx[0]) * 3], &normals_[static_cast<std::size_t>(idx[1]) * 3],
                           &normals_[static_cast<std::size_t>(idx[2]) * 3]};
    const float tw[3] = {m.tint ? m.tint[idx[0]] : 0.0f, m.tint ? m.tint[idx[1]] : 0.0f, m.tint ? m.tint[idx[2]] : 0.0f};
    const float flip = back ? -1.0f : 1.0f;
    for (int y = y0; y <= y1; ++y) {
      const float py = static_cast<float>(y) + 0.5f;
      float* zrow = &depth_[static_cast<std::size_t>(y) * static_cast<std::size_t>(w_)];
      std::uint8_t* crow = target.data() + static_cast<std::size_t>(y) * static_cast<std::size_t>(w_) * 3;
      // The row's span where every edge function is >= 0 (one pixel of slack each side; the exact
      // test below decides).
      float R[3], lo = static_cast<float>(x0), hi = static_cast<float>(x1) + 1.0f;
      for (int k = 0; k < 3; ++k) {
        R[k] = B[k] * py + C[k];
        if (A[k] > 0) lo = std::max(lo, -R[k] / A[k] - 0.5f);
        else if (A[k] < 0) hi = std::min(hi, -R[k] / A[k] - 0.5f);
      }
      if (!(lo <= hi + 1.0f)) continue;
      const int xa = std::max(x0, static_cast<int>(std::floor(lo)) - 1), xb = std::min(x1, static_cast<int>(std::ceil(hi)) + 1);
      for (int x = xa; x <= xb; ++x) {
        const float px = static_cast<float>(x) + 0.5f;
        float e[3];
        bool inside = true;
        for (int k = 0; k < 3 && inside; ++k) {
          e[k] = A[k] * px + R[k];
          inside = e[k] > 0 || (e[k] == 0 && top_left[k]);
        }
        if (!inside) continue;
        const float b0 = e[0] * inv_area, b1 = e[1] * inv_area, b2 = e[2] * inv_area;
        const float w = b0 * iz[0] + b1 * iz[1] + b2 * iz[2];  // 1/depth is affine on screen
        const float depth = 1.0f / w;
        if (!(depth < zrow[x])) continue;
        zrow[x] = depth;
        // perspective-correct barycentrics for the attributes
        const float p0 = b0 * iz[0] * depth, p1 = b1 * iz[1] * depth, p2 = b2 * iz[2] * depth;
        float n[3];
        for (int a = 0; a < 3; ++a) n[a] = flip * (p0 * nrm[0][a] + p1 * nrm[1][a] + p2 * nrm[2][a]);
        const float len = std::sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
        const float ndl = len > 0 ? std::max(0.0f, (n[0] * L[0] + n[1] * L[1] + n[2] * L[2]) / len) : 0.0f;
        const float shade = st.ambient + st.diffuse * ndl;
        float r, g, bl;
        if (back) {
          r = st.inside.r;
          g = st.inside.g;
          bl = st.inside.b;
        } else {
          const float t = std::clamp(p0 * tw[0] + p1 * tw[1] + p2 * tw[2], 0.0f, 1.0f);
          r = lerp_channel(st.skin.r, st.tint.r, t);
          g = lerp_channel(st.skin.g, st.tint.g, t);
          bl = lerp_channel(st.skin.b, st.tint.b, t);
        }
        std::uint8_t* px_out = crow + static_cast<std::size_t>(x) * 3;
        px_out[0] = to_u8(r * shade);
        px_out[1] = to_u8(g * shade);
        px_out[2] = to_u8(bl * shade);
      }
    }
  }
}

}  // namespace blendfuse::render
