"""The one record every dataset loader yields."""

from __future__ import annotations

from dataclasses import dataclass, field

# The answer metrics a short-answer question may name, each its dataset's official evaluation.
# They are implemented in ``evalq.rag.scoring.METRICS``, whose keys a test holds equal to
# these: data validates the names, rag scores by them.
METRIC_NAMES: tuple[str, ...] = ("squad", "hotpotqa", "musique")
DEFAULT_METRIC = "squad"


@dataclass(frozen=True)
class Question:
    """One evaluation question, the same shape for every dataset.

    Attributes:
        id: Stable id, unique within the dataset (reruns and resumes key on it).
        text: The question as shown to the model.
        gold: The gold answer: an option number as a string ("1".."4") for multiple
            choice, the answer span for short-answer questions.
        options: Option texts without their "N. " prefix, or None for short answer.
        difficulty: "easy", "medium", "hard", or a dataset's own label (e.g. "bridge").
        corpus: Name of the corpus retrieval runs over, or None (closed-book only).
        gold_passages: Ids of the corpus passages known to support the answer.
        aliases: Other accepted answers (short answer only).
        metric: The answer metric that grades a short answer, one of
            ``METRIC_NAMES``: "squad" (the default), "hotpotqa" or "musique",
            each its dataset's official evaluation. Multiple choice ignores it (options are
            graded by ``parse_option``).
        invalid: Why the row cannot be evaluated, or None for a valid row. Invalid rows
            are stored as invalid episodes with this reason, never dropped.
    """

    id: str
    text: str
    gold: str
    options: tuple[str, ...] | None = None
    difficulty: str = "unknown"
    corpus: str | None = None
    gold_passages: tuple[str, ...] = field(default_factory=tuple)
    aliases: tuple[str, ...] = field(default_factory=tuple)
    metric: str = DEFAULT_METRIC
    invalid: str | None = None

    @property
    def is_multiple_choice(self) -> bool:
        """True when the question is answered by an option number."""
        return self.options is not None
