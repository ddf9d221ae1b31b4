"""Answer and retrieval scoring: official answer metrics, reading replies, passage recall.

Three parts: each dataset's official answer metric; reading the answer out of a model's reply
(a short answer, or an option number); and gold-passage recall.

Answer metrics live in one registry, :data:`METRICS`, keyed by the name a question carries
(``Question.metric``): ``"squad"``, ``"hotpotqa"`` and ``"musique"``. Each computes exactly
what its dataset's official evaluation script computes; ``score_answer`` is the one call
grading needs. Multiple-choice questions are graded by ``parse_option`` instead.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------
# Official answer metrics
# --------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
# HotpotQA's special answers: F1 is 0 unless prediction and gold agree exactly on them.
_HOTPOT_SPECIAL = frozenset({"yes", "no", "noanswer"})


def normalize_answer(text: str) -> str:
    """The normalisation shared by all three official scripts.

    Lower case, drop ASCII punctuation (``string.punctuation``), replace the words "a",
    "an" and "the" by a space, collapse whitespace; in that order, as SQuAD v1.1's
    ``evaluate-v1.1.py``, HotpotQA's ``hotpot_evaluate_v1.py`` and MuSiQue's
    ``metrics/answer.py`` each do.
    """
    lowered = text.lower()
    without_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    without_articles = _ARTICLES.sub(" ", without_punctuation)
    return " ".join(without_articles.split())


def _overlap_f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    """Token-overlap F1 (bag of tokens); 0 when no token is shared."""
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    n_same = sum(common.values())
    if n_same == 0:
        return 0.0
    # The same arithmetic, in the same order, as the official scripts (same float result).
    precision = 1.0 * n_same / len(prediction_tokens)
    recall = 1.0 * n_same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def _same_normalized(prediction: str, gold: str) -> float:
    """Exact match as all three scripts define it: equal after ``normalize_answer``."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _squad_f1(prediction: str, gold: str) -> float:
    """SQuAD v1.1 ``f1_score``: token overlap; 0 when either side has no tokens."""
    return _overlap_f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def _hotpot_f1(prediction: str, gold: str) -> float:
    """HotpotQA ``f1_score``: SQuAD's, but 0 when either side is yes/no/noanswer and they differ."""
    normalized_prediction = normalize_answer(prediction)
    normalized_gold = normalize_answer(gold)
    if normalized_prediction != normalized_gold and (
        normalized_prediction in _HOTPOT_SPECIAL or normalized_gold in _HOTPOT_SPECIAL
    ):
        return 0.0
    return _overlap_f1(normalized_prediction.split(), normalized_gold.split())


def _musique_f1(prediction: str, gold: str) -> float:
    """MuSiQue ``compute_f1`` (SQuAD 2.0 style): SQuAD's token overlap, with one rule more.

    When either side has no tokens, 1 if both have none, else 0.
    """
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    return _overlap_f1(prediction_tokens, gold_tokens)


def _best_over_golds(
    score: Callable[[str, str], float], prediction: str, golds: Sequence[str], what: str
) -> float:
    """``metric_max_over_ground_truths`` of the official scripts: the best score over golds.

    A lone string is one gold answer, not a sequence of one-letter golds.
    """
    if isinstance(golds, str):
        golds = [golds]
    if not golds:
        raise ValueError(f"{what} needs at least one gold answer")
    return max(score(prediction, gold) for gold in golds)


