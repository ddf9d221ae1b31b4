#!/bin/bash
# Data parallel on one multi-GPU machine: PER questions x {mdp, fixed:k=3} a worker (default 1000,
# so every GPU gets the same work whatever the count: weak scaling, as the bare-engine figures in
# shared/gpu/README.md were taken) served by `evalq fleet` with 1, 2, 4, 8 workers in turn (each
# started, measured, stopped), and with TP=2 workers (one per pair of GPUs) when TP2 is set.
# N=questions fixes the run's size instead (strong scaling).
#
# On the GPU machine, from the checkout, after `bash .gpu/bin/install.sh && source .gpu/bin/env.sh`:
#   COUNTS="1 2" bash bench/gpu/run_fleet_bench.sh        # one call (10 minutes at most)
#   COUNTS="4 8" bash bench/gpu/run_fleet_bench.sh        # the next call on the same machine
#   COUNTS="" TP2="4" bash bench/gpu/run_fleet_bench.sh   # 4 GPUs as 2 TP=2 workers
# Each point: a fleet start (about 30 to 60 s) plus the run. Writes $OUT/dp<N>-tp<T>.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
[ -f /tmp/qwen/model/config.json ] || python3 bench/gpu/mkmodel.py /tmp/qwen
PER=${PER:-1000}
COMMON=(--model /tmp/qwen/model --tokenizer /tmp/qwen/tok --load-format dummy --no-ideal
        --work /tmp/evalq-bench --out "$OUT")
gpus_of() { seq -s, 0 $(($1 - 1)); }
questions() { echo "${N:-$((PER * $1))}"; }
# One shard per worker slot (workers x 4 shards in flight, the worker's default): every worker
# gets the same share, all of it in flight from the start.
shard_for() { local n; n=$(questions "$1"); echo $(( (n + $1 * 4 - 1) / ($1 * 4) )); }
for n in ${COUNTS-1 2 4 8}; do
  python3 bench/throughput.py "${COMMON[@]}" --gpus "$(gpus_of "$n")" --n "$(questions "$n")" \
    --shard-size "$(shard_for "$n")" --label "dp$n-tp1" "$@" 2>&1 | tee -a "$OUT/fleet-bench.log"
done
for g in ${TP2-}; do
  w=$((g / 2))
  python3 bench/throughput.py "${COMMON[@]}" --gpus "$(gpus_of "$g")" --tp 2 --n "$(questions "$w")" \
    --shard-size "$(shard_for "$w")" --label "dp$w-tp2" "$@" 2>&1 | tee -a "$OUT/fleet-bench.log"
done
