"""evalq: batch evaluation of RAG strategies on GPU fleets."""

__version__ = "0.1.0"
