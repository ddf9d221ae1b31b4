"""evalq: batch evaluation of RAG strategies on GPU fleets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]

if TYPE_CHECKING:
    from evalq.client import Client


def __getattr__(name: str) -> Any:
    """``evalq.Client`` on first use, so ``import evalq`` stays light for the CLI."""
    if name == "Client":
        from evalq.client import Client

        return Client
    raise AttributeError(f"module 'evalq' has no attribute {name!r}")
