#!/usr/bin/env python3
"""GPU throughput, end to end: evalq through Redis, Celery workers and the database (a),
against the same prompts as one ideal ``LLM.generate`` batch (b) and the seed's way of
driving, one question at a time (c).

Usage (from the checkout, evalq importable)::

    python3 bench/throughput.py --model /tmp/qwen/model --tokenizer /tmp/qwen/tok \\
        --load-format dummy --gpus 0 --n 1000 --out $OUT

``--gpus 0,1,2,3`` starts ``evalq fleet`` (one worker per GPU, or per ``--tp`` GPUs)
instead of one ``evalq worker`` (and skips (b) and (c), which compare one GPU); ``--no-ideal``
skips them on one GPU too. Output lengths are
fixed (``ignore_eos``) so that runs compare. Results go to ``OUT/<label>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import (
    Broker,
    Process,
    Profiler,
    episodes_by_worker,
    evalq_env,
    oran_hotpot_corpus,
    run_totals,
    timeline_summary,
    wait_ready,
    wait_run,
    write_json,
)

from evalq.config import Settings
from evalq.models.timeline import TIMELINE_ENV
from evalq.models.vllm import RECORD_ENV
from evalq.rag.strategies import GenerationConfig
from evalq.scheduler.defaults import RUN_DEFAULTS
from evalq.scheduler.submit import RunRequest, submit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--load-format", default=None)
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--gpus", default="0", help="one id: a worker; several: evalq fleet")
    p.add_argument("--tp", type=int, default=1, help="GPUs per worker (fleet)")
    p.add_argument("--workers-per-gpu", type=int, default=1, help="engines per GPU (fleet)")
    p.add_argument("--n", type=int, default=1000, help="questions")
    p.add_argument("--dataset", default="oran-bench")
    p.add_argument("--difficulty", default="medium")
    p.add_argument("--strategies", default="mdp,fixed:k=3")
    p.add_argument("--mdp-preset", default=RUN_DEFAULTS.mdp_preset)
    p.add_argument("--shard-size", type=int, default=250)
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="episodes in flight per shard (default: the worker's, from its engine's batch)",
    )
    p.add_argument(
        "--shards-in-flight", type=int, default=None, help="per worker (default: the worker's)"
    )
    p.add_argument("--driver", default="async", choices=["async", "batch"])
    p.add_argument("--scheduling-policy", default=None, choices=["fcfs", "priority"])
    p.add_argument("--engine", default=None, help="engine factory (CPU checks of the script)")
    p.add_argument("--answer-tokens", type=int, default=RUN_DEFAULTS.max_tokens)
    p.add_argument("--note-tokens", type=int, default=GenerationConfig.note_tokens)
    p.add_argument("--query-tokens", type=int, default=GenerationConfig.query_tokens)
    p.add_argument("--ideal", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--text-replay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="(b) from text prompts too, besides token ids (stalls on tens of thousands)",
    )
    p.add_argument("--seed-questions", type=int, default=16, help="(c) subset; 0 skips (c)")
    p.add_argument("--timeout", type=float, default=420.0, help="seconds for the run")
    p.add_argument("--label", default=None, help="result file name (default from the GPUs)")
    p.add_argument(
        "--py-spy",
        default=None,
        help="py-spy executable: profile the worker and its engine core during the run",
    )
    p.add_argument(
        "--record-prompts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record what (a) sends, for (b) (one GPU only)",
    )
    p.add_argument(
        "--per-strategy",
        action="store_true",
        help="one run per strategy, one after another on the same worker, each with its own "
        "(a) and (b)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/evalq-bench"))
    return p.parse_args(argv)


def engine_flags(args: argparse.Namespace) -> list[str]:
    """Engine flags shared by the workers and the replay (so (a) and (b) match)."""
    flags = ["--max-model-len", str(args.max_model_len)]
    if args.tokenizer:
        flags += ["--tokenizer", args.tokenizer]
    if args.load_format:
        flags += ["--load-format", args.load_format]
    return flags


def gpu_description() -> str:
    """The GPU model(s), from nvidia-smi, or the CPU where there is none."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
        names = out.splitlines()
        return f"{len(names)} x {names[0]}" if names else "no GPU"
    except (OSError, subprocess.SubprocessError):
        return f"CPU: {platform.processor() or platform.machine()}"


