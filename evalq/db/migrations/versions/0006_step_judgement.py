"""steps.judgement: the model's P(yes) that a retrieve's passages bear on the question

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:15:00.000000

An MDP retrieve is judged by one yes/no call whose answer is read from the engine's
log-probabilities: ``judgement = p(yes) / (p(yes) + p(no))``. The step succeeds when it
reaches the run's ``judge_threshold``. Storing the probability itself, not only
``success``, lets a run be re-thresholded and calibrated afterwards. NULL for steps that
were not judged (reason, terminate, fixed-k, and every step stored before this column).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column is added in place on both databases (no table copy on SQLite).
    op.add_column("steps", sa.Column("judgement", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("steps", "judgement")
