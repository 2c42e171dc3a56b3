// blendfuse_render — the `blendfuse render` job (see job.hpp).
#include "job.hpp"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "blendfuse/core/error.hpp"
#include "blendfuse/data/dataset.hpp"
#include "blendfuse/io/mesh.hpp"
#include "blendfuse/io/npy.hpp"
#include "blendfuse/io/wav.hpp"
#include "blendfuse/train/progress.hpp"

namespace blendfuse::render {
namespace {

namespace fs = std::filesystem;

std::string lower_ext(const std::string& path) {
  std::string e = fs::path(path).extension().string();
  for (auto& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

/// Whether two paths name the same file (existing: same inode; else same normalised path).
bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) {
    const bool eq = fs::equivalent(a, b, ec);
    if (!ec) return eq;
  }
  const fs::path pa = fs::weakly_canonical(fs::absolute(a), ec);
  const fs::path pb = fs::weakly_canonical(fs::absolute(b), ec);
  return pa == pb;
}

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) { g_interrupted = 1; }

/// SIGINT/SIGTERM set a flag checked between frames, so an interrupted render removes its
/// temporary file instead of leaving it behind.
struct InterruptGuard {
  struct sigaction old_int {}, old_term {};
  InterruptGuard() {
    g_interrupted = 0;
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int);
    ::sigaction(SIGTERM, &sa, &old_term);
  }
  ~InterruptGuard() {
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGTERM, &old_term, nullptr);
  }
  void check(const std::string& out) const {
    if (g_interrupted) throw IoError(out, "interrupted; no output written");
  }
};

struct Input {
  std::string path, caption;
  std::vector<float> pos;  // (T, V, 3) positions as drawn
  long T = 0;
  const float* frame(long t, std::size_t V) const { return pos.data() + static_cast<std::size_t>(std::min(t, T - 1)) * V * 3; }
};

