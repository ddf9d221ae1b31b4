"""evalq.worker package."""
