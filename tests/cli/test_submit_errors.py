"""`evalq submit` refuses bad input with one line and exit 2, and writes nothing."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from support import TINY, free_port

from evalq.cli.main import cli
from evalq.db.models import Run, Shard
from evalq.db.session import open_store


def submit(db_url: str, broker_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "--broker-url", broker_url, "submit", *args]
    )
    return result.exit_code, result.output


def assert_nothing_stored(db_url: str) -> None:
    with open_store(db_url).session() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == 0
        assert s.scalar(select(func.count()).select_from(Shard)) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--dataset", "nope", "--n", "5"), "unknown dataset"),
        (("--dataset", "hotpotqa", "--n", "501"), "larger than hotpotqa"),
        (("--dataset", "hotpotqa", "--n", "0"), "at least 1"),
        (("--dataset", "hotpotqa", "--n", "5", "--difficulty", "extreme"), "difficulty"),
        (("--dataset", "hotpotqa", "--n", "5", "--strategy", "fixed:k=-1"), "fixed:k=N"),
        (("--dataset", "hotpotqa", "--n", "5", "--strategy", "magic"), "unknown strategy"),
        (("--dataset", "oran-bench", "--n", "5", "--strategy", "fixed:k=3"), "no corpus"),
        (("--dataset", "hotpotqa", "--n", "5", "--mdp-set", "delta_r=x"), "delta_r"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_stores_nothing(
    db_url: str, redis_url: str, args: tuple[str, ...], message: str
) -> None:
    code, output = submit(db_url, redis_url, "--model", TINY, *args)
    assert code == 2, output
    assert output.count("\n") == 1 and output.startswith("Error: ")
    assert message in output
    assert_nothing_stored(db_url)


def test_unreachable_redis_is_one_line_exit_2_and_stores_nothing(db_url: str) -> None:
    dead = f"redis://:secret@127.0.0.1:{free_port()}/0"
    code, output = submit(db_url, dead, "--dataset", "hotpotqa", "--n", "5", "--model", TINY)
    assert code == 2, output
    assert output.count("\n") == 1 and "unreachable" in output
    assert "secret" not in output, "passwords never reach the output"
    assert_nothing_stored(db_url)


def test_same_seed_same_sample_in_shards(db_url: str, redis_url: str) -> None:
    ids = []
    for _ in range(2):
        code, output = submit(
            db_url,
            redis_url,
            "--dataset",
            "hotpotqa",
            "--n",
            "12",
            "--seed",
            "3",
            "--model",
            TINY,
            "--shard-size",
            "5",
        )
        assert code == 0, output
    with open_store(db_url).session() as s:
        for run in s.scalars(select(Run)):
            shards = sorted(run.shards, key=lambda sh: sh.index)
            assert [len(sh.question_ids) for sh in shards] == [5, 5, 2]
            ids.append([q for sh in shards for q in sh.question_ids])
    assert ids[0] == ids[1] and len(set(ids[0])) == 12
