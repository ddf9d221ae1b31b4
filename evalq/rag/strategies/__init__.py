"""Evaluation strategies, one per module, chosen by a spec string such as ``fixed:k=3``."""

from evalq.rag.strategies.base import EpisodeContext, GenerationConfig, Strategy, parse_strategy

__all__ = ["EpisodeContext", "GenerationConfig", "Strategy", "parse_strategy"]
