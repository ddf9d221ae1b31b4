"""analysis views: run_summary, strategy_summary, episode_detail

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00.000000

The views read the same on SQLite and Postgres: the same columns, the same types, the same
meaning. Only reading a value out of the JSON ``runs.config`` differs by dialect. Averages
are cast to DOUBLE PRECISION so that Postgres returns floats rather than numerics.
Accuracy-like averages are over ``ok`` episodes only; ``invalid`` and ``error`` are counted.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("run_summary", "strategy_summary", "episode_detail")


def _mdp_value(key: str, dialect: str) -> str:
    """SQL reading runs.config -> mdp -> key as a float, per dialect."""
    if dialect == "postgresql":
        return f"CAST(r.config -> 'mdp' ->> '{key}' AS DOUBLE PRECISION)"
    return f"CAST(json_extract(r.config, '$.mdp.{key}') AS DOUBLE PRECISION)"


def _mdp_text(key: str, dialect: str) -> str:
    """SQL reading runs.config -> mdp -> key as text, per dialect."""
    if dialect == "postgresql":
        return f"(r.config -> 'mdp' ->> '{key}')"
    return f"json_extract(r.config, '$.mdp.{key}')"


def _ok_avg(expression: str) -> str:
    """Mean of an expression over ok episodes (NULL when there are none), as a float."""
    return f"CAST(AVG(CASE WHEN e.status = 'ok' THEN {expression} END) AS DOUBLE PRECISION)"


def _count(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


ACCURACY = _ok_avg("CASE WHEN e.correct THEN 1.0 ELSE 0.0 END")

STRATEGY_SUMMARY = f"""
CREATE VIEW strategy_summary AS
SELECT
    e.run_id AS run_id,
    e.strategy AS strategy,
    COUNT(*) AS episodes,
    {_count("e.status = 'ok'")} AS ok,
    {_count("e.status = 'invalid'")} AS invalid,
    {_count("e.status = 'error'")} AS errors,
    {_count("e.status = 'ok' AND e.correct")} AS correct,
    {ACCURACY} AS accuracy,
    {_count("e.status = 'ok' AND e.parsed = FALSE")} AS unparsed,
    {_ok_avg("e.exact_match")} AS exact_match,
    {_ok_avg("e.f1")} AS f1,
    {_ok_avg("e.retrieval_recall")} AS retrieval_recall,
    {_ok_avg("e.cost")} AS mean_cost,
    {_ok_avg("e.steps")} AS mean_steps,
    {_ok_avg("e.retrievals")} AS mean_retrievals,
    {_ok_avg("e.prompt_tokens + e.completion_tokens")} AS mean_tokens,
    {_ok_avg("e.latency_s")} AS mean_latency_s,
    SUM(e.prompt_tokens) AS prompt_tokens,
    SUM(e.completion_tokens) AS completion_tokens
FROM episodes e
GROUP BY e.run_id, e.strategy
"""


def _run_summary(dialect: str) -> str:
    return f"""
CREATE VIEW run_summary AS
SELECT
    r.id AS run_id,
    r.name AS name,
    r.created_at AS created_at,
    r.finished_at AS finished_at,
    r.status AS status,
    r.dataset AS dataset,
    r.difficulty AS difficulty,
    r.n AS n,
    r.seed AS seed,
    r.model AS model,
    r.repeats AS repeats,
    r.code_version AS code_version,
    {_mdp_text("preset", dialect)} AS mdp_preset,
    {_mdp_value("theta_cont", dialect)} AS theta_cont,
    {_mdp_value("theta_star", dialect)} AS theta_star,
    COALESCE(s.shards, 0) AS shards,
    COALESCE(s.shards_done, 0) AS shards_done,
    COALESCE(s.shards_failed, 0) AS shards_failed,
    COALESCE(ep.episodes, 0) AS episodes,
    COALESCE(ep.ok, 0) AS ok,
    COALESCE(ep.invalid, 0) AS invalid,
    COALESCE(ep.errors, 0) AS errors,
    ep.accuracy AS accuracy,
    ep.mean_cost AS mean_cost,
    COALESCE(ep.tokens, 0) AS tokens
FROM runs r
LEFT JOIN (
    SELECT
        sh.run_id AS run_id,
        COUNT(*) AS shards,
        SUM(CASE WHEN sh.status = 'done' THEN 1 ELSE 0 END) AS shards_done,
        SUM(CASE WHEN sh.status = 'failed' THEN 1 ELSE 0 END) AS shards_failed
    FROM shards sh
    GROUP BY sh.run_id
) s ON s.run_id = r.id
LEFT JOIN (
    SELECT
        e.run_id AS run_id,
        COUNT(*) AS episodes,
        {_count("e.status = 'ok'")} AS ok,
        {_count("e.status = 'invalid'")} AS invalid,
        {_count("e.status = 'error'")} AS errors,
        {ACCURACY} AS accuracy,
        {_ok_avg("e.cost")} AS mean_cost,
        SUM(e.prompt_tokens + e.completion_tokens) AS tokens
    FROM episodes e
    GROUP BY e.run_id
) ep ON ep.run_id = r.id
"""


EPISODE_DETAIL = """
CREATE VIEW episode_detail AS
SELECT
    e.id AS episode_id,
    e.run_id AS run_id,
    r.name AS run_name,
    r.model AS model,
    r.dataset AS dataset,
    e.question_id AS question_id,
    e.strategy AS strategy,
    e.repeat AS repeat,
    e.status AS status,
    COALESCE(e.difficulty, 'unknown') AS difficulty,
    e.correct AS correct,
    CASE WHEN e.correct THEN 1 ELSE 0 END AS is_correct,
    e.parsed AS parsed,
    e.exact_match AS exact_match,
    e.f1 AS f1,
    e.retrieval_recall AS retrieval_recall,
    e.cost AS cost,
    e.steps AS steps,
    e.retrievals AS retrievals,
    COALESCE(st.reasons, 0) AS reasons,
    st.final_u AS final_u,
    e.prompt_tokens AS prompt_tokens,
    e.completion_tokens AS completion_tokens,
    e.prompt_tokens + e.completion_tokens AS tokens,
    e.latency_s AS latency_s,
    e.question AS question,
    e.answer AS answer,
    e.gold AS gold,
    e.error AS error,
    e.worker AS worker,
    e.finished_at AS finished_at
FROM episodes e
JOIN runs r ON r.id = e.run_id
LEFT JOIN (
    SELECT
        s.episode_id AS episode_id,
        SUM(CASE WHEN s.action = 'reason' THEN 1 ELSE 0 END) AS reasons,
        MAX(CASE WHEN s.action = 'terminate' THEN s.u_after END) AS final_u
    FROM steps s
    GROUP BY s.episode_id
) st ON st.episode_id = e.id
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(_run_summary(dialect))
    op.execute(STRATEGY_SUMMARY)
    op.execute(EPISODE_DETAIL)


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
