"""The real engine, asynchronous: vLLM's ``AsyncLLM`` on an event loop of its own.

Each request is submitted the moment an episode asks for it and returns the moment it is
done, so the engine keeps its batch full while episodes take different numbers of steps
(``evalq.rag.async_runner`` drives them). The engine settings are those of ``LLM()``: the
engine is built with ``LLM``'s usage context so that vLLM picks the same batch limits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

from evalq.config import EngineSettings
from evalq.models.async_engine import LoopThread, MicroBatcher
from evalq.models.base import ChatMessage, Generation, GenerationRequest
from evalq.models.vllm import (
    ChatRenderer,
    ChoiceTokens,
    PromptRecorder,
    TokenCodec,
    context_error,
    engine_kwargs,
    first_token_logprobs,
    load_error,
    max_model_len,
    max_num_seqs,
    prefixes,
    sampled_logprobs,
    sampling_params,
    token_texts,
)

log = logging.getLogger(__name__)

# Prompts tokenized (or outputs decoded) at once: big enough to spread over the cores, small
# enough that the engine gets the first of a wave of prompts without waiting for all.
CODEC_BATCH = 256


class VLLMAsyncEngine:
    """``AsyncLLM`` behind both the ``Engine`` and the ``AsyncEngine`` protocols."""

    def __init__(self, settings: EngineSettings) -> None:
        """Build the engine once, on its loop (vLLM binds its output handler to that loop)."""
        self.settings = settings
        self._thread = LoopThread("evalq-vllm")
        self._ids = itertools.count()
        t0 = time.perf_counter()
        try:
            self.llm = self._thread.run(self._build(settings))
        except (OSError, ValueError) as exc:
            self._thread.stop()
            raise load_error(settings, exc) from exc
        self.start_s = time.perf_counter() - t0
        self.renderer = ChatRenderer(self.llm.get_tokenizer())
        self.recorder = PromptRecorder.from_env()
        # Tokenizing and detokenizing leave the loop: the requests of one loop tick go to a
        # thread as one batch (see TokenCodec). Without a fast tokenizer vLLM does both.
        self.codec = TokenCodec.of(self.renderer.tokenizer)
        codec_encode = self.codec.encode if self.codec is not None else None
        # Choice words are few and tokenized once each, on the loop.
        self.choices = ChoiceTokens(codec_encode or self.renderer.encode)
        self.max_num_seqs = max_num_seqs(self.llm)
        self.max_model_len = max_model_len(self.llm)
        self._codec_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="evalq-tokenize"
        )
        self._encoder: MicroBatcher[str, list[int]] | None = None
        self._decoder: MicroBatcher[list[int], str] | None = None
        if self.codec is not None:
            codec = self.codec
            self._encoder = MicroBatcher(
                self.loop,
                lambda _, texts: codec.encode(texts),
                executor=self._codec_thread,
                max_batch=CODEC_BATCH,
            )
            self._decoder = MicroBatcher(
                self.loop,
                lambda _, ids: codec.decode(ids),
                executor=self._codec_thread,
                max_batch=CODEC_BATCH,
            )
        # vLLM refuses a priority unless it schedules by priority.
        self._by_priority = settings.scheduling_policy == "priority"
        log.info("vLLM async engine for %s ready in %.1f s", settings.model, self.start_s)

    @staticmethod
    async def _build(settings: EngineSettings) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        from evalq.models.timeline import timeline_loggers

        args = AsyncEngineArgs(**engine_kwargs(settings))
        return AsyncLLM.from_engine_args(
            args, usage_context=UsageContext.LLM_CLASS, stat_loggers=timeline_loggers()
        )

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop every ``agenerate`` runs on."""
        return self._thread.loop

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text for a conversation."""
        return self.renderer.render(messages)

    async def agenerate(self, request: GenerationRequest) -> Generation:
        """One request; latency is its own time from submission to its last token.

        A prompt that does not fit the context is refused (``Generation.refused``) before
        it reaches vLLM.
        """
        from vllm.sampling_params import RequestOutputKind

        prompt = self.render(request.messages)
        params = sampling_params(
            request,
            detokenize=self._encoder is None,
            choice_ids=self.choices.all_ids(request.choices),
        )
        # Only the finished output is wanted: no per-token streaming overhead.
        params.output_kind = RequestOutputKind.FINAL_ONLY
        t0 = time.perf_counter()
        final = None
        priority = request.priority if self._by_priority else 0
        request_id = f"evalq-{next(self._ids)}"
        if self._encoder is not None:
            ids = await self._encoder.submit(prompt)
        else:  # a slow tokenizer: rare, so on the loop
            ids = self.renderer.encode([prompt])[0]
        refused = context_error(len(ids), request.max_tokens, self.max_model_len)
        if refused is not None:
            return Generation.refused(refused, len(ids))
        inputs: Any = {"prompt_token_ids": ids}
        async for out in self.llm.generate(inputs, params, request_id, priority=priority):
            final = out
        if final is None:
            raise RuntimeError("vLLM returned no output for a request")
        token_ids = final.outputs[0].token_ids
        tokens: tuple[str, ...] | None = None
        if self._decoder is not None and request.logprobs and token_ids:
            # Every prefix is decoded (see token_texts); the longest is the whole text.
            decoder = self._decoder
            decoded = await asyncio.gather(*(decoder.submit(p) for p in prefixes(token_ids)))
            text = decoded[-1]
            tokens = token_texts(decoded, text)
        elif self._decoder is not None:
            text = await self._decoder.submit(list(token_ids))
        else:
            text = final.outputs[0].text
        if request.logprobs and tokens is None:
            tokenizer = self.renderer.tokenizer  # no fast codec (rare): on the loop
            decoded = [tokenizer.decode(p, skip_special_tokens=True) for p in prefixes(token_ids)]
            tokens = token_texts(decoded, text)
        elapsed = time.perf_counter() - t0
        self.recorder.record([prompt], [params])
        return Generation(
            text=text,
            prompt_tokens=len(final.prompt_token_ids or ()),
            completion_tokens=len(token_ids),
            latency_s=elapsed,
            choice_logprobs=None
            if request.choices is None
            else self.choices.logprobs(request.choices, first_token_logprobs(final.outputs[0])),
            token_logprobs=sampled_logprobs(final.outputs[0]) if request.logprobs else None,
            tokens=tokens,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """A whole batch at once (all submitted together), in order."""

        async def batch() -> list[Generation]:
            return list(await asyncio.gather(*(self.agenerate(r) for r in requests)))

        return self._thread.run(batch()) if requests else []

    def close(self) -> None:
        """Shut the engine down (its core process too) and stop the loop."""
        try:
            self.llm.shutdown()
        finally:
            self._thread.stop()
            self._codec_thread.shutdown(wait=False, cancel_futures=True)
