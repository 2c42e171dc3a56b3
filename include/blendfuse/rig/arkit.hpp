// blendfuse — the ARKit-52 rig of the procedural face (data/face_mesh.hpp).
//
// Semantic approximations of Apple's 52 ARKit blendshapes, built from the face layout: the mouth
// slit (separate upper/lower lip copies, lens profile λ that is 1 at the slit centre and 0 at the
// corners), the mouth corners, the eye holes (lids above/below them) and the brows. Each shape is
// a smooth, localised offset field (C² Wendland bumps, as the generator's bases), in millimetres,
// at weight 1 meaning "fully on" (ARKit's range is [0, 1]). "Left" is the face's own left, i.e. +x
// (the viewer's right; FaceLayout has x to the viewer's right) — ARKit's convention. Left/right
// shapes are exact mirror images (x → −x) on the mirror-symmetric mesh.
// Shapes the face cannot show — eyeLook* (there are no eyeballs) and tongueOut (no tongue) — are
// all zero and flagged kUnsupported. The table with what each shape does is in docs/rigs.md.
// Deterministic: a pure function of the mesh (no random numbers).
#pragma once

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "blendfuse/data/face_mesh.hpp"
#include "blendfuse/rig/rig.hpp"

namespace blendfuse::rig {

/// The 52 ARKit blendshape names in the order of Apple's ARFaceAnchor.BlendShapeLocation
/// documentation (grouped: left eye, right eye, mouth and jaw, brows/cheeks/nose, tongue).
inline const std::array<const char*, 52>& arkit52_names() {
  static const std::array<const char*, 52> n = {
      "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
      "eyeSquintLeft", "eyeWideLeft",
      "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
      "eyeSquintRight", "eyeWideRight",
      "jawForward", "jawLeft", "jawRight", "jawOpen",
      "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
      "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
      "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
      "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
      "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
      "mouthUpperUpLeft", "mouthUpperUpRight",
      "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
      "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
      "tongueOut"};
  return n;
}

/// Mouth-centre travel of jawOpen at weight 1, mm (the generator's jaw_open basis moves it 12 mm).
inline constexpr double kArkitJawOpenMm = 20.0;

namespace detail {

struct ArkitVertex {
  double x, y, z;
  double lambda;  // lens profile of the slit (1 at its centre, 0 at the corners and away from it)
  double h_up;    // 1 upper side, 0 lower side, 0.5 on the mouth row outside the slit
  double jaw;     // how much the vertex follows the lower jaw (0 above, 1 below; lower lip copy 1)
  double jy, jz;  // jaw-rotation displacement at jawOpen = 1 (about the x axis)
};

inline std::vector<ArkitVertex> arkit_context(const data::FaceMesh& m) {
  using data::detail::smoothstep01;
  // the generator's per-vertex geometry (slit lens, sides, lateral falloff, jaw rotation about the
  // pivot behind the face), with the rig's own jawOpen travel
  const auto base = data::detail::basis_context(m, kArkitJawOpenMm);
  const double ym = m.mouth_y;
  std::vector<ArkitVertex> out(base.size());
  for (std::size_t k = 0; k < base.size(); ++k) {
    const data::detail::BasisContext& b = base[k];
    ArkitVertex& c = out[k];
    c.x = b.x;
    c.y = b.y;
    c.z = b.z;
    c.lambda = b.lambda;
    c.h_up = b.h_up;
    // continuous part: half on the mouth row, full 14 mm below, none 14 mm above; the slit's lens
    // part gives the lower lip copies the full jaw and the upper copies none
    const double sig = smoothstep01(0.5 + 0.5 * (ym - c.y) / 14.0);
    c.jaw = ((1.0 - c.lambda) * sig + c.lambda * (1.0 - c.h_up)) * b.lat;
    c.jy = b.J.y;
    c.jz = b.J.z;
  }
  return out;
}

struct D3 {
  double x = 0, y = 0, z = 0;
  void add(double w, double dx, double dy, double dz) {
    x += w * dx;
    y += w * dy;
    z += w * dz;
  }
};

/// The offset of shape `name` at one vertex; `s` = +1 for …Left (x > 0), −1 for …Right, 1 else.
/// Every field depends on x only through s·x and moves x by s·(…), so L/R are mirror images.
inline D3 arkit_offset(const std::string& n, double s, const ArkitVertex& c, const data::FaceMesh& m) {
  using data::FaceLayout;
  using data::detail::bump;
  using data::detail::smoothstep01;
  const double xc = m.mouth_half_width, ym = m.mouth_y;
  const double ex = FaceLayout::eye_x, ey = FaceLayout::eye_y, erx = FaceLayout::eye_rx, ery = FaceLayout::eye_ry;
  const double by = FaceLayout::brow_y;
  const double x = s * c.x, y = c.y;  // mirrored x: the "Left" field evaluated on the chosen side
  const double low = 1.0 - c.h_up;
  const double M_lip = bump(x, y, 0.0, ym, xc + 12.0, 16.0);
  const double M_upper = bump(x, y, 0.0, ym + 9.0, xc + 8.0, 12.0);
  const double M_lower = bump(x, y, 0.0, ym - 9.0, xc + 8.0, 12.0);
  const double M_wide = bump(x, y, 0.0, ym, xc + 22.0, 22.0);
  // lids: above / below the eye centre line
  const double upper_lid = bump(x, y, ex, ey + ery, erx + 5.0, 9.0) * smoothstep01((y - ey) / 3.0 + 0.5);
  const double lower_lid = bump(x, y, ex, ey - ery, erx + 4.0, 7.0) * smoothstep01((ey - y) / 3.0 + 0.5);
  D3 d;
  if (n == "eyeBlink") {
    d.add(upper_lid, 0, -(2.0 * ery + 1.0), 1.0);
    d.add(lower_lid, 0, 1.5, 0);
  } else if (n == "eyeSquint") {
    d.add(lower_lid, 0, 3.0, 0.5);
    d.add(upper_lid, 0, -1.5, 0);
    d.add(bump(x, y, ex + 4.0, ey - 14.0, 16.0, 10.0), 0, 1.5, 0.5);
  } else if (n == "eyeWide") {
    d.add(upper_lid, 0, 3.0, -0.5);
    d.add(lower_lid, 0, -1.0, 0);
  } else if (n == "jawForward") {
    d.add(c.jaw, 0, 0, 6.0);
  } else if (n == "jawSide") {  // jawLeft/jawRight: the lower jaw towards +x / −x
    d.add(c.jaw, 4.0, 0, 0);
  } else if (n == "jawOpen") {
    d.add(c.jaw, 0, c.jy, c.jz);
  } else if (n == "mouthClose") {  // cancels jawOpen's lip opening: lips meet while the jaw is open
    const double k = c.lambda * (c.h_up > 0.5 ? 0.5 : (c.h_up < 0.5 ? -0.5 : 0.0));
    d.add(k, 0, c.jy, c.jz);
  } else if (n == "mouthFunnel") {
    d.add(M_lip, -0.2 * x, 0, 5.0);
    d.add(c.lambda, 0, 2.5 * (c.h_up - low), 0);
  } else if (n == "mouthPucker") {
    d.add(M_lip, -0.35 * x, 0, 7.0);
  } else if (n == "mouthSide") {  // mouthLeft/mouthRight: the whole mouth towards +x / −x
    d.add(M_wide, 5.0, 0, 0);
  } else if (n == "mouthSmile") {
    d.add(bump(x, y, xc, ym, 22.0, 20.0), 6.0, 6.0, -2.0);
    d.add(bump(x, y, 40.0, -5.0, 25.0, 22.0), 1.0, 3.0, 2.0);
  } else if (n == "mouthFrown") {
    d.add(bump(x, y, xc, ym, 20.0, 18.0), -1.0, -5.0, 0.0);
  } else if (n == "mouthDimple") {
    d.add(bump(x, y, xc, ym, 14.0, 14.0), 2.0, 0.5, -3.0);
  } else if (n == "mouthStretch") {
    d.add(bump(x, y, xc, ym, 22.0, 18.0), 5.0, -2.0, -1.0);
  } else if (n == "mouthRollLower") {
    d.add(M_lower * low, 0, 1.5, -3.0);
  } else if (n == "mouthRollUpper") {
    d.add(M_upper * c.h_up, 0, -1.5, -3.0);
  } else if (n == "mouthShrugLower") {
    d.add(bump(x, y, 0.0, ym - 14.0, xc + 6.0, 16.0), 0, 3.0, 1.0);
  } else if (n == "mouthShrugUpper") {
    d.add(bump(x, y, 0.0, ym + 10.0, xc + 4.0, 12.0), 0, 2.5, 1.0);
  } else if (n == "mouthPress") {
    const double w = bump(x, y, 0.5 * xc, ym, xc, 10.0);
    d.add(w, 0, -0.8 * (c.h_up - low), -2.0);
  } else if (n == "mouthLowerDown") {
    d.add(bump(x, y, 0.45 * xc, ym - 4.0, 0.8 * xc, 12.0) * low, 0, -5.0, 1.0);
  } else if (n == "mouthUpperUp") {
    d.add(bump(x, y, 0.45 * xc, ym + 4.0, 0.8 * xc, 12.0) * c.h_up, 0, 4.0, 1.0);
  } else if (n == "browDown") {
    d.add(bump(x, y, 25.0, by, 22.0, 12.0), -1.5, -4.0, 0.5);
  } else if (n == "browInnerUp") {  // symmetric: both inner brows
    d.add(bump(c.x, y, 12.0, by, 14.0, 12.0), 0, 5.0, 0);
    d.add(bump(c.x, y, -12.0, by, 14.0, 12.0), 0, 5.0, 0);
  } else if (n == "browOuterUp") {
    d.add(bump(x, y, 40.0, by, 18.0, 12.0), 0, 5.0, 0);
  } else if (n == "cheekPuff") {  // symmetric
    d.add(bump(c.x, y, 45.0, -25.0, 25.0, 25.0), 3.0, 0, 5.0);
    d.add(bump(c.x, y, -45.0, -25.0, 25.0, 25.0), -3.0, 0, 5.0);
    return d;  // already in world x
  } else if (n == "cheekSquint") {
    d.add(bump(x, y, 38.0, 0.0, 18.0, 14.0), 0, 3.0, 1.0);
  } else if (n == "noseSneer") {
    d.add(bump(x, y, 10.0, -10.0, 9.0, 12.0), 0, 3.0, 0.5);
    d.add(bump(x, y, 8.0, ym + 10.0, 10.0, 8.0), 0, 1.0, 0);
  } else {
    throw ArgumentError("arkit_offset: unknown shape family '" + n + "'");
  }
  d.x *= s;  // move x on the chosen side
  return d;
}

}  // namespace detail

/// Builds the ARKit-52 rig on the procedural face mesh (neutral = the canonical face, mm).
inline Rig build_arkit52(const data::FaceMesh& m) {
  const auto ctx = detail::arkit_context(m);
  const Index V = m.num_vertices();
  Rig r;
  r.name = "arkit52";
  r.source = "blendfuse procedural face: semantic ARKit-52 approximations (rig/arkit.hpp)";
  r.unit_mm = 1.0;
  r.neutral = m.vertices.clone();
  r.faces = m.faces.clone();
  r.shapes = Tensor<float>({52, V, 3});
  for (std::size_t i = 0; i < 52; ++i) {
    const std::string name = arkit52_names()[i];
    r.names.push_back(name);
    std::string fam = name;
    double s = 1.0;
    auto strip = [&](const std::string& suf, double side) {
      if (fam.size() > suf.size() && fam.compare(fam.size() - suf.size(), suf.size(), suf) == 0) {
        fam = fam.substr(0, fam.size() - suf.size());
        s = side;
      }
    };
    strip("Left", 1.0);
    strip("Right", -1.0);
    if (fam == "jaw" || fam == "mouth") fam += "Side";  // jawLeft/Right, mouthLeft/Right
    const bool unsupported = fam.rfind("eyeLook", 0) == 0 || fam == "tongueOut";
    r.flags.push_back(unsupported ? kUnsupported : 0);
    if (unsupported) continue;
    for (Index v = 0; v < V; ++v) {
      const auto d = detail::arkit_offset(fam, s, ctx[static_cast<std::size_t>(v)], m);
      r.shapes(static_cast<Index>(i), v, 0) = static_cast<float>(d.x);
      r.shapes(static_cast<Index>(i), v, 1) = static_cast<float>(d.y);
      r.shapes(static_cast<Index>(i), v, 2) = static_cast<float>(d.z);
    }
  }
  r.validate("build_arkit52");
  return r;
}

/// The rig in another unit (coordinates divided by unit_mm; e.g. 1000 for metres).
inline Rig rig_in_unit(Rig r, double unit_mm) {
  if (unit_mm == r.unit_mm) return r;
  const double f = r.unit_mm / unit_mm;
  auto scale = [f](Tensor<float>& t) {
    t = t.clone();
    for (Index i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(t[i] * f);
  };
  scale(r.neutral);
  scale(r.shapes);
  if (r.jaw) {
    scale(r.jaw->posedirs);
    for (double& j : r.jaw->joint) j *= f;
  }
  r.unit_mm = unit_mm;
  return r;
}

}  // namespace blendfuse::rig
