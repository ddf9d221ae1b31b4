"""The real engine: one vLLM ``LLM`` per worker process, fed whole batches."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from evalq.config import EngineSettings
from evalq.errors import UserError
from evalq.models.base import ChatMessage, Generation, GenerationRequest

log = logging.getLogger(__name__)


class VLLMEngine:
    """vLLM behind the ``Engine`` protocol; prompts go through the model's chat template."""

    def __init__(self, settings: EngineSettings) -> None:
        """Build the engine once (the expensive part: weights, KV cache, compilation)."""
        from vllm import LLM

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
        }
        if settings.max_num_seqs is not None:
            kwargs["max_num_seqs"] = settings.max_num_seqs
        if settings.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = settings.max_num_batched_tokens
        t0 = time.perf_counter()
        try:
            self.llm = LLM(**{k: v for k, v in kwargs.items() if v is not None})
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot load model {settings.model!r}: {first}") from exc
        self.start_s = time.perf_counter() - t0
        self.tokenizer = self.llm.get_tokenizer()
        self._has_template = bool(getattr(self.tokenizer, "chat_template", None))
        log.info("vLLM engine for %s ready in %.1f s", settings.model, self.start_s)

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text for a conversation (chat template, or a plain fallback)."""
        if self._has_template:
            rendered = self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
            return str(rendered)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One ``LLM.generate`` call for the whole batch; latency is the batch's wall time."""
        from vllm import SamplingParams

        if not requests:
            return []
        prompts = [self.render(r.messages) for r in requests]
        params = [
            SamplingParams(
                max_tokens=r.max_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                seed=r.seed,
                ignore_eos=r.ignore_eos,
            )
            for r in requests
        ]
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        return [
            Generation(
                text=o.outputs[0].text,
                prompt_tokens=len(o.prompt_token_ids or ()),
                completion_tokens=len(o.outputs[0].token_ids),
                latency_s=elapsed,
            )
            for o in outs
        ]
