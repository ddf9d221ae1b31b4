"""What keeps a vLLM engine fed: tokenizing off its loop, and enough episodes in flight."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from evalq.models.registry import tiny_model_dir
from evalq.models.vllm import ChatRenderer, TokenCodec
from evalq.worker.main import DEFAULT_EPISODES_IN_FLIGHT, episodes_in_flight


@pytest.fixture(scope="module")
def tokenizer() -> object:
    """The tiny model's tokenizer (a byte-level BPE with Qwen's chat template)."""
    return AutoTokenizer.from_pretrained(tiny_model_dir())


def test_the_codec_tokenizes_rendered_chats_exactly_as_the_tokenizer_does(
    tokenizer: object,
) -> None:
    codec = TokenCodec.of(tokenizer)
    assert codec is not None
    renderer = ChatRenderer(tokenizer)
    prompts = [
        renderer.render(
            (
                {"role": "system", "content": "Answer with one option."},
                {"role": "user", "content": f"Question {i}: what is the fronthaul? ünïcode {i}"},
            )
        )
        for i in range(20)
    ]
    ids = codec.encode(prompts)
    assert ids == [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]  # type: ignore[operator]
    # Special tokens of the template are single ids, not spelled out.
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")  # type: ignore[attr-defined]
    assert all(seq.count(im_start) == 3 for seq in ids)  # system, user, assistant turn
    texts = ["The answer is 3.", "ünïcode, and <b>markup</b>", ""]
    encoded = [tokenizer.encode(t, add_special_tokens=False) for t in texts]  # type: ignore[attr-defined]
    assert codec.decode([[*e, im_start] for e in encoded]) == texts  # specials are dropped


def test_a_tokenizer_without_a_rust_backend_has_no_codec() -> None:
    assert TokenCodec.of(object()) is None


class Sized:
    def __init__(self, max_num_seqs: object) -> None:
        self.max_num_seqs = max_num_seqs


@pytest.mark.parametrize(
    ("seqs", "want"),
    [
        (1024, 2048),  # an H100's default batch
        (48, 96),
        (None, DEFAULT_EPISODES_IN_FLIGHT),  # test engines and others that do not say
        ("many", DEFAULT_EPISODES_IN_FLIGHT),
    ],
)
def test_a_worker_keeps_twice_its_engines_batch_in_flight(seqs: object, want: int) -> None:
    assert episodes_in_flight(Sized(seqs)) == want  # type: ignore[arg-type]
