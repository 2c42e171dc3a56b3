// blendfuse_render — a small software rasteriser to look at talking-face sequences
// (`blendfuse render`). Not part of the header-only core: a static library under examples/render/.
//
// * Image: 8-bit RGB, row-major, top row first (the layout of ffmpeg's rgb24 and of PNG).
// * Camera: a fixed perspective camera on the +z side of the scene looking towards −z, y up
//   (the convention of template.obj / VOCAset / FLAME: x right, y up, z towards the viewer). It is
//   framed from a bounding box only, so the picture does not depend on the data's unit.
// * Rasteriser: z-buffer, smooth vertex normals recomputed per frame, per-pixel Lambert shading
//   with one key light + ambient, two-sided (back faces drawn darker in the "inside" colour, or
//   culled), a per-vertex tint weight (lips) interpolated across triangles.
// * Text: a built-in 5×7 bitmap font for printable ASCII, scaled by an integer factor.
// * PNG through libpng; MP4 through an `ffmpeg` subprocess fed raw RGB24 frames.
// Every failure throws blendfuse::IoError (naming the file) or blendfuse::ArgumentError.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace blendfuse::render {

struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

/// 8-bit RGB image, row-major, top row first.
class Image {
 public:
  Image() = default;
  Image(int width, int height, Rgb fill = {});
  int width() const { return w_; }
  int height() const { return h_; }
  bool empty() const { return w_ == 0 || h_ == 0; }
  Rgb at(int x, int y) const {
    const std::uint8_t* p = &px_[(static_cast<std::size_t>(y) * static_cast<std::size_t>(w_) + static_cast<std::size_t>(x)) * 3];
    return {p[0], p[1], p[2]};
  }
  void set(int x, int y, Rgb c) {
    std::uint8_t* p = &px_[(static_cast<std::size_t>(y) * static_cast<std::size_t>(w_) + static_cast<std::size_t>(x)) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  std::uint8_t* data() { return px_.data(); }
  const std::uint8_t* data() const { return px_.data(); }
  std::size_t bytes() const { return px_.size(); }
  void fill(Rgb c);
  /// Fills the rectangle clipped to the image.
  void fill_rect(int x, int y, int w, int h, Rgb c);
  /// Copies `src` with its top-left corner at (x, y), clipped.
  void blit(const Image& src, int x, int y);
  /// Box-filter reduction by an integer factor (width and height must be multiples of it).
  Image downsample(int factor) const;
  /// The same, written into `dst` with its top-left corner at (x, y) (it must fit).
  void downsample_into(Image& dst, int x, int y, int factor) const;

 private:
  int w_ = 0, h_ = 0;
  std::vector<std::uint8_t> px_;
};

/// Axis-aligned bounding box of points.
struct Bounds {
  float lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
  bool valid = false;
  void add(const float* xyz, std::size_t n_points);  // n_points × 3 floats
  float extent(int axis) const { return valid ? hi[axis] - lo[axis] : 0.0f; }
  float max_extent() const;
};

/// A perspective camera on the +z axis through the centre of a bounding box, looking towards −z
/// with y up, placed `distance_factor` × (largest extent) in front of the box and zoomed so the
/// projected box fills a width × height viewport up to `margin` (fraction of the viewport) on the
/// tightest side. Scaling the box (mm ↔ m) gives the same picture.
struct Camera {
  float eye[3] = {0, 0, 1};
  float focal = 1;           // pixels per unit of (x / depth)
  float cx = 0, cy = 0;      // pixel position of the optical axis
  float near_depth = 0;      // depths below this are behind the camera (not drawn)

  static Camera frame(const Bounds& box, int width, int height, float margin = 0.06f,
                      float distance_factor = 3.0f);
  /// World point → pixel coordinates (x right, y down) and view depth (> 0 in front).
  void project(const float* p, float& sx, float& sy, float& depth) const {
    depth = eye[2] - p[2];
    const float inv = 1.0f / depth;
    sx = cx + focal * (p[0] - eye[0]) * inv;
    sy = cy - focal * (p[1] - eye[1]) * inv;
  }
};

/// Colours and light. The light direction points from the surface towards the light (world).
struct Style {
  Rgb background{38, 41, 48};
  Rgb skin{224, 186, 160};
  Rgb tint{186, 78, 84};      // lips
  Rgb inside{112, 40, 46};    // back faces (inner lips, mouth seen through the slit)
  float light[3] = {-0.35f, 0.45f, 0.82f};
  float ambient = 0.26f;
  float diffuse = 0.80f;
  bool two_sided = true;      // false: back faces are culled
};

/// A triangle mesh to draw: positions (V, 3), faces (F, 3), optional per-vertex tint weight in
/// [0, 1] (V) blending Style::skin towards Style::tint.
struct MeshView {
  const float* positions = nullptr;
  std::size_t num_vertices = 0;
  const std::int32_t* faces = nullptr;
  std::size_t num_faces = 0;
  const float* tint = nullptr;
};

/// Per-vertex weights of a vertex region (e.g. the lips) for MeshView::tint: 1 well inside, 0 well
/// outside, a smooth step across the region's border over ±`softness` × the median length of the
/// edges at the region's vertices (so staircase borders of grid regions come out rounded). The
/// result depends on the mesh's shape only, not its unit.
std::vector<float> region_weights(const MeshView& mesh, const std::vector<std::int32_t>& region, float softness = 1.5f);

/// Area-weighted smooth vertex normals (V × 3, unit length; zero for isolated vertices).
void vertex_normals(const MeshView& mesh, std::vector<float>& normals);

/// Draws meshes into an image with a z-buffer; keeps its buffers between frames.
class Rasteriser {
 public:
  /// Clears `target` to the style's background and resets the z-buffer.
  void clear(Image& target, const Style& style);
  /// Draws `mesh` (normals recomputed) on top of what is there, depth-tested.
  void draw(Image& target, const Camera& cam, const MeshView& mesh, const Style& style);
  /// Depth of the nearest surface at a pixel (infinity where nothing was drawn).
  float depth_at(int x, int y) const { return depth_[static_cast<std::size_t>(y) * static_cast<std::size_t>(w_) + static_cast<std::size_t>(x)]; }

 private:
  int w_ = 0, h_ = 0;
  std::vector<float> depth_, normals_, screen_;
};

// ---- text ----------------------------------------------------------------------------------------
/// Glyph cell of the built-in font: 5×7 dots plus 1 column and 2 rows of spacing, × scale.
constexpr int kGlyphW = 5, kGlyphH = 7, kAdvanceX = 6, kLineH = 9;
/// The 7 rows of a glyph, bit 4 = leftmost column; characters outside printable ASCII give '?'.
const std::uint8_t* glyph_rows(char c);
int text_width(std::string_view s, int scale);
/// Draws `s` with its top-left corner at (x, y), clipped to the image.
void draw_text(Image& img, int x, int y, std::string_view s, int scale, Rgb color);
/// `s` shortened with "..." to fit `max_px` pixels at `scale`.
std::string fit_text(std::string_view s, int scale, int max_px);

// ---- files ---------------------------------------------------------------------------------------
/// Writes an 8-bit RGB PNG atomically (temp file next to `path`, then rename).
void write_png(const std::string& path, const Image& img);
/// Reads a PNG (any bit depth / colour type libpng can convert) as 8-bit RGB.
Image read_png(const std::string& path);

/// The full path of an executable found on $PATH, or "" when there is none.
std::string find_program(const std::string& name);

/// Encodes RGB frames to an H.264 MP4 (optionally muxing an audio file as AAC) through an
/// `ffmpeg` subprocess. The video goes to a temporary file next to `out_path`, renamed over it by
/// finish(); an object destroyed without finish() (an error) kills ffmpeg and removes the
/// temporary file. Frame width and height must be even.
class VideoWriter {
 public:
  VideoWriter(std::string out_path, int width, int height, double fps, std::string audio_path = "",
              std::string ffmpeg = "");
  VideoWriter(const VideoWriter&) = delete;
  VideoWriter& operator=(const VideoWriter&) = delete;
  ~VideoWriter();
  void write(const Image& frame);
  void finish();
  long frames_written() const { return frames_; }

 private:
  void abort() noexcept;
  std::string out_, tmp_;
  int w_, h_;
  long frames_ = 0;
  int pid_ = -1, fd_ = -1;
  bool done_ = false;
};

}  // namespace blendfuse::render
