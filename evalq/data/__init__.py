"""evalq.data package."""
