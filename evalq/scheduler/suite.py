"""Suites: a YAML list of runs, submitted together and summarised in one table.

A suite file::

    name: seed-quick
    defaults:                 # applied to every run (optional)
      dataset: oran-bench
      model: Qwen/Qwen2.5-7B-Instruct
    runs:
      - name: quick-easy
        difficulty: easy
        n: 10
        strategies: [mdp, fixed:k=3]
        gpus: {mode: single, ids: [0]}

A run takes the keys of ``evalq submit`` (``dataset``, ``difficulty``, ``n``, ``seed``,
``model``, ``strategies``, ``repeats``, ``shard_size``, ``max_tokens``, ``temperature``,
``mdp_preset``, ``mdp``, ``k_step``, ``max_steps``, ``corpus``, ``retriever``) and ``gpus``;
the seed's spellings ``n_questions``, ``fixed_k``, ``gpu_mode`` and ``gpu_ids`` are
accepted too. Overrides (``--set KEY=VALUE``, ``--model``) apply to every run, last. A key
left unset takes the run default of ``evalq submit`` (``evalq.scheduler.defaults``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from evalq.config import Settings
from evalq.data.registry import DATASETS
from evalq.db import queries
from evalq.db.session import open_store
from evalq.errors import UserError
from evalq.fleet.gpus import GPU_MODES, gpu_request
from evalq.rag.strategies import GenerationConfig
from evalq.scheduler.defaults import RUN_DEFAULTS
from evalq.scheduler.submit import RunRequest, submit

RUN_KEYS = (
    "name",
    "dataset",
    "difficulty",
    "n",
    "seed",
    "model",
    "strategies",
    "repeats",
    "shard_size",
    "max_tokens",
    "temperature",
    "mdp_preset",
    "mdp",
    "k_step",
    "max_steps",
    "corpus",
    "retriever",
    "gpus",
)
SEED_KEYS = ("n_questions", "fixed_k", "gpu_mode", "gpu_ids")
SETTLED = ("done", "done_with_failures", "cancelled")


@dataclass(frozen=True)
class GpuRequest:
    """The GPUs a run asks for: recorded, and served by ``evalq fleet``."""

    mode: str = "auto"
    ids: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class SuiteRun:
    """One run of a suite: what to submit and the GPUs it asks for."""

    name: str
    request: RunRequest
    gpus: GpuRequest | None = None


@dataclass(frozen=True)
class Suite:
    """A named list of runs."""

    name: str
    runs: list[SuiteRun]
    description: str = ""


@dataclass(frozen=True)
class SummaryRow:
    """One strategy of one run in the suite's summary."""

    run_id: int
    run: str
    dataset: str
    model: str
    n: int
    status: str
    strategy: str
    episodes: int
    accuracy: float | None
    mean_cost: float | None
    failed: int = 0


