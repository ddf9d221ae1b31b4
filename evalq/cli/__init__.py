"""evalq.cli package."""
