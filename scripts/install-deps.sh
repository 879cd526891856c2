#!/usr/bin/env bash
# Installs every Debian package that building, testing and benchmarking tandem needs.
# Idempotent: when everything is present it prints nothing and exits 0.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libzmq3-dev cppzmq-dev libeigen3-dev libmsgpack-cxx-dev libssl-dev
  libspdlog-dev libfmt-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  fortunes fortunes-min
  # The cross-lingual setup's client languages (data.languages). Not fortunes-br: it is one
  # file, one category, which cannot be split among clients and a transfer pool.
  fortunes-de fortunes-es fortunes-it fortunes-pl fortunes-ru fortunes-cs
  libopenblas-openmp-dev
  # The sanitizer trees of `make test` (README, "Sanitizers"): clang with its sanitizer runtimes,
  # its OpenMP runtime and its linker.
  clang lld libomp-dev libclang-rt-dev
  python3 python3-torch python3-numpy libopenblas0-pthread
  gnuplot-nox
  slurmctld slurmd slurm-client munge iproute2 util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
