#!/usr/bin/env bash
# Perplexity table rows (docs/QUALITY.md) for every KV storage format, one format at a time:
#   tools/kvrun/ppl_table.sh TEXT CHUNKS [BUILD_DIR]
# FORMATS="f16 int8" overrides the formats (default: the seven of the QUALITY table).
# Prints markdown rows: format | ppl | bits/elem | KV bytes/token | prefill tok/s | decode tok/s.
# Runs under nice: the development machines have two shared cores.
set -euo pipefail
text=$1
chunks=$2
build=${3:-build}
for fmt in ${FORMATS:-f16 fp8_e4m3 fp8_e5m2 int8 int4 kivi4 kivi2}; do
  nice -n 10 "$build/tools/kvrun/kvrun" ppl --file "$text" --chunks "$chunks" --format "$fmt" --md
done
