"""A tiny Qwen2-shaped model folder with random weights, for machines without real weights.

vLLM loads it with ``load_format="dummy"``: the answers are random, so only speed and
behaviour can be measured with it, never accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path) -> int:
    """Train a byte-level BPE tokenizer on ``texts`` and save it with a chat template.

    Returns:
        The tokenizer's vocabulary size (the model's vocab_size must be at least this).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<pad>",
        "bos_token": None,
        "model_max_length": 32768,
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<pad>"})
    )
    return int(tok.get_vocab_size())


def build_tiny_model(out_dir: Path, texts: Iterable[str], vocab_size: int = 2048) -> Path:
    """Write a tiny Qwen2ForCausalLM config and a trained tokenizer into ``out_dir``.

    The tokenizer lives in the same folder: the config's ``model_type`` is qwen2 but the
    tokenizer class is named explicitly, so transformers keeps our BPE.

    Returns:
        ``out_dir``, ready for ``LLM(model=out_dir, load_format="dummy")``.
    """
    if (out_dir / "config.json").exists() and (out_dir / "tokenizer.json").exists():
        return out_dir
    size = train_tokenizer(texts, vocab_size, out_dir)
    vocab = max(size, vocab_size)
    eos_id = _token_id(out_dir, "<|im_end|>")
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_sliding_window": False,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def _token_id(tok_dir: Path, token: str) -> int:
    from tokenizers import Tokenizer

    tid = Tokenizer.from_file(str(tok_dir / "tokenizer.json")).token_to_id(token)
    if tid is None:
        raise RuntimeError(f"tokenizer in {tok_dir} lacks {token}")
    return int(tid)
