"""SQLAlchemy 2 typed models: runs, shards, episodes, steps, thresholds.

The generation tables live in ``evalq.db.generate`` and the worker table in
``evalq.db.workers``; all three build on ``evalq.db.base``. ``evalq.db.schema`` gathers them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from evalq.db.base import Base, utcnow


class Run(Base):
    """One submitted evaluation: a question sample times strategies times repeats."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    name: Mapped[str | None] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(100))
    difficulty: Mapped[str] = mapped_column(String(50))
    n: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(500))
    strategies: Mapped[list[Any]] = mapped_column(JSON)
    repeats: Mapped[int] = mapped_column(Integer, default=1)
    # Generation settings, MDP parameters and engine hints: what a worker needs to reproduce it.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    code_version: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    shards: Mapped[list[Shard]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class Shard(Base):
    """A slice of a run's questions: the unit of work one Celery task carries."""

    __tablename__ = "shards"
    __table_args__ = (UniqueConstraint("run_id", "index", name="uq_shard_run_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    question_ids: Mapped[list[Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)

    run: Mapped[Run] = relationship(back_populates="shards")


# What identifies an episode: one stored row per question, strategy and repeat of a run.
EPISODE_IDENTITY = ("run_id", "question_id", "strategy", "repeat")


class Episode(Base):
    """One question answered by one strategy: the row every result is computed from."""

    __tablename__ = "episodes"
    __table_args__ = (
        UniqueConstraint(*EPISODE_IDENTITY, name="uq_episode_identity"),
        Index("ix_episodes_run_strategy", "run_id", "strategy"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    shard_id: Mapped[int | None] = mapped_column(
        ForeignKey("shards.id", ondelete="SET NULL"), index=True
    )
    question_id: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(100))
    repeat: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20))  # ok / invalid / error
    difficulty: Mapped[str | None] = mapped_column(String(50))
    question: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    raw_output: Mapped[str | None] = mapped_column(Text)
    gold: Mapped[str | None] = mapped_column(Text)
    correct: Mapped[bool | None] = mapped_column(Boolean)
    parsed: Mapped[bool | None] = mapped_column(Boolean)
    exact_match: Mapped[float | None] = mapped_column(Float)
    f1: Mapped[float | None] = mapped_column(Float)
    retrieval_recall: Mapped[float | None] = mapped_column(Float)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    retrievals: Mapped[int] = mapped_column(Integer, default=0)
    passage_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Step(Base):
    """One action inside an episode: retrieve, reason or terminate (answer)."""

    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("episode_id", "index", name="uq_step_episode_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))
    u_before: Mapped[float | None] = mapped_column(Float)
    u_after: Mapped[float | None] = mapped_column(Float)
    success: Mapped[bool | None] = mapped_column(Boolean)
    # A retrieve's judged P(yes) that its passages help answer (NULL when not judged).
    judgement: Mapped[float | None] = mapped_column(Float)
    query: Mapped[str | None] = mapped_column(Text)
    passage_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    scores: Mapped[list[Any]] = mapped_column(JSON, default=list)
    text: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)


class Threshold(Base):
    """Solved MDP thresholds, cached by a hash of the parameters that determine them."""

    __tablename__ = "thresholds"

    param_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    theta_cont: Mapped[float] = mapped_column(Float)
    theta_star: Mapped[float] = mapped_column(Float)
    iterations: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MDPParamSet(Base):
    """A named MDP parameter set, saved by ``evalq mdp calibrate --save``; usable as a preset."""

    __tablename__ = "mdp_param_sets"
    __table_args__ = (UniqueConstraint("name", name="uq_mdp_param_set_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Every MDPParams field, so the set alone rebuilds the parameters.
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The built-in preset it was derived from: a run's config names it as its "preset", since
    # the worker rebuilds parameters on top of a built-in preset.
    base_preset: Mapped[str] = mapped_column(String(100))
    source_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
