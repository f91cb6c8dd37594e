#!/bin/bash
# Restore from kvd's disk tier vs recompute for a long prefix with the reference worker
# (docs/BENCHMARKS.md "Sharing with the reference worker"). usage: B=build-dir F=format $0 TEXT
set -u
B=${B:-build-kvrun2}; F=${F:-fp8_e4m3}; TXT=$1
W=$(mktemp -d /tmp/kvrun-spill.XXXXXX)
start() { $B/kvd/kvd --run-dir $W/run --state-dir $W/state >>$W/kvd.log 2>&1 & pid=$!; for i in $(seq 100); do [ -S $W/run/kvd.sock ] && break; sleep 0.1; done; }
stop() { kill $pid; wait $pid; }
K="$B/tools/kvrun/kvrun logits --format $F --file $TXT"
start
$K --no-kvd --out $W/scratch >/dev/null 2>$W/e; echo "scratch:  $(tail -1 $W/e)"
$K --kvd $W/run --out $W/miss >/dev/null 2>$W/e; echo "miss:     $(tail -1 $W/e)"
$K --kvd $W/run --out $W/mem >/dev/null 2>$W/e; echo "memory:   $(tail -1 $W/e)"
for r in 1 2; do
  stop; start
  $K --kvd $W/run --out $W/disk$r >/dev/null 2>$W/e; echo "disk $r:   $(tail -1 $W/e)"
  $K --no-kvd --out $W/scratch$r >/dev/null 2>$W/e; echo "scratch $r: $(tail -1 $W/e)"
done
for f in miss mem disk1 disk2 scratch1; do cmp -s $W/scratch $W/$f && echo "$f logits bit-identical to scratch" || echo "$f logits DIFFER"; done
$B/tools/kvctl/kvctl --run-dir $W/run stats | grep -E "spill|lookup_pages"
grep -E "spill" $W/kvd.log | tail -4
stop; rm -rf $W
