"""evalq.db package."""
