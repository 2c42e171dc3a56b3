#!/usr/bin/env bash
# Keeps the models backend-free (issue #10): the module, trainer and pipeline headers are written
# once against the op interface, so they must not name a backend library, test a backend macro or
# branch on the backend type. Backend code lives in backends/<name>/ as op specialisations.
#   check_backend_free.sh [ROOT]       exit 0 when clean, 1 with every offending line listed
# It first checks itself on a planted violation, so a broken pattern cannot pass silently.
set -euo pipefail
root="${1:-$(cd "$(dirname "$0")/../.." && pwd)}"

# dnnl / onednn (as the issue's grep: case-sensitive, so prose may say "oneDNN"): the oneDNN library or our backend's namespace;
# BLENDFUSE_WITH_ / BLENDFUSE_*HAVE_: compile-time backend switches;
# is_same(_v)<B|Backend, Cpu|OneDnn|Cuda> (either order): a branch on the backend type.
pattern='dnnl|onednn|BLENDFUSE_WITH_|BLENDFUSE_[A-Z0-9_]*HAVE_|is_same(_v)?<[[:space:]]*(B|Backend)[[:space:]]*,[[:space:]]*(Cpu|OneDnn|Cuda)[[:space:]]*>|is_same(_v)?<[[:space:]]*(Cpu|OneDnn|Cuda)[[:space:]]*,[[:space:]]*(B|Backend)[[:space:]]*>'

scan() {  # scan DIR...: prints offending lines, returns 1 if any
  local hits
  hits=$(grep -rnE --include='*.hpp' "$pattern" "$@" || true)
  if [ -n "$hits" ]; then
    printf '%s\n' "$hits"
    return 1
  fi
  return 0
}

# self-test: one planted line of each kind must be found
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for bad in '#include "onednn/onednn.hpp"' '#ifdef BLENDFUSE_WITH_ONEDNN' \
           'if constexpr (std::is_same_v<B, OneDnn>) {' 'dnnl::memory m;' \
           'if constexpr (!std::is_same_v<Backend,Cpu>)'; do
  printf 'int a;\n%s\n' "$bad" > "$tmp/x.hpp"
  if scan "$tmp" >/dev/null; then
    echo "check_backend_free: self-test failed, the pattern misses: $bad" >&2
    exit 2
  fi
done
printf 'template <class B> struct Foo { Tensor<float, B> t; };\n' > "$tmp/x.hpp"
scan "$tmp" >/dev/null || { echo "check_backend_free: self-test failed, false positive" >&2; exit 2; }

dirs=()
for d in include/blendfuse/nn include/blendfuse/train include/blendfuse/pipeline; do
  [ -d "$root/$d" ] && dirs+=("$root/$d")
done
[ -f "$root/include/blendfuse/pipeline.hpp" ] && dirs+=("$root/include/blendfuse/pipeline.hpp")
if ! scan "${dirs[@]}"; then
  echo "check_backend_free: backend-specific code in the models (above); move it behind an op" \
       "(include/blendfuse/ops/ + backends/<name>/)" >&2
  exit 1
fi
echo "check_backend_free: ${dirs[*]#$root/} are backend-free"
