#!/usr/bin/env bash
# Installs what kvd needs to build, test and run on Debian 12. Idempotent: installs only what is
# missing. Uses sudo only when not root. Python packages go into the project venv (.venv), because a
# fresh Debian 12 refuses system-wide pip installs (PEP 668).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

debs=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libzmq3-dev liburing-dev libcriterion-dev
  libinih-dev libsodium-dev libjson-c-dev libmicrohttpd-dev libsystemd-dev
  libxxhash-dev systemd fio python3-venv
)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "bootstrap: note: no CUDA toolkit found; the CUDA backend will not be built" >&2
fi

# Python venv for the quality tools (model reference, plots). Created once.
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
