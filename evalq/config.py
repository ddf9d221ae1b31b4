"""Settings in one place: read once from flags and ``EVALQ_*`` variables, then passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"


def evalq_home() -> Path:
    """The folder for evalq's default database, indexes and tiny models."""
    return Path(os.environ.get("EVALQ_HOME", Path.home() / ".evalq"))


def default_database_url() -> str:
    """The embedded default: a SQLite file in ``EVALQ_HOME``."""
    return f"sqlite:///{evalq_home() / 'evalq.db'}"


@dataclass(frozen=True)
class EngineSettings:
    """How a worker builds its vLLM engine; every field maps onto a vLLM engine argument."""

    model: str
    tokenizer: str | None = None
    load_format: str = "auto"
    dtype: str = "auto"
    quantization: str | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.90
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    seed: int = 0
    # fcfs: requests in arrival order; priority: by GenerationRequest.priority.
    scheduling_policy: str = "fcfs"

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (stored with the run for reproducibility)."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Settings:
    """Process-wide settings: where the database and the broker are."""

    database_url: str = field(default_factory=default_database_url)
    broker_url: str = DEFAULT_BROKER_URL
    # Must exceed the longest shard, or Redis redelivers a shard that is still running.
    visibility_timeout_s: int = 6 * 3600

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings from ``EVALQ_*`` variables, then explicit non-None overrides."""
        base = cls(
            database_url=os.environ.get("EVALQ_DATABASE_URL") or default_database_url(),
            broker_url=os.environ.get("EVALQ_BROKER_URL") or DEFAULT_BROKER_URL,
            visibility_timeout_s=int(os.environ.get("EVALQ_VISIBILITY_TIMEOUT", 6 * 3600)),
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})