@dataclass(frozen=True)
class DoneRun:
    """One finished run of (a): its strategies, id, seconds, start, and prompts recorded so far."""

    strategies: str
    run_id: int
    wall: float
    epoch0: float
    prompts_end: int


def run_request(args: argparse.Namespace, corpus: str, strategies: list[str]) -> RunRequest:
    """The run (a) submits, with fixed output lengths."""
    return RunRequest(
        dataset=args.dataset,
        difficulty=args.difficulty,
        model=args.model,
        strategies=tuple(strategies),
        n=args.n,
        shard_size=args.shard_size,
        corpus=corpus,
        mdp_preset=args.mdp_preset,
        generation=GenerationConfig(
            answer_tokens=args.answer_tokens,
            note_tokens=args.note_tokens,
            query_tokens=args.query_tokens,
            ignore_eos=True,
        ),
    )


def a_numbers(db_url: str, done: DoneRun) -> dict[str, Any]:
    """(a) of one run: episodes and tokens from the database over its wall-clock seconds."""
    totals = run_totals(db_url, done.run_id)
    tokens = totals.prompt_tokens + totals.completion_tokens
    return {
        "run_id": done.run_id,
        "wall_s": round(done.wall, 2),
        "episodes": totals.episodes,
        "episodes_ok": totals.ok,
        "prompt_tokens": totals.prompt_tokens,
        "generated_tokens": totals.completion_tokens,
        "episodes_per_s": round(totals.episodes / done.wall, 2),
        "generated_tokens_per_s": round(totals.completion_tokens / done.wall, 1),
        "tokens_per_s": round(tokens / done.wall, 1),
    }


def split_prompts(prompts: Path, ends: list[int]) -> list[Path]:
    """The recorded prompts cut at each run's end offset: one file per run, in order."""
    if len(ends) == 1 or not prompts.exists():
        return [prompts]
    data = prompts.read_bytes()
    files = []
    for n, (start, end) in enumerate(zip([0, *ends], ends, strict=False)):
        part = prompts.with_name(f"prompts-{n}.jsonl")
        part.write_bytes(data[start:end])
        files.append(part)
    return files


def replay(
    args: argparse.Namespace,
    env: dict[str, str],
    gpu: str,
    db_url: str,
    run_id: int,
    files: list[Path],
    label: str,
    work: Path,
) -> list[dict[str, Any]]:
    """(b), and (c) for ``run_id``, in a second process on one LLM: per prompts file."""
    replay_out = work / "replay.json"
    cmd = [sys.executable, str(Path(__file__).with_name("replay.py")), "--model", args.model]
    cmd += [*engine_flags(args), "--db-url", db_url, "--run-id", str(run_id)]
    cmd += [flag for f in files for flag in ("--prompts", str(f))]
    cmd += ["--seed-questions", str(args.seed_questions), "--out", str(replay_out)]
    if not args.text_replay:
        cmd.append("--no-text-replay")
    timeline_b = args.out / f"{label}-timeline-b.jsonl"
    replay_env = {**env, "CUDA_VISIBLE_DEVICES": gpu, TIMELINE_ENV: str(timeline_b)}
    subprocess.run(cmd, env=replay_env, check=True)
    out = json.loads(replay_out.read_text())
    replays: list[dict[str, Any]] = out.pop("replays")
    replays[0].update(out)  # the engine start and (c) go with the first run
    return replays


