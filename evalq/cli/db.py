"""``evalq db``: schema management."""

from __future__ import annotations

import click

from evalq.config import Settings
from evalq.db.session import current_revision, make_engine, mask_url, upgrade


@click.group("db")
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Apply every migration up to the newest schema (safe to repeat)."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    click.echo(f"{mask_url(settings.database_url)} at revision {current_revision(engine)}")
