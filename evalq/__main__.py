"""``python -m evalq``: the same CLI (and the guard vLLM's spawned processes need)."""

from evalq.cli.main import main

if __name__ == "__main__":
    main()
