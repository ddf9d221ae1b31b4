#!/usr/bin/env python3
"""Write a weightless Qwen2.5-7B-Instruct-shaped model folder and a realistic tokenizer.

Usage: ``python3 bench/gpu/mkmodel.py OUT_DIR [--layers N] [--hidden H] ...``

Writes ``OUT_DIR/model/config.json`` (load it in vLLM with ``load_format="dummy"``: random
weights, same speed) and ``OUT_DIR/tok`` (pass ``tokenizer=OUT_DIR/tok``). The tokenizer lives
in its own folder because transformers 5 swaps in its own Qwen2 tokenizer for any folder whose
config.json says ``qwen2``.

The tokenizer is a byte-level BPE trained on the benchmark's own text (ORAN-Bench questions
and options, HotpotQA questions and passages), so prompts get about as many tokens as the real
Qwen tokenizer would give them; its vocabulary is then padded with unreachable entries up to
the model's ``vocab_size``, so every id the random model can sample decodes. Building needs
only ``tokenizers``; loading the result needs ``transformers``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.trainers import BpeTrainer

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "evalq" / "data" / "files"

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5's ChatML template, tools left out; it inserts the same default system message.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def iter_oran_texts(oran_dir: Path) -> Iterator[str]:
    """Yield each ORAN-Bench question followed by its options, one string per question.

    Args:
        oran_dir: Folder holding ``fin_*.json`` (JSON Lines of ``[question, options, answer]``).

    Yields:
        The question text and its options joined by newlines.
    """
    for path in sorted(oran_dir.glob("fin_*.json")):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    question, options, _answer = json.loads(line)
                    yield "\n".join([question, *options])


def iter_hotpotqa_texts(hotpotqa_dir: Path) -> Iterator[str]:
    """Yield each HotpotQA question and each of its passages (title and paragraph).

    Args:
        hotpotqa_dir: Folder holding ``*.jsonl.gz`` records with ``question_text`` and
            ``contexts`` (each with ``title`` and ``paragraph_text``).

    Yields:
        Questions and passages, one string each.
    """
    for path in sorted(hotpotqa_dir.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if not line.strip():
                    continue
                record = json.loads(line)
                yield record["question_text"]
                for context in record["contexts"]:
                    yield f"{context['title']}\n{context['paragraph_text']}"


def corpus_texts(oran_dir: Path, hotpotqa_dir: Path, max_texts: int | None) -> list[str]:
    """Collect the training text, alternating datasets so a cap keeps both represented.

    Args:
        oran_dir: ORAN-Bench folder.
        hotpotqa_dir: HotpotQA folder.
        max_texts: Keep at most this many strings; None keeps all.

    Returns:
        The strings to train the BPE on.

    Raises:
        FileNotFoundError: Either dataset yields no text.
    """
    oran = list(iter_oran_texts(oran_dir))
    hotpot = list(iter_hotpotqa_texts(hotpotqa_dir))
    if not oran:
        raise FileNotFoundError(f"no ORAN-Bench questions in {oran_dir}/fin_*.json")
    if not hotpot:
        raise FileNotFoundError(f"no HotpotQA records in {hotpotqa_dir}/*.jsonl.gz")
    mixed = [text for pair in zip(oran, hotpot, strict=False) for text in pair]
    shorter = min(len(oran), len(hotpot))
    mixed += oran[shorter:] + hotpot[shorter:]
    return mixed if max_texts is None else mixed[:max_texts]


def train_tokenizer(texts: list[str], bpe_vocab: int, vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` and pad its vocabulary to ``vocab_size`` ids.

    The padding entries ``<|extra_N|>`` go into the BPE vocabulary itself, not in as added
    tokens: no merge builds them, so text never encodes to them, yet every id decodes.
    Added tokens would do the same, but 120,000 of them make each transformers load take
    about 7 s instead of under 1 s, and vLLM loads the tokenizer in several processes.

    Args:
        texts: Training text.
        bpe_vocab: Target size of the learned vocabulary, special tokens included.
        vocab_size: Total number of ids the tokenizer must cover (the model's vocab_size).

    Returns:
        A tokenizer whose ids are exactly ``0 .. vocab_size - 1``.

    Raises:
        ValueError: The learned vocabulary does not fit in ``vocab_size``.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=bpe_vocab,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    learned = tokenizer.get_vocab_size(with_added_tokens=True)
    if learned > vocab_size:
        raise ValueError(f"learned vocabulary ({learned}) exceeds vocab_size ({vocab_size})")
    # Random weights sample any id below vocab_size; each must decode to something.
    spec = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    for token_id in range(learned, vocab_size):
        vocab[f"<|extra_{token_id - learned}|>"] = token_id
    return Tokenizer.from_str(json.dumps(spec))


def tokenizer_config(max_length: int) -> dict[str, Any]:
    """Return the tokenizer_config.json that lets transformers load the fast tokenizer.

    Args:
        max_length: The model's context length.

    Returns:
        The JSON object, with the special tokens and the ChatML chat template.
    """
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def model_config(args: argparse.Namespace, tokenizer: Tokenizer) -> dict[str, Any]:
    """Return a Qwen2.5-Instruct config.json with the shapes given on the command line.

    Args:
        args: Parsed command line (layers, hidden, intermediate, heads, kv_heads,
            vocab_size, max_positions).
        tokenizer: The tokenizer, for the special token ids.

    Returns:
        The JSON object.
    """
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "vocab_size": args.vocab_size,
        "max_position_embeddings": args.max_positions,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": args.max_positions,
        "max_window_layers": args.layers,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.token_to_id(ENDOFTEXT),
        "eos_token_id": tokenizer.token_to_id(IM_END),
    }


def check_shape(args: argparse.Namespace) -> None:
    """Reject shapes vLLM cannot build a Qwen2 model from.

    Args:
        args: Parsed command line.

    Raises:
        ValueError: A size is not positive or the heads do not divide evenly.
    """
    sizes = {
        "--layers": args.layers,
        "--hidden": args.hidden,
        "--intermediate": args.intermediate,
        "--heads": args.heads,
        "--kv-heads": args.kv_heads,
        "--vocab-size": args.vocab_size,
        "--max-positions": args.max_positions,
        "--bpe-vocab": args.bpe_vocab,
    }
    for flag, value in sizes.items():
        if value <= 0:
            raise ValueError(f"{flag} must be positive, got {value}")
    if args.hidden % args.heads or args.heads % args.kv_heads:
        raise ValueError("--heads must divide --hidden and --kv-heads must divide --heads")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; defaults are Qwen2.5-7B-Instruct's shapes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="writes OUT_DIR/model and OUT_DIR/tok")
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--hidden", type=int, default=3584)
    parser.add_argument("--intermediate", type=int, default=18944)
    parser.add_argument("--heads", type=int, default=28)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=152064)
    parser.add_argument("--max-positions", type=int, default=32768)
    parser.add_argument("--bpe-vocab", type=int, default=32000, help="learned BPE vocabulary")
    parser.add_argument("--oran", type=Path, default=DATA_DIR / "oran-bench-13k")
    parser.add_argument("--hotpotqa", type=Path, default=DATA_DIR / "hotpotqa-dev-500")
    parser.add_argument("--max-texts", type=int, default=None, help="train on fewer strings")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the model folder and the tokenizer folder; return the exit status."""
    args = parse_args(argv)
    try:
        check_shape(args)
        texts = corpus_texts(args.oran, args.hotpotqa, args.max_texts)
        tokenizer = train_tokenizer(texts, args.bpe_vocab, args.vocab_size)
    except (FileNotFoundError, ValueError) as err:
        print(f"mkmodel: {err}", file=sys.stderr)
        return 2
    model_dir = args.out_dir / "model"
    tok_dir = args.out_dir / "tok"
    model_dir.mkdir(parents=True, exist_ok=True)
    tok_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(tok_dir / "tokenizer.json"))
    (tok_dir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(args.max_positions), indent=2), encoding="utf-8"
    )
    # No generation_config.json: vLLM would apply its sampling defaults to every request.
    (model_dir / "config.json").write_text(
        json.dumps(model_config(args, tokenizer), indent=2), encoding="utf-8"
    )
    learned = sum(1 for token in tokenizer.get_vocab() if not token.startswith("<|extra_"))
    print(
        f"wrote {model_dir}/config.json and {tok_dir} ({len(texts)} texts, "
        f"{learned} learned tokens, {tokenizer.get_vocab_size()} ids)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
