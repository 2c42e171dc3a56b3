#!/usr/bin/env bash
# Runs README's two commands on a fresh Debian 12 root, from nothing, and prints their wall times.
#
#   sudo ./scripts/check-fresh.sh [--root DIR] [--keep] [--cache] [--variant minbase|default]
#
# 1. debootstrap builds a bare Debian 12 (bookworm) root from Debian's own packages, using the
#    mirrors this machine's apt is configured with (no host is named here);
# 2. a clean clone of this repository's HEAD (committed work only) is copied into it;
# 3. inside a chroot, with an empty environment and no standard input, it runs
#       ./scripts/demo.sh     (installs what is missing, builds, runs the main job)
#       ./scripts/test.sh     (the whole suite)
#    and prints the wall time of each (and of the demo's build step).
# Too slow for CI (tens of minutes on 2 cores); CI keeps calling the test command. Needs root
# (debootstrap, chroot, mounts) and the debootstrap package.
#   --root DIR   where the root is built (default /var/tmp/blendfuse-fresh; removed first)
#   --keep       keep the root afterwards (default: removed on success)
#   --cache      reuse a tarball of the bare root (~/.cache/blendfuse/) instead of a new debootstrap
#   --variant    debootstrap variant: minbase (default: the barest root, apt + essentials) or default
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
ROOT=/var/tmp/blendfuse-fresh
KEEP=0
CACHE=0
VARIANT=minbase
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --cache) CACHE=1; shift ;;
    --variant) VARIANT=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "check-fresh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$VARIANT" in minbase|default) ;; *) echo "check-fresh: --variant must be minbase or default" >&2; exit 2 ;; esac
case "$ROOT" in /|/usr|/usr/*|/etc|/etc/*|/home|"") echo "check-fresh: refusing --root '$ROOT'" >&2; exit 2 ;; esac

if [ "$(id -u)" -ne 0 ]; then
  echo "check-fresh: needs root (debootstrap, chroot, mounts)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "check-fresh: installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

# The Debian mirror this machine's apt uses (deb822 sources or the classic list).
MIRROR=$( (grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
           grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}') |
          grep -E '/debian/?$' | head -1) || true
if [ -z "$MIRROR" ]; then
  echo "check-fresh: no Debian mirror found in /etc/apt/sources.list(.d)" >&2
  exit 1
fi

cleanup() {
  for m in dev/pts dev proc sys; do
    if mountpoint -q "$ROOT/$m" 2>/dev/null; then umount -l "$ROOT/$m" || true; fi
  done
}
trap cleanup EXIT

now() { date +%s; }
fmt() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

cleanup
rm -rf "$ROOT"
mkdir -p "$ROOT"
T0=$(now)
TAR=${XDG_CACHE_HOME:-$HOME/.cache}/blendfuse/bookworm-$VARIANT.tar
if [ "$CACHE" -eq 1 ] && [ -f "$TAR" ]; then
  echo "== bare root from the cached $TAR"
  tar -xf "$TAR" -C "$ROOT"
else
  echo "== debootstrap bookworm ($VARIANT) into $ROOT"
  vopt=()
  [ "$VARIANT" = minbase ] && vopt=(--variant=minbase)
  debootstrap "${vopt[@]}" bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 ||
    { tail -20 "$ROOT.debootstrap.log" >&2; echo "check-fresh: debootstrap failed" >&2; exit 1; }
  if [ "$CACHE" -eq 1 ]; then mkdir -p "$(dirname "$TAR")"; tar -cf "$TAR" -C "$ROOT" .; fi
fi
T_BOOT=$(( $(now) - T0 ))

# The same package sources as this machine (main, updates, security), and its DNS.
rm -f "$ROOT/etc/apt/sources.list"
mkdir -p "$ROOT/etc/apt/sources.list.d"
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] && cp "$f" "$ROOT/etc/apt/${f#/etc/apt/}"
done
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"

# A clean clone: committed work only, nothing from this working tree's build folders.
git clone -q --no-local "$REPO" "$ROOT/src/blendfuse"
HEAD=$(git -C "$ROOT/src/blendfuse" rev-parse --short HEAD)
echo "== clean clone of $HEAD in $ROOT/src/blendfuse"

run_in_root() {  # an empty environment, no standard input, as a new user would type it
  chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /src/blendfuse && $1" </dev/null
}

status=0
echo "== ./scripts/demo.sh"
T1=$(now)
if ! run_in_root ./scripts/demo.sh 2>&1 | tee "$ROOT.demo.log"; then status=1; fi
T_DEMO=$(( $(now) - T1 ))
if [ $status -eq 0 ]; then
  echo "== ./scripts/test.sh"
  T2=$(now)
  if ! run_in_root ./scripts/test.sh 2>&1 | tee "$ROOT.test.log"; then status=1; fi
  T_TEST=$(( $(now) - T2 ))
fi

BUILD_S=$(sed -n 's/^build: .* in \([0-9]*\) s.*/\1/p' "$ROOT.demo.log" | head -1)
echo
echo "== check-fresh summary (HEAD $HEAD, $(nproc) cores, debootstrap variant $VARIANT)"
echo "bare root:             $(fmt "$T_BOOT")"
echo "./scripts/demo.sh:     $(fmt "$T_DEMO")$( [ -n "$BUILD_S" ] && echo " (of which build $(fmt "$BUILD_S"))")"
[ -n "${T_TEST:-}" ] && echo "./scripts/test.sh:     $(fmt "$T_TEST")"
grep -E 'tests passed|tests failed' "$ROOT.test.log" 2>/dev/null | tail -1 || true
grep -E '^demo: ' "$ROOT.demo.log" | tail -3 || true
echo "logs: $ROOT.demo.log $ROOT.test.log"
if [ $status -ne 0 ]; then
  echo "check-fresh: FAILED (root kept in $ROOT)" >&2
  exit 1
fi
cleanup
[ "$KEEP" -eq 1 ] || rm -rf "$ROOT"
echo "check-fresh: passed"