def with_ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """(b)'s numbers for one run and (a)'s tokens per second over them."""
    out = dict(b)
    if b.get("b_ideal"):
        out["a_over_b_tokens"] = round(a["tokens_per_s"] / b["b_ideal"]["tokens_per_s"], 3)
    if b.get("b_ideal_pretokenized"):
        ratio = a["tokens_per_s"] / b["b_ideal_pretokenized"]["tokens_per_s"]
        out["a_over_b_pretokenized_tokens"] = round(ratio, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run (a), then (b) and (c) in a separate process; write the JSON."""
    args = parse_args(argv)
    gpus = [g for g in args.gpus.split(",") if g]
    per_gpu = args.workers_per_gpu
    label = args.label or (
        f"single-gpu{gpus[0]}" if len(gpus) == 1 else f"dp{len(gpus) // args.tp}-tp{args.tp}"
    ) + (f"-x{per_gpu}" if per_gpu > 1 else "")
    work = args.work / label
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    os.environ["EVALQ_HOME"] = str(home)
    db_url = f"sqlite:///{work / 'evalq.db'}"
    prompts = work / "prompts.jsonl"
    prompts.unlink(missing_ok=True)
    timeline = work / "timeline-a.jsonl"
    timeline.unlink(missing_ok=True)
    result: dict[str, Any] = {
        "label": label,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": gpu_description(),
        "command": " ".join([sys.executable, *sys.argv]),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    corpus = oran_hotpot_corpus(work)
    broker = Broker(work)
    env = evalq_env(db_url, broker.url, home, **{TIMELINE_ENV: str(timeline)})
    common = ["--model", args.model, *engine_flags(args), "--driver", args.driver]
    if args.concurrency:
        common += ["--concurrency", str(args.concurrency)]
    if args.shards_in_flight:
        common += ["--shards-in-flight", str(args.shards_in_flight)]
    if args.scheduling_policy:
        common += ["--scheduling-policy", args.scheduling_policy]
    if args.engine:
        common += ["--engine", args.engine]
    if len(gpus) == 1 and args.record_prompts:
        env[RECORD_ENV] = str(prompts)  # (b) replays exactly what (a) sent
    if len(gpus) == 1 and per_gpu == 1:
        procs = [Process(["worker", "--gpus", gpus[0], *common], env, work / "worker.log")]
        logs = [work / "worker.log"]
    else:
        fleet = ["fleet", "--gpus", args.gpus, "--tensor-parallel-size", str(args.tp)]
        fleet += ["--workers-per-gpu", str(per_gpu), "--log-dir", str(work / "logs"), *common]
        procs = [Process(fleet, env, work / "fleet.log")]
        groups = ["-".join(gpus[i : i + args.tp]) for i in range(0, len(gpus), args.tp)]
        replicas = [f".{r}" for r in range(per_gpu)] if per_gpu > 1 else [""]
        logs = [work / "logs" / f"worker-gpu{g}{r}.log" for g in groups for r in replicas]
    profiler = None
    runs: list[DoneRun] = []
    try:
        result["worker_start_s"] = round(wait_ready(logs, procs, timeout=600), 1)
        if args.py_spy:
            profiler = Profiler(args.py_spy, procs[0].proc.pid, args.out / f"{label}-pyspy.txt")
        settings = Settings(database_url=db_url, broker_url=broker.url)
        strategies = [x for x in args.strategies.split(",") if x]
        run_sets = [[x] for x in strategies] if args.per_strategy else [strategies]
        for group in run_sets:
            epoch0 = time.time()
            run_id = submit(settings, run_request(args, corpus, group))
            wall = wait_run(db_url, run_id, procs, timeout=args.timeout) - epoch0
            # Every prompt of a run is recorded before its episode is stored, and the next
            # run is submitted only now: the bytes so far are this run's and earlier ones'.
            size = prompts.stat().st_size if prompts.exists() else 0
            runs.append(DoneRun(",".join(group), run_id, wall, epoch0, size))
    finally:
        if profiler is not None:
            profiler.stop()
        for p in procs:
            p.stop()
        broker.stop()
    for done in runs:
        entry: dict[str, Any] = {"a_evalq": a_numbers(db_url, done)}
        entry["a_engine_timeline"] = timeline_summary(
            timeline, done.epoch0, done.epoch0 + done.wall
        )
        entry["a_episodes_by_worker"] = episodes_by_worker(db_url, done.run_id)
        print(json.dumps({done.strategies: entry["a_evalq"]}), flush=True)
        if args.per_strategy:
            result.setdefault("per_strategy", {})[done.strategies] = entry
        else:
            result.update(entry)
    if args.ideal and len(gpus) == 1:
        files = split_prompts(prompts, [d.prompts_end for d in runs])
        replays = replay(args, env, gpus[0], db_url, runs[0].run_id, files, label, work)
        for d, r in zip(runs, replays, strict=True):
            target = result["per_strategy"][d.strategies] if args.per_strategy else result
            target.update(with_ratios(target["a_evalq"], r))
        if not args.per_strategy and "c_seed_style" in replays[0]:
            c = replays[0]["c_seed_style"]
            ratio = result["a_evalq"]["episodes_per_s"] / c["episodes_per_s"]
            result["a_over_c_episodes"] = round(ratio, 1)
    if timeline.exists():
        shutil.copy(timeline, args.out / f"{label}-timeline-a.jsonl")
    write_json(args.out / f"{label}.json", result)
    print(json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
