"""Deterministic engines for tests (test code only; never shipped as a model)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine as SqlEngine

from evalq.config import EngineSettings
from evalq.data.registry import load_corpus, load_questions
from evalq.models.base import Generation, GenerationRequest
from evalq.models.vllm import context_error
from evalq.rag.prompts import ANSWER_IS, NO_INFO


@cache
def _hotpot_facts() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Question text -> (gold answer, texts of its gold passages)."""
    corpus = load_corpus("hotpotqa")
    return {
        q.text: (q.gold, tuple(corpus.by_id(p).text for p in q.gold_passages))
        for q in load_questions("hotpotqa", "all")
    }


class PassageEngine:
    """Knows an answer only when a gold passage is in the prompt.

    It stands for a model that reads its context: with the gold passage in front of it,
    it answers; without, it says it does not know. Any gap between closed-book and
    retrieval then proves that retrieved text reached the model.
    """

    calls: list[int]

    def __init__(self) -> None:
        self.calls = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls.append(len(requests))
        return [self._one(r) for r in requests]

    def _one(self, r: GenerationRequest) -> Generation:
        prompt = "\n".join(m["content"] for m in r.messages)
        match = re.search(r"Question: (.*)", prompt)
        gold, passages = _hotpot_facts().get(match.group(1) if match else "", ("", ()))
        seen = any(p and p in prompt for p in passages)
        if r.choices is not None:  # the retrieve's judge: sure yes on gold, sure no without
            return judged(r, 0.9 if seen else 0.1)
        if "step-by-step reasoning toward" in prompt or "two or three sentences" in prompt:
            # IRCoT's and FLARE's next sentence, Iter-RetGen's reasoning: the answer, surely,
            # with a gold passage in view; unsure of its first word without.
            text = f"{ANSWER_IS}: {gold}." if seen else "Perhaps the passages do not say."
            return with_logprobs(
                r, Generation(text, len(prompt.split()), len(text.split()), 0.0), seen
            )
        if "search engine query" in prompt:
            text = "more evidence"
        elif "state the facts" in prompt:
            text = f"The passages say the answer is {gold}." if seen else NO_INFO
        elif "reasoning step" in prompt:
            text = "Combining the notes."
        else:
            known = seen or (gold and re.search(f"answer is:? {re.escape(gold)}", prompt))
            text = f"Answer: {gold}" if known else "Answer: unknown"
        return Generation(text, len(prompt.split()), len(text.split()), 0.0)


def judged(r: GenerationRequest, p_first: float) -> Generation:
    """A deterministic reply to a choices request: P(first choice) = ``p_first``.

    The rest of the probability is spread evenly over the other choices.
    """
    choices = r.choices or ()
    rest = (1.0 - p_first) / max(len(choices) - 1, 1)
    logprobs = {c: math.log(p_first if i == 0 else rest) for i, c in enumerate(choices)}
    text = choices[0] if p_first >= 0.5 or len(choices) < 2 else choices[1]
    return Generation(text, 10, 1, 0.0, choice_logprobs=logprobs)


def with_logprobs(r: GenerationRequest, gen: Generation, sure: bool) -> Generation:
    """``gen`` with a token per word when ``r`` asks for log-probabilities (else as is).

    Every word has probability 0.95 when ``sure``; otherwise the first has 0.1.
    """
    if not r.logprobs:
        return gen
    words = re.findall(r"\S+\s*", gen.text)
    probabilities = [0.95 if sure or n else 0.1 for n in range(len(words))]
    logprobs = tuple(math.log(p) for p in probabilities)
    return dataclasses.replace(gen, token_logprobs=logprobs, tokens=tuple(words))


def instant_reply(r: GenerationRequest) -> Generation:
    """``Answer: 1``; a choices request (an MDP judge) is a sure yes, so retrieves succeed."""
    return judged(r, 0.9) if r.choices else Generation("Answer: 1", 10, 2, 0.0)


