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

log = logging.getLogger(__name__)

TINY_MODEL = "evalq/tiny-random"
RANDOM_WARNING = (
    f"MODEL {TINY_MODEL} HAS RANDOM WEIGHTS: its answers are noise. It measures speed and "
    "behaviour only; accuracy needs a real model (--model /path/or/hf-name)."
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


def engine_settings_for(model: str, **overrides: object) -> EngineSettings:
    """Engine settings for ``model``; the tiny model gets dummy weights and small limits."""
    base = EngineSettings(model=model)
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
