// blendfuse_render — the `blendfuse render` job: sequences + a dataset folder → MP4 or PNG.
//
// Sequences are (T, V, 3) (or (T, V*3), or one (V, 3) frame) .npy files. By default they hold
// absolute positions — what `blendfuse speak --out` and `fuse --out` write, and what the dataset's
// speech/ and expression/ folders hold. With `offsets` they are deformations, added to the subject's
// template (templates/<subject>.npy, else template.obj's vertices).
//
// Frame counts: inputs may differ by one frame (rounding of audio length → frames); the video has
// the longest length and a shorter input holds its last frame. Larger differences are refused
// unless `pad` is set (then every shorter input holds its last frame).
//
// Framing: one camera for every panel, framed by the bounding box of every frame of every input
// as drawn, so the unit of the data (mm, m) does not change the picture.
#pragma once

#include <string>
#include <vector>

#include "render.hpp"

namespace blendfuse::render {

struct RenderRequest {
  std::string data;                   // dataset folder (template.obj, regions/lips.txt, templates/)
  std::vector<std::string> inputs;    // sequence .npy files, one panel each
  std::vector<std::string> captions;  // per input (missing ones: the file's stem)
  std::string subject;                // template for `offsets` (default: template.obj)
  std::string wav;                    // audio muxed into the MP4
  std::string out;                    // .mp4 (video) or .png (contact sheet)
  double fps = 30;
  int size = 0;                       // panel pixels; 0: 480 for video, 256 for a contact sheet
  int frames = 8;                     // contact-sheet rows
  int antialias = 2;                  // supersampling factor per axis (1 = off)
  bool offsets = false;
  bool pad = false;
  bool progress = true;               // progress bar (only on a terminal and without CI)
  bool two_sided = true;
};

struct RenderReport {
  long frames = 0;          // frames rendered (video frames or contact-sheet rows)
  int width = 0, height = 0;
  double seconds = 0;       // wall time
};

/// Validates everything, renders and writes `out` atomically. Throws IoError naming the file at
/// fault or ArgumentError; never leaves a partial output behind.
RenderReport render_to_file(const RenderRequest& req);

}  // namespace blendfuse::render
