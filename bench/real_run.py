"""Real-weights evaluation runs end to end on one machine: a broker, one worker, several runs.

Unlike ``throughput.py`` (dummy weights, fixed output lengths, speed only), this runs a real
model with the run defaults an evaluation uses (``ignore_eos`` off), then writes what a
researcher reads: ``evalq results`` and ``evalq compare`` of every run as JSON, and the SQLite
database itself, so the numbers can be queried again on another machine.

    python3 bench/real_run.py --model smollm2-135m --out OUT \
        --run hotpotqa:500 --run musique:100 --run squad:2000 \
        --strategies fixed:k=0,fixed:k=3,mdp

Each ``--run DATASET:N`` is one ``evalq submit`` (seed ``--seed``); all of them go to the one
worker, which runs their shards as they come.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from stack import Broker, Process, evalq_env, wait_ready, wait_run, write_json

from evalq.rag.strategies.registry import split_spec

# Strategies by spec ("fixed:k=3") or by name alone ("flare" stands for the run's flare, e.g.
# "flare:theta=0.25", which is what `evalq compare` is given).
COMPARE_PAIRS = (
    ("fixed:k=3", "fixed:k=0"),
    ("mdp", "fixed:k=3"),
    ("mdp", "fixed:k=0"),
    ("ircot", "fixed:k=3"),
    ("iter-retgen", "fixed:k=3"),
    ("flare", "fixed:k=3"),
    ("mdp", "ircot"),
    ("mdp", "iter-retgen"),
    ("mdp", "flare"),
)


def _spec(name: str, strategies: list[str]) -> str | None:
    """The run's strategy spec that ``name`` (a spec, or a strategy name alone) stands for."""
    for spec in strategies:
        if spec == name or (":" not in name and split_spec(spec)[0] == name):
            return spec
    return None


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a stored model name, folder or HF id")
    p.add_argument("--run", action="append", required=True, help="DATASET:N, repeatable")
    p.add_argument("--strategies", default="fixed:k=0,fixed:k=3,mdp")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--gpus", default="0")
    p.add_argument("--worker-flag", action="append", default=[], help="extra worker flag")
    p.add_argument("--submit-flag", action="append", default=[], help="extra submit flag")
    p.add_argument("--timeout", type=float, default=480.0, help="seconds for all runs")
    p.add_argument(
        "--compare",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run `evalq compare` here (off: run it later on the returned evalq.db.xz)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/evalq-real"))
    return p.parse_args()


def evalq(env: dict[str, str], *argv: str) -> str:
    """Run one evalq command; its standard output (a failure raises with its message)."""
    done = subprocess.run(
        [sys.executable, "-m", "evalq", *argv], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"evalq {' '.join(argv)}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def main() -> int:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    db_path = args.work / "evalq.db"
    db_url = f"sqlite:///{db_path}"
    broker = Broker(args.work)
    # Stored models live in EVALQ_HOME: keep the caller's, where it has one.
    home = Path(os.environ.get("EVALQ_HOME") or args.work / "home")
    env = evalq_env(db_url, broker.url, home)
    strategies = [s for s in args.strategies.split(",") if s]
    worker = Process(
        ["worker", "--model", args.model, "--gpus", args.gpus, *args.worker_flag],
        env,
        args.work / "worker.log",
    )
    t0 = time.monotonic()
    summary: dict[str, object] = {"model": args.model, "submit_flags": args.submit_flag}
    summary["runs"] = []
    try:
        ready_s = wait_ready([args.work / "worker.log"], [worker], timeout=600)
        print(f"worker ready in {ready_s:.0f} s", flush=True)
        runs: list[tuple[int, str, int]] = []
        for spec in args.run:
            dataset, _, n = spec.partition(":")
            strategy_flags = [flag for s in strategies for flag in ("--strategy", s)]
            out = evalq(
                env,
                *("submit", "--dataset", dataset, "--n", n, "--seed", str(args.seed)),
                *("--model", args.model, "--shard-size", str(args.shard_size)),
                *strategy_flags,
                *args.submit_flag,
            )
            run_id = _run_id(out)
            runs.append((run_id, dataset, int(n)))
            print(f"submitted run {run_id}: {dataset} x {n}", flush=True)
        started = time.monotonic()
        for run_id, dataset, _n in runs:
            wait_run(db_url, run_id, [worker], args.timeout - (time.monotonic() - started))
            elapsed = time.monotonic() - started
            print(f"run {run_id} ({dataset}) done at {elapsed:.0f} s", flush=True)
        wall = time.monotonic() - started
        for run_id, dataset, n in runs:
            results = json.loads(evalq(env, "results", str(run_id), "--format", "json"))
            comparisons = {}
            for name_a, name_b in COMPARE_PAIRS if args.compare else ():
                a, b = _spec(name_a, strategies), _spec(name_b, strategies)
                if a and b:
                    comparisons[f"{a} vs {b}"] = json.loads(
                        evalq(env, "compare", str(run_id), "--a", a, "--b", b, "--format", "json")
                    )
            entry = {"run": run_id, "dataset": dataset, "n": n, "results": results}
            entry["compare"] = comparisons
            summary["runs"].append(entry)  # type: ignore[attr-defined]
            print(evalq(env, "results", str(run_id)), flush=True)
        summary["wall_s"] = wall
        write_json(args.out / "real-runs.json", summary)
        return 0
    finally:
        worker.stop()
        broker.stop()
        print(f"total {time.monotonic() - t0:.0f} s", flush=True)
        if db_path.exists():
            # SQLite's backup API copies the pages still in the WAL file too.
            copy = args.work / "evalq-copy.db"
            with sqlite3.connect(db_path) as source, sqlite3.connect(copy) as target:
                source.backup(target)
            subprocess.run(["xz", "-T0", "-f", "-6", str(copy)], check=False)
            xz = copy.with_name(copy.name + ".xz")
            if xz.exists():
                shutil.copy(xz, args.out / "evalq.db.xz")
        log = (args.work / "worker.log").read_bytes()[-2_000_000:]
        (args.out / "worker.log").write_bytes(log)


def _run_id(text: str) -> int:
    """The run id in ``evalq submit``'s output ("run 3 ..." or a bare number)."""
    for word in text.replace(":", " ").split():
        if word.isdigit():
            return int(word)
    raise RuntimeError(f"no run id in: {text!r}")


if __name__ == "__main__":
    sys.exit(main())
