// The blendfuse command-line tool: `blendfuse <command> --help` for each command.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <functional>

#include "blendfuse/backend/backend.hpp"
#include "cli_audio.hpp"
#include "cli_fusion.hpp"
#include "cli_render.hpp"

int main(int argc, char** argv) {
  CLI::App app{"blendfuse — speech + emotion → 3D talking-face animation (arXiv 2510.25234)"};
  app.require_subcommand(1);
  std::function<void()> run;

  app.add_subcommand("info", "Print the version and the backends compiled in")->callback([&] {
    run = [] {
      std::printf("blendfuse 0.1.0\nbackends compiled in:");
      for (const auto& b : blendfuse::compiled_backends()) std::printf(" %s", b.c_str());
      std::printf("\n");
    };
  });
  blendfuse::cli::GenDataArgs gen;
  blendfuse::cli::add_gen_data(app, gen, run);
  blendfuse::cli::TrainFusionArgs train;
  blendfuse::cli::add_train_fusion(app, train, run);
  blendfuse::cli::FuseArgs fuse;
  blendfuse::cli::add_fuse(app, fuse, run);
  blendfuse::cli::EvalFusionArgs eval;
  blendfuse::cli::add_eval_fusion(app, eval, run);
  blendfuse::cli::TrainAudioArgs train_audio;
  blendfuse::cli::add_train_audio(app, train_audio, run);
  blendfuse::cli::FeaturesArgs features;
  blendfuse::cli::add_features(app, features, run);
  blendfuse::cli::SpeakArgs speak;
  blendfuse::cli::add_speak(app, speak, run);
  blendfuse::cli::EvalAudioArgs eval_audio;
  blendfuse::cli::add_eval_audio(app, eval_audio, run);
  blendfuse::cli::RenderArgs render;
  blendfuse::cli::add_render(app, render, run);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (run) run();
  } catch (const blendfuse::Error& e) {
    std::fprintf(stderr, "blendfuse: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "blendfuse: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
