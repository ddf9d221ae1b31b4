"""evalq.scheduler package."""
