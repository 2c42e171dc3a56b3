// blendfuse — the libFuzzer binary for every target in targets.hpp (docs/fuzzing.md).
// One binary (one sanitizer build) serves all targets: the target is chosen by the program name
// (scripts/fuzz.sh makes fuzz_<name> links to it) or by BF_FUZZ_TARGET=<name>.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "targets.hpp"

namespace {
void (*g_run)(const std::uint8_t*, std::size_t) = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  std::string name;
  if (const char* env = std::getenv("BF_FUZZ_TARGET")) name = env;
  if (name.empty() && argc && *argc > 0) {
    std::string prog = (*argv)[0];
    prog = prog.substr(prog.find_last_of('/') + 1);
    if (prog.rfind("fuzz_", 0) == 0) name = prog.substr(5);
  }
  for (const auto& t : bf_fuzz::kTargets)
    if (name == t.name) g_run = t.run;
  if (!g_run) {
    std::fprintf(stderr, "bf_fuzz: unknown target '%s'; run as fuzz_<name> or set BF_FUZZ_TARGET to one of:",
                 name.c_str());
    for (const auto& t : bf_fuzz::kTargets) std::fprintf(stderr, " %s", t.name);
    std::fprintf(stderr, "\n");
    std::exit(2);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  g_run(data, size);
  return 0;
}
