"""bench/gpu/mkmodel.py builds a loadable tiny Qwen2.5-shaped folder and a realistic tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "mkmodel.py"
TINY_FLAGS = [
    "--layers=2",
    "--hidden=64",
    "--intermediate=128",
    "--heads=4",
    "--kv-heads=2",
    "--vocab-size=4096",
    "--bpe-vocab=2000",
    "--max-positions=2048",
    "--max-texts=3000",
]
SENTENCE = (
    "Which O-RAN Working Group focuses on the architecture description of Open Radio "
    "Access Networks, and who chairs it?"
)


def run_mkmodel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("qwen")
    result = run_mkmodel(str(out), *TINY_FLAGS)
    assert result.returncode == 0, result.stderr
    return out


def load_config(built: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((built / "model" / "config.json").read_text())
    return config


def test_config_has_the_requested_qwen2_shape(built: Path) -> None:
    config = load_config(built)
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["model_type"] == "qwen2"
    assert config["num_hidden_layers"] == 2
    assert config["hidden_size"] == 64
    assert config["intermediate_size"] == 128
    assert config["num_attention_heads"] == 4
    assert config["num_key_value_heads"] == 2
    assert config["vocab_size"] == 4096
    assert config["max_position_embeddings"] == 2048
    assert config["rope_theta"] == 1e6
    assert config["rms_norm_eps"] == 1e-6
    assert config["torch_dtype"] == "bfloat16"
    assert config["tie_word_embeddings"] is False
    # The tokenizer folder is separate; the model folder holds only the config.
    assert sorted(p.name for p in (built / "model").iterdir()) == ["config.json"]


def test_every_model_id_has_a_token(built: Path) -> None:
    tokenizer = Tokenizer.from_file(str(built / "tok" / "tokenizer.json"))
    config = load_config(built)
    assert tokenizer.get_vocab_size() == config["vocab_size"]
    assert sorted(tokenizer.get_vocab().values()) == list(range(config["vocab_size"]))
    assert tokenizer.id_to_token(config["eos_token_id"]) == "<|im_end|>"
    assert tokenizer.id_to_token(config["bos_token_id"]) == "<|endoftext|>"
    assert tokenizer.decode([config["vocab_size"] - 1]) != ""


def test_english_text_gets_a_realistic_token_count(built: Path) -> None:
    tokenizer = Tokenizer.from_file(str(built / "tok" / "tokenizer.json"))
    encoding = tokenizer.encode(SENTENCE)
    words = len(SENTENCE.split())
    # A learned subword vocabulary gives about 1 to 2 tokens a word, not one per character.
    assert words <= len(encoding.ids) <= 2 * words
    assert not any(token.startswith("<|extra_") for token in encoding.tokens)
    assert tokenizer.decode(encoding.ids) == SENTENCE


def test_tokenizer_config_names_special_tokens(built: Path) -> None:
    config = json.loads((built / "tok" / "tokenizer_config.json").read_text())
    assert config["eos_token"] == "<|im_end|>"
    assert config["pad_token"] == "<|endoftext|>"
    assert config["model_max_length"] == 2048
    assert "<|im_start|>" in config["chat_template"]


def test_chat_template_renders_chatml(built: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(built / "tok"))
    assert len(tokenizer) == 4096
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is O-RAN?"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\nWhat is O-RAN?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    default_system = tokenizer.apply_chat_template(
        messages[1:], tokenize=False, add_generation_prompt=False
    )
    assert default_system.startswith("<|im_start|>system\nYou are Qwen")


def test_missing_dataset_is_reported_with_exit_status_2(tmp_path: Path) -> None:
    result = run_mkmodel(str(tmp_path / "out"), "--oran", str(tmp_path / "none"), *TINY_FLAGS)
    assert result.returncode == 2
    assert "no ORAN-Bench questions" in result.stderr
    assert not (tmp_path / "out").exists()


def test_heads_that_do_not_divide_are_rejected(tmp_path: Path) -> None:
    result = run_mkmodel(str(tmp_path / "out"), *TINY_FLAGS, "--heads=3")
    assert result.returncode == 2
    assert "--heads must divide --hidden" in result.stderr
