#!/usr/bin/env bash
# The README's command (1): install what is missing, build, start kvd on its embedded defaults
# (host arena when there is no GPU, LRU, 256 MiB) in a private run directory, and run the sharing
# demonstration: several worker processes start together on one long prefix and share its pages.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target kvd kvdemo kvctl 2>&1 | grep -E "error|warning" || true

work=$(mktemp -d /tmp/kvd-demo.XXXXXX)
trap 'kill "$kvd_pid" 2>/dev/null; wait "$kvd_pid" 2>/dev/null; rm -rf "$work"' EXIT
./build/kvd/kvd --run-dir "$work/run" --state-dir "$work/state" 2>"$work/kvd.log" &
kvd_pid=$!
for _ in $(seq 100); do [ -S "$work/run/kvd.sock" ] && break; sleep 0.1; done
sed 's/^/  kvd| /' "$work/kvd.log"
echo
./build/tools/kvdemo/kvdemo --run-dir "$work/run" "$@"
if [ -x build/tools/kvctl/kvctl ]; then
  echo
  ./build/tools/kvctl/kvctl --run-dir "$work/run" stats || true
fi
