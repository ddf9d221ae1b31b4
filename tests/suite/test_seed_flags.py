"""The seed script's flags on ``evalq submit``, in the seed's spellings."""

from __future__ import annotations

from click.testing import CliRunner

from evalq.cli.main import cli
from evalq.cli.seed_flags import rewrite_seed_argv
from evalq.db import queries
from evalq.db.session import open_store


def test_seed_argv_becomes_evalq_options() -> None:
    argv = ["--n_questions", "10", "--difficulty", "easy", "--gpu_mode", "data_parallel"]
    argv += ["--gpu_ids", "0", "1", "2", "3", "--fixed_k=3", "--seed", "42", "--model", "M"]
    assert rewrite_seed_argv(argv) == [
        "--n", "10", "--dataset", "oran-bench", "--difficulty", "easy",
        "--gpu-mode", "data_parallel", "--gpu-ids", "0,1,2,3",
        "--strategy", "fixed:k=3", "--strategy", "mdp", "--seed", "42", "--model", "M",
    ]  # fmt: skip
    # Named strategies and a named dataset are kept as given.
    assert rewrite_seed_argv(["--dataset", "x", "--n_questions", "5"]) == [
        "--dataset", "x", "--n", "5",
    ]  # fmt: skip
    assert rewrite_seed_argv(["--strategy", "fixed:k=0", "--fixed_k", "2"]) == [
        "--strategy", "fixed:k=0", "--strategy", "fixed:k=2",
    ]  # fmt: skip


def _submit(db_url: str, broker_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["--database-url", db_url, "--broker-url", broker_url, "submit", *args]
    )
    return result.exit_code, result.output


def test_submit_takes_the_seed_flags_and_records_the_gpu_request(
    sqlite_url: str, redis_url: str, oran_specs: str
) -> None:
    code, output = _submit(
        sqlite_url,
        redis_url,
        *("--n_questions", "6", "--difficulty", "easy", "--fixed_k", "3", "--seed", "7"),
        *("--model", "test/m", "--gpu_mode", "accelerate", "--gpu_ids", "0", "1"),
        *("--corpus", oran_specs),
    )
    assert code == 0, output
    assert "evalq fleet --model test/m --gpus 0,1 --mode tensor_parallel" in output
    run_id = int(output.split()[1].rstrip(":"))
    with open_store(sqlite_url).session() as s:
        run = queries.get_run(s, run_id)
        assert (run.dataset, run.difficulty, run.n, run.seed) == ("oran-bench", "easy", 6, 7)
        assert run.strategies == ["fixed:k=3", "mdp"]
        assert run.config["requested_gpus"] == {
            "mode": "accelerate",
            "gpu_ids": [0, 1],
            "fleet": "evalq fleet --model test/m --gpus 0,1 --mode tensor_parallel",
        }


def test_bad_seed_flags_are_one_line_and_exit_2(sqlite_url: str, redis_url: str) -> None:
    code, output = _submit(sqlite_url, redis_url, "--n_questions", "5", "--model", "m",
                           "--gpu_mode", "single", "--gpu_ids", "0", "1")  # fmt: skip
    assert (code, output.strip()) == (
        2,
        "Error: --gpu_mode single runs on one GPU; --gpu_ids names 2",
    )
    code, output = _submit(sqlite_url, redis_url, "--n", "5", "--model", "m", "--gpu_ids")
    assert (code, output.strip()) == (2, "Error: --gpu_ids needs GPU ids, e.g. --gpu_ids 0 1 2 3")
    with open_store(sqlite_url).session() as s:
        assert queries.latest_runs(s, 5) == [], "a refused submit leaves no run"
