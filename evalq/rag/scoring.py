"""Answer and retrieval scoring: option parsing, SQuAD exact match and F1, gold-passage recall."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Collection, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)

# A number standing alone: not part of "5G", "WG3", "3GPP", "2.5" or "10,000".
_NUMBER = r"(?<![\w.,])(\d+)(?![\w]|[.,]\d)"
# "answer" followed within a short clause (no sentence end, no digit) by a number:
# "Answer: 3", "the correct answer is (3)", "answer is option 3".
_ANSWER_NUMBER = re.compile(r"answer\b[^\d\n.!?]{0,30}?" + _NUMBER, re.IGNORECASE)
_FINAL_ANSWER_NUMBER = re.compile(r"final\s+answer\b[^\d\n.!?]{0,30}?" + _NUMBER, re.IGNORECASE)
_OPTION_NUMBER = re.compile(
    r"\b(?:option|choice)\s*(?:number|no\.?|#)?\s*[(\[]?" + _NUMBER, re.IGNORECASE
)
_STANDALONE_NUMBER = re.compile(_NUMBER)
_ANSWER_LABEL = re.compile(r"^\s*(?:final\s+)?answer\s*:\s*", re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    lowered = text.lower()
    without_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    without_articles = _ARTICLES.sub(" ", without_punctuation)
    return " ".join(without_articles.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0.

    Raises:
        ValueError: If ``golds`` is empty.
    """
    if not golds:
        raise ValueError("exact_match needs at least one gold answer")
    normalized = normalize_answer(prediction)
    return max(float(normalized == normalize_answer(gold)) for gold in golds)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """The best SQuAD token F1 of the prediction against any gold answer.

    Raises:
        ValueError: If ``golds`` is empty.
    """
    if not golds:
        raise ValueError("token_f1 needs at least one gold answer")
    return max(_f1(prediction, gold) for gold in golds)


def _f1(prediction: str, gold: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    n_same = sum(common.values())
    if n_same == 0:
        return 0.0
    precision = n_same / len(prediction_tokens)
    recall = n_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def parse_option(generated_text: str, n_options: int) -> int | None:
    """The option number (1..n_options) chosen in the model's generated text.

    Pass only the generated text, never the prompt, which lists every option number.
    Preference: the last "final answer ... N", else the first "answer ... N" (as in
    "Answer: 3" or "the answer is (3)"), else the first "option N" / "choice N", else the
    first standalone number; numbers outside 1..n_options are skipped at every step.

    Args:
        generated_text: The text the model generated.
        n_options: How many options the question has.

    Returns:
        The option number, or None when no option number can be found (scored as wrong and
        counted as unparseable; never a default option).
    """
    for pattern, take_last in (
        (_FINAL_ANSWER_NUMBER, True),
        (_ANSWER_NUMBER, False),
        (_OPTION_NUMBER, False),
        (_STANDALONE_NUMBER, False),
    ):
        in_range = [
            int(match.group(1))
            for match in pattern.finditer(generated_text)
            if 1 <= int(match.group(1)) <= n_options
        ]
        if in_range:
            return in_range[-1] if take_last else in_range[0]
    return None


def extract_short_answer(generated_text: str) -> str:
    """The short answer in generated text: the text after an "Answer:" label, else the first line.

    A line starting with "Answer:" (or "Final answer:") wins; when the label stands alone on
    its line, the next non-empty line is the answer. Otherwise the first non-empty line is.
    """
    lines = [line.strip() for line in generated_text.splitlines()]
    non_empty = [line for line in lines if line]
    for position, line in enumerate(non_empty):
        label = _ANSWER_LABEL.match(line)
        if label is None:
            continue
        rest = line[label.end() :].strip()
        if rest:
            return rest
        if position + 1 < len(non_empty):
            return non_empty[position + 1]
        return ""
    return non_empty[0] if non_empty else ""


def retrieval_recall(retrieved_ids: Collection[str], gold_ids: Collection[str]) -> float | None:
    """The share of gold passages among those retrieved, or None when no gold is known."""
    gold = set(gold_ids)
    if not gold:
        return None
    return len(gold & set(retrieved_ids)) / len(gold)
