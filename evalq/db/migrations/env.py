"""Alembic environment: runs on the connection evalq hands over (or on the configured URL)."""

from alembic import context
from sqlalchemy import create_engine, text

from evalq.db.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two workers starting at once must not both create the tables.
            connection.execute(text("SELECT pg_advisory_xact_lock(424242)"))
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    with create_engine(config.get_main_option("sqlalchemy.url") or "").connect() as conn:
        _run(conn)
        conn.commit()
