#!/usr/bin/env python3
"""(b) and (c) of the throughput benchmark, on one ``LLM`` built once.

(b) the ideal: every prompt the evalq run sent (recorded by its worker) in one
``LLM.generate`` call, with the same sampling; each ``--prompts`` file is its own batch.
(c) the seed's way: the run's first ``--seed-questions`` questions, every strategy, one
episode after another, each request its own ``generate`` call. Writes
``{"replays": [{"b_ideal": ...}, ...], "c_seed_style": ...}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Everything else is imported inside the functions: vLLM's engine processes re-import this
# module, and must not load the retrieval stack with it.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--load-format", default=None)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--db-url", required=True)
    p.add_argument("--run-id", type=int, required=True)
    p.add_argument(
        "--prompts",
        type=Path,
        action="append",
        required=True,
        help="recorded prompts; repeated: each file is its own batch (one run each)",
    )
    p.add_argument("--seed-questions", type=int, default=16)
    p.add_argument(
        "--text-replay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also replay text prompts (LLM.generate tokenizes them one by one: it stalls on "
        "tens of thousands)",
    )
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def ideal(llm: Any, prompts_file: Path) -> dict[str, Any]:
    """Replay the recorded prompts as one batch; tokens per second, prompt plus generated."""
    from vllm import SamplingParams

    rows = _recorded(prompts_file)
    prompts = [r.pop("prompt") for r in rows]
    params = [SamplingParams(**r) for r in rows]
    llm.generate(prompts[:16], params[:16], use_tqdm=False)  # warm-up, not timed
    outs, wall, timeline = _timed(llm, prompts, params)
    prompt_tokens = sum(len(o.prompt_token_ids or ()) for o in outs)
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "requests": len(prompts),
        "wall_s": round(wall, 2),
        "prompt_tokens": prompt_tokens,
        "generated_tokens": generated,
        "generated_tokens_per_s": round(generated / wall, 1),
        "tokens_per_s": round((prompt_tokens + generated) / wall, 1),
        "engine_timeline": timeline,
    }


def ideal_pretokenized(llm: Any, prompts_file: Path) -> dict[str, Any]:
    """(b) with every prompt tokenized before the clock starts: the engine alone.

    ``LLM.generate`` tokenizes text prompts one by one before the engine has them all; this
    variant shows what the engine itself does with the same requests.
    """
    from vllm import SamplingParams

    from evalq.models.vllm import TokenCodec

    codec = TokenCodec.of(llm.get_tokenizer())
    if codec is None:
        return {}
    rows = _recorded(prompts_file)
    ids = codec.encode([r.pop("prompt") for r in rows])
    inputs: list[Any] = [{"prompt_token_ids": i} for i in ids]
    params = [SamplingParams(**r, detokenize=False) for r in rows]
    llm.generate(inputs[:16], params[:16], use_tqdm=False)  # warm-up, not timed
    outs, wall, timeline = _timed(llm, inputs, params)
    tokens = sum(len(i) for i in ids) + sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "engine_timeline": timeline,
    }


def _recorded(prompts_file: Path) -> list[dict[str, Any]]:
    """The requests (a) sent: each its prompt and its sampling parameters."""
    return [json.loads(line) for line in prompts_file.read_text().splitlines() if line]


def _timed(
    llm: Any, inputs: list[Any], params: list[Any]
) -> tuple[list[Any], float, dict[str, Any]]:
    """One ``generate`` of every request from a cold prefix cache: outputs, seconds, timeline.

    The timeline is what the engine timeline says of those seconds, if one is written.
    """
    from stack import timeline_summary

    from evalq.models.timeline import TIMELINE_ENV

    llm.reset_prefix_cache()
    t0, epoch0 = time.perf_counter(), time.time()
    outs = llm.generate(inputs, params, use_tqdm=False)
    wall = time.perf_counter() - t0
    path = os.environ.get(TIMELINE_ENV)
    summary = timeline_summary(Path(path), epoch0, epoch0 + wall) if path else {}
    return outs, wall, summary


def with_timeline(llm: Any) -> None:
    """Give ``llm`` the engine timeline logger when ``$EVALQ_ENGINE_TIMELINE`` asks for it.

    ``LLM`` takes no stat loggers; its engine's logger manager is rebuilt with the timeline.
    """
    from vllm.v1.metrics.loggers import StatLoggerManager

    from evalq.models.timeline import timeline_loggers

    loggers = timeline_loggers()
    engine = llm.llm_engine
    if loggers is None or not getattr(engine, "log_stats", False):
        return
    engine.logger_manager = StatLoggerManager(
        vllm_config=engine.vllm_config, custom_stat_loggers=loggers, enable_default_loggers=False
    )
    engine.logger_manager.log_engine_initialized()


def seed_style(llm: Any, db_url: str, run_id: int, n_questions: int) -> dict[str, Any]:
    """The run's first questions, one episode at a time, one request per ``generate`` call."""
    from sqlalchemy import select

    from evalq.data.registry import load_questions
    from evalq.db.models import Run, Shard
    from evalq.db.session import open_store
    from evalq.models.vllm import VLLMEngine
    from evalq.rag.episode import EpisodeResult
    from evalq.rag.retrieval import CorpusRetrievers
    from evalq.rag.runner import PendingEpisode, run_episodes
    from evalq.rag.strategies import EpisodeContext, GenerationConfig, parse_strategy

    with open_store(db_url).session() as s:
        run = s.get(Run, run_id)
        assert run is not None
        config = dict(run.config)
        specs = [str(x) for x in run.strategies]
        dataset, difficulty = run.dataset, run.difficulty
        shards = s.scalars(select(Shard).where(Shard.run_id == run_id).order_by(Shard.index))
        ids = [str(q) for sh in shards for q in sh.question_ids][:n_questions]
    by_id = {q.id: q for q in load_questions(dataset, difficulty, config.get("corpus"))}
    retrievers = CorpusRetrievers()
    generation = GenerationConfig.from_json(config.get("generation", {}))
    mdp = config.get("mdp", {})
    strategies = [parse_strategy(spec, mdp) for spec in specs]
    episodes = []
    for qid in ids:
        for strategy in strategies:
            ctx = EpisodeContext(
                generation, float(mdp["c_r"]), float(mdp["c_p"]), retrievers.passage
            )

            def failed(reason: str, qid: str = qid, name: str = strategy.name) -> EpisodeResult:
                return EpisodeResult(qid, name, 0, "error", error=reason)

            episodes.append(PendingEpisode(strategy.episode(by_id[qid], ctx), failed))
    engine = VLLMEngine.from_llm(llm)
    for q in ids[:1]:  # load the corpus index before timing
        retrievers.search(by_id[q].corpus or "", ["warm up"], 1, [frozenset()])
    t0 = time.perf_counter()
    results = list(run_episodes(episodes, engine, retrievers, concurrency=1))
    wall = time.perf_counter() - t0
    prompt_tokens = sum(r.prompt_tokens for r in results)
    generated = sum(r.completion_tokens for r in results)
    return {
        "questions": len(ids),
        "episodes": len(results),
        "wall_s": round(wall, 2),
        "episodes_per_s": round(len(results) / wall, 3),
        "generated_tokens_per_s": round(generated / wall, 1),
        "tokens_per_s": round((prompt_tokens + generated) / wall, 1),
    }


