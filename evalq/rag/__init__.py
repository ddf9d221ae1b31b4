"""evalq.rag package."""