@dataclass(frozen=True)
class AnswerMetric:
    """One dataset's official answer metric: exact match and token F1, best over the golds.

    Attributes:
        name: The key in :data:`METRICS` (what ``Question.metric`` holds).
        source: The official script it reproduces.
        exact_match_one: Exact match against one gold answer (0.0 or 1.0).
        f1_one: Token F1 against one gold answer.
    """

    name: str
    source: str
    exact_match_one: Callable[[str, str], float]
    f1_one: Callable[[str, str], float]

    def exact_match(self, prediction: str, golds: Sequence[str]) -> float:
        """1.0 if the prediction matches any gold answer, else 0.0.

        Raises:
            ValueError: If ``golds`` is empty.
        """
        return _best_over_golds(self.exact_match_one, prediction, golds, "exact_match")

    def f1(self, prediction: str, golds: Sequence[str]) -> float:
        """The best token F1 of the prediction against any gold answer.

        Raises:
            ValueError: If ``golds`` is empty.
        """
        return _best_over_golds(self.f1_one, prediction, golds, "f1")

    def score(self, prediction: str, golds: Sequence[str]) -> tuple[float, float]:
        """``(exact_match, f1)`` of the prediction against the gold answers.

        Raises:
            ValueError: If ``golds`` is empty.
        """
        return self.exact_match(prediction, golds), self.f1(prediction, golds)


METRICS: dict[str, AnswerMetric] = {
    metric.name: metric
    for metric in (
        AnswerMetric(
            name="squad",
            source="SQuAD v1.1 evaluate-v1.1.py (exact_match_score, f1_score)",
            exact_match_one=_same_normalized,
            f1_one=_squad_f1,
        ),
        AnswerMetric(
            name="hotpotqa",
            source="HotpotQA hotpot_evaluate_v1.py (exact_match_score, f1_score)",
            exact_match_one=_same_normalized,
            f1_one=_hotpot_f1,
        ),
        AnswerMetric(
            name="musique",
            source="MuSiQue metrics/answer.py (compute_exact, compute_f1)",
            exact_match_one=_same_normalized,
            f1_one=_musique_f1,
        ),
    )
}
"""The answer metrics by name (the names questions may carry are
``evalq.data.question.METRIC_NAMES``; a test holds the two equal). HotpotQA's script scores one
gold answer; with aliases, the best over them is taken, as the other two scripts do."""


def answer_metric(name: str) -> AnswerMetric:
    """The metric registered under ``name``.

    Raises:
        ValueError: If no metric has that name.
    """
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(
            f"unknown answer metric {name!r}; choose from " + ", ".join(METRICS)
        ) from None