/// Scale-free similarity of two (V, 3) point sets: cosine of their centred coordinates.
double shape_correlation(const float* a, const float* b, std::size_t V) {
  double ca[3] = {0, 0, 0}, cb[3] = {0, 0, 0};
  for (std::size_t v = 0; v < V; ++v)
    for (int k = 0; k < 3; ++k) {
      ca[k] += a[v * 3 + static_cast<std::size_t>(k)];
      cb[k] += b[v * 3 + static_cast<std::size_t>(k)];
    }
  for (int k = 0; k < 3; ++k) {
    ca[k] /= static_cast<double>(V);
    cb[k] /= static_cast<double>(V);
  }
  double ab = 0, aa = 0, bb = 0;
  for (std::size_t v = 0; v < V; ++v)
    for (int k = 0; k < 3; ++k) {
      const double x = a[v * 3 + static_cast<std::size_t>(k)] - ca[k], y = b[v * 3 + static_cast<std::size_t>(k)] - cb[k];
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// Subjects the dataset knows: templates/<s>.npy stems and the subjects of its sequence files.
std::set<std::string> dataset_subjects(const fs::path& root) {
  std::set<std::string> known;
  if (data::detail::is_dir((root / "templates").string()))
    for (const auto& f : data::detail::list_files(root / "templates", {".npy"})) known.insert(f.stem().string());
  std::set<std::string> all = known;
  for (const char* d : {"speech", "expression", "vertices_npy"}) {
    if (!data::detail::is_dir((root / d).string())) continue;
    for (const auto& f : data::detail::list_files(root / d, {".npy"})) {
      try {
        all.insert(data::parse_subject(f.stem().string(), known));
      } catch (const ArgumentError&) {
      }
    }
  }
  return all;
}

/// Panel geometry: caption strip on top, face viewport, time strip at the bottom.
struct Layout {
  int S = 0;                    // panel width and height
  int cap_scale = 1, lab_scale = 1;
  int cap_h = 0, lab_h = 0, pad = 2;
  int vp_y = 0, vp_h = 0;       // face viewport rows within the panel
  explicit Layout(int size) : S(size) {
    cap_scale = std::max(1, size / 200);
    lab_scale = std::max(1, size / 240);
    pad = std::max(2, size / 80);
    cap_h = kLineH * cap_scale + 2 * pad;
    lab_h = kLineH * lab_scale + 2 * pad;
    vp_y = cap_h;
    vp_h = size - cap_h - lab_h;
  }
};

const Rgb kStrip{26, 28, 33}, kText{236, 236, 236}, kLabel{170, 176, 186}, kSeparator{70, 74, 84};

/// Renders one panel's face viewport (supersampled) for given positions.
class PanelRenderer {
 public:
  PanelRenderer(const Layout& L, int aa, const Bounds& box, const std::int32_t* faces, std::size_t F,
                const float* tint, std::size_t V, const Style& st)
      : aa_(aa), hi_(L.S * aa, L.vp_h * aa), style_(st) {
    cam_ = Camera::frame(box, L.S * aa, L.vp_h * aa);
    mesh_.faces = faces;
    mesh_.num_faces = F;
    mesh_.tint = tint;
    mesh_.num_vertices = V;
  }
  /// Draws the face into `canvas` with the viewport's top-left corner at (x, y).
  void render(const float* positions, Image& canvas, int x, int y) {
    mesh_.positions = positions;
    rast_.clear(hi_, style_);
    rast_.draw(hi_, cam_, mesh_, style_);
    hi_.downsample_into(canvas, x, y, aa_);
  }

 private:
  int aa_;
  Image hi_;
  Style style_;
  Camera cam_;
  MeshView mesh_;
  Rasteriser rast_;
};

void draw_caption(Image& canvas, const Layout& L, int px, int py, const std::string& caption) {
  canvas.fill_rect(px, py, L.S, L.cap_h, kStrip);
  const std::string c = fit_text(caption, L.cap_scale, L.S - 2 * L.pad);
  draw_text(canvas, px + (L.S - text_width(c, L.cap_scale)) / 2, py + L.pad, c, L.cap_scale, kText);
}

void draw_time(Image& canvas, const Layout& L, int px, int py, long t, long T_in, long T_all, double fps) {
  canvas.fill_rect(px, py + L.S - L.lab_h, L.S, L.lab_h, kStrip);
  std::string s = "t " + fmt("%.2f", static_cast<double>(t) / fps) + " s  frame " + std::to_string(std::min(t, T_in - 1) + 1) +
                  "/" + std::to_string(T_in);
  if (t >= T_in) s += " (held)";
  (void)T_all;
  s = fit_text(s, L.lab_scale, L.S - 2 * L.pad);
  draw_text(canvas, px + L.pad, py + L.S - L.lab_h + L.pad, s, L.lab_scale, kLabel);
}

}  // namespace

RenderReport render_to_file(const RenderRequest& rq) {
  const auto t_start = std::chrono::steady_clock::now();
  // ---- options ----
  const std::string ext = lower_ext(rq.out);
  if (ext != ".mp4" && ext != ".png")
    throw ArgumentError("render: --out " + rq.out + ": unsupported extension '" + ext +
                        "' (use .mp4 for a video or .png for a contact sheet)");
  const bool video = ext == ".mp4";
  if (rq.inputs.empty()) throw ArgumentError("render: give at least one --in SEQ.npy");
  if (rq.inputs.size() > 16) throw ArgumentError("render: at most 16 --in sequences, got " + std::to_string(rq.inputs.size()));
  if (rq.captions.size() > rq.inputs.size())
    throw ArgumentError("render: " + std::to_string(rq.captions.size()) + " --caption for " +
                        std::to_string(rq.inputs.size()) + " --in (one caption per input)");
  const int size = rq.size > 0 ? rq.size : (video ? 480 : 256);
  if (size < 64 || size > 4096) throw ArgumentError("render: --size " + std::to_string(rq.size) + " out of range [64, 4096] pixels");
  if (!(rq.fps >= 1 && rq.fps <= 240)) throw ArgumentError("render: --fps " + fmt("%g", rq.fps) + " out of range [1, 240]");
  if (rq.frames < 1 || rq.frames > 100) throw ArgumentError("render: --frames " + std::to_string(rq.frames) + " out of range [1, 100]");
  if (rq.antialias < 1 || rq.antialias > 4) throw ArgumentError("render: --antialias " + std::to_string(rq.antialias) + " out of range [1, 4]");
  if (!rq.wav.empty() && !video) throw ArgumentError("render: --wav " + rq.wav + " needs an .mp4 output (a .png contact sheet has no sound)");
  {
    std::error_code ec;
    if (fs::is_directory(rq.out, ec)) throw IoError(rq.out, "is a folder; give an output file name");
    const fs::path p(rq.out);
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    if (!fs::is_directory(dir, ec)) throw IoError(rq.out, "output folder " + dir.string() + " does not exist");
  }
  std::vector<std::string> reads = rq.inputs;  // the output must not overwrite any of these
  if (!rq.wav.empty()) reads.push_back(rq.wav);
  std::string ffmpeg;
  if (video) {
    ffmpeg = find_program("ffmpeg");
    if (ffmpeg.empty())
      throw IoError(rq.out, "MP4 output needs the ffmpeg program, which is not on PATH: install it "
                            "(apt-get install ffmpeg), or write a .png contact sheet instead");
  }

  // ---- dataset pieces: topology, lips, the subject's template ----
  const fs::path root(rq.data);
  if (!data::detail::is_dir(rq.data)) throw IoError(rq.data, "dataset folder not found");
  std::string tpath = (root / "template.obj").string();
  if (!data::detail::is_file(tpath) && data::detail::is_file((root / "FLAME_sample.ply").string()))
    tpath = (root / "FLAME_sample.ply").string();
  const std::string lips_path = (root / "regions" / "lips.txt").string();
  reads.push_back(tpath);
  reads.push_back(lips_path);
  std::string subject_path;
  if (!rq.subject.empty()) {
    subject_path = (root / "templates" / (rq.subject + ".npy")).string();
    reads.push_back(subject_path);
  }
  for (const auto& r : reads)
    if (same_file(rq.out, r)) throw IoError(rq.out, "the output would overwrite an input (" + r + ")");

  const io::Mesh mesh = io::load_mesh(tpath);
  const std::size_t V = static_cast<std::size_t>(mesh.num_vertices());
  const std::string vsrc = fs::path(tpath).filename().string();
  if (V == 0) throw IoError(tpath, "template mesh has no vertices");
  if (mesh.num_faces() == 0) throw IoError(tpath, "template mesh has no faces");
  std::vector<std::int32_t> lips;
  if (data::detail::is_file(lips_path)) {
    lips = data::load_index_file(lips_path, static_cast<Index>(V), vsrc);
  } else {
    std::fprintf(stderr, "render: note: %s not found; the lips are not tinted\n", lips_path.c_str());
  }
  Tensor<float> base = mesh.vertices;  // the template offsets are added to
  std::string base_name = vsrc;
  if (!rq.subject.empty()) {
    if (data::detail::is_file(subject_path)) {
      Tensor<float> t = io::load_npy<float>(subject_path);
      if (t.ndim() == 3 && t.dim(0) == 1) t = t.reshape({t.dim(1), t.dim(2)});
      if (t.ndim() != 2 || t.dim(1) != 3)
        throw IoError(subject_path, "subject template must have shape (V, 3), got " + t.shape_string());
      if (static_cast<std::size_t>(t.dim(0)) != V)
        throw IoError(subject_path, "vertex count mismatch: the subject template has " + std::to_string(t.dim(0)) +
                                        " vertices, " + vsrc + " has " + std::to_string(V));
      data::detail::check_finite(t, subject_path);
      base = t;
      base_name = subject_path;
    } else {
      const auto known = dataset_subjects(root);
      if (!known.count(rq.subject)) {
        std::string list;
        for (const auto& s : known) list += (list.empty() ? "" : ", ") + s;
        throw ArgumentError("render: unknown subject '" + rq.subject + "' in " + rq.data + " (no " + subject_path +
                            (list.empty() ? std::string(", and no sequences") : "; subjects: " + list) + ")");
      }
      // a subject without its own template uses template.obj's vertices, as Dataset::load does
    }
  }
  std::vector<float> base_v(V * 3);
  for (std::size_t i = 0; i < V * 3; ++i) base_v[i] = base[static_cast<Index>(i)];

  // ---- audio ----
  double audio_seconds = -1;
  if (!rq.wav.empty()) audio_seconds = io::load_wav(rq.wav, 0).duration();

  // ---- sequences ----
  std::vector<Input> inputs(rq.inputs.size());
  for (std::size_t k = 0; k < rq.inputs.size(); ++k) {
    Input& in = inputs[k];
    in.path = rq.inputs[k];
    in.caption = k < rq.captions.size() ? rq.captions[k] : fs::path(in.path).stem().string();
    const Tensor<float> a = io::load_npy<float>(in.path);
    const Tensor<float> seq = io::to_vertex_sequence(a, in.path);  // rank, NaN/Inf (naming the frame)
    if (static_cast<std::size_t>(seq.dim(1)) != V)
      throw IoError(in.path, "vertex count mismatch: the sequence has " + std::to_string(seq.dim(1)) +
                                 " vertices per frame (shape " + a.shape_string() + "), " + vsrc + " has " +
                                 std::to_string(V));
    if (seq.dim(0) == 0) throw IoError(in.path, "sequence has no frames (shape " + a.shape_string() + ")");
    in.T = static_cast<long>(seq.dim(0));
    in.pos.resize(static_cast<std::size_t>(in.T) * V * 3);
    for (std::size_t i = 0; i < in.pos.size(); ++i) in.pos[i] = seq[static_cast<Index>(i)];
    const double corr = shape_correlation(in.pos.data(), base_v.data(), V);
    if (rq.offsets) {
      if (corr > 0.9)
        std::fprintf(stderr, "render: warning: %s looks like absolute positions (its first frame has the shape of %s); "
                             "drop --offsets if so\n", in.path.c_str(), base_name.c_str());
      for (long t = 0; t < in.T; ++t)
        for (std::size_t i = 0; i < V * 3; ++i) in.pos[static_cast<std::size_t>(t) * V * 3 + i] += base_v[i];
    } else if (corr < 0.5) {
      std::fprintf(stderr, "render: warning: %s does not look like face positions (its first frame does not have "
                           "the shape of %s); pass --offsets if it holds deformations\n", in.path.c_str(), base_name.c_str());
    }
  }
  long T = 0, T_min = inputs[0].T;
  std::size_t k_long = 0, k_short = 0;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    if (inputs[k].T > T) T = inputs[k].T, k_long = k;
    if (inputs[k].T < T_min) T_min = inputs[k].T, k_short = k;
  }
  if (T - T_min > 1 && !rq.pad)
    throw IoError(inputs[k_short].path, "has " + std::to_string(T_min) + " frames but " + inputs[k_long].path + " has " +
                                            std::to_string(T) + " (inputs may differ by one frame); pass --pad to hold "
                                            "the last frame of the shorter sequences");
  if (video && audio_seconds >= 0 && std::fabs(audio_seconds - static_cast<double>(T) / rq.fps) > 0.5)
    std::fprintf(stderr, "render: note: %s lasts %.2f s, the animation %.2f s (%ld frames at %g fps); the video keeps "
                         "every frame (audio cut or padded with silence)\n",
                 rq.wav.c_str(), audio_seconds, static_cast<double>(T) / rq.fps, T, rq.fps);

  // ---- camera framing: every frame of every input ----
  Bounds box;
  for (const auto& in : inputs) box.add(in.pos.data(), in.pos.size() / 3);

  // ---- layout and rendering ----
  const Layout L(size);
  if (L.vp_h < 16) throw ArgumentError("render: --size " + std::to_string(size) + " leaves no room for the face");
  Style style;
  style.two_sided = rq.two_sided;
  const int n = static_cast<int>(inputs.size());
  const std::vector<long> rows = [&] {
    std::vector<long> r;
    if (video) return r;
    const long K = std::min<long>(rq.frames, T);
    for (long k = 0; k < K; ++k)
      r.push_back(K == 1 ? 0 : static_cast<long>(std::lround(static_cast<double>(k) * static_cast<double>(T - 1) / static_cast<double>(K - 1))));
    return r;
  }();
  const int W_raw = n * size, H_raw = video ? size : static_cast<int>(rows.size()) * size;
  const int W = video ? (W_raw + 1) / 2 * 2 : W_raw, H = video ? (H_raw + 1) / 2 * 2 : H_raw;
  if (W > 16384 || H > 16384)
    throw ArgumentError("render: the output would be " + std::to_string(W) + "x" + std::to_string(H) +
                        " pixels (limit 16384 per side); use a smaller --size or fewer --frames/--in");
  MeshView base_mesh{base_v.data(), V, mesh.faces.data(), static_cast<std::size_t>(mesh.num_faces()), nullptr};
  const std::vector<float> lip_w = region_weights(base_mesh, lips);
  std::vector<PanelRenderer> panels;
  for (int c = 0; c < n; ++c)
    panels.emplace_back(L, rq.antialias, box, mesh.faces.data(), static_cast<std::size_t>(mesh.num_faces()), lip_w.data(), V, style);
  Image canvas(W, H, style.background);
  InterruptGuard interrupt;
  RenderReport rep;
  rep.width = W;
  rep.height = H;
  // One row of panels (frame t at canvas row py); the columns render on parallel threads.
  const int threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 1, n);
  auto draw_row = [&](int py, long t) {
    auto column = [&](int c) {
      const int px = c * size;
      const Input& in = inputs[static_cast<std::size_t>(c)];
      panels[static_cast<std::size_t>(c)].render(in.frame(t, V), canvas, px, py + L.vp_y);
      draw_time(canvas, L, px, py, t, in.T, T, rq.fps);
      if (c > 0) canvas.fill_rect(px, py, 1, size, kSeparator);
    };
    if (threads <= 1) {
      for (int c = 0; c < n; ++c) column(c);
      return;
    }
    std::vector<std::thread> pool;
    std::exception_ptr err;
    std::mutex mu;
    for (int k = 1; k < threads; ++k)
      pool.emplace_back([&, k] {
        try {
          for (int c = k; c < n; c += threads) column(c);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          err = std::current_exception();
        }
      });
    try {
      for (int c = 0; c < n; c += threads) column(c);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      err = std::current_exception();
    }
    for (auto& th : pool) th.join();
    if (err) std::rethrow_exception(err);
  };
  if (video) {
    for (int c = 0; c < n; ++c) draw_caption(canvas, L, c * size, 0, inputs[static_cast<std::size_t>(c)].caption);
    VideoWriter writer(rq.out, W, H, rq.fps, rq.wav, ffmpeg);
    train::Progress bar("render", T, rq.progress && train::interactive_terminal());
    for (long t = 0; t < T; ++t) {
      interrupt.check(rq.out);
      draw_row(0, t);
      writer.write(canvas);
      bar.update(t + 1);
    }
    interrupt.check(rq.out);
    writer.finish();
    bar.finish();
    rep.frames = T;
  } else {
    train::Progress bar("render", static_cast<long>(rows.size()), rq.progress && train::interactive_terminal());
    for (std::size_t r = 0; r < rows.size(); ++r) {
      interrupt.check(rq.out);
      const int py = static_cast<int>(r) * size;
      for (int c = 0; c < n; ++c) draw_caption(canvas, L, c * size, py, inputs[static_cast<std::size_t>(c)].caption);
      draw_row(py, rows[r]);
      if (r > 0) canvas.fill_rect(0, py, W, 1, kSeparator);
      bar.update(static_cast<long>(r + 1));
    }
    bar.finish();
    write_png(rq.out, canvas);
    rep.frames = static_cast<long>(rows.size());
  }
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return rep;
}

}  // namespace blendfuse::render