def replay_file(llm: Any, prompts: Path, text_replay: bool) -> dict[str, Any]:
    """(b) of one recorded file: from text prompts (if asked) and from token ids."""
    out: dict[str, Any] = {"prompts": prompts.name}
    if not prompts.exists():
        return out
    if text_replay:
        out["b_ideal"] = ideal(llm, prompts)
        print(json.dumps({"b_ideal": out["b_ideal"]}), flush=True)
    out["b_ideal_pretokenized"] = ideal_pretokenized(llm, prompts)
    print(json.dumps({"b_ideal_pretokenized": out["b_ideal_pretokenized"]}), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Build the LLM once; run (b), then (c)."""
    from vllm import LLM

    from evalq.models.registry import engine_settings_for
    from evalq.models.timeline import TIMELINE_ENV
    from evalq.models.vllm import engine_kwargs

    args = parse_args(argv)
    # Resolved as the worker resolves it (evalq/tiny-random is a folder under EVALQ_HOME).
    settings = engine_settings_for(
        args.model,
        tokenizer=args.tokenizer,
        load_format=args.load_format,
        max_model_len=args.max_model_len,
    )
    t0 = time.perf_counter()
    # Stats on (for the timeline): the engine core then reports every step.
    kwargs = engine_kwargs(settings)
    if os.environ.get(TIMELINE_ENV):
        kwargs["disable_log_stats"] = False
    llm = LLM(**kwargs)
    with_timeline(llm)
    out: dict[str, Any] = {"replay_engine_start_s": round(time.perf_counter() - t0, 1)}
    out["replays"] = [replay_file(llm, f, args.text_replay) for f in args.prompts]
    if args.seed_questions > 0:
        out["c_seed_style"] = seed_style(llm, args.db_url, args.run_id, args.seed_questions)
        print(json.dumps({"c_seed_style": out["c_seed_style"]}), flush=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
