"""From a model name on the command line to the engine settings a worker builds."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from evalq.config import EngineSettings, evalq_home
from evalq.errors import UserError
from evalq.models.base import Engine
from evalq.models.store import DEFAULT_MODEL, DEFAULT_MODEL_SOURCE, models_dir, stored_model_dir

log = logging.getLogger(__name__)

TINY_MODEL = "evalq/tiny-random"
RANDOM_WARNING = (
    f"MODEL {TINY_MODEL} HAS RANDOM WEIGHTS: its answers are noise. It measures speed and "
    f"behaviour only; accuracy needs a real model (--model {DEFAULT_MODEL}, a stored name, "
    "a folder or an HF id)."
)


def _tokenizer_texts() -> Iterator[str]:
    """Text the tiny model's tokenizer learns from: the shipped datasets."""
    from evalq.data.registry import load_corpus, load_questions

    for p in load_corpus("hotpotqa").passages:
        yield p.title + " " + p.text
    for q in load_questions("oran-bench", "mixed"):
        yield " ".join([q.text, *(q.options or ())])


def tiny_model_dir() -> Path:
    """The tiny random-weight model, built on first use in ``EVALQ_HOME``."""
    from evalq.models.tiny import build_tiny_model

    return build_tiny_model(evalq_home() / "models" / "tiny-random", _tokenizer_texts())


def resolve_model(model: str) -> str:
    """What vLLM loads for ``model``: a stored model's folder, else ``model`` as given.

    A stored name (``evalq models add``) becomes its folder under ``EVALQ_HOME/models``;
    folders and Hugging Face ids (``org/name``) pass through. The queue keeps the name as
    typed, so submit and worker agree on it.

    Raises:
        UserError: a bare name (no slash) that is neither stored nor a folder.
    """
    if model == TINY_MODEL:
        return model
    folder = stored_model_dir(model)
    if folder is not None:
        return str(folder)
    if "/" not in model and not Path(model).expanduser().exists():
        hint = (
            f" (prepare it: evalq models add {DEFAULT_MODEL} {DEFAULT_MODEL_SOURCE})"
            if model == DEFAULT_MODEL
            else ""
        )
        raise UserError(
            f"unknown model {model!r}: not stored in {models_dir()} (evalq models list){hint}, "
            "not a folder, and not a Hugging Face id (org/name)"
        )
    return model


def engine_settings_for(model: str, **overrides: object) -> EngineSettings:
    """Engine settings for ``model``; the tiny model gets dummy weights and small limits.

    Raises:
        UserError: ``model`` is a bare name that is not stored (see ``resolve_model``).
    """
    base = EngineSettings(model=resolve_model(model))
    if stored_model_dir(model) is not None:
        # A CPU build of vLLM reads the memory share as host RAM (90% by default, shared with
        # every other process); 2 GiB of KV cache holds ~90k tokens of SmolLM2-135M. GPU
        # builds ignore this variable.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if model == TINY_MODEL:
        log.warning(RANDOM_WARNING)
        # On a CPU build of vLLM the memory share means host RAM, and the KV cache would
        # otherwise take most of it; the tiny model needs a sliver of either.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        base = EngineSettings(
            model=str(tiny_model_dir()),
            load_format="dummy",
            max_model_len=4096,
            enforce_eager=True,
            gpu_memory_utilization=0.2,
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **given)  # type: ignore[arg-type]


def load_engine(settings: EngineSettings, factory: str | None = None) -> Engine:
    """Build the worker's engine: vLLM, or ``module:callable`` taking the settings.

    The factory seam lets a worker process serve a deterministic engine (tests) or a
    recording one (benchmarks) while everything else stays the real path.

    Raises:
        UserError: the factory path does not name an importable callable.
    """
    if factory is None:
        from evalq.models.vllm import VLLMEngine

        return VLLMEngine(settings)
    module_name, _, attr = factory.partition(":")
    try:
        build = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(f"--engine {factory!r}: expected module:callable ({exc})") from exc
    engine: Engine = build(settings)
    return engine