class InstantEngine:
    """Returns at once: measures and tests everything around the model."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [instant_reply(r) for r in requests]


class ShortContextEngine:
    """Answers like ``InstantEngine`` within a context of ``context`` tokens (a word a token).

    A request whose prompt, with its ``max_tokens``, does not fit is refused alone, as the
    vLLM engines refuse it; the rest of the batch is answered.
    """

    def __init__(self, context: int) -> None:
        self.context = context

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [self._one(r) for r in requests]

    def _one(self, r: GenerationRequest) -> Generation:
        tokens = sum(len(m["content"].split()) for m in r.messages)
        refused = context_error(tokens, r.max_tokens, self.context)
        if refused is not None:
            return Generation.refused(refused, tokens)
        return judged(r, 0.9) if r.choices else Generation("Answer: 1", tokens, 2, 0.0)


def passage_engine(settings: EngineSettings) -> PassageEngine:
    """Factory for ``evalq worker --engine engines:passage_engine``."""
    return PassageEngine()


def instant_engine(settings: EngineSettings) -> InstantEngine:
    """Factory for ``evalq worker --engine engines:instant_engine``."""
    return InstantEngine()


class FaultEngine:
    """Answers like ``InstantEngine``, a little slowly, and misbehaves where a test says.

    Read at start from the environment of the worker (test code only):

    - ``EVALQ_TEST_DELAY``: seconds per batch, so a kill lands in the middle of a shard.
    - ``EVALQ_TEST_EXIT_ON``: a question text; the worker ``os._exit``s on a batch with it
      (a shard that kills its worker every time).
    - ``EVALQ_TEST_GARBAGE_ON``: a question text; its generation is malformed, so the
      episode's own code raises (an episode error; the shard goes on).
    - ``EVALQ_TEST_FAULT_DIR``: a folder; when a file ``arm-write`` appears in it, the next
      INSERT of an episode renames it to ``in-write`` and then blocks inside the open
      transaction, so the test can SIGKILL the worker in the middle of a database write.
    """

    def __init__(self) -> None:
        self.delay = float(os.environ.get("EVALQ_TEST_DELAY", "0.05"))
        self.exit_on = os.environ.get("EVALQ_TEST_EXIT_ON") or None
        self.garbage_on = os.environ.get("EVALQ_TEST_GARBAGE_ON") or None
        fault_dir = os.environ.get("EVALQ_TEST_FAULT_DIR")
        if fault_dir:
            _hold_armed_writes(Path(fault_dir))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        time.sleep(self.delay)
        prompts = ["\n".join(m["content"] for m in r.messages) for r in requests]
        if self.exit_on and any(f"Question: {self.exit_on}" in p for p in prompts):
            os._exit(3)
        out = [instant_reply(r) for r in requests]
        if self.garbage_on:
            for i, p in enumerate(prompts):
                if f"Question: {self.garbage_on}" in p:
                    garbage: Any = None
                    out[i] = Generation(garbage, 10, 2, 0.0)
        return out


def _hold_armed_writes(fault_dir: Path) -> None:
    def before_execute(*args: Any) -> None:
        statement = str(args[2])
        if not statement.lstrip().upper().startswith("INSERT INTO EPISODES"):
            return
        try:  # the rename is atomic: exactly one write takes the armed fault
            (fault_dir / "arm-write").rename(fault_dir / "in-write")
        except FileNotFoundError:
            return
        time.sleep(600)

    event.listen(SqlEngine, "before_cursor_execute", before_execute)


def fault_engine(settings: EngineSettings) -> FaultEngine:
    """Factory for ``evalq worker --engine engines:fault_engine``."""
    return FaultEngine()


def _record_batch(size: int) -> None:
    """Append a batch size to ``EVALQ_TEST_BATCH_LOG`` (one line per engine call)."""
    path = os.environ.get("EVALQ_TEST_BATCH_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{size}\n")


class EchoEngine:
    """Answers each prompt with a function of its own text, so a mix-up shows.

    Plain prompts get ``echo: <last message>``. A DSPy chat-adapter prompt with a
    ``question`` input field gets that question upper-cased as its ``answer`` field, in
    the adapter's output format. ``EVALQ_TEST_DELAY`` sleeps per batch; batch sizes go to
    ``EVALQ_TEST_BATCH_LOG``.
    """

    def __init__(self) -> None:
        self.delay = float(os.environ.get("EVALQ_TEST_DELAY", "0"))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        _record_batch(len(requests))
        time.sleep(self.delay)
        return [self._one(r) for r in requests]

    def _one(self, r: GenerationRequest) -> Generation:
        last = r.messages[-1]["content"]
        match = re.search(r"\[\[ ## question ## \]\]\n(.*?)\n", last)
        if match:
            text = f"[[ ## answer ## ]]\n{match.group(1).upper()}\n\n[[ ## completed ## ]]"
        else:
            text = f"echo: {last}"
        return Generation(text, len(last.split()), len(text.split()), 0.0)


def echo_engine(settings: EngineSettings) -> EchoEngine:
    """Factory for ``evalq worker --engine engines:echo_engine``."""
    return EchoEngine()


class RecordingEngine:
    """The real vLLM engine of the settings, recording each batch size it is handed."""

    def __init__(self, settings: EngineSettings) -> None:
        from evalq.models.registry import load_engine

        self.inner = load_engine(settings)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        _record_batch(len(requests))
        return self.inner.generate(requests)


def recording_vllm_engine(settings: EngineSettings) -> RecordingEngine:
    """Factory for ``evalq worker --engine engines:recording_vllm_engine``."""
    return RecordingEngine(settings)
