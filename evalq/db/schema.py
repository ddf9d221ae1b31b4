"""Every table evalq stores, gathered on one metadata (for migrations and ``create_all``)."""

from __future__ import annotations

from sqlalchemy import MetaData

from evalq.db import generate, models, workers
from evalq.db.base import Base

# Each table module registers its tables on Base.metadata when imported; naming them here
# makes the whole schema one import away.
TABLE_MODULES = (models, generate, workers)
metadata: MetaData = Base.metadata