def score_answer(metric: str, prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """``(exact_match, f1)`` of a short answer by the named dataset's official metric.

    Args:
        metric: A key of :data:`METRICS` ("squad", "hotpotqa", "musique").
        prediction: The extracted answer (see ``extract_short_answer``).
        golds: The gold answer and its aliases; the best score over them counts.

    Raises:
        ValueError: If the metric is unknown or ``golds`` is empty.
    """
    return answer_metric(metric).score(prediction, golds)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD v1.1 exact match, best over the golds (``METRICS["squad"].exact_match``).

    Raises:
        ValueError: If ``golds`` is empty.
    """
    return METRICS["squad"].exact_match(prediction, golds)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD v1.1 token F1, best over the golds (``METRICS["squad"].f1``).

    Raises:
        ValueError: If ``golds`` is empty.
    """
    return METRICS["squad"].f1(prediction, golds)


# --------------------------------------------------------------------------------------------
# Reading a reply: what both extractors share
# --------------------------------------------------------------------------------------------

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
# Markdown emphasis and code marks; an underscore only at a word's edge ("snake_case" stays).
_MARKDOWN = re.compile(r"[*`]+|(?<!\w)_+|_+(?!\w)")
# A heading, quote or bullet mark opening a line.
_LINE_MARK = re.compile(r"^(?:#{1,6}\s*|>\s*|[-\u2022]\s+)+")
# A line where the model starts a new turn: it goes on to write the next question, passages,
# notes, or the other side of the chat.
_NEW_TURN = re.compile(
    r"^(?:(?:question|q|passages?|context|documents?|evidence|notes?|user|human|system"
    r"|instructions?)\s*\d*\s*(?::|\uff1a|$)|notes\b)",
    re.IGNORECASE,
)


def _reply_lines(generated_text: str) -> list[str] | None:
    """The reply's non-empty lines, cleaned, up to where the model starts a new turn.

    None when the reply is still inside an unclosed ``<think>`` block (no answer yet).
    """
    text = _THINK_BLOCK.sub("\n", generated_text)
    if _THINK_OPEN.search(text):
        return None
    # A lone closing tag: the template opened the reasoning, everything before it is reasoning.
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    lines: list[str] = []
    for raw in text.splitlines():
        line = _LINE_MARK.sub("", _MARKDOWN.sub("", raw).strip()).strip()
        if not line:
            continue
        if _NEW_TURN.match(line):
            if lines:
                break
            continue  # an echo of the prompt before any content: skip it
        lines.append(line)
    return lines


# --------------------------------------------------------------------------------------------
# Short answers
# --------------------------------------------------------------------------------------------

_ANSWER_WORD = r"(?:the\s+)?(?:(?:final|short|correct|best|right)\s+)?answer"
# An answer label anywhere in a line: "Answer:", "Final answer -", "the answer is",
# "the answer to the question is:"; or "A:" opening the line.
_LABEL = re.compile(
    r"(?:^|(?<=[\s,;:(]))(?i:" + _ANSWER_WORD + r"(?:\s+to\s+(?:the|this|your)\s+question)?"
    r"(?:\s*(?::|\uff1a)|\s+[-\u2013\u2014]|\s*[\u2013\u2014]|\s+(?:is|would\s+be|was)\b\s*:?))"
    r"\s*|^A\s*:\s*"
)
# A label that is the whole line ("Answer", e.g. from a "### Answer" heading).
_BARE_LABEL = re.compile(r"^" + _ANSWER_WORD + r"$", re.IGNORECASE)
_FINAL_LABEL = re.compile(r"\bfinal\s+answer\b", re.IGNORECASE)
_PREAMBLE = re.compile(
    r"^(?:sure|okay|ok|certainly|of course|alright|great|let me|let's|let us|here is|here's"
    r"|here are|i will|i'll)\b",
    re.IGNORECASE,
)
_QUOTE_PAIRS = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}


def _clean_answer(answer: str) -> str:
    """Strip surrounding whitespace, quotes and trailing periods, until none is left."""
    previous = None
    while answer != previous:
        previous = answer
        answer = answer.strip().removesuffix(".")
        if len(answer) >= 2 and _QUOTE_PAIRS.get(answer[0]) == answer[-1]:
            answer = answer[1:-1]
    return answer


def _labelled_answer(lines: list[str], index: int) -> str | None:
    """The answer a label on ``lines[index]`` gives, or None when the line has no label.

    The text after the label; when the label ends its line, the next line.
    """
    line = lines[index]
    if _BARE_LABEL.match(line):
        rest = ""
    else:
        label = _LABEL.search(line)
        if label is None:
            return None
        rest = line[label.end() :]
        # "Answer: The answer is X": a label repeated after the first.
        while (again := _LABEL.match(rest)) is not None:
            rest = rest[again.end() :]
    rest = _clean_answer(rest)
    if rest:
        return rest
    return _clean_answer(lines[index + 1]) if index + 1 < len(lines) else ""


