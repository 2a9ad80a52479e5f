#!/usr/bin/env bash
# make bench: llm-bench on the seeded synthetic model of TinyLlama-1.1B's
# shape (written once into the cache directory, ~2.2 GB F16), quantized at
# load time to Q8_0, Q6_K and Q4_K_M (cached after the first run), pp64 and
# tg32 at 1 and 2 threads, 3 repetitions; each configuration runs in its own
# process (peak RSS per configuration). Writes bench/results.json and
# bench/results.md; with ../shared/BENCH-1B.json present, the table also
# shows llama.cpp's figures and our ratio to them.
#
# Environment: LLM_ENGINE_SHARED (default ../shared), BENCH_ARGS (extra
# llm-bench flags, e.g. "--cache-dir /tmp/c" or "-r 5").
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${LLM_ENGINE_SHARED:-../shared}
args=(--synth tinyllama-1.1b -q Q8_0,Q6_K,Q4_K_M -t 1,2 -p 64 -n 32 -r 3
  --save-json bench/results.json --save-md bench/results.md)
if [ -f "$shared/BENCH-1B.json" ]; then
  args+=(--compare "$shared/BENCH-1B.json")
fi
# shellcheck disable=SC2086
./bin/llm-bench "${args[@]}" ${BENCH_ARGS:-}
