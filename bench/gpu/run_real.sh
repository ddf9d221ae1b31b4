#!/bin/bash
# Real weights on the GPU machine: SmolLM2-135M-Instruct from its GGUF (carried in two parts,
# .gpu/g01 and .gpu/g02, staged to /tmp/parts), stored there with `evalq models add`, then
# bench/real_run.py: a broker, one worker, one run per --run, `evalq results` and `compare`.
#
# On the GPU machine, from the checkout, after `bash .gpu/bin/install.sh && source .gpu/bin/env.sh`:
#   bash bench/gpu/run_real.sh --run hotpotqa:500 --run musique:100 --run squad:2000
# Writes $OUT/real-runs.json, $OUT/evalq.db.xz (the whole SQLite store) and $OUT/worker.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/real-out}; mkdir -p "$OUT"
export EVALQ_HOME=${EVALQ_HOME:-/tmp/evalq-home}
GGUF=/tmp/parts/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] || cat /tmp/parts/gguf.part* > "$GGUF"
echo "$(cat .gpu/bin/GGUF_SHA256)  $GGUF" | sha256sum -c -
t0=$(date +%s)
python3 -m evalq models add smollm2-135m "$GGUF"
echo "model stored in $(( $(date +%s) - t0 )) s"
python3 bench/real_run.py --model smollm2-135m --out "$OUT" --work /tmp/evalq-real "$@"