def extract_short_answer(generated_text: str) -> str:
    """The short answer in a model's reply ("" when none can be read: counted unparsed).

    The rules, in order:

    1. ``<think>...</think>`` blocks are dropped; a ``<think>`` left unclosed means no answer
       yet (""); text before a lone ``</think>`` is reasoning and dropped too.
    2. Markdown emphasis and code marks (``**``, ``*``, ``__``, backticks) and heading,
       quote and bullet marks opening a line are removed; empty lines are ignored.
    3. The reply ends where the model starts a new turn: a line opening with "Question:",
       "Q:", "Passages:", "Context:", "Notes", "User:", "Human:", "System:", ...
       (such lines before any content are an echo of the prompt and are skipped).
    4. A line with an answer label gives the text after the label: "Answer:",
       "Final answer:", "Short answer:", "A:", "Answer -", "Answer \u2013", "The answer is X",
       "The answer is: X", also inside a sentence ("Based on the passages, the answer is
       X."); a label ending its line gives the next line.
    5. A preamble line with no label ("Sure! Here is the answer:", "Based on the passages:",
       any line ending in ":", or opening with "Sure", "Okay", "Let me", "Here is" ...) is
       skipped when another line follows.
    6. Otherwise the first line is the answer, a bare answer; a later "Answer: ..." line
       is the model inventing a next question and answer, and is ignored. Only a later
       "Final answer: ..." (the model concluding its reasoning) takes precedence.
    7. Surrounding quotes and trailing periods are stripped from the answer.
    """
    lines = _reply_lines(generated_text)
    if not lines:
        return ""
    index = 0
    while index < len(lines):
        labelled = _labelled_answer(lines, index)
        if labelled is not None:
            return labelled
        line = lines[index]
        if index + 1 == len(lines):
            # A lead-in with nothing after it ("Based on the passages:") answers nothing.
            return "" if line.endswith(":") else _clean_answer(line)
        if not (line.endswith(":") or _PREAMBLE.match(line)):
            break
        index += 1
    for later in range(index + 1, len(lines)):
        if _FINAL_LABEL.search(lines[later]):
            final = _labelled_answer(lines, later)
            if final is not None:
                return final
    return _clean_answer(lines[index])


# --------------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------------

_CARDINALS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_ORDINALS = (
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
)
_WORD_VALUE = {
    **{word: n for n, word in enumerate(_CARDINALS, 1)},
    **{word: n for n, word in enumerate(_ORDINALS, 1)},
}
# A number standing alone: not part of "5G", "WG3", "3GPP", "2.5" or "10,000".
_NUMBER = r"(?<![\w.,])(?P<number>\d+)(?![\w]|[.,]\d)"
# An uppercase letter standing alone: not in "O-RAN", "I'm", "U.S.", "and/or".
_LETTER = r"(?<![\w'\u2019\-./])(?P<letter>[A-Z])(?![\w'\u2019\-/]|\.\w)"
_CARDINAL = r"\b(?P<cardinal>(?i:" + "|".join(_CARDINALS) + r"))\b(?!\s+of\b)"
_ORDINAL = r"\b(?P<ordinal>(?i:" + "|".join(_ORDINALS) + r"))\b"
_OPTION_NOUN = r"(?i:option|choice|one)\b"
# A choice inside an answer clause: a number, a letter that is not an article or the
# pronoun "I" ("A cell", "I think"), a cardinal word, or an ordinal naming an option.
_CLAUSE_CHOICE = re.compile(
    "|".join(
        (
            _NUMBER,
            _LETTER + r"(?!\s+[a-z])",
            _CARDINAL,
            _ORDINAL + r"(?=\s+" + _OPTION_NOUN + ")",
        )
    )
)
_FINAL_ANSWER_KEY = re.compile(r"\bfinal\s+answer\b", re.IGNORECASE)
_ANSWER_KEY = re.compile(r"\banswer\b", re.IGNORECASE)
# What may separate an answer keyword from its clause, across a line break ("Answer:\n3").
_CLAUSE_GAP = re.compile(r"[\s:\uff1a\-\u2013\u2014]*")
# A clause ends at a sentence end (a period before a non-word), ";", "!", "?" or a line end.
_CLAUSE_END = re.compile(r"[!?;\n]|\.(?!\w)")
_CLAUSE_MAX = 80
# A choice before its answer phrase: "B is the correct answer", "(2) is the right option".
_CHOICE_IS_ANSWER = re.compile(
    r"[(\[]?(?:"
    + _NUMBER
    + "|"
    + _LETTER
    + r")[)\]]?\s+(?i:is|would\s+be)\s+(?i:the\s+)?(?i:(?:correct|right|best|final)\s+)?"
    r"(?i:answer|option|choice)\b"
)
# "option 3", "choice (B)", "option is two", "the second option", "(3)", "(B)", "3)", "B)".
_OPTION_MENTIONS = (
    re.compile(
        r"(?i:\b(?:option|choice)s?)\s*(?:(?i:number|no\.?|#|is)\s*)?[:(\[]?\s*(?:"
        + "|".join((_NUMBER, _LETTER, _CARDINAL))
        + ")"
    ),
    re.compile(_ORDINAL + r"(?=\s+(?i:option|choice)\b)"),
    re.compile(r"\((?:" + _NUMBER + "|" + _LETTER + r")\)"),
    re.compile(r"(?:^|(?<=\s))(?:" + _NUMBER + "|" + _LETTER + r")\)", re.MULTILINE),
)
_STANDALONE_NUMBER = re.compile(_NUMBER)
# The whole reply is one choice: "B", "(B)", "3.", "two", "Second".
_WHOLE_REPLY = re.compile(
    r"^[(\[]?(?:" + "|".join((_NUMBER, _LETTER, _CARDINAL, _ORDINAL)) + r")[)\].:]?$"
)
# A negated mention: "not 4", "isn't option 4", "never (B)", and "4 is not", "B is wrong".
_NEGATED_BEFORE = re.compile(
    r"(?i:\bnot|n['\u2019]t|\bnever)\s+(?:(?i:the\s+)?(?i:option|choice|answer|number)\s*)?"
    r"[(\[]?\s*$"
)
_NEGATED_AFTER = re.compile(
    r"^[)\]]?\s*(?i:(?:is|are|was|were)(?:\s*n['\u2019]t\b|\s+not\b|\s+(?:incorrect|wrong|false)\b))"
)


