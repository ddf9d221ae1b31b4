"""The real engine: one vLLM ``LLM`` per worker process, fed whole batches."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
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
        "scheduling_policy": settings.scheduling_policy,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


def max_num_seqs(engine: Any) -> int | None:
    """The sequences a built vLLM engine batches per step (its scheduler's limit)."""
    seqs = getattr(
        getattr(getattr(engine, "vllm_config", None), "scheduler_config", None),
        "max_num_seqs",
        None,
    )
    return seqs if isinstance(seqs, int) else None


def max_model_len(engine: Any) -> int | None:
    """The context of a built vLLM engine (``LLMEngine`` or ``AsyncLLM``), in tokens."""
    length = getattr(getattr(engine, "model_config", None), "max_model_len", None)
    return length if isinstance(length, int) else None


def context_error(prompt_tokens: int, max_tokens: int, context: int | None) -> str | None:
    """Why a prompt cannot be served in the model's context; ``None`` when it fits.

    The prompt plus every token it may generate must fit. vLLM itself refuses only a prompt
    that leaves no room at all and silently cuts the rest short at the context's end; a cut
    answer would be scored as a wrong one, so a strategy with longer prompts would lose
    points to the model's context rather than to its answers. Refusing keeps every ``ok``
    episode on the same generation budget and says why the others are not.
    """
    if context is None or prompt_tokens + max_tokens <= context:
        return None
    if prompt_tokens > context:
        return f"prompt of {prompt_tokens:,} tokens exceeds the model's context of {context:,}"
    return (
        f"prompt of {prompt_tokens:,} tokens plus {max_tokens:,} to generate exceeds the "
        f"model's context of {context:,}"
    )


def load_error(settings: EngineSettings, exc: Exception) -> UserError:
    """A model that cannot load, as one line for the user."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"cannot load model {settings.model!r}: {first}")


def sampling_params(
    request: GenerationRequest,
    *,
    detokenize: bool = True,
    choice_ids: Sequence[int] | None = None,
) -> SamplingParams:
    """The sampling parameters of one request, for vLLM (``detokenize=False``: ids only).

    A choices request is one token, with the log-probabilities of ``choice_ids`` (the token
    ids of its choices' spellings, see ``ChoiceTokens``): vLLM returns those ids' values
    whatever their rank, where a top-N list would miss a choice ranked below N. A
    ``logprobs`` request asks for the top 0: vLLM then returns the sampled token's own
    log-probability at each position, and nothing else.
    """
    from vllm import SamplingParams

    judged = request.choices is not None
    return SamplingParams(
        max_tokens=1 if judged else request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        ignore_eos=request.ignore_eos,
        detokenize=detokenize,
        logprobs=0 if request.logprobs and not judged else None,
        logprob_token_ids=sorted(choice_ids) if judged and choice_ids else None,
    )


def choice_spellings(choice: str) -> tuple[str, ...]:
    """The case and leading-space variants of a choice word a model may write."""
    cases = dict.fromkeys([choice, choice.lower(), choice.capitalize(), choice.upper()])
    return tuple(dict.fromkeys(v for c in cases for v in (c, " " + c)))


class ChoiceTokens:
    """Token ids of each choice's one-token spellings, tokenized once per set of choices.

    The engines run with ``detokenize=False``, so their log-probabilities come keyed by
    token id: the choices are matched by id. A spelling that takes several tokens is left
    out (its first token would also stand for other words).
    """

    def __init__(self, encode: Callable[[Sequence[str]], list[list[int]]]) -> None:
        """Tokenize with ``encode`` (texts to token ids, no special tokens)."""
        self._encode = encode
        self._ids: dict[tuple[str, ...], dict[str, frozenset[int]]] = {}
        self._lock = threading.Lock()

    def all_ids(self, choices: tuple[str, ...] | None) -> list[int] | None:
        """Every token id of the choices' spellings (``None`` for a request without)."""
        if choices is None:
            return None
        return sorted(set().union(*self.ids(choices).values()))

    def ids(self, choices: tuple[str, ...]) -> dict[str, frozenset[int]]:
        """Choice -> the ids of its one-token spellings."""
        with self._lock:
            known = self._ids.get(choices)
            if known is None:
                spellings = {c: choice_spellings(c) for c in choices}
                flat = [v for c in choices for v in spellings[c]]
                encoded = dict(zip(flat, self._encode(flat), strict=True))
                known = {
                    c: frozenset(encoded[v][0] for v in spellings[c] if len(encoded[v]) == 1)
                    for c in choices
                }
                self._ids[choices] = known
            return known

    def logprobs(self, choices: tuple[str, ...], top: Mapping[int, Any] | None) -> dict[str, float]:
        """Per choice, the log of its spellings' summed probability in ``top``.

        ``top`` is vLLM's token id -> ``Logprob`` of the first generated token (the
        requested ids, plus the sampled token); a choice with no spelling in it, or none
        that is one token, gets ``-inf``.
        """
        out: dict[str, float] = {}
        for choice, ids in self.ids(choices).items():
            probs = [math.exp(_logprob(lp)) for t, lp in (top or {}).items() if t in ids]
            out[choice] = math.log(sum(probs)) if probs and sum(probs) > 0 else -math.inf
        return out


def _logprob(value: Any) -> float:
    """The float of a vLLM ``Logprob`` (or of a plain float)."""
    return float(getattr(value, "logprob", value))


def first_token_logprobs(output: Any) -> Mapping[int, Any] | None:
    """The top log-probabilities of a completion's first token (``None`` if not asked)."""
    logprobs = getattr(output, "logprobs", None)
    return logprobs[0] if logprobs else None


def sampled_logprobs(output: Any) -> tuple[float, ...] | None:
    """Each generated token's own log-probability (``None`` when they were not asked for).

    vLLM returns, per position, token id -> ``Logprob`` for the top N and the sampled token;
    with N = 0 only the sampled one.
    """
    logprobs = getattr(output, "logprobs", None)
    if logprobs is None:
        return None
    return tuple(
        _logprob(position[token]) if position and token in position else -math.inf
        for token, position in zip(output.token_ids, logprobs, strict=True)
    )


def prefixes(ids: Sequence[int]) -> list[list[int]]:
    """``ids[:1]``, ``ids[:2]``, ... ``ids``: decoded, they give each token's text."""
    return [list(ids[: n + 1]) for n in range(len(ids))]


def token_texts(prefix_texts: Sequence[str], text: str) -> tuple[str, ...]:
    """The text each generated token added, from the texts of the generation's prefixes.

    Token ``n`` adds what the decoded prefix of ``n + 1`` tokens has of ``text`` beyond the
    prefix of ``n``. Decoding a prefix rather than a token alone keeps what a tokenizer
    does across tokens (a word's leading space, a character split over byte tokens, which
    alone decodes to U+FFFD): the texts join to ``text`` exactly.
    """
    texts: list[str] = []
    start = 0
    for n, prefix in enumerate(prefix_texts):
        end = len(text) if n == len(prefix_texts) - 1 else max(start, _common_length(prefix, text))
        texts.append(text[start:end])
        start = end
    return tuple(texts)


def _common_length(a: str, b: str) -> int:
    """The length of the longest common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


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
                    "logprobs": p.logprobs,
                    "logprob_token_ids": p.logprob_token_ids,
                }
            )
            + "\n"
            for prompt, p in zip(prompts, params, strict=True)
        ]
        data = "".join(lines).encode("utf-8")
        # One O_APPEND write per batch: workers sharing a GPU (`--workers-per-gpu`) record to
        # one file, and a buffered file would split a long batch into interleaving writes.
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)


class TokenCodec:
    """Prompts to token ids and token ids to text, many at a time, in the tokenizer's Rust code.

    vLLM tokenizes each text prompt on its caller's thread, one by one, and detokenizes every
    new token as it is generated. A worker with a thousand episodes in flight spent a quarter
    of its run there, on the thread that also feeds the engine (docs/benchmarks.md). Batched
    ``encode_batch``/``decode_batch`` run in parallel in Rust without the GIL; the engine then
    gets token ids and skips detokenizing. Prompts are rendered chat templates, which carry
    their own special tokens, so none are added (vLLM's chat path does the same).
    """

    def __init__(self, backend: Any) -> None:
        """Wrap a ``tokenizers.Tokenizer``."""
        self.backend = backend

    @classmethod
    def of(cls, tokenizer: Any) -> TokenCodec | None:
        """The codec of a Hugging Face fast tokenizer; ``None`` for any other kind."""
        try:
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - vLLM depends on it
            return None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        return cls(backend) if isinstance(backend, Tokenizer) else None

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added."""
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Text of each token-id list, special tokens skipped (as vLLM's detokenizer does)."""
        return list(self.backend.decode_batch([list(i) for i in ids], skip_special_tokens=True))


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

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of rendered prompts with the tokenizer itself (no fast codec at hand)."""
        return [list(self.tokenizer.encode(p, add_special_tokens=False)) for p in prompts]


class VLLMEngine:
    """vLLM behind the ``Engine`` protocol; prompts go through the model's chat template."""

    def __init__(self, settings: EngineSettings) -> None:
        """Build the engine once (the expensive part: weights, KV cache, compilation)."""
        from vllm import LLM

        t0 = time.perf_counter()
        try:
            llm = LLM(**engine_kwargs(settings))
        except (OSError, ValueError) as exc:
            raise load_error(settings, exc) from exc
        self._attach(llm, time.perf_counter() - t0, PromptRecorder.from_env())
        log.info("vLLM engine for %s ready in %.1f s", settings.model, self.start_s)

    @classmethod
    def from_llm(cls, llm: Any) -> VLLMEngine:
        """An engine over an ``LLM`` that is already built (benchmarks share one)."""
        engine = cls.__new__(cls)
        engine._attach(llm, 0.0, PromptRecorder(None))
        return engine

    def _attach(self, llm: Any, start_s: float, recorder: PromptRecorder) -> None:
        """Serve through ``llm``: its tokenizer renders, encodes and decodes."""
        self.llm = llm
        self.start_s = start_s
        self.renderer = ChatRenderer(llm.get_tokenizer())
        self.tokenizer = self.renderer.tokenizer
        self.codec = TokenCodec.of(self.tokenizer)
        self.max_num_seqs = max_num_seqs(llm.llm_engine)
        self.max_model_len = max_model_len(llm.llm_engine)
        self.recorder = recorder
        self.choices = ChoiceTokens(self.encode)

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text for a conversation (chat template, or a plain fallback)."""
        return self.renderer.render(messages)

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of rendered prompts (the fast codec where there is one)."""
        return self.codec.encode(prompts) if self.codec else self.renderer.encode(prompts)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One ``LLM.generate`` call for the whole batch; latency is the batch's wall time.

        A request whose prompt does not fit the context is refused alone
        (``Generation.refused``); vLLM would fail the whole batch for it.
        """
        if not requests:
            return []
        prompts = [self.render(r.messages) for r in requests]
        t0 = time.perf_counter()
        ids = self.encode(prompts)
        refusals = [
            context_error(len(i), r.max_tokens, self.max_model_len)
            for i, r in zip(ids, requests, strict=True)
        ]
        served = [n for n, why in enumerate(refusals) if why is None]
        params = [
            sampling_params(
                requests[n],
                detokenize=self.codec is None,
                choice_ids=self.choices.all_ids(requests[n].choices),
            )
            for n in served
        ]
        inputs: list[Any] = [{"prompt_token_ids": ids[n]} for n in served]
        outs = self.llm.generate(inputs, params, use_tqdm=False) if served else []
        texts = (
            [o.outputs[0].text for o in outs]
            if self.codec is None
            else self.codec.decode([o.outputs[0].token_ids for o in outs])
        )
        pieces = [
            self._token_texts(o.outputs[0].token_ids, text) if requests[n].logprobs else None
            for n, o, text in zip(served, outs, texts, strict=True)
        ]
        elapsed = time.perf_counter() - t0
        self.recorder.record([prompts[n] for n in served], params)
        replies = [
            Generation.refused(why, len(i)) if why else None
            for i, why in zip(ids, refusals, strict=True)
        ]
        for n, o, text, tokens in zip(served, outs, texts, pieces, strict=True):
            choices = requests[n].choices
            replies[n] = Generation(
                text=text,
                prompt_tokens=len(o.prompt_token_ids or ()),
                completion_tokens=len(o.outputs[0].token_ids),
                latency_s=elapsed,
                choice_logprobs=None
                if choices is None
                else self.choices.logprobs(choices, first_token_logprobs(o.outputs[0])),
                token_logprobs=None if tokens is None else sampled_logprobs(o.outputs[0]),
                tokens=tokens,
            )
        return [g for g in replies if g is not None]

    def _token_texts(self, ids: Sequence[int], text: str) -> tuple[str, ...]:
        """Each generated token's text (see ``token_texts``), decoded as ``text`` was."""
        if self.codec is not None:
            decoded = self.codec.decode(prefixes(ids))
        else:
            decoded = [self.tokenizer.decode(p, skip_special_tokens=True) for p in prefixes(ids)]
        return token_texts(decoded, text)
