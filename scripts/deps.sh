#!/usr/bin/env bash
# Installs the Debian packages blendfuse needs, if any are missing.
# As root: apt-get installs them. Otherwise: prints the exact command and exits 1.
set -euo pipefail

PKGS=(build-essential cmake pkg-config ccache
      libeigen3-dev libxtensor-dev libdnnl-dev doctest-dev libbenchmark-dev nlohmann-json3-dev
      libsndfile1-dev libsoxr-dev libcli11-dev libespeak-ng-dev espeak-ng-data
      ocl-icd-opencl-dev   # oneDNN's CMake config looks OpenCL up (REQUIRED); libdnnl-dev only recommends it
      libpng-dev ffmpeg)   # blendfuse render: PNG contact sheets, MP4 (H.264 + AAC) through ffmpeg

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: missing packages: ${missing[*]}" >&2
  echo "deps: run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
