"""Evaluation strategies, one per module, chosen by a spec string such as ``fixed:k=3``.

A new kind is a factory registered by name (``register_strategy``, or an ``evalq.strategies``
entry point in another package); see docs/strategies.md.
"""

from evalq.rag.strategies.base import (
    EpisodeContext,
    GenerationConfig,
    Strategy,
    grade,
    new_result,
)
from evalq.rag.strategies.registry import (
    ENTRY_POINT_GROUP,
    StrategyFactory,
    parse_strategy,
    register_strategy,
    strategy_kinds,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "EpisodeContext",
    "GenerationConfig",
    "Strategy",
    "StrategyFactory",
    "grade",
    "new_result",
    "parse_strategy",
    "register_strategy",
    "strategy_kinds",
]
