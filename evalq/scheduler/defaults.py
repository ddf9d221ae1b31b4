"""A run's defaults, in one place.

``evalq submit``, ``evalq suite run``, ``RunRequest`` and the benchmarks all read them here,
so that a run that names nothing is the same run whichever way it was asked for. (A suite
once defaulted to the ``base`` MDP preset while ``submit`` used ``multi_gpu``: every "MDP vs
fixed" suite then ran an MDP whose solved policy never retrieves.)
"""

from __future__ import annotations

from dataclasses import dataclass

from evalq.rag.strategies import GenerationConfig
from evalq.rag.strategies.mdp import JUDGE_THRESHOLD

_GENERATION = GenerationConfig()


@dataclass(frozen=True)
class RunDefaults:
    """What a run gets for every setting it does not name."""

    dataset: str = "hotpotqa"
    strategies: tuple[str, ...] = ("fixed:k=0", "fixed:k=3")
    seed: int = 0
    repeats: int = 1
    shard_size: int = 50
    # Sampling: the answer's length cap and temperature of GenerationConfig, by their run names.
    max_tokens: int = _GENERATION.answer_tokens
    temperature: float = _GENERATION.temperature
    # The seed's multi-GPU preset: base's solved policy never retrieves (theta_cont = 0).
    mdp_preset: str = "multi_gpu"
    k_step: int = 3
    max_steps: int = 10
    # An MDP retrieve succeeds when the model's judged P(yes) reaches this (--mdp-set).
    judge_threshold: float = JUDGE_THRESHOLD
    retriever: str = "bm25"


RUN_DEFAULTS = RunDefaults()
