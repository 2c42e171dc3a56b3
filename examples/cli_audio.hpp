// blendfuse CLI — the audio commands: train-audio, features, speak, eval-audio.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "blendfuse/data/dataset.hpp"
#include "blendfuse/data/phonemes.hpp"
#include "blendfuse/data/procedural.hpp"
#include "blendfuse/io/npy.hpp"
#include "blendfuse/io/wav.hpp"
#include "blendfuse/metrics/fusion_eval.hpp"
#include "blendfuse/metrics/metrics.hpp"
#include "blendfuse/nn/audio_model.hpp"
#include "blendfuse/nn/dfm.hpp"
#include "blendfuse/pipeline.hpp"
#include "blendfuse/train/audio_trainer.hpp"
#include "cli_fusion.hpp"

#ifdef BLENDFUSE_WITH_ONEDNN
#include "onednn/onednn.hpp"  // before any AudioModel<float, OneDnn> (ODR: see onednn/onednn.hpp)
#endif

namespace blendfuse::cli {

/// Longest WAV `features` encodes (the whole clip goes through self-attention at once).
inline constexpr double kMaxFeaturesSeconds = 120.0;
/// speak: above this many seconds of audio the offline path (attention over the whole clip) would
/// run out of memory, so the streaming path is used instead (bounded memory, same model).
inline constexpr double kSpeakOfflineMaxSeconds = 120.0;
/// speak: the longest audio accepted at all (the output alone grows by V·3·4 bytes per frame).
inline constexpr double kSpeakMaxSeconds = 30.0 * 60.0;
/// speak --text: the longest text accepted (about an hour of speech).
inline constexpr std::size_t kSpeakMaxTextChars = 50000;

inline std::string seconds_str(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f s", s);
  return b;
}

/// Default of the audio commands' --backend: onednn when the build has it, else cpu.
#ifdef BLENDFUSE_WITH_ONEDNN
inline constexpr const char* kDefaultAudioBackend = "onednn";
#else
inline constexpr const char* kDefaultAudioBackend = "cpu";
#endif

/// Adds `--backend cpu|onednn` (the host backend the wav2vec 2.0 encoder runs on) to an audio command.
inline void add_audio_backend_option(CLI::App* c, std::string& backend, const char* what) {
  c->add_option("--backend", backend, std::string("backend of the wav2vec 2.0 encoder") + what +
                                          ": cpu (reference) or onednn (default when built)")
      ->check(CLI::IsMember({"cpu", "onednn"}));
}

/// Calls f(Cpu{}) or f(OneDnn{}) for `backend` ("cpu" / "onednn"); onednn in a build without it
/// is an ArgumentError naming the command.
template <class F>
decltype(auto) with_audio_backend(const std::string& backend, const char* cmd, F&& f) {
  if (backend == "onednn") {
#ifdef BLENDFUSE_WITH_ONEDNN
    return f(OneDnn{});
#else
    throw ArgumentError(std::string(cmd) + " --backend onednn: this build has no oneDNN backend (BLENDFUSE_WITH_ONEDNN=OFF)");
#endif
  }
  return f(Cpu{});
}

/// Loads an audio model; a file that is not one gets an error naming it.
inline nn::AudioModel<float> load_audio_model(const std::string& path) {
  return nn::AudioModel<float>::load(path);
}

// ---- train-audio -------------------------------------------------------------------------------
struct TrainAudioArgs {
  std::string data, out, config, checkpoint;
  int epochs = 30;
  Index batch = 4;
  double lr = 1e-3, max_minutes = 0, scheduled_sampling = 0.5, sampling_ramp = 0.5, lr_final = -1;
  double lip_weight = 0, gap_weight = 0, gap_delta = 0, velocity_weight = 0, augment_speed = 0, augment_gain = 0;
  std::string lip_pairs, units = "auto";
  std::vector<double> speed_perturb;
  std::uint64_t seed = 1;
  bool resume = false, quiet = false;
  std::string backend = kDefaultAudioBackend;
};

inline void add_train_audio(CLI::App& app, TrainAudioArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("train-audio", "Train the audio model (wav2vec 2.0 + FaceFormer) on speech/*.wav + .npy");
  c->add_option("--data", a.data, "dataset folder with speech/<subject>_<seq>.{npy,wav} (blendfuse gen-data --audio)")->required();
  c->add_option("--out", a.out, "output model (.safetensors)")->required();
  c->add_option("--epochs", a.epochs, "epochs");
  c->add_option("--batch", a.batch, "sequences per Adam step");
  c->add_option("--lr", a.lr, "Adam learning rate");
  c->add_option("--seed", a.seed, "random seed (initialisation, frozen extractor, shuffling)")->check(kSeedCheck);
  c->add_option("--config", a.config, "JSON with audio model config keys (see docs/audio.md)");
  c->add_option("--scheduled-sampling", a.scheduled_sampling, "final fraction of self-fed decoder inputs (0 = teacher forcing)");
  c->add_option("--sampling-ramp", a.sampling_ramp, "fraction of the epochs over which the self-fed fraction grows")
      ->check(CLI::Range(0.0, 1.0));
  auto* lr_final_opt = c->add_option("--lr-final", a.lr_final, "cosine learning-rate decay to this value at the last epoch (default: constant lr)");
  c->add_option("--lip-weight", a.lip_weight, "extra MSE weight of the lip vertices (regions/lips.txt): ω = 1 + W (default 0)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--gap-weight", a.gap_weight, "weight of the lip-gap loss on upper/lower lip vertex pairs (default 0)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--gap-delta", a.gap_delta, "δ (mm) of a pseudo-Huber lip-gap loss: linear beyond δ (default 0: squared)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--lip-pairs", a.lip_pairs, "(P, 2) int32 .npy of upper/lower lip vertices for --gap-weight (default DATA/truth/lip_pairs.npy)");
  c->add_option("--velocity-weight", a.velocity_weight, "weight of the velocity (frame-difference) loss (default 0)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--augment-speed", a.augment_speed, "random speed change 1 ± A per sequence and epoch (default 0: off)")
      ->check(CLI::Range(0.0, 0.49));
  c->add_option("--augment-gain", a.augment_gain, "random per-channel feature gains exp(G·N(0,1)) (default 0: off)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--speed-perturb", a.speed_perturb, "extra training copies with the audio sped up by these factors, "
                 "target resampled to match, e.g. 0.9,1.1 (default: none)")
      ->delimiter(',')
      ->check(CLI::Range(0.5, 2.0));
  c->add_option("--max-minutes", a.max_minutes, "stop after the epoch in which this time budget runs out");
  c->add_option("--checkpoint", a.checkpoint, "checkpoint written after every epoch (default OUT.ckpt)");
  c->add_flag("--resume", a.resume, "continue from the checkpoint if it exists");
  c->add_flag("--quiet", a.quiet, "no per-epoch lines");
  add_audio_backend_option(c, a.backend, " while training (the model file does not depend on it)");
  add_units_option(c, a.units);
  c->callback([&, lr_final_opt] {
    run = [&, lr_final_opt] {
      const std::string cmd = "train-audio";
      require_count(cmd, "--epochs", a.epochs, 1, 1000000);
      require_count(cmd, "--batch", a.batch, 1, 1000000);
      require_range(cmd, "--lr", a.lr, 1e-12, 1.0);
      if (lr_final_opt->count() > 0) require_range(cmd, "--lr-final", a.lr_final, 0, 1.0);
      require_range(cmd, "--max-minutes", a.max_minutes, 0, 1e7);
      require_range(cmd, "--scheduled-sampling", a.scheduled_sampling, 0, 1);
      require_range(cmd, "--sampling-ramp", a.sampling_ramp, 0, 1);
      require_range(cmd, "--lip-weight", a.lip_weight, 0, 1e6);
      require_range(cmd, "--gap-weight", a.gap_weight, 0, 1e6);
      require_range(cmd, "--gap-delta", a.gap_delta, 0, 1e6);
      require_range(cmd, "--velocity-weight", a.velocity_weight, 0, 1e6);
      require_range(cmd, "--augment-speed", a.augment_speed, 0, 0.49);
      require_range(cmd, "--augment-gain", a.augment_gain, 0, 10);
      for (double f : a.speed_perturb) require_range(cmd, "--speed-perturb", f, 0.5, 2.0);
      const std::string checkpoint = a.checkpoint.empty() ? a.out + ".ckpt" : a.checkpoint;
      check_outputs(cmd, {{"--out", a.out}, {a.checkpoint.empty() ? "--checkpoint (default OUT.ckpt)" : "--checkpoint", checkpoint}},
                    {{"--config", a.config}, {"--data", a.data}, {"--lip-pairs", a.lip_pairs}});
      data::Dataset ds = load_dataset(a.data, a.units);
      const std::string data_units = units_note(ds);
      ds.rescale_to_mm();  // the audio model works in mm (its losses, --gap-delta, stored templates)
      std::vector<std::string> subjects;
      for (const auto* q : ds.sequences(data::Domain::Speech, data::Split::Train))
        if (!q->wav_path.empty() && std::find(subjects.begin(), subjects.end(), q->subject) == subjects.end())
          subjects.push_back(q->subject);
      std::sort(subjects.begin(), subjects.end());
      if (subjects.empty())
        throw IoError(a.data + "/speech", "no training speech sequence has a matching .wav (make one with blendfuse gen-data --audio)");
      nn::AudioModelConfig cfg = nn::AudioModelConfig::small(ds.num_vertices(), subjects);
      cfg.seed = a.seed;
      if (!a.config.empty()) {
        try {
          cfg = nn::AudioModelConfig::from_json(read_json_file(a.config), a.config, cfg);
          cfg.subjects = subjects;
          cfg.decoder.n_subjects = static_cast<Index>(subjects.size());
          cfg.decoder.vertices = ds.num_vertices();
          cfg.validate();
        } catch (const ArgumentError& e) {
          throw IoError(a.config, without_prefix(e.what(), a.config));
        }
      }
      with_audio_backend(a.backend, "train-audio", [&](auto backend_tag) {
        using B = decltype(backend_tag);
        nn::AudioModel<float, B> model(cfg);
        model.init();
        for (const auto& [s, t] : ds.subject_templates) model.templates()[s] = t.clone();
        auto style = [&](const std::string& s) -> Index {
          const auto it = std::find(subjects.begin(), subjects.end(), s);
          return it == subjects.end() ? -1 : static_cast<Index>(it - subjects.begin());
        };
        const auto train = train::load_audio_samples(model, ds, data::Split::Train, style, a.speed_perturb);
        const auto val = train::load_audio_samples(model, ds, data::Split::Val, style);
        Index frames = 0;
        for (const auto& s : train) frames += s.frames();
        if (!a.quiet)
          std::printf("train-audio: %zu subjects, %zu training sequences (%.1f s of audio), %zu validation; "
                      "%lld trainable parameters; data in %s, model in mm\n",
                      subjects.size(), train.size(), static_cast<double>(frames) / cfg.fps, val.size(),
                      static_cast<long long>(nn::count_parameters(model.trainable_parameters())), data_units.c_str());
        train::AudioTrainConfig tc;
        tc.epochs = a.epochs;
        tc.batch = a.batch;
        tc.lr = a.lr;
        tc.seed = a.seed;
        tc.scheduled_sampling = a.scheduled_sampling;
        tc.sampling_ramp = a.sampling_ramp;
        tc.lr_final = a.lr_final;
        tc.lip_weight = a.lip_weight;
        tc.gap_weight = a.gap_weight;
        tc.gap_delta = a.gap_delta;
        tc.velocity_weight = a.velocity_weight;
        tc.augment_speed = a.augment_speed;
        tc.augment_gain = a.augment_gain;
        tc.lip_vertices = ds.lips;
        if (a.gap_weight > 0) {
          const std::string pp = a.lip_pairs.empty() ? a.data + "/truth/lip_pairs.npy" : a.lip_pairs;
          if (!std::filesystem::exists(pp))
            throw IoError(pp, "--gap-weight needs the upper/lower lip vertex pairs (a (P, 2) int32 .npy; pass --lip-pairs FILE)");
          const auto pairs = io::load_npy<std::int32_t>(pp);
          if (pairs.ndim() != 2 || pairs.dim(1) != 2 || pairs.dim(0) == 0)
            throw IoError(pp, "lip pairs must be a non-empty (P, 2) array, got " + pairs.shape_string());
          for (Index i = 0; i < pairs.dim(0); ++i) {
            if (pairs(i, 0) < 0 || pairs(i, 0) >= ds.num_vertices() || pairs(i, 1) < 0 || pairs(i, 1) >= ds.num_vertices())
              throw IoError(pp, "lip pair " + std::to_string(i) + " has a vertex out of range for " +
                                    std::to_string(ds.num_vertices()) + " vertices");
            tc.lip_pairs.push_back({pairs(i, 0), pairs(i, 1)});
          }
        }
        tc.checkpoint = checkpoint;
        tc.resume = a.resume;
        tc.max_seconds = a.max_minutes * 60;
        train::AudioTrainer<B> trainer(model, tc);
        trainer.fit(train, val, [&](const train::AudioEpochStats& st) {
          if (a.quiet) return;
          std::printf("epoch %3d  train mse %.4f mm²  val (autoregressive) mse %.4f mm²  sampling %.2f  %.1fs\n",
                      st.epoch, st.train_mse, st.val_mse, st.sampling, st.seconds);
          std::fflush(stdout);
        });
        for (auto* p : model.trainable_parameters())
          check_finite_output(p->value, a.out, "parameter '" + p->name + "' after training");
        model.save(a.out);
        std::printf("train-audio: wrote %s\n", a.out.c_str());
      });
    };
  });
}

// ---- features ----------------------------------------------------------------------------------
struct FeaturesArgs {
  std::string model, config, wav, out;
  std::string backend = kDefaultAudioBackend;
};

inline void add_features(CLI::App& app, FeaturesArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("features", "wav2vec 2.0 last hidden state (T, hidden) of a WAV file");
  c->add_option("--model", a.model, "wav2vec2 .safetensors (Hugging Face or torchaudio names)")->required();
  c->add_option("--config", a.config, "Hugging Face config.json (default: the file's wav2vec2_config metadata)");
  c->add_option("--wav", a.wav, "input audio (any rate; resampled to 16 kHz)")->required();
  c->add_option("--out", a.out, "output .npy (T, hidden) float32")->required();
  add_audio_backend_option(c, a.backend, "");
  c->callback([&] {
    run = [&] {
      check_outputs("features", {{"--out", a.out}}, {{"--model", a.model}, {"--config", a.config}, {"--wav", a.wav}});
      const io::Audio audio = io::load_wav(a.wav);  // first: a bad WAV fails before the model loads
      if (audio.duration() > kMaxFeaturesSeconds)
        throw IoError(a.wav, "audio is " + seconds_str(audio.duration()) + " long; features encodes the whole clip at once "
                             "and takes at most " + seconds_str(kMaxFeaturesSeconds) + " (split the file)");
      const auto f = io::SafeTensorsFile::load(a.model);
      nn::Wav2Vec2Config cfg;
      if (!a.config.empty()) {
        cfg = nn::Wav2Vec2Config::from_file(a.config);
      } else {
        const std::string meta = f.meta("wav2vec2_config");
        if (meta.empty())
          throw IoError(a.model, "no 'wav2vec2_config' metadata: pass the model's config.json with --config "
                                 "(or convert it with scripts/convert_wav2vec2.py)");
        try {
          cfg = nn::Wav2Vec2Config::from_json(nlohmann::json::parse(meta), a.model);
        } catch (const nlohmann::json::exception& e) {
          throw IoError(a.model, std::string("wav2vec2_config metadata is not valid JSON: ") + e.what());
        } catch (const ArgumentError& e) {
          throw IoError(a.model, e.what());
        }
      }
      if (static_cast<Index>(audio.samples.size()) < cfg.min_samples())
        throw IoError(a.wav, "audio too short: " + std::to_string(audio.samples.size()) + " samples at 16 kHz, need " +
                                 std::to_string(cfg.min_samples()));
      const Tensor<float> x = Tensor<float>::from({1, static_cast<Index>(audio.samples.size())}, audio.samples);
      const Tensor<float> h = with_audio_backend(a.backend, "features", [&](auto backend_tag) {
        using B = decltype(backend_tag);
        nn::Wav2Vec2Model<float, B> m(cfg);
        m.load(f);
        return nn::detail::host_view<Cpu>(m.forward(nn::detail::host_view<B>(x)).hidden);
      });
      check_finite_output(h, a.out, "the model " + a.model);
      io::save_npy(a.out, h.reshape({h.dim(1), h.dim(2)}));
      std::printf("features: wrote %s (%lld x %lld)\n", a.out.c_str(), static_cast<long long>(h.dim(1)),
                  static_cast<long long>(h.dim(2)));
    };
  });
}

// ---- speak -------------------------------------------------------------------------------------
struct SpeakArgs {
  std::string model, wav, text, subject, templ, data, out, out_wav, voice = "en+m3", fusion, expression, units = "auto";
  int rate = 175;
  double intensity = 1.0;
  bool stream = false, naive = false;
  std::string backend = kDefaultAudioBackend;
};

/// speak after its option checks, with the audio model loaded once (its encoder on EncB): the
/// dataset, fusion model, expression and audio are read here, blendfuse::animate() does the rest.
template <class EncB>
void speak_with(const nn::AudioModel<float, EncB>& model, const SpeakArgs& a) {
  const std::string subject = a.subject.empty() ? model.config().subjects.front() : a.subject;
  (void)model.subject_index(subject);  // an unknown style fails before any file is read
  std::unique_ptr<data::Dataset> ds;
  double out_unit_mm = 1.0;  // the audio model works in mm; --data's files may be in another unit
  if (!a.data.empty()) {
    ds = std::make_unique<data::Dataset>(load_dataset(a.data, a.units));
    if (ds->num_vertices() != model.vertices())
      throw IoError(a.data, "dataset has " + std::to_string(ds->num_vertices()) + " vertices, the audio model " + a.model +
                                " " + std::to_string(model.vertices()) + " (its templates cannot be animated by this model)");
    out_unit_mm = ds->unit_mm;
    ds->rescale_to_mm();
  }
  std::unique_ptr<nn::DeformationFusionModule<float>> fusion;
  if (!a.fusion.empty()) {  // load before the work so a bad file fails fast
    fusion = std::make_unique<nn::DeformationFusionModule<float>>(nn::DeformationFusionModule<float>::load(a.fusion));
    if (fusion->vertices() != model.vertices())
      throw IoError(a.fusion, "fusion model has " + std::to_string(fusion->vertices()) + " vertices, the audio model " +
                                  std::to_string(model.vertices()));
  }
  AnimateOptions opt;
  opt.subject = subject;
  opt.template_subject = a.templ;
  if (ds) {
    opt.templates = &ds->subject_templates;
    opt.templates_name = "the dataset " + a.data;
  } else {  // the model's own templates, named by its file in errors
    opt.templates = &model.templates();
    opt.templates_name = "the model " + a.model + " (pass --data DIR for other subjects)";
  }
  if (!a.expression.empty()) {  // positions in the dataset's unit (mm without --data)
    opt.expression = io::load_vertex_sequence(a.expression, model.vertices());
    opt.expression_unit_mm = out_unit_mm;
    opt.expression_subject = std::filesystem::path(a.expression).stem().string();  // <subject>_<sequence>
  }
  opt.intensity = a.intensity;
  opt.naive = a.naive;
  std::vector<float> samples;
  if (!a.text.empty()) {
    if (!data::espeak_available())
      throw ArgumentError("speak --text needs libespeak-ng (install libespeak-ng-dev and rebuild); use --wav instead");
    data::EspeakVoice v;
    v.name = a.voice;
    v.rate = a.rate;
    auto u = data::espeak_synthesize(a.text, v);
    if (!u) throw ArgumentError("speak: espeak-ng could not synthesise the text with voice '" + a.voice + "'");
    samples = io::resample(u->samples, u->sample_rate, io::kSpeechSampleRate);
  } else {
    samples = io::load_wav(a.wav).samples;
  }
  const std::string source = a.text.empty() ? a.wav : std::string("--text");
  const double secs = static_cast<double>(samples.size()) / io::kSpeechSampleRate;
  if (static_cast<Index>(samples.size()) < model.config().w2v.min_samples())
    throw IoError(source, "audio too short: " + std::to_string(samples.size()) + " samples at 16 kHz, need at least " +
                              std::to_string(model.config().w2v.min_samples()) + " (one frame of the audio encoder)");
  if (secs > kSpeakMaxSeconds)
    throw IoError(source, "audio is " + seconds_str(secs) + " long; speak takes at most " + seconds_str(kSpeakMaxSeconds) +
                              " (split it)");
  opt.stream = a.stream;
  if (!opt.stream && secs > kSpeakOfflineMaxSeconds) {
    std::fprintf(stderr, "speak: %s of audio is more than the %s the offline path holds in memory; using the streaming path (--stream)\n",
                 seconds_str(secs).c_str(), seconds_str(kSpeakOfflineMaxSeconds).c_str());
    opt.stream = true;
  }
  Tensor<float> def = animate(model, fusion.get(), samples, io::kSpeechSampleRate, opt);  // (T, V, 3) in mm
  const Index T = def.dim(0);
  if (out_unit_mm != 1.0)  // back to the dataset's unit
    for (Index i = 0; i < def.numel(); ++i) def[i] = static_cast<float>(def[i] / out_unit_mm);
  check_finite_output(def, a.out, fusion   ? "the models " + a.model + " and " + a.fusion
                                  : a.naive ? "the model " + a.model + " and the expression " + a.expression + " (naive sum)"
                                            : "the model " + a.model);
  std::error_code ec;
  const bool out_existed = std::filesystem::exists(a.out, ec);
  io::save_npy(a.out, def);
  if (!a.out_wav.empty()) {
    try {
      io::save_wav(a.out_wav, samples, io::kSpeechSampleRate, 1, io::WavFormat::Pcm16);
    } catch (...) {
      if (!out_existed) std::filesystem::remove(a.out, ec);  // all outputs or none
      throw;
    }
  }
  std::printf("speak: wrote %s (%lld frames, %.2f s, style %s%s%s, in %s)\n", a.out.c_str(), static_cast<long long>(T),
              static_cast<double>(samples.size()) / io::kSpeechSampleRate, subject.c_str(),
              opt.stream ? ", streaming" : "",
              fusion ? ", with expression" : a.naive ? ", naive sum with expression" : "",
              data::unit_name(out_unit_mm).c_str());
}

inline void add_speak(CLI::App& app, SpeakArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("speak", "Animate a face from speech audio (or text via espeak-ng), optionally with an emotion");
  c->add_option("--model", a.model, "audio model (.safetensors from train-audio)")->required();
  auto* w = c->add_option("--wav", a.wav, "input speech audio");
  auto* t = c->add_option("--text", a.text, "text to synthesise with libespeak-ng first");
  w->excludes(t);
  c->add_option("--voice", a.voice, "espeak-ng voice for --text (e.g. en+m3, en+f2)");
  c->add_option("--rate", a.rate, "espeak-ng speaking rate for --text (words per minute, 80 to 450)");
  c->add_option("--out-wav", a.out_wav, "also write the synthesised audio of --text");
  c->add_option("--subject", a.subject, "speaking style: a training subject of the model (default: the first)");
  c->add_option("--template", a.templ, "subject whose neutral face is animated (default: --subject)");
  c->add_option("--data", a.data, "dataset folder for templates (default: the templates stored in the model)");
  c->add_flag("--stream", a.stream, "run the streaming path (bounded latency) instead of the offline one");
  add_audio_backend_option(c, a.backend, "");
  c->add_option("--fusion", a.fusion, "fusion model (.safetensors) to add an emotion");
  c->add_option("--expression", a.expression, "expression sequence .npy (T,V,3) absolute positions, time-stretched");
  c->add_option("--intensity", a.intensity, "scale of the expression weights, in [0, 10]");
  c->add_flag("--naive", a.naive, "with --expression: the naive sum of speech and expression deformations (no fusion model; the baseline)");
  c->add_option("--out", a.out, "output .npy (T,V,3) absolute positions (mm; with --data, the dataset's unit)")->required();
  auto* units_opt = add_units_option(c, a.units);
  c->callback([&, units_opt] {
    run = [&, units_opt] {
      if (a.wav.empty() && a.text.empty()) throw ArgumentError("speak: give --wav FILE or --text \"...\"");
      if (units_opt->count() > 0 && a.data.empty())
        throw ArgumentError("speak: --units is the unit of the --data dataset; without --data there is none (the output is in mm)");
      if (a.naive ? (a.expression.empty() || !a.fusion.empty()) : (a.fusion.empty() != a.expression.empty()))
        throw ArgumentError(a.naive ? "speak --naive: give --expression (and no --fusion)"
                                    : "speak: --fusion and --expression go together");
      require_count("speak", "--rate", a.rate, 80, 450);
      require_range("speak", "--intensity", a.intensity, 0, kMaxIntensity);
      if (a.text.size() > kSpeakMaxTextChars)
        throw ArgumentError("speak: --text has " + std::to_string(a.text.size()) + " characters; at most " +
                            std::to_string(kSpeakMaxTextChars) + " are accepted (about an hour of speech)");
      check_outputs("speak", {{"--out", a.out}, {"--out-wav", a.out_wav}},
                    {{"--model", a.model}, {"--wav", a.wav}, {"--data", a.data}, {"--fusion", a.fusion},
                     {"--expression", a.expression}});
      if (a.backend == "onednn") {
#ifdef BLENDFUSE_WITH_ONEDNN
        speak_with(nn::AudioModel<float, OneDnn>::load(a.model), a);  // encoder on oneDNN
#else
        throw ArgumentError("speak --backend onednn: this build has no oneDNN backend (BLENDFUSE_WITH_ONEDNN=OFF)");
#endif
      } else {
        speak_with(load_audio_model(a.model), a);
      }
    };
  });
}

// ---- eval-audio --------------------------------------------------------------------------------
struct EvalAudioArgs {
  std::string model, data, split = "test", subject, units = "auto";
  bool json = false, stream = false;
  std::string backend = kDefaultAudioBackend;
};

struct AudioScore {
  std::string method;
  double lve_mm = 0, mve_mm = 0, bilabial_gap_mm = 0;
};

inline void add_eval_audio(CLI::App& app, EvalAudioArgs& a, std::function<void()>& run) {
  auto* c = app.add_subcommand("eval-audio", "Score an audio model on held-out sentences against a mean-face baseline");
  c->add_option("--model", a.model, "audio model (.safetensors)")->required();
  c->add_option("--data", a.data, "dataset folder with speech .wav (procedural: truth/ gives the lip-closure frames)")->required();
  c->add_option("--split", a.split, "split to score (held-out subjects)")->check(CLI::IsMember({"train", "val", "test"}));
  c->add_option("--subject", a.subject, "style for subjects the model was not trained on (default: the first)");
  c->add_flag("--stream", a.stream, "also score the streaming path");
  c->add_flag("--json", a.json, "print JSON");
  add_audio_backend_option(c, a.backend, "");
  add_units_option(c, a.units);
  c->callback([&] {
    run = [&] {
      with_audio_backend(a.backend, "eval-audio", [&](auto backend_tag) {
        using B = decltype(backend_tag);
        const auto model = nn::AudioModel<float, B>::load(a.model);
        data::Dataset ds = load_dataset(a.data, a.units);
        const std::string data_units = units_note(ds);
        ds.rescale_to_mm();  // the audio model and the scores are in mm
        if (model.vertices() != ds.num_vertices())
          throw IoError(a.model, "model has " + std::to_string(model.vertices()) + " vertices, the dataset " +
                                     std::to_string(ds.num_vertices()));
        std::unique_ptr<metrics::ProceduralTruth> truth;
        if (data::detail::is_dir(a.data + "/truth"))
          truth = std::make_unique<metrics::ProceduralTruth>(metrics::ProceduralTruth::load(a.data, ds.num_vertices()));
        const Index default_style = model.subject_index(a.subject.empty() ? model.config().subjects.front() : a.subject);
        // Mean-face baseline: the mean training deformation.
        const Index V = ds.num_vertices();
        Tensor<float> mean({V, 3});
        {
          Index n = 0;
          std::vector<double> acc(static_cast<std::size_t>(V * 3), 0.0);
          for (const auto* q : ds.sequences(data::Domain::Speech, data::Split::Train)) {
            for (Index i = 0; i < q->deformations.numel(); ++i) acc[static_cast<std::size_t>(i % (V * 3))] += q->deformations[i];
            n += q->num_frames();
          }
          for (Index i = 0; i < V * 3; ++i) mean[i] = static_cast<float>(n ? acc[static_cast<std::size_t>(i)] / static_cast<double>(n) : 0.0);
        }
        std::vector<std::string> names = {"audio model", "mean face (training mean deformation)", "neutral template"};
        if (a.stream) names.insert(names.begin() + 1, "audio model, streaming");
        std::vector<AudioScore> rows(names.size());
        for (std::size_t k = 0; k < names.size(); ++k) rows[k].method = names[k];
        Index frames = 0, bil_frames = 0, seqs = 0;
        for (const auto* q : ds.sequences(data::Domain::Speech, data::split_from_string(a.split))) {
          if (q->wav_path.empty()) continue;
          const io::Audio au = train::load_sequence_audio(*q, model.config().fps, model.config().w2v.min_samples());
          const Index Tn = q->num_frames();
          Index style = default_style;
          for (std::size_t i = 0; i < model.config().subjects.size(); ++i)
            if (model.config().subjects[i] == q->subject) style = static_cast<Index>(i);
          const Tensor<float> audio = Tensor<float>::from({1, static_cast<Index>(au.samples.size())}, au.samples);
          std::vector<Tensor<float>> preds;
          preds.push_back(model.predict_features(model.frame_features(audio, Tn), style).reshape({Tn, V, 3}));
          if (a.stream) {
            Tensor<float> s = model.predict_streaming(au.samples, style);
            Tensor<float> fit({Tn, V, 3});  // frame counts can differ by one from the .npy
            for (Index t = 0; t < Tn; ++t) fit.select(t).assign(s.select(std::min(t, s.dim(0) - 1)));
            preds.push_back(fit);
          }
          Tensor<float> mf({Tn, V, 3});
          for (Index t = 0; t < Tn; ++t) mf.select(t).assign(mean);
          preds.push_back(mf);
          preds.push_back(Tensor<float>({Tn, V, 3}));
          const Tensor<float>& tmpl = ds.template_of(q->subject);
          const Tensor<float> gt = q->deformations;
          std::vector<std::int32_t> bil;
          if (truth && truth->bilabial.count(q->name)) bil = truth->bilabial.at(q->name);
          for (std::size_t k = 0; k < preds.size(); ++k) {
            rows[k].lve_mm += metrics::lve_mm(preds[k], gt, ds.lips) * static_cast<double>(Tn);
            rows[k].mve_mm += metrics::mve_mm(preds[k], gt) * static_cast<double>(Tn);
            if (truth && !bil.empty()) {
              Tensor<float> pos = preds[k].clone();
              for (Index t = 0; t < Tn; ++t)
                for (Index i = 0; i < V * 3; ++i) pos[t * V * 3 + i] += tmpl[i];
              const auto gaps = metrics::lip_gaps(pos, truth->lip_pairs);
              for (auto f : bil)
                if (f < Tn) rows[k].bilabial_gap_mm += gaps[static_cast<std::size_t>(f)];
            }
          }
          for (auto f : bil)
            if (f < Tn) ++bil_frames;
          frames += Tn;
          ++seqs;
        }
        if (seqs == 0)
          throw IoError(a.data, "no " + a.split + " speech sequence has a .wav (make the data with blendfuse gen-data --audio)");
        for (auto& r : rows) {
          r.lve_mm /= static_cast<double>(frames);
          r.mve_mm /= static_cast<double>(frames);
          r.bilabial_gap_mm = bil_frames ? r.bilabial_gap_mm / static_cast<double>(bil_frames) : 0.0;
          if (!std::isfinite(r.lve_mm) || !std::isfinite(r.mve_mm) || !std::isfinite(r.bilabial_gap_mm))
            throw IoError(a.model, "eval-audio: the scores of '" + r.method + "' are non-finite");
        }
        if (a.json) {
          nlohmann::ordered_json j;
          j["split"] = a.split;
          j["sequences"] = seqs;
          j["frames"] = frames;
          j["bilabial_frames"] = bil_frames;
          j["rows"] = nlohmann::ordered_json::array();
          for (const auto& r : rows)
            j["rows"].push_back({{"method", r.method}, {"lve_mm", r.lve_mm}, {"mve_mm", r.mve_mm}, {"bilabial_gap_mm", r.bilabial_gap_mm}});
          std::printf("%s\n", j.dump(2).c_str());
        } else {
          std::printf("| method | LVE (mm, max-L2) | MVE (mm) | lip gap on /p b m/ frames (mm; truth 0) |\n|---|---|---|---|\n");
          for (const auto& r : rows)
            std::printf("| %s | %.3f | %.3f | %.3f |\n", r.method.c_str(), r.lve_mm, r.mve_mm, r.bilabial_gap_mm);
          std::printf("(%lld %s sequences, %lld frames, %lld bilabial closure frames; scores in mm, data in %s)\n",
                      static_cast<long long>(seqs), a.split.c_str(), static_cast<long long>(frames),
                      static_cast<long long>(bil_frames), data_units.c_str());
        }
      });
    };
  });
}

}  // namespace blendfuse::cli
