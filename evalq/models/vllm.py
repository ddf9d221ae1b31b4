"""The real engine: one vLLM ``LLM`` per worker process, fed whole batches."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evalq.config import EngineSettings
from evalq.errors import UserError
from evalq.models.base import ChatMessage, Generation, GenerationRequest

if TYPE_CHECKING:
    from vllm import SamplingParams

log = logging.getLogger(__name__)

# Benchmarks set this to a file path: every prompt sent, with its sampling, is appended to it
# as JSON Lines, so that the same prompts can be replayed as one ideal batch.
RECORD_ENV = "EVALQ_RECORD_PROMPTS"


def engine_kwargs(settings: EngineSettings) -> dict[str, Any]:
    """The engine arguments for vLLM from the settings (unset ones left to its defaults)."""
    kwargs: dict[str, Any] = {
        "model": settings.model,
        "tokenizer": settings.tokenizer,
        "load_format": settings.load_format,
        "dtype": settings.dtype,
        "quantization": settings.quantization,
        "max_model_len": settings.max_model_len,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "enforce_eager": settings.enforce_eager,
        "seed": settings.seed,
        "max_num_seqs": settings.max_num_seqs,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def load_error(settings: EngineSettings, exc: Exception) -> UserError:
    """A model that cannot load, as one line for the user."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"cannot load model {settings.model!r}: {first}")


def sampling_params(request: GenerationRequest) -> SamplingParams:
    """The sampling parameters of one request, for vLLM."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        ignore_eos=request.ignore_eos,
    )


class PromptRecorder:
    """Appends every prompt sent, with its sampling, to a JSON Lines file (benchmarks only).

    The file is named by ``$EVALQ_RECORD_PROMPTS``, read once when the engine is built; the
    benchmark replays the recorded prompts as one ideal batch.
    """

    def __init__(self, path: str | None) -> None:
        """Record to ``path``; ``None`` records nothing."""
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> PromptRecorder:
        """The recorder ``$EVALQ_RECORD_PROMPTS`` asks for."""
        return cls(os.environ.get(RECORD_ENV) or None)

    def record(self, prompts: Sequence[str], params: Sequence[SamplingParams]) -> None:
        """Append one line per prompt."""
        if self.path is None:
            return
        lines = [
            json.dumps(
                {
                    "prompt": prompt,
                    "max_tokens": p.max_tokens,
                    "temperature": p.temperature,
                    "top_p": p.top_p,
                    "seed": p.seed,
                    "ignore_eos": p.ignore_eos,
                }
            )
            + "\n"
            for prompt, p in zip(prompts, params, strict=True)
        ]
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(lines))


class ChatRenderer:
    """Conversations to prompt text through the tokenizer's chat template."""

    def __init__(self, tokenizer: Any) -> None:
        """Use ``tokenizer``'s chat template, or a plain fallback where it has none."""
        self.tokenizer = tokenizer
        self._has_template = bool(getattr(tokenizer, "chat_template", None))

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text for a conversation."""
        if self._has_template:
            rendered = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
            return str(rendered)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"


class VLLMEngine:
    """vLLM behind the ``Engine`` protocol; prompts go through the model's chat template."""

    def __init__(self, settings: EngineSettings) -> None:
        """Build the engine once (the expensive part: weights, KV cache, compilation)."""
        from vllm import LLM

        t0 = time.perf_counter()
        try:
            self.llm = LLM(**engine_kwargs(settings))
        except (OSError, ValueError) as exc:
            raise load_error(settings, exc) from exc
        self.start_s = time.perf_counter() - t0
        self.renderer = ChatRenderer(self.llm.get_tokenizer())
        self.tokenizer = self.renderer.tokenizer
        self.recorder = PromptRecorder.from_env()
        log.info("vLLM engine for %s ready in %.1f s", settings.model, self.start_s)

    @classmethod
    def from_llm(cls, llm: Any) -> VLLMEngine:
        """An engine over an ``LLM`` that is already built (benchmarks share one)."""
        engine = cls.__new__(cls)
        engine.llm = llm
        engine.start_s = 0.0
        engine.renderer = ChatRenderer(llm.get_tokenizer())
        engine.tokenizer = engine.renderer.tokenizer
        engine.recorder = PromptRecorder(None)
        return engine

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text for a conversation (chat template, or a plain fallback)."""
        return self.renderer.render(messages)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One ``LLM.generate`` call for the whole batch; latency is the batch's wall time."""
        if not requests:
            return []
        prompts = [self.render(r.messages) for r in requests]
        params = [sampling_params(r) for r in requests]
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        self.recorder.record(prompts, params)
        return [
            Generation(
                text=o.outputs[0].text,
                prompt_tokens=len(o.prompt_token_ids or ()),
                completion_tokens=len(o.outputs[0].token_ids),
                latency_s=elapsed,
            )
            for o in outs
        ]
