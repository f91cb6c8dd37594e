#!/usr/bin/env bash
# The README's command (1): install what is missing, build (Release), start kvd on its embedded
# defaults (host arena when there is no GPU, LRU) in a private run directory, and show sharing with
# the reference worker: N kvrun processes (SmolLM2-135M on the CPU) start together, answer
# different questions after one long shared system prompt (computed once, read in place by all),
# then a new worker continues one of the conversations from kvd.
#   tools/demo.sh [--workers N] [-n TOKENS] [--format FMT]   the sharing run (default 4, 24, fp8_e4m3)
#   tools/demo.sh --synthetic [kvdemo options]                 synthetic KV, no model (kvdemo)
set -euo pipefail
cd "$(dirname "$0")/.."
synthetic=0
if [ "${1:-}" = "--synthetic" ]; then
  synthetic=1
  shift
fi
tools/bootstrap.sh
b=${KVD_BUILD_DIR:-build}
cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$b" -j"$(nproc)" --target kvd kvdemo kvctl kvrun 2>&1 | grep -E "error|warning" || true

work=$(mktemp -d /tmp/kvd-demo.XXXXXX)
kvd_pid=
cleanup() {
  if [ -n "$kvd_pid" ]; then kill "$kvd_pid" 2>/dev/null || true; wait "$kvd_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$b"/kvd/kvd --run-dir "$work/run" --state-dir "$work/state" 2>"$work/kvd.log" &
kvd_pid=$!
for _ in $(seq 100); do [ -S "$work/run/kvd.sock" ] && break; sleep 0.1; done
sed 's/^/  kvd| /' "$work/kvd.log"
echo
if [ "$synthetic" = 1 ]; then
  "$b"/tools/kvdemo/kvdemo --run-dir "$work/run" "$@"
else
  "$b"/tools/kvrun/kvrun share --kvd "$work/run" --file tools/kvrun/texts/system.txt \
    --questions tools/kvrun/texts/questions.txt --workers 4 -n 24 --format fp8_e4m3 "$@"
fi
if [ -x "$b"/tools/kvctl/kvctl ]; then
  echo
  "$b"/tools/kvctl/kvctl --run-dir "$work/run" stats || true
fi
