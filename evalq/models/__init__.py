"""evalq.models package."""
