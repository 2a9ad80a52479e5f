#!/usr/bin/env bash
# make demo: start llm-engined in the foreground on a socket in a temp dir,
# generate 64 tokens from "Once upon a time" with the default model through
# enginectl, print the text and the run's metrics, stop the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin
tmp=$(mktemp -d)
sock="$tmp/engine.sock"
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

shared=${LLM_ENGINE_SHARED:-../shared}
if [ -n "${MODEL:-}" ]; then
  model=$MODEL
elif [ -f "$shared/models/stories260K.gguf" ]; then
  model=$shared/models/stories260K.gguf
else
  model=$tmp/synthetic-tiny.gguf
  echo "demo: no \$MODEL and no $shared/models/stories260K.gguf;"
  echo "demo: writing a small synthetic model with random weights (expect gibberish): $model"
  $BIN/llm-bench synth --preset tiny --out "$model"
fi

$BIN/llm-engined --listen "$sock" --state-dir "$tmp/state" --cache-dir "$tmp/cache" 2>"$tmp/daemon.log" &
daemon_pid=$!
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "demo: daemon did not start:"; cat "$tmp/daemon.log"; exit 1; }

echo "== model: $model"
echo "== prompt: Once upon a time"
echo
$BIN/enginectl --socket "$sock" generate --model "$model" --prompt "Once upon a time" -n 64
echo
echo "== run metrics (JSON)"
# The result goes to a file first: a formatter started in a pipe would start
# up on the CPUs the run computes on (a Python interpreter's start-up on one
# of two CPUs halves a 2-thread run's speed).
$BIN/enginectl --socket "$sock" --json generate --model "$model" --prompt "Once upon a time" -n 64 >"$tmp/run.json"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({k:r[k] for k in ("run_id","finish_reason","metrics") if k in r}, indent=2))' "$tmp/run.json" 2>/dev/null \
  || cat "$tmp/run.json"
