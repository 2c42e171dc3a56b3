// blendfuse — the inference pipeline: speech audio (+ an optional expression sequence) → a face
// sequence (T, V, 3) of absolute vertex positions in mm.
//
//   audio ──AudioModel──▶ speech deformations (T, V, 3)
//   expression positions (T', V, 3) − its subject's neutral face ──stretch to T──▶ expression deformations
//   fused = DeformationFusionModule::fuse(speech, expression, intensity)     (eq. 13)
//         or speech + intensity · expression                                 (opt.naive: the baseline)
//   result = fused + the neutral face of opt.template_subject
//
// This is what `blendfuse speak` runs (examples/cli_audio.hpp is a shell over animate(): it parses
// options, loads each model once, reads or synthesises the audio and writes the result).
//
// Units: everything here is in mm — the audio model's unit and that of its stored templates.
// Templates from elsewhere (AnimateOptions::templates, e.g. a dataset's after rescale_to_mm())
// must be in mm too; an expression in another unit says so with expression_unit_mm; a caller
// that wants another output unit converts the result.
//
// Backends: the audio model carries its encoder backend (AudioModel<float, OneDnn> runs wav2vec 2.0
// on oneDNN), the fusion module its own (DeformationFusionModule<float, B>); both are host backends,
// the result is a host Tensor<float>.
//
// Errors: ArgumentError / ShapeError naming the problem (an unknown speaking style, a subject
// without a template, vertex counts that differ, an expression without a fusion model or --naive,
// audio shorter than one encoder frame), thrown before any model runs.
#pragma once

#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "blendfuse/core/error.hpp"
#include "blendfuse/core/tensor.hpp"
#include "blendfuse/data/dataset.hpp"
#include "blendfuse/io/wav.hpp"
#include "blendfuse/metrics/fusion_eval.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/nn/dfm.hpp"

