"""Strategy kinds by name: evalq's own, and those other packages add.

A kind (the part of a spec before ``:``) maps to a factory
``(spec, opts, run_config) -> Strategy``; ``parse_strategy`` splits a spec
(``kind:key=value,...``) and calls its kind's factory. A package adds kinds through the
``evalq.strategies`` entry-point group (entry-point name = kind, value = the factory),
loaded once, on the first lookup; ``register_strategy`` adds one from code.

This module sits above ``base`` and the built-in strategies (``fixed``, ``mdp``, ``ircot``,
``iter_retgen``, ``flare``): it imports them, they never import it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar, overload

from evalq.errors import UserError
from evalq.rag.strategies.base import Strategy
from evalq.rag.strategies.fixed import FixedK
from evalq.rag.strategies.flare import FLARE
from evalq.rag.strategies.ircot import IRCoT
from evalq.rag.strategies.iter_retgen import IterRetGen
from evalq.rag.strategies.mdp import MDPStrategy

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "evalq.strategies"

# spec, its key=value options, the run's stored strategy settings (its ``mdp`` section:
# preset parameters, thresholds, k_step, ...; empty when a spec is only checked at submit).
StrategyFactory = Callable[[str, dict[str, str], dict[str, Any]], Strategy]
F = TypeVar("F", bound=StrategyFactory)

_KIND = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
BUILTINS: Mapping[str, StrategyFactory] = {
    "fixed": FixedK.from_spec,
    "mdp": MDPStrategy.from_spec,
    # The adaptive methods papers compare against (docs/baselines.md).
    "ircot": IRCoT.from_spec,
    "iter-retgen": IterRetGen.from_spec,
    "flare": FLARE.from_spec,
}


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """A spec's kind and options: ``fixed:k=3`` -> ``("fixed", {"k": "3"})``.

    Raises:
        UserError: an option is not ``key=value``.
    """
    kind, _, rest = spec.partition(":")
    opts: dict[str, str] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise UserError(f"strategy {spec!r}: expected key=value, got {part!r}")
        opts[key.strip()] = value.strip()
    return kind, opts


def installed_plugins() -> Iterable[EntryPoint]:
    """The entry points of the ``evalq.strategies`` group on ``sys.path``."""
    return entry_points(group=ENTRY_POINT_GROUP)


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f", from {dist.name} {dist.version}" if dist is not None else ""
    return f"strategy plugin {ep.name!r} ({ep.value}{where})"


class StrategyRegistry:
    """Factories by kind: the built-ins, those registered in code, and installed plugins.

    Plugins load once, on the first lookup. One that fails to load is recorded against its
    kind: asking for that kind gives one error naming it; every other kind still works.

    Args:
        builtins: evalq's own kinds; nothing replaces them.
        plugins: Where plugin entry points come from (tests pass their own).
    """

    def __init__(
        self,
        builtins: Mapping[str, StrategyFactory] = BUILTINS,
        plugins: Callable[[], Iterable[EntryPoint]] = installed_plugins,
    ) -> None:
        self._factories: dict[str, StrategyFactory] = dict(builtins)
        self._builtins = frozenset(builtins)
        self._origins: dict[str, str] = {}  # kind -> plugin, for errors its factory raises
        self._broken: dict[str, str] = {}  # kind -> why its plugin did not load
        self._find_plugins = plugins
        self._loaded = False
        # Reentrant: a plugin module may call register_strategy while it is being loaded.
        self._lock = threading.RLock()

    def register(self, kind: str, factory: StrategyFactory, *, replace: bool = False) -> None:
        """Add a kind. Raises ``ValueError`` for a bad name, a built-in or a taken kind."""
        if not _KIND.fullmatch(kind):
            raise ValueError(f"strategy kind {kind!r}: use letters, digits, '_', '-' or '.'")
        with self._lock:
            if kind in self._builtins:
                raise ValueError(f"strategy kind {kind!r} is built into evalq")
            taken = self._factories.get(kind)
            if taken is not None and taken is not factory and not replace:
                raise ValueError(f"strategy kind {kind!r} is already registered ({taken!r})")
            self._factories[kind] = factory
            self._broken.pop(kind, None)

    def kinds(self) -> list[str]:
        """Every kind that can be parsed, plugins included."""
        self._load_plugins()
        return sorted(self._factories)

    def parse(self, spec: str, run_config: Mapping[str, Any] | None = None) -> Strategy:
        """Build the strategy a spec names (see ``parse_strategy``)."""
        kind, opts = split_spec(spec)
        self._load_plugins()
        with self._lock:
            factory = self._factories.get(kind)
            broken = self._broken.get(kind)
            origin = self._origins.get(kind)
        if factory is None:
            if broken is not None:
                raise UserError(broken)
            raise UserError(self._unknown(spec))
        if origin is None:
            return factory(spec, opts, dict(run_config or {}))
        try:
            strategy = factory(spec, opts, dict(run_config or {}))
        except UserError:
            raise
        except Exception as exc:  # a plugin's bug: name the plugin, not a bare traceback
            raise UserError(f"{origin} failed on {spec!r}: {type(exc).__name__}: {exc}") from exc
        if not (hasattr(strategy, "episode") and isinstance(getattr(strategy, "name", None), str)):
            raise UserError(f"{origin} returned {strategy!r}, not a strategy (name, episode)")
        return strategy

    def _unknown(self, spec: str) -> str:
        message = f"unknown strategy {spec!r}: use fixed:k=N, mdp, ircot, iter-retgen or flare"
        added = sorted(set(self._factories) - self._builtins)
        if added:
            message += f", or {', '.join(added)}"
        if self._broken:
            message += f" (plugins that failed to load: {', '.join(sorted(self._broken))})"
        return message

    def _load_plugins(self) -> None:
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            try:
                found = list(self._find_plugins())
            except Exception as exc:  # a broken installation must not stop the built-ins
                log.warning("could not list %s entry points: %s", ENTRY_POINT_GROUP, exc)
                return
            by_kind: dict[str, list[EntryPoint]] = {}
            for ep in found:
                by_kind.setdefault(ep.name, []).append(ep)
            for kind, eps in by_kind.items():
                self._load_one(kind, eps)

    def _load_one(self, kind: str, eps: list[EntryPoint]) -> None:
        origins = " and ".join(_origin(ep) for ep in eps)
        if kind in self._builtins:
            why = f"{origins}: {kind!r} is built into evalq; the plugin is ignored"
            log.warning(why)
            return
        if len({ep.value for ep in eps}) > 1:  # the same dist seen twice on sys.path is fine
            self._broken[kind] = f"strategy kind {kind!r} is installed twice: {origins}"
            log.warning(self._broken[kind])
            return
        ep = eps[0]
        if kind in self._factories:  # registered in code before the lookup: that one wins
            log.info("%s: %r is registered in code; the plugin is ignored", origins, kind)
            return
        try:
            if not _KIND.fullmatch(kind):
                raise ValueError("a kind is letters, digits, '_', '-' or '.'")
            factory = ep.load()
            if not callable(factory):
                raise TypeError(f"{ep.value} is not callable")
        except Exception as exc:
            self._broken[kind] = f"{_origin(ep)} failed to load: {type(exc).__name__}: {exc}"
            log.warning(self._broken[kind])
            return
        self._factories.setdefault(kind, factory)  # its module may have registered it itself
        self._origins[kind] = _origin(ep)


REGISTRY = StrategyRegistry()


@overload
def register_strategy(kind: str, factory: F, *, replace: bool = False) -> F: ...


@overload
def register_strategy(kind: str, *, replace: bool = False) -> Callable[[F], F]: ...


def register_strategy(
    kind: str, factory: F | None = None, *, replace: bool = False
) -> F | Callable[[F], F]:
    """Add a strategy kind from code; also usable as a decorator on the factory.

    A package that should work without code (``evalq submit --strategy kind:...`` and the
    workers) declares its factory as an ``evalq.strategies`` entry point instead.

    Args:
        kind: The spec's prefix, e.g. ``rewrite`` for ``rewrite:k=3``.
        factory: ``(spec, opts, run_config) -> Strategy``; raises ``UserError`` on bad options.
        replace: Replace a kind registered before (never a built-in one).

    Raises:
        ValueError: a bad or built-in kind, or one already registered.
    """
    if factory is not None:
        REGISTRY.register(kind, factory, replace=replace)
        return factory

    def decorate(f: F) -> F:
        REGISTRY.register(kind, f, replace=replace)
        return f

    return decorate


def strategy_kinds() -> list[str]:
    """Every strategy kind available here: built-ins, registered ones, installed plugins."""
    return REGISTRY.kinds()


def parse_strategy(spec: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """Build a strategy from its spec: ``fixed:k=3``, ``mdp``, ``ircot:k=2,steps=4``, ...

    ``fixed:k=0`` is closed book; ``iter-retgen:k=3,rounds=3`` and ``flare:theta=0.5`` are
    the other built-ins (see docs/baselines.md).

    Args:
        spec: ``kind`` or ``kind:key=value,...``.
        params: The run's stored strategy settings (its ``mdp`` section), passed to the
            kind's factory; none when the spec is only checked.

    Raises:
        UserError: the spec names no known strategy, a plugin that failed to load, or has a
            malformed parameter.
    """
    return REGISTRY.parse(spec, params)
