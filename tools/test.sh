#!/usr/bin/env bash
# Builds kvd and runs the whole test suite: unit, multi-process, GPU (skipped without a device),
# and a short run of every fuzz target under ASan+UBSan. The README's command (2); CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh

jobs=$(nproc)
cuda_args=()
# CI must build the CUDA parts: configure fails there if the toolkit is missing.
if [ "${CI:-}" = "true" ] || [ "${KVD_REQUIRE_CUDA:-0}" = "1" ]; then
  cuda_args+=(-DKVD_REQUIRE_CUDA=ON)
fi

cmake -S . -B build -DKVD_WERROR=ON "${cuda_args[@]}" >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600 -LE fuzz

# Fuzz smoke: every decoder of bytes from another process, briefly, under sanitizers.
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DKVD_CUDA=OFF \
  -DKVD_FUZZ=ON -DKVD_SANITIZE=ON -DKVD_WERROR=ON >/dev/null
cmake --build build-fuzz -j"$jobs" --target kvd_fuzz_all
ctest --test-dir build-fuzz --output-on-failure -L fuzz
