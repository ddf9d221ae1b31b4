"""Every loader names the answer metric of its dataset on its questions."""

import json
from pathlib import Path

from evalq.data import hotpotqa, jsonl, musique, oran, squad
from evalq.data.question import DEFAULT_METRIC, METRIC_NAMES, Question
from evalq.rag.scoring import METRICS


def test_question_defaults_to_the_squad_metric() -> None:
    assert Question(id="q", text="t", gold="g").metric == DEFAULT_METRIC == "squad"


def test_the_metric_names_data_accepts_are_the_metrics_rag_scores() -> None:
    assert set(METRIC_NAMES) == set(METRICS)
    assert len(METRIC_NAMES) == len(set(METRIC_NAMES))
    assert DEFAULT_METRIC in METRIC_NAMES


def test_shipped_datasets_carry_their_official_metric() -> None:
    assert {q.metric for q in hotpotqa.load("all")} == {"hotpotqa"}
    assert {q.metric for q in musique.load("all")} == {"musique"}
    assert {q.metric for q in squad.load("all")[:200]} == {"squad"}
    # Multiple choice is graded by option; its metric is the unused default.
    assert all(q.options is not None for q in oran.load("easy") if q.invalid is None)


def test_jsonl_metric_is_optional_and_validated(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "question": "q", "answer": "x"},
        {"id": "b", "question": "q", "answer": "yes", "metric": "hotpotqa"},
        {"id": "c", "question": "q", "answer": "x", "metric": "musique", "aliases": ["y"]},
        {"id": "d", "question": "q", "answer": "x", "metric": "nq"},
        {"id": "e", "question": "q", "answer": "x", "metric": ["squad"]},
        {"id": "f", "question": "q", "answer": "x", "metric": None},
    ]
    file = tmp_path / "q.jsonl"
    file.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    by_id = {q.id: q for q in jsonl.load(file)}
    assert by_id["a"].metric == "squad" and by_id["a"].invalid is None
    assert by_id["b"].metric == "hotpotqa" and by_id["b"].invalid is None
    assert by_id["c"].metric == "musique" and by_id["c"].aliases == ("y",)
    for bad in ("d", "e", "f"):
        reason = by_id[bad].invalid
        assert reason is not None and reason.startswith("'metric'"), reason
        assert all(name in reason for name in METRICS)
