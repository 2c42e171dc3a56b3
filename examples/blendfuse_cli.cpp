// The blendfuse command-line tool. Sub-commands are added as the modules land.
#include <cstdio>
#include <cstring>
#include <string>

#include "blendfuse/backend/backend.hpp"

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "info") == 0) {
    std::printf("blendfuse %s\nbackends compiled in:", "0.1.0");
    for (const auto& b : blendfuse::compiled_backends()) std::printf(" %s", b.c_str());
    std::printf("\n");
    return 0;
  }
  std::fprintf(stderr, "blendfuse: unknown command '%s' (try 'blendfuse --help')\n", argv[1]);
  return 2;
}