def _as_int(where: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: {key} must be an integer, got {value!r}")
    return value


def _normalise(where: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Seed spellings mapped onto evalq's keys; unknown keys refused."""
    spec = dict(raw)
    unknown = sorted(set(spec) - set(RUN_KEYS) - set(SEED_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(RUN_KEYS)}")
    if "n_questions" in spec:
        spec["n"] = spec.pop("n_questions")
        spec.setdefault("dataset", "oran-bench")
    if "fixed_k" in spec:
        k = _as_int(where, "fixed_k", spec.pop("fixed_k"))
        spec.setdefault("strategies", ["mdp", f"fixed:k={k}"])
    if "gpu_mode" in spec or "gpu_ids" in spec:
        gpus = dict(spec.get("gpus") or {})
        gpus.setdefault("mode", spec.pop("gpu_mode", "auto"))
        gpus.setdefault("ids", spec.pop("gpu_ids", [0]))
        spec["gpus"] = gpus
    return spec


def _gpus(where: str, raw: Any) -> GpuRequest:
    if not isinstance(raw, Mapping) or set(raw) - {"mode", "ids"}:
        raise UserError(f"{where}: gpus must be {{mode: ..., ids: [0, 1, ...]}}")
    mode = str(raw.get("mode", "auto"))
    if mode not in GPU_MODES:
        raise UserError(f"{where}: gpus mode {mode!r}: choose {', '.join(GPU_MODES)}")
    ids = raw.get("ids", [0])
    ids = [ids] if isinstance(ids, int) else ids
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        raise UserError(f"{where}: gpus ids must be a list of GPU numbers")
    if mode == "single" and len(ids) != 1:
        raise UserError(f"{where}: gpus mode single takes one GPU, got {len(ids)}")
    return GpuRequest(mode, tuple(ids))


def _request(where: str, spec: Mapping[str, Any], index: int) -> SuiteRun:
    if "model" not in spec:
        raise UserError(f"{where}: no model (set it in the run, in defaults, or with --model)")
    if "n" not in spec:
        raise UserError(f"{where}: no n (the number of questions)")
    strategies = spec.get("strategies", list(RUN_DEFAULTS.strategies))
    strategies = [strategies] if isinstance(strategies, str) else strategies
    if not isinstance(strategies, list) or not all(isinstance(s, str) for s in strategies):
        raise UserError(f"{where}: strategies must be a list like [mdp, fixed:k=3]")
    mdp = spec.get("mdp") or {}
    if not isinstance(mdp, Mapping):
        raise UserError(f"{where}: mdp must map parameter names to values")
    dataset = str(spec.get("dataset", RUN_DEFAULTS.dataset))
    info = DATASETS.get(dataset)
    seed = _as_int(where, "seed", spec.get("seed", RUN_DEFAULTS.seed))
    name = str(spec.get("name") or f"run{index + 1}")
    request = RunRequest(
        dataset=dataset,
        model=str(spec["model"]),
        strategies=tuple(strategies),
        n=_as_int(where, "n", spec["n"]),
        difficulty=str(spec.get("difficulty") or (info.every_question if info else "all")),
        seed=seed,
        repeats=_as_int(where, "repeats", spec.get("repeats", RUN_DEFAULTS.repeats)),
        shard_size=_as_int(where, "shard_size", spec.get("shard_size", RUN_DEFAULTS.shard_size)),
        name=name,
        generation=GenerationConfig(
            answer_tokens=_as_int(
                where, "max_tokens", spec.get("max_tokens", RUN_DEFAULTS.max_tokens)
            ),
            temperature=float(spec.get("temperature", RUN_DEFAULTS.temperature)),
            seed=seed,
        ),
        mdp_preset=str(spec.get("mdp_preset", RUN_DEFAULTS.mdp_preset)),
        mdp_overrides=dict(mdp),
        k_step=_as_int(where, "k_step", spec.get("k_step", RUN_DEFAULTS.k_step)),
        max_steps=_as_int(where, "max_steps", spec.get("max_steps", RUN_DEFAULTS.max_steps)),
        corpus=None if spec.get("corpus") is None else str(spec["corpus"]),
        retriever=str(spec.get("retriever", RUN_DEFAULTS.retriever)),
    )
    gpus = None if spec.get("gpus") is None else _gpus(where, spec["gpus"])
    return SuiteRun(name, request, gpus)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value read as YAML (``n=5``, ``strategies=[mdp]``).

    Raises:
        UserError: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item!r}: the value is not YAML ({exc})") from exc
    return out


def load_suite(path: Path, overrides: Mapping[str, Any] | None = None) -> Suite:
    """Read and check a suite file; every run is built before anything is submitted.

    Raises:
        UserError: the file is missing, not YAML, or a run is malformed.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read suite {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"suite {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise UserError(f"suite {path}: expected a mapping with a non-empty 'runs' list")
    extra = sorted(set(data) - {"name", "description", "defaults", "runs"})
    if extra:
        raise UserError(f"suite {path}: unknown key {extra[0]!r}")
    defaults = _normalise(f"{path}: defaults", data.get("defaults") or {})
    forced = _normalise(f"{path}: --set", overrides or {})
    runs = []
    for i, raw in enumerate(data["runs"]):
        where = f"{path}: run {i + 1}"
        if not isinstance(raw, Mapping):
            raise UserError(f"{where}: expected a mapping of run settings")
        spec = {**defaults, **_normalise(where, raw), **forced}
        runs.append(_request(where, spec, i))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f"suite {path}: two runs share a name")
    return Suite(str(data.get("name") or path.stem), runs, str(data.get("description") or ""))


def submit_suite(settings: Settings, suite: Suite) -> list[int]:
    """Submit every run of the suite, in order; returns their ids."""
    ids = []
    for run in suite.runs:
        request = run.request
        if run.gpus is not None:
            gpu_ids = ",".join(str(i) for i in run.gpus.ids)
            gpus = gpu_request(request.model, run.gpus.mode, gpu_ids)
            request = replace(request, requested_gpus=gpus)
        ids.append(submit(settings, request))
    return ids


def fleet_commands(suite: Suite) -> list[list[str]]:
    """One ``evalq fleet`` command per model, on the GPUs its runs ask for (GPU 0 if none)."""
    by_model: dict[str, GpuRequest] = {}
    for run in suite.runs:
        if run.gpus is not None and run.request.model not in by_model:
            by_model[run.request.model] = run.gpus
        by_model.setdefault(run.request.model, GpuRequest("single", (0,)))
    commands = []
    for model, gpus in by_model.items():
        ids = ",".join(str(i) for i in gpus.ids)
        commands.append(["fleet", "--model", model, "--gpus", ids, "--mode", GPU_MODES[gpus.mode]])
    return commands


def wait_for_runs(
    settings: Settings,
    run_ids: Sequence[int],
    *,
    timeout: float | None = None,
    poll_s: float = 1.0,
    on_progress: Callable[[dict[int, tuple[int, int]]], None] | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Until every run is settled (done, done with failures, or cancelled).

    ``on_progress`` gets run id -> (episodes done, episodes expected) at each poll.

    Raises:
        TimeoutError: ``timeout`` passed first.
        UserError: ``alive`` says the workers this command started are all gone.
    """
    store = open_store(settings.database_url)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        progress: dict[int, tuple[int, int]] = {}
        settled = True
        with store.session() as s:
            for run_id in run_ids:
                run = queries.get_run(s, run_id)
                rows = queries.run_progress(s, run)
                progress[run_id] = (sum(p.done for p in rows), sum(p.total for p in rows))
                settled = settled and run.status in SETTLED
        if on_progress is not None:
            on_progress(progress)
        if settled:
            return
        if alive is not None and not alive():
            raise UserError("the workers this suite started have exited; see their output above")
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"runs {list(run_ids)} not settled after {timeout} s")
        time.sleep(poll_s)


def summarise(settings: Settings, suite: Suite, run_ids: Sequence[int]) -> list[SummaryRow]:
    """Per run and strategy: episodes, accuracy and mean cost, from the database."""
    rows = []
    with open_store(settings.database_url).session() as s:
        for run, run_id in zip(suite.runs, run_ids, strict=True):
            stored = queries.get_run(s, run_id)
            for r in queries.run_results(s, stored):
                rows.append(
                    SummaryRow(
                        run_id=run_id,
                        run=run.name,
                        dataset=f"{stored.dataset}/{stored.difficulty}",
                        model=stored.model,
                        n=stored.n,
                        status=stored.status,
                        strategy=r.strategy,
                        episodes=r.episodes,
                        accuracy=r.accuracy,
                        mean_cost=r.mean_cost,
                        failed=r.invalid + r.errors,
                    )
                )
    return rows
