"""evalq: batch evaluation of RAG strategies on GPU fleets.

The public surface: ``Client`` (batch generation on the fleet), ``FleetLM`` (DSPy on the
fleet; needs the ``dspy`` extra), and what a strategy of your own needs (see
docs/strategies.md): ``Strategy``, ``register_strategy``, ``EpisodeContext``,
``RetrievalRequest``, ``answer_messages``, ``new_result``, ``grade``, ...
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Name -> the module it lives in. Each loads on first use, so ``import evalq`` stays light
# for the CLI (the strategies pull in numpy, FleetLM pulls in DSPy).
_PUBLIC = {
    "Client": "evalq.client",
    "FleetLM": "evalq.integrations.dspy",
    "UserError": "evalq.errors",
    "Question": "evalq.data.question",
    "Generation": "evalq.models.base",
    "GenerationRequest": "evalq.models.base",
    "EpisodeGenerator": "evalq.rag.episode",
    "EpisodeResult": "evalq.rag.episode",
    "RetrievalRequest": "evalq.rag.episode",
    "Retrieved": "evalq.rag.episode",
    "StepRecord": "evalq.rag.episode",
    "answer_messages": "evalq.rag.prompts",
    "EpisodeContext": "evalq.rag.strategies",
    "GenerationConfig": "evalq.rag.strategies",
    "Strategy": "evalq.rag.strategies",
    "StrategyFactory": "evalq.rag.strategies",
    "grade": "evalq.rag.strategies",
    "new_result": "evalq.rag.strategies",
    "parse_strategy": "evalq.rag.strategies",
    "register_strategy": "evalq.rag.strategies",
    "strategy_kinds": "evalq.rag.strategies",
}
__all__ = [
    "Client",
    "EpisodeContext",
    "EpisodeGenerator",
    "EpisodeResult",
    "FleetLM",
    "Generation",
    "GenerationConfig",
    "GenerationRequest",
    "Question",
    "RetrievalRequest",
    "Retrieved",
    "StepRecord",
    "Strategy",
    "StrategyFactory",
    "UserError",
    "__version__",
    "answer_messages",
    "grade",
    "new_result",
    "parse_strategy",
    "register_strategy",
    "strategy_kinds",
]

if TYPE_CHECKING:
    from evalq.client import Client
    from evalq.data.question import Question
    from evalq.errors import UserError
    from evalq.integrations.dspy import FleetLM
    from evalq.models.base import Generation, GenerationRequest
    from evalq.rag.episode import (
        EpisodeGenerator,
        EpisodeResult,
        RetrievalRequest,
        Retrieved,
        StepRecord,
    )
    from evalq.rag.prompts import answer_messages
    from evalq.rag.strategies import (
        EpisodeContext,
        GenerationConfig,
        Strategy,
        StrategyFactory,
        grade,
        new_result,
        parse_strategy,
        register_strategy,
        strategy_kinds,
    )


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'evalq' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