namespace blendfuse {

/// What animate() does besides running the audio model.
struct AnimateOptions {
  /// Speaking style: a training subject of the audio model (empty: its first).
  std::string subject;
  /// Subject whose neutral face is animated (empty: `subject`).
  std::string template_subject;
  /// Neutral faces (V, 3) in mm by subject; null: the templates stored in the audio model. When
  /// set, templates are taken from here only (the model's still count as known subjects when
  /// expression_subject is parsed from a sequence name).
  const std::map<std::string, Tensor<float>>* templates = nullptr;
  /// What `templates` are, for error messages (e.g. a dataset folder; empty: "the given templates").
  std::string templates_name;
  /// An expression: absolute positions (T', V, 3), any T' ≥ 1, time-stretched to the speech's T
  /// frames. None: speech only.
  std::optional<Tensor<float>> expression;
  /// Millimetres per unit of `expression` (1: mm).
  double expression_unit_mm = 1.0;
  /// Whose neutral face the expression is relative to: a subject, or a sequence name
  /// "<subject>_<sequence>" (a file stem) whose subject data::parse_subject finds among the known
  /// subjects (the model's templates and `templates`). Empty: the template subject.
  std::string expression_subject;
  /// Scale of the expression (its blendshape weights with a fusion model; its deformations with
  /// `naive`), finite and ≥ 0.
  double intensity = 1.0;
  /// Add speech and expression deformations (no fusion model: the baseline of the paper).
  bool naive = false;
  /// The streaming path of the audio model (bounded memory and latency) instead of the offline
  /// one, which attends over the whole clip at once.
  bool stream = false;
};

namespace detail {

/// The neutral face (V, 3) of `subject`: from opt.templates when given, else from the model.
template <class EncB>
const Tensor<float>& animate_template(const nn::AudioModel<float, EncB>& model, const AnimateOptions& opt,
                                      const std::string& subject) {
  const auto& ts = opt.templates ? *opt.templates : model.templates();
  const auto it = ts.find(subject);
  if (it == ts.end()) {
    std::string known;
    for (const auto& [s, t] : ts) known += (known.empty() ? "" : ", ") + s;
    const std::string where = opt.templates ? (opt.templates_name.empty() ? std::string("the given templates")
                                                                          : opt.templates_name)
                                            : std::string("the audio model");
    throw ArgumentError("animate: no template for subject '" + subject + "' in " + where + " (it has: " +
                        (known.empty() ? std::string("none") : known) + ")");
  }
  BF_CHECK(it->second.ndim() == 2 && it->second.dim(0) == model.vertices() && it->second.dim(1) == 3, ShapeError,
           "animate: the template of subject '", subject, "' has shape ", it->second.shape_string(), ", expected (",
           model.vertices(), ", 3) for the audio model");
  return it->second;
}

/// The subject of the expression's neutral face (see AnimateOptions::expression_subject).
template <class EncB>
std::string animate_expression_subject(const nn::AudioModel<float, EncB>& model, const AnimateOptions& opt,
                                       const std::string& template_subject) {
  if (opt.expression_subject.empty()) return template_subject;
  std::set<std::string> known;
  for (const auto& [s, t] : model.templates()) known.insert(s);
  if (opt.templates)
    for (const auto& [s, t] : *opt.templates) known.insert(s);
  if (known.count(opt.expression_subject)) return opt.expression_subject;
  return data::parse_subject(opt.expression_subject, known);
}

}  // namespace detail

/// Speech `samples` (mono, `sample_rate` Hz; resampled to 16 kHz) and, with opt.expression, an
/// emotion → the face sequence (T, V, 3), absolute positions in mm, T = the audio model's frames
/// for the clip. `fusion`: the fusion model that adds the expression (null: none; then an
/// expression needs opt.naive). See the header comment for the steps, units and errors.
template <class EncB, class FusB>
Tensor<float> animate(const nn::AudioModel<float, EncB>& model, const nn::DeformationFusionModule<float, FusB>* fusion,
                      const std::vector<float>& samples, int sample_rate, const AnimateOptions& opt) {
  // ---- every check before any work ----
  BF_CHECK(sample_rate > 0, ArgumentError, "animate: sample rate ", sample_rate, " Hz is not positive");
  BF_CHECK(std::isfinite(opt.intensity) && opt.intensity >= 0, ArgumentError,
           "animate: intensity must be a finite number >= 0, got ", opt.intensity);
  BF_CHECK(std::isfinite(opt.expression_unit_mm) && opt.expression_unit_mm > 0, ArgumentError,
           "animate: expression_unit_mm must be a finite positive number, got ", opt.expression_unit_mm);
  if (opt.naive) {
    BF_CHECK(opt.expression.has_value(), ArgumentError, "animate: naive needs an expression");
    BF_CHECK(fusion == nullptr, ArgumentError, "animate: naive is the sum without a fusion model; got a fusion model too");
  } else if (opt.expression) {
    BF_CHECK(fusion != nullptr, ArgumentError,
             "animate: an expression needs a fusion model (or naive = true for the naive sum)");
  } else {
    BF_CHECK(fusion == nullptr, ArgumentError, "animate: a fusion model needs an expression to fuse");
  }
  const Index V = model.vertices();
  if (fusion)
    BF_CHECK(fusion->vertices() == V, ArgumentError, "animate: the fusion model has ", fusion->vertices(),
             " vertices, the audio model ", V);
  const std::string subject = opt.subject.empty() ? model.config().subjects.front() : opt.subject;
  const Index style = model.subject_index(subject);
  const Tensor<float>& tmpl = detail::animate_template(model, opt, opt.template_subject.empty() ? subject : opt.template_subject);
  const Tensor<float>* etmpl = nullptr;
  if (opt.expression) {
    const Tensor<float>& e = *opt.expression;
    BF_CHECK(e.ndim() == 3 && e.dim(0) >= 1 && e.dim(1) == V && e.dim(2) == 3, ShapeError, "animate: the expression has shape ",
             e.shape_string(), ", expected (T', ", V, ", 3) for the audio model's ", V, " vertices");
    etmpl = &detail::animate_template(model, opt,
                                      detail::animate_expression_subject(model, opt, opt.template_subject.empty() ? subject : opt.template_subject));
  }
  const std::vector<float> resampled =
      sample_rate == io::kSpeechSampleRate ? std::vector<float>() : io::resample(samples, sample_rate, io::kSpeechSampleRate);
  const std::vector<float>& audio = sample_rate == io::kSpeechSampleRate ? samples : resampled;
  BF_CHECK(static_cast<Index>(audio.size()) >= model.config().w2v.min_samples(), ArgumentError, "animate: audio too short: ",
           audio.size(), " samples at 16 kHz, need at least ", model.config().w2v.min_samples(),
           " (one frame of the audio encoder)");

  // ---- speech ----
  Tensor<float> def = opt.stream ? model.predict_streaming(audio, style)
                                 : model.predict(Tensor<float>::from({static_cast<Index>(audio.size())}, audio), style);
  const Index T = def.dim(0);

  // ---- expression (deformations from its neutral face, in mm, stretched to T frames) ----
  if (opt.expression) {
    Tensor<float> edef = opt.expression->contiguous().clone();
    const Index Te = edef.dim(0);
    const double u = opt.expression_unit_mm;
    const auto eu = static_cast<float>(u);
    const Tensor<float>& et = *etmpl;
    for (Index f = 0; f < Te; ++f)
      for (Index i = 0; i < V * 3; ++i)
        edef[f * V * 3 + i] = (u == 1.0 ? edef[f * V * 3 + i] : eu * edef[f * V * 3 + i]) - et[i];
    if (opt.naive) {
      const Tensor<float> e = metrics::stretch_to(edef, T);
      for (Index i = 0; i < def.numel(); ++i) def[i] += static_cast<float>(opt.intensity) * e[i];
    } else {
      const Tensor<float> es = metrics::stretch_to(edef, T);
      def = nn::detail::host_view<Cpu>(
          fusion->fuse(nn::detail::host_view<FusB>(def), nn::detail::host_view<FusB>(es), opt.intensity, /*unit_mm=*/1.0));
    }
  }

  // ---- back to positions ----
  for (Index f = 0; f < T; ++f)
    for (Index i = 0; i < V * 3; ++i) def[f * V * 3 + i] += tmpl[i];
  return def;
}

/// Speech only (no expression): animate() without a fusion model.
template <class EncB>
Tensor<float> animate(const nn::AudioModel<float, EncB>& model, const std::vector<float>& samples, int sample_rate,
                      const AnimateOptions& opt = {}) {
  return animate(model, static_cast<const nn::DeformationFusionModule<float, Cpu>*>(nullptr), samples, sample_rate, opt);
}

/// animate() with `fusion` = nullptr (speech only, or opt.naive).
template <class EncB>
Tensor<float> animate(const nn::AudioModel<float, EncB>& model, std::nullptr_t, const std::vector<float>& samples,
                      int sample_rate, const AnimateOptions& opt) {
  return animate(model, static_cast<const nn::DeformationFusionModule<float, Cpu>*>(nullptr), samples, sample_rate, opt);
}

}  // namespace blendfuse
