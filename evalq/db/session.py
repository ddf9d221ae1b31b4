"""Opening the store: engine set-up per dialect, migrations on first use, sessions."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from evalq.errors import UserError

MIGRATIONS = Path(__file__).with_name("migrations")


def mask_url(url: str | URL) -> str:
    """The URL with any password replaced by ***, safe for logs and messages.

    A URL too malformed to parse has everything up to its last ``@`` masked instead.
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        scheme, sep, rest = str(url).rpartition("://")
        if "@" in rest:
            rest = "***@" + rest.rsplit("@", 1)[1]
        return f"{scheme}{sep}{rest}"


def _normalise(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise UserError(f"database URL {mask_url(url)!r} is not a valid SQLAlchemy URL") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is what we ship
    elif backend not in ("sqlite", "postgresql"):
        raise UserError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed


def make_engine(url: str) -> Engine:
    """An engine with the settings evalq relies on for its dialect.

    SQLite: WAL (readers never block the writer), foreign keys on, and a busy timeout so
    concurrent writers wait instead of failing.
    """
    parsed = _normalise(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.host or parsed.port:
            raise UserError(
                f"database URL {mask_url(url)!r} names a host; SQLite is a file: "
                "sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(
                    f"cannot create the database folder {folder}: {exc.strerror}"
                ) from None
        engine = create_engine(parsed, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True)


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # The config file format interpolates "%": a percent-encoded password must survive it.
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    """The newest schema revision this code knows."""
    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def upgrade(engine: Engine) -> None:
    """Apply every migration up to head (a no-op when already there).

    Several workers may start at once on a fresh database. Postgres serialises them with
    an advisory lock (migrations/env.py); a SQLite file gets an exclusive file lock beside
    it, so the second process finds the schema already at head.
    """
    cfg = _alembic_config(engine)
    with _sqlite_migration_lock(engine), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).expanduser().with_name(Path(database).name + ".migrate-lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Store:
    """The database evalq writes to: an engine plus a session factory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        with self._sessions() as sess, sess.begin():
            yield sess

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the database at ``url``, applying migrations on first use.

    Raises:
        UserError: the URL is malformed, or the database cannot be reached.
    """
    engine = make_engine(url)
    try:
        if migrate and current_revision(engine) != head_revision(engine):
            upgrade(engine)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise UserError(f"cannot open database {mask_url(url)}: {reason}") from exc
    return Store(engine)