def _choice_value(match: re.Match[str]) -> int:
    """The option number a choice match names (A=1, B=2, ...; "two" and "second" = 2)."""
    groups = {name: value for name, value in match.groupdict().items() if value is not None}
    if "number" in groups:
        return int(groups["number"])
    if "letter" in groups:
        return ord(groups["letter"]) - ord("A") + 1
    word = groups.get("cardinal") or groups["ordinal"]
    return _WORD_VALUE[word.lower()]


def _choice_span(match: re.Match[str]) -> tuple[int, int]:
    """Where the choice itself (not the words around it) lies in the text."""
    for name, value in match.groupdict().items():
        if value is not None:
            return match.span(name)
    return match.span()


def _valid_choice(text: str, match: re.Match[str], n_options: int) -> int | None:
    """The match's option number, or None when out of range or negated."""
    value = _choice_value(match)
    if not 1 <= value <= n_options:
        return None
    start, end = _choice_span(match)
    if _NEGATED_BEFORE.search(text[max(0, start - 30) : start]):
        return None
    if _NEGATED_AFTER.match(text[end : end + 30]):
        return None
    return value


def _clause_choices(text: str, key: re.Pattern[str], n_options: int) -> list[tuple[int, int]]:
    """For each clause opened by ``key``, where it opens and the first valid choice in it."""
    choices: list[tuple[int, int]] = []
    for opening in key.finditer(text):
        start = _CLAUSE_GAP.match(text, opening.end())
        begin = opening.end() if start is None else start.end()
        end_match = _CLAUSE_END.search(text, begin)
        end = min(len(text) if end_match is None else end_match.start(), begin + _CLAUSE_MAX)
        clause = text[:end]
        for match in _CLAUSE_CHOICE.finditer(clause, begin):
            value = _valid_choice(text, match, n_options)
            if value is not None:
                choices.append((opening.start(), value))
                break
    return choices


