// blendfuse CLI — `render`: draw vertex sequences as an MP4 video or a PNG contact sheet
// (the rasteriser is examples/render/, docs/render.md).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "render/job.hpp"

namespace blendfuse::cli {

struct RenderArgs {
  render::RenderRequest req;
  bool absolute = false, one_sided = false, quiet = false;
};

inline void add_render(CLI::App& app, RenderArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("render", "Draw face sequences side by side as an MP4 video (with audio) or a PNG contact sheet");
  c->add_option("--data", a.req.data, "dataset folder: template.obj (topology), regions/lips.txt (tinted), templates/")->required();
  c->add_option("--in", a.req.inputs, "sequence .npy (T,V,3), as written by speak/fuse --out; repeat for side-by-side panels")->required();
  c->add_option("--caption", a.req.captions, "caption of the matching --in (default: its file name without .npy); repeat");
  c->add_option("--out", a.req.out, "output: .mp4 (H.264 video, needs ffmpeg) or .png (contact sheet: rows = frames, columns = inputs)")->required();
  c->add_option("--wav", a.req.wav, "audio muxed into the .mp4 (AAC; padded with silence or cut to the animation's length)");
  c->add_option("--subject", a.req.subject, "subject whose template (templates/S.npy) --offsets are added to (default: template.obj)");
  auto* abs = c->add_flag("--absolute", a.absolute, "the sequences are absolute positions (the default; what speak/fuse write)");
  auto* off = c->add_flag("--offsets", a.req.offsets, "the sequences are deformations (positions - template): add the template");
  abs->excludes(off);
  c->add_option("--fps", a.req.fps, "frame rate of the sequences and the video (default 30)");
  c->add_option("--size", a.req.size, "panel size in pixels (default 480 for .mp4, 256 for .png)");
  c->add_option("--frames", a.req.frames, "contact sheet: number of evenly spaced frames (rows; default 8)");
  c->add_option("--antialias", a.req.antialias, "supersampling per axis, 1-4 (default 2)");
  c->add_flag("--pad", a.req.pad, "allow inputs whose lengths differ by more than one frame: shorter ones hold their last frame");
  c->add_flag("--cull", a.one_sided, "do not draw back faces (default: drawn dark, e.g. the inner lips)");
  c->add_flag("--quiet", a.quiet, "no progress bar and no summary line");
  c->callback([&] {
    run = [&] {
      a.req.progress = !a.quiet;
      a.req.two_sided = !a.one_sided;
      const auto rep = render::render_to_file(a.req);
      if (!a.quiet)
        std::printf("render: wrote %s (%ld %s, %dx%d, %.1f s)\n", a.req.out.c_str(), rep.frames,
                    a.req.out.size() >= 4 && a.req.out.substr(a.req.out.size() - 4) == ".png" ? "rows" : "frames",
                    rep.width, rep.height, rep.seconds);
    };
  });
}

}  // namespace blendfuse::cli
