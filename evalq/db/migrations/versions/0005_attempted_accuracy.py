"""strategy_summary: accuracy and F1 over attempted episodes (ok + error)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 12:00:00.000000

``evalq results`` gives accuracy and F1 twice: over ``ok`` episodes, and over attempted
ones (``ok`` or ``error``; an error scores 0, as the official scripts score a missing
prediction; ``invalid`` questions never ran and stay out). The view it mirrors gains
``attempted``, ``accuracy_attempted`` and ``f1_attempted``, after its existing columns.
Views cannot gain columns in place on both databases, so this one is dropped and created
again; the SQL is written out here in full so that 0002 stays as it was.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ok_avg(expression: str) -> str:
    """Mean of an expression over ok episodes (NULL when there are none), as a float."""
    return f"CAST(AVG(CASE WHEN e.status = 'ok' THEN {expression} END) AS DOUBLE PRECISION)"


def _count(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


ATTEMPTED = "e.status IN ('ok', 'error')"
# NULLIF: a strategy whose episodes are all invalid has no attempted accuracy (NULL).
ATTEMPTED_COLUMNS = f""",
    {_count(ATTEMPTED)} AS attempted,
    CAST({_count("e.status = 'ok' AND e.correct")} AS DOUBLE PRECISION)
        / NULLIF({_count(ATTEMPTED)}, 0) AS accuracy_attempted,
    CAST(SUM(CASE WHEN e.status = 'ok' THEN e.f1 END) AS DOUBLE PRECISION)
        / NULLIF({_count(ATTEMPTED)}, 0) AS f1_attempted"""


def _strategy_summary(extra_columns: str) -> str:
    """The view as 0002 created it, with ``extra_columns`` after its last column."""
    return f"""
CREATE VIEW strategy_summary AS
SELECT
    e.run_id AS run_id,
    e.strategy AS strategy,
    COUNT(*) AS episodes,
    {_count("e.status = 'ok'")} AS ok,
    {_count("e.status = 'invalid'")} AS invalid,
    {_count("e.status = 'error'")} AS errors,
    {_count("e.status = 'ok' AND e.correct")} AS correct,
    {_ok_avg("CASE WHEN e.correct THEN 1.0 ELSE 0.0 END")} AS accuracy,
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
    SUM(e.completion_tokens) AS completion_tokens{extra_columns}
FROM episodes e
GROUP BY e.run_id, e.strategy
"""


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS strategy_summary")
    op.execute(_strategy_summary(ATTEMPTED_COLUMNS))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS strategy_summary")
    op.execute(_strategy_summary(""))
