"""A finished run written straight into the store: MDP and fixed-k episodes with their steps.

The MDP episodes follow the real threshold policy of the ``early`` preset (retrieve until one
retrieve succeeds, then reason up to theta*), so steps, U and costs are consistent the way a
worker writes them. Which retrieves fail and which answers are right is a fixed pattern.
"""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy.orm import Session

from evalq.db.models import Episode, Run, Step
from evalq.rag.mdp_solver import PRESETS, policy_action, solve
from evalq.rag.strategies.base import GenerationConfig

MODEL = "Qwen/Qwen2.5-7B-Instruct"
PRESET = "early"
PARAMS = PRESETS[PRESET]
SOLUTION = solve(PARAMS)
MAX_STEPS = 12
DIFFICULTIES = ("easy", "medium", "hard")
QUESTIONS = 24
FIXED_K = 3
STRATEGIES = ["mdp", f"fixed:k={FIXED_K}", "fixed:k=0"]


def mdp_config() -> dict[str, object]:
    """The run config submit() stores: generation settings and the MDP with its thresholds."""
    return {
        "generation": asdict(GenerationConfig()),
        "mdp": {
            "preset": PRESET,
            **PARAMS.to_json(),
            "theta_cont": SOLUTION.theta_cont,
            "theta_star": SOLUTION.theta_star,
            "k_step": 3,
            "max_steps": MAX_STEPS,
        },
    }


def _correct(strategy: str, i: int) -> bool:
    """MDP right on 3 of 4, fixed:k=3 on 1 of 2, closed-book on 1 of 4."""
    if strategy == "mdp":
        return i % 4 != 3
    if strategy == f"fixed:k={FIXED_K}":
        return i % 2 == 0
    return i % 4 == 0


def _mdp_steps(i: int) -> tuple[list[Step], float, int]:
    """Steps of question i's MDP episode (its first i % 3 retrieves fail), cost, retrievals."""
    steps: list[Step] = []
    u, cost, retrievals, failures = 0.0, 0.0, 0, i % 3
    for _ in range(MAX_STEPS):
        action = policy_action(u, SOLUTION.theta_cont, SOLUTION.theta_star)
        if action == "terminate":
            break
        before = u
        if action == "retrieve":
            success = retrievals >= failures
            retrievals += 1
            cost += PARAMS.c_r
            u = min(u + PARAMS.delta_r, PARAMS.u_max) if success else u
            steps.append(
                Step(
                    index=len(steps),
                    action="retrieve",
                    u_before=before,
                    u_after=u,
                    success=success,
                    query=f"query {i}",
                    passage_ids=[f"p{i}-{retrievals}"],
                    scores=[1.5],
                    text="a note" if success else "NO_INFO",
                    prompt_tokens=50,
                    completion_tokens=10,
                    latency_s=0.1,
                )
            )
        else:
            cost += PARAMS.c_p
            u = min(u + PARAMS.delta_p, PARAMS.u_max)
            steps.append(
                Step(
                    index=len(steps),
                    action="reason",
                    u_before=before,
                    u_after=u,
                    text="a thought",
                    prompt_tokens=60,
                    completion_tokens=12,
                    latency_s=0.1,
                )
            )
    steps.append(
        Step(
            index=len(steps),
            action="terminate",
            u_before=u,
            u_after=u,
            text="answer",
            prompt_tokens=80,
            completion_tokens=2,
            latency_s=0.1,
        )
    )
    return steps, cost + PARAMS.c_p, retrievals


def _fixed_steps(i: int, k: int) -> tuple[list[Step], float, int]:
    steps = []
    if k:
        steps.append(
            Step(
                index=0,
                action="retrieve",
                success=True,
                query=f"question {i}",
                passage_ids=[f"p{i}-{j}" for j in range(k)],
                scores=[2.0] * k,
                latency_s=0.01,
            )
        )
    steps.append(
        Step(
            index=len(steps),
            action="answer",
            text="answer",
            prompt_tokens=300,
            completion_tokens=2,
            latency_s=0.2,
        )
    )
    return steps, k * PARAMS.c_r + PARAMS.c_p, 1 if k else 0


def add_sample_run(session: Session, *, name: str | None = "sample") -> int:
    """Write the run; returns its id.

    Every strategy answers QUESTIONS questions; question 0 of fixed:k=3 is ``invalid`` and
    question 1 of mdp is ``error`` (no steps), so exclusions are exercised.
    """
    run = Run(
        name=name,
        dataset="oran",
        difficulty="mixed",
        n=QUESTIONS,
        seed=7,
        model=MODEL,
        strategies=STRATEGIES,
        config=mdp_config(),
        code_version="test",
        status="done",
    )
    session.add(run)
    session.flush()
    for i in range(QUESTIONS):
        for strategy in STRATEGIES:
            if strategy == "mdp":
                steps, cost, retrievals = _mdp_steps(i)
            else:
                steps, cost, retrievals = _fixed_steps(i, int(strategy.rpartition("=")[2]))
            status = "ok"
            if strategy == "mdp" and i == 1:
                status, steps = "error", []
            if strategy == f"fixed:k={FIXED_K}" and i == 0:
                status = "invalid"
            episode = Episode(
                run_id=run.id,
                question_id=f"q{i:02d}",
                strategy=strategy,
                status=status,
                difficulty=DIFFICULTIES[i % 3],
                question=f"Question {i}?",
                answer=str(1 + i % 4) if status == "ok" else None,
                gold="1",
                correct=_correct(strategy, i) if status == "ok" else None,
                parsed=status == "ok",
                cost=cost if status == "ok" else 0.0,
                steps=len(steps),
                retrievals=retrievals if status == "ok" else 0,
                prompt_tokens=sum(s.prompt_tokens or 0 for s in steps),
                completion_tokens=sum(s.completion_tokens or 0 for s in steps),
                latency_s=sum(s.latency_s or 0.0 for s in steps),
                error="engine died" if status == "error" else None,
                worker="gpu-host:0",
            )
            session.add(episode)
            session.flush()
            for step in steps:
                step.episode_id = episode.id
                session.add(step)
    session.flush()
    return run.id
