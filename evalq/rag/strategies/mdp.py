"""MDP-RAG: retrieve, reason or answer by a threshold policy over information progress U.

Unlike the original, retrieval really queries the corpus and its passages reach the model;
success is observed, never sampled: the model judges the passages in one token, and the
retrieve succeeds when its P(yes) reaches the run's ``judge_threshold``. The answer call
always runs; a step cap ends every loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from evalq.data.question import Question
from evalq.errors import UserError
from evalq.models.base import Generation, choice_probability
from evalq.rag.episode import EpisodeGenerator, RetrievalRequest, Retrieved, StepRecord
from evalq.rag.mdp_solver import PRESETS, MDPParams, policy_action
from evalq.rag.prompts import (
    JUDGE_CHOICES,
    NO_INFO,
    answer_messages,
    judge_messages,
    note_messages,
    query_messages,
    reason_messages,
)
from evalq.rag.search_query import next_query
from evalq.rag.strategies.base import EpisodeContext, grade, new_result

OPTIONS = ("k_step", "max_steps", "min_score", "judge_threshold")
# A retrieve succeeds when the judge's P(yes) reaches this (a run option; see docs/mdp.md).
JUDGE_THRESHOLD = 0.5


@dataclass(frozen=True)
class MDPStrategy:
    """The threshold policy of a solved MDP, run against a real retriever and model."""

    params: MDPParams
    theta_cont: float
    theta_star: float
    k_step: int = 3
    max_steps: int = 10
    min_score: float | None = None
    judge_threshold: float = JUDGE_THRESHOLD

    @property
    def name(self) -> str:
        """Stored on each episode."""
        return "mdp"

    @classmethod
    def from_spec(cls, spec: str, opts: dict[str, str], run_mdp: dict[str, Any]) -> MDPStrategy:
        """Build from the spec string and the run's MDP config (params and thresholds).

        Thresholds are solved once at submit time and stored with the run; a spec parsed
        before that (validation) gets the trivial thresholds and is never run.
        """
        if opts:
            raise UserError(
                f"strategy {spec!r}: set MDP options on the run (--mdp-preset, --mdp-set, "
                "--k-step, --max-steps), not in the strategy name"
            )
        known = MDPParams.__dataclass_fields__
        stored = {k: v for k, v in run_mdp.items() if k in known}
        params = PRESETS[str(run_mdp.get("preset", "base"))].with_overrides(**stored)
        min_score = run_mdp.get("min_score")
        return cls(
            params=params,
            theta_cont=float(run_mdp.get("theta_cont", 0.0)),
            theta_star=float(run_mdp.get("theta_star", params.u_max)),
            k_step=int(run_mdp.get("k_step", 3)),
            max_steps=int(run_mdp.get("max_steps", 10)),
            min_score=None if min_score is None else float(min_score),
            judge_threshold=float(run_mdp.get("judge_threshold", JUDGE_THRESHOLD)),
        )

    def episode(self, question: Question, ctx: EpisodeContext) -> EpisodeGenerator:
        """Act by the policy until it says terminate or the step cap; then always answer."""
        p = self.params
        g = ctx.generation
        result = new_result(question, self.name, ctx.repeat)
        u, cost = 0.0, 0.0
        notes: list[str] = []
        seen: list[str] = []
        queries: list[str] = []
        # Titles of the passages seen, those judged useful first: fallback query words.
        titles: list[str] = []
        for _ in range(self.max_steps):
            action = policy_action(u, self.theta_cont, self.theta_star)
            if action == "terminate":
                break
            step = StepRecord(action=action, u_before=u)
            if action == "retrieve":
                if question.corpus is None:
                    raise ValueError(f"question {question.id} has no corpus to retrieve from")
                reply = None
                if result.retrievals > 0:  # later queries target what is still missing
                    qgen: Generation = yield ctx.request(
                        query_messages(question, notes), g.query_tokens
                    )
                    _add_tokens(step, qgen)
                    reply = qgen.text
                query = (
                    question.text
                    if result.retrievals == 0
                    else next_query(question.text, reply, notes, titles, queries)
                )
                queries.append(query)
                got: Retrieved = yield RetrievalRequest(
                    question.corpus, query, self.k_step, frozenset(seen)
                )
                step.latency_s += got.latency_s
                passages = [ctx.passage(question.corpus, h.passage_id) for h in got.hits]
                seen += [x.id for x in passages]
                step.query = query
                step.passage_ids = [x.id for x in passages]
                step.scores = [h.score for h in got.hits]
                if passages:
                    jgen: Generation = yield dataclasses.replace(
                        ctx.request(judge_messages(question, passages), 1),
                        choices=JUDGE_CHOICES,
                    )
                    _add_tokens(step, jgen)
                    step.judgement = choice_probability(jgen, JUDGE_CHOICES[0])
                best = max(step.scores, default=0.0)
                step.success = (
                    step.judgement is not None
                    and step.judgement >= self.judge_threshold
                    and (self.min_score is None or best >= self.min_score)
                )
                if step.success:
                    # Only passages judged useful are noted: the note is the answer's
                    # evidence, and a note of useless passages is tokens spent on noise.
                    ngen: Generation = yield ctx.request(
                        note_messages(question, passages, notes), g.note_tokens
                    )
                    _add_tokens(step, ngen)
                    note = ngen.text.strip()
                    step.text = note
                    if note and NO_INFO not in note.upper():
                        notes.append(note)
                    titles[:0] = [x.title for x in passages]
                    u = min(u + p.delta_r, p.u_max)
                else:
                    titles += [x.title for x in passages]
                cost += p.c_r
                result.retrievals += 1
            else:
                rgen: Generation = yield ctx.request(
                    reason_messages(question, notes), g.note_tokens
                )
                _add_tokens(step, rgen)
                step.text = rgen.text.strip()
                if step.text:
                    notes.append(step.text)
                u = min(u + p.delta_p, p.u_max)
                cost += p.c_p
            step.u_after = u
            result.steps.append(step)
        agen: Generation = yield ctx.request(answer_messages(question, (), notes), g.answer_tokens)
        answer = StepRecord(action="terminate", u_before=u, u_after=u, text=agen.text)
        _add_tokens(answer, agen)
        result.steps.append(answer)
        # The answer call is charged c_p, as fixed-k's is, so that costs compare.
        result.cost = cost + p.c_p
        result.passage_ids = seen
        grade(result, question, agen.text)
        return result


def _add_tokens(step: StepRecord, gen: Generation) -> None:
    step.prompt_tokens += gen.prompt_tokens
    step.completion_tokens += gen.completion_tokens
    step.latency_s += gen.latency_s
