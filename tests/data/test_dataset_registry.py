import json
from pathlib import Path

import pytest

from evalq.data import registry
from evalq.errors import UserError


def test_every_dataset_loads_at_every_difficulty() -> None:
    for name, info in registry.DATASETS.items():
        everything = registry.load_questions(name, info.every_question)
        assert everything, name
        total = sum(len(registry.load_questions(name, d)) for d in info.difficulties[1:])
        assert total in (0, len(everything)), name


def test_counts_per_difficulty_label() -> None:
    assert registry.dataset_counts("oran-bench") == {"easy": 1139, "medium": 9570, "hard": 3243}
    assert registry.dataset_counts("hotpotqa") == {"bridge": 250, "comparison": 250}
    assert registry.dataset_counts("squad") == {"all": 10570}


def test_loaded_lists_are_fresh_copies() -> None:
    first = registry.load_questions("hotpotqa", "all")
    first.clear()
    assert len(registry.load_questions("hotpotqa", "all")) == 500


def test_corpora_by_name() -> None:
    for name in ("hotpotqa", "squad", "musique"):
        assert registry.load_corpus(name).name == name
        assert registry.DATASETS[name].has_corpus
    assert not registry.DATASETS["oran-bench"].has_corpus


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(UserError, match="oran-bench, hotpotqa, squad, musique, jsonl:<path>"):
        registry.load_questions("trivia", "all")
    with pytest.raises(UserError, match="mixed, easy, medium, hard"):
        registry.load_questions("oran-bench", "all")
    with pytest.raises(UserError, match="hotpotqa, squad, musique"):
        registry.load_corpus("oran-bench")


def test_jsonl_dataset_by_path(tmp_path: Path) -> None:
    file = tmp_path / "mine.jsonl"
    rows = [
        {"id": "1", "question": "q1", "answer": "a", "difficulty": "hard"},
        {"id": "2", "question": "q2", "answer": "b"},
    ]
    file.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    name = f"jsonl:{file}"
    assert [q.id for q in registry.load_questions(name, "all", corpus="docs")] == ["1", "2"]
    assert registry.load_questions(name, "all", corpus="docs")[0].corpus == "docs"
    assert [q.id for q in registry.load_questions(name, "hard")] == ["1"]
    assert registry.dataset_counts(name) == {"hard": 1, "all": 1}
    with pytest.raises(UserError, match=r"choose from all, hard$"):
        registry.load_questions(name, "easy")
