"""Drive many episodes against one engine, step-synchronously.

Every round, each in-flight episode has one pending action. Retrievals are grouped per
corpus into one batched search; generations go to the engine as one batch. This keeps the
engine full (the original ran one question at a time) while episodes stay simple
sequential generators.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from evalq.models.base import Engine, Generation, GenerationRequest
from evalq.rag.episode import EpisodeGenerator, EpisodeResult, RetrievalRequest, Retrieved
from evalq.rag.retrievers import Hit

log = logging.getLogger(__name__)


class Retrievers(Protocol):
    """Batched search over named corpora."""

    def search(
        self, corpus: str, queries: list[str], k: int, exclude: list[frozenset[str]]
    ) -> list[list[Hit]]:
        """Top-k unseen hits per query."""
        ...


@dataclass
class PendingEpisode:
    """An episode to run, with what to record if its generator raises."""

    generator: EpisodeGenerator
    on_error: Callable[[str], EpisodeResult]


class Driver(Protocol):
    """Runs episodes against an engine and yields each result as it finishes."""

    def __call__(
        self,
        episodes: Iterable[PendingEpisode],
        engine: Engine,
        retrievers: Retrievers,
        *,
        concurrency: int,
        should_stop: Callable[[], bool],
    ) -> Iterator[EpisodeResult]:
        """Drive ``episodes``; never more than ``concurrency`` in flight."""
        ...


@dataclass
class _Active:
    episode: PendingEpisode
    action: Any


def run_episodes(
    episodes: Iterable[PendingEpisode],
    engine: Engine,
    retrievers: Retrievers,
    *,
    concurrency: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[EpisodeResult]:
    """Run ``episodes`` with at most ``concurrency`` in flight; yield each as it finishes.

    An episode whose own code raises, or whose request the engine refuses (a prompt longer
    than the model's context), is finished as an error result with the reason; an engine
    failure propagates (the whole shard is then retried by the broker).
    """
    source = iter(episodes)
    active: list[_Active] = []
    exhausted = False
    while True:
        while not exhausted and len(active) < concurrency and not should_stop():
            pending = next(source, None)
            if pending is None:
                exhausted = True
                break
            started = _advance(pending, None, first=True)
            if isinstance(started, EpisodeResult):
                yield started
            else:
                active.append(_Active(pending, started))
        if not active:
            return
        replies = _serve(active, engine, retrievers)
        still: list[_Active] = []
        for item, reply in zip(active, replies, strict=True):
            nxt = _advance(item.episode, reply, first=False)
            if isinstance(nxt, EpisodeResult):
                yield nxt
            else:
                item.action = nxt
                still.append(item)
        active = still


def _advance(pending: PendingEpisode, reply: Any, *, first: bool) -> Any:
    """Send ``reply`` into the episode; return its next action or its result.

    A refused generation ends the episode as an error with the engine's reason: the episode
    cannot go on without the reply, and the rest of the shard can.
    """
    if isinstance(reply, Generation) and reply.error is not None:
        try:
            pending.generator.close()
        except Exception:  # its cleanup failing changes nothing: it ends as an error anyway
            log.exception("episode failed while closing")
        return pending.on_error(reply.error)
    try:
        return next(pending.generator) if first else pending.generator.send(reply)
    except StopIteration as stop:
        result: EpisodeResult = stop.value
        return result
    except Exception as exc:  # an episode's own bug must not sink the shard
        log.exception("episode failed")
        return pending.on_error(f"{type(exc).__name__}: {exc}")


def _serve(active: list[_Active], engine: Engine, retrievers: Retrievers) -> list[Any]:
    """Answer every pending action: one search per corpus, one engine batch."""
    replies: list[Any] = [None] * len(active)
    by_corpus: dict[tuple[str, int], list[int]] = defaultdict(list)
    gen_idx: list[int] = []
    for i, item in enumerate(active):
        if isinstance(item.action, RetrievalRequest):
            by_corpus[(item.action.corpus, item.action.k)].append(i)
        elif isinstance(item.action, GenerationRequest):
            gen_idx.append(i)
        else:
            raise TypeError(f"episode yielded {type(item.action).__name__}, not an action")
    for (corpus, k), idx in by_corpus.items():
        reqs: list[RetrievalRequest] = [active[i].action for i in idx]
        t0 = time.perf_counter()
        hits = retrievers.search(corpus, [r.query for r in reqs], k, [r.exclude for r in reqs])
        per = (time.perf_counter() - t0) / len(idx)
        for i, h in zip(idx, hits, strict=True):
            replies[i] = Retrieved(h, per)
    if gen_idx:
        gens = engine.generate([active[i].action for i in gen_idx])
        for i, g in zip(gen_idx, gens, strict=True):
            replies[i] = g
    return replies
