#!/bin/bash
# One GPU, end to end: (a) evalq through Redis, Celery workers and SQLite; (b) the same prompts
# as one LLM.generate batch; (c) seed-style, one question at a time. N ORAN-Bench medium
# questions x {mdp, fixed:k=3}, a dummy-weight model of SHAPE's sizes.
#
# On the GPU machine, from the checkout, after `bash .gpu/bin/install.sh && source .gpu/bin/env.sh`:
#   [SHAPE=smollm2-135m] [N=4000] bash bench/gpu/run_bench.sh [more bench/throughput.py flags]
# SHAPE: qwen2.5-7b (default) or smollm2-135m (SmolLM2-135M-Instruct's layers, widths and
# heads on the same tokenizer). N=questions (default 1000), SEED_Q=(c) subset (default 16).
# Writes $OUT/<label>.json, $OUT/bench.log and the workers' log tails. About 6 minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
WORK=/tmp/evalq-bench
SHAPE=${SHAPE:-qwen2.5-7b}
case "$SHAPE" in
  qwen2.5-7b) shape_flags=() ;;
  smollm2-135m)
    shape_flags=(--layers 30 --hidden 576 --intermediate 1536 --heads 9 --kv-heads 3 --vocab-size 49152) ;;
  *) echo "SHAPE must be qwen2.5-7b or smollm2-135m, not $SHAPE" >&2; exit 2 ;;
esac
MODEL=/tmp/model-$SHAPE
[ -f "$MODEL/model/config.json" ] || python3 bench/gpu/mkmodel.py "$MODEL" "${shape_flags[@]}"
status=0
python3 bench/throughput.py --model "$MODEL/model" --tokenizer "$MODEL/tok" --load-format dummy \
  --gpus 0 --n "${N:-1000}" --seed-questions "${SEED_Q:-16}" --work "$WORK" --out "$OUT" "$@" \
  2>&1 | tee "$OUT/bench.log" || status=$?
for f in "$WORK"/*/worker.log "$WORK"/*/logs/*.log; do
  [ -f "$f" ] && tail -c 1000000 "$f" > "$OUT/$(echo "${f#"$WORK"/}" | tr / -)"
done
exit $status
