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
    try:
        result["worker_start_s"] = round(wait_ready(logs, procs, timeout=600), 1)
        if args.py_spy:
            profiler = Profiler(args.py_spy, procs[0].proc.pid, args.out / f"{label}-pyspy.txt")
        req = RunRequest(
            dataset=args.dataset,
            difficulty=args.difficulty,
            model=args.model,
            strategies=tuple(args.strategies.split(",")),
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
        settings = Settings(database_url=db_url, broker_url=broker.url)
        t0, epoch0 = time.perf_counter(), time.time()
        run_id = submit(settings, req)
        wait_run(db_url, run_id, procs, timeout=args.timeout)
        wall = time.perf_counter() - t0
    finally:
        if profiler is not None:
            profiler.stop()
        for p in procs:
            p.stop()
        broker.stop()
    totals = run_totals(db_url, run_id)
    tokens = totals.prompt_tokens + totals.completion_tokens
    result["a_evalq"] = {
        "run_id": run_id,
        "wall_s": round(wall, 2),
        "episodes": totals.episodes,
        "episodes_ok": totals.ok,
        "prompt_tokens": totals.prompt_tokens,
        "generated_tokens": totals.completion_tokens,
        "episodes_per_s": round(totals.episodes / wall, 2),
        "generated_tokens_per_s": round(totals.completion_tokens / wall, 1),
        "tokens_per_s": round(tokens / wall, 1),
    }
    result["a_engine_timeline"] = timeline_summary(timeline, epoch0, epoch0 + wall)
    result["a_episodes_by_worker"] = episodes_by_worker(db_url, run_id)
    if timeline.exists():
        shutil.copy(timeline, args.out / f"{label}-timeline-a.jsonl")
    print(json.dumps({"a_evalq": result["a_evalq"]}), flush=True)
    if args.ideal and len(gpus) == 1:
        replay_out = work / "replay.json"
        cmd = [sys.executable, str(Path(__file__).with_name("replay.py")), "--model", args.model]
        cmd += [*engine_flags(args), "--db-url", db_url, "--run-id", str(run_id)]
        cmd += ["--prompts", str(prompts), "--seed-questions", str(args.seed_questions)]
        cmd += ["--out", str(replay_out)]
        if not args.text_replay:
            cmd.append("--no-text-replay")
        timeline_b = args.out / f"{label}-timeline-b.jsonl"
        replay_env = {**env, "CUDA_VISIBLE_DEVICES": gpus[0], TIMELINE_ENV: str(timeline_b)}
        subprocess.run(cmd, env=replay_env, check=True)
        result.update(json.loads(replay_out.read_text()))
        b, c, a = result.get("b_ideal"), result.get("c_seed_style"), result["a_evalq"]
        if b:
            result["a_over_b_tokens"] = round(a["tokens_per_s"] / b["tokens_per_s"], 3)
        pretokenized = result.get("b_ideal_pretokenized")
        if pretokenized:
            ratio = a["tokens_per_s"] / pretokenized["tokens_per_s"]
            result["a_over_b_pretokenized_tokens"] = round(ratio, 3)
        if c:
            result["a_over_c_episodes"] = round(a["episodes_per_s"] / c["episodes_per_s"], 1)
    write_json(args.out / f"{label}.json", result)
    print(json.dumps(result, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
