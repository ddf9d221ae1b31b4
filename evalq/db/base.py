"""The declarative base every table module builds on, and the one clock its timestamps use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.orm import DeclarativeBase


def utcnow() -> datetime:
    """Timezone-aware now, the one clock every timestamp uses."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base; JSON columns map from dict/list."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}
