#!/bin/bash
# One GPU, end to end: (a) evalq through Redis, a Celery worker and SQLite; (b) the same prompts
# as one LLM.generate batch; (c) seed-style, one question at a time. 1000 ORAN-Bench medium
# questions x {mdp, fixed:k=3}, a dummy-weight Qwen2.5-7B-Instruct-shaped model.
#
# On the GPU machine, from the checkout, after `bash .gpu/bin/install.sh && source .gpu/bin/env.sh`:
#   bash bench/gpu/run_bench.sh [more bench/throughput.py flags]
# N=questions (default 1000), SEED_Q=(c) subset (default 16). Writes $OUT/single-gpu0.json,
# $OUT/bench.log and the worker's log tail. About 6 minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
WORK=/tmp/evalq-bench
[ -f /tmp/qwen/model/config.json ] || python3 bench/gpu/mkmodel.py /tmp/qwen
status=0
python3 bench/throughput.py --model /tmp/qwen/model --tokenizer /tmp/qwen/tok --load-format dummy \
  --gpus 0 --n "${N:-1000}" --seed-questions "${SEED_Q:-16}" --work "$WORK" --out "$OUT" "$@" \
  2>&1 | tee "$OUT/bench.log" || status=$?
for f in "$WORK"/*/worker.log; do [ -f "$f" ] && tail -c 3000000 "$f" > "$OUT/worker.log"; done
exit $status
