"""mdp_param_sets: MDP parameter sets saved by name (``evalq mdp calibrate RUN --save NAME``)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:40:00.000000

A calibrated parameter set is kept under a unique name so that ``evalq submit
--mdp-preset NAME`` (and suites) can use it like a built-in preset. ``params`` holds every
MDPParams field; ``source_run_id`` is the run it was calibrated from (NULL once that run
is deleted, or for a set not made from a run).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mdp_param_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("base_preset", sa.String(length=100), nullable=False),
        sa.Column("source_run_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["source_run_id"], ["runs.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_mdp_param_set_name"),
    )


def downgrade() -> None:
    op.drop_table("mdp_param_sets")