def _mentioned_choices(text: str, patterns: Sequence[re.Pattern[str]], n_options: int) -> list[int]:
    """Every valid choice the patterns find, in the order they stand in the text."""
    found: dict[int, int] = {}
    for pattern in patterns:
        for match in pattern.finditer(text):
            value = _valid_choice(text, match, n_options)
            if value is not None:
                found.setdefault(_choice_span(match)[0], value)
    return [found[start] for start in sorted(found)]


def _option_by_text(reply: str, options: Sequence[str]) -> int | None:
    """The one option whose text the reply is, or else the one whose full text it contains."""
    normalized_options = [normalize_answer(option) for option in options]
    replies = {normalize_answer(reply), normalize_answer(extract_short_answer(reply))}
    equal = [n for n, option in enumerate(normalized_options, 1) if option and option in replies]
    if len(equal) == 1:
        return equal[0]
    padded = f" {normalize_answer(reply)} "
    contained = [
        n for n, option in enumerate(normalized_options, 1) if option and f" {option} " in padded
    ]
    return contained[0] if len(contained) == 1 else None


def parse_option(
    generated_text: str, n_options: int, options: Sequence[str] | None = None
) -> int | None:
    """The option number (1..n_options) the model's reply finally states.

    Pass only the generated text, never the prompt, which lists every option number. The
    reply is first cleaned as for short answers (``<think>`` blocks, markdown, and a new
    turn the model starts, are dropped). A choice is a number ("3"), an uppercase letter
    (A=1, B=2, ...), a number word ("two") or an ordinal naming an option ("the second
    option"). Choices outside 1..n_options, and negated ones ("not 4", "isn't 4",
    "4 is wrong"), are skipped everywhere. The first rule that finds one decides:

    1. The whole reply is one choice: "B", "(B)", "3.", "two", "second".
    2. The last "final answer" clause: "Final answer: 3".
    3. The last answer clause with a choice: "Answer: B", "the correct answer is (2)",
       "B is the correct answer"; so "The answer is not 4; it is 2" is 2 (rule 5 finds
       it), "Answer: 9, no wait, 2" is 2. A letter there must not read as an article or
       "I" ("A cell", "I think").
    4. The first option mention: "option 3", "choice B", "the second option", "(B)",
       "(3)", "3)", "B)".
    5. The first standalone number (not in "5G", "WG3", "2.5").
    6. With ``options`` given: the reply equals (after SQuAD normalisation) exactly one
       option's text, or else contains exactly one option's full text.

    Args:
        generated_text: The text the model generated.
        n_options: How many options the question has.
        options: The option texts, for rule 6; None to skip it.

    Returns:
        The option number, or None when no choice can be found (scored as wrong and
        counted as unparsed; never a default option).
    """
    lines = _reply_lines(generated_text)
    if not lines or n_options < 1:
        return None
    text = "\n".join(lines)
    whole = _WHOLE_REPLY.match(text)
    if whole is not None:
        value = _choice_value(whole)
        if 1 <= value <= n_options:
            return value
    final_choices = _clause_choices(text, _FINAL_ANSWER_KEY, n_options)
    if final_choices:
        return final_choices[-1][1]
    answer_choices = _clause_choices(text, _ANSWER_KEY, n_options) + [
        (match.start(), choice)
        for match in _CHOICE_IS_ANSWER.finditer(text)
        if (choice := _valid_choice(text, match, n_options)) is not None
    ]
    if answer_choices:
        return max(answer_choices)[1]
    for patterns in (_OPTION_MENTIONS, (_STANDALONE_NUMBER,)):
        mentioned = _mentioned_choices(text, patterns, n_options)
        if mentioned:
            return mentioned[0]
    if options:
        return _option_by_text(text, options)
    return None


# --------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------


def retrieval_recall(retrieved_ids: Collection[str], gold_ids: Collection[str]) -> float | None:
    """The share of gold passages among those retrieved, or None when no gold is known."""
    gold = set(gold_ids)
    if not gold:
        return None
    return len(gold & set(retrieved_ids)) / len(gold)
