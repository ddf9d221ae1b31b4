"""Strategy kinds by registration: built-ins, code, entry points, and broken plugins."""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

import evalq
from evalq.errors import UserError
from evalq.rag.strategies import registry
from evalq.rag.strategies.fixed import FixedK
from evalq.rag.strategies.mdp import MDPStrategy
from evalq.rag.strategies.registry import ENTRY_POINT_GROUP, StrategyRegistry

STRATEGIES = Path(registry.__file__).parent


@dataclass(frozen=True)
class Named:
    name: str

    def episode(self, question: Any, ctx: Any) -> Any:
        raise NotImplementedError


def named(spec: str, opts: dict[str, str], run_config: dict[str, Any]) -> Named:
    return Named(f"{spec}|{sorted(opts.items())}|{sorted(run_config)}")


def plugins(*eps: tuple[str, str]) -> list[EntryPoint]:
    return [EntryPoint(name=n, value=v, group=ENTRY_POINT_GROUP) for n, v in eps]


@pytest.fixture
def plugin_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Importable plugin modules: one good, one that fails on import."""
    (tmp_path / "good_plugin.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            @dataclass(frozen=True)
            class Good:
                k: int
                name: str = "good"

                def episode(self, question, ctx):
                    raise NotImplementedError

            def factory(spec, opts, run_config):
                return Good(int(opts.get("k", "1")))

            def buggy(spec, opts, run_config):
                return 1 / 0

            def not_a_strategy(spec, opts, run_config):
                return "fixed:k=3"
            """
        )
    )
    (tmp_path / "broken_plugin.py").write_text("import no_such_dependency_of_a_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_built_in_kinds_parse_as_before() -> None:
    assert evalq.parse_strategy("fixed:k=3") == FixedK(3)
    assert evalq.parse_strategy("fixed:k=0").name == "fixed:k=0"
    mdp = evalq.parse_strategy("mdp", {"k_step": 2, "theta_star": 0.5})
    assert isinstance(mdp, MDPStrategy) and (mdp.k_step, mdp.theta_star) == (2, 0.5)
    assert {"fixed", "mdp", "ircot", "iter-retgen", "flare"} <= set(evalq.strategy_kinds())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("magic", "unknown strategy 'magic': use fixed:k=N, mdp, ircot, iter-retgen or flare"),
        ("fixed:k=-1", "strategy 'fixed:k=-1': use fixed:k=N with N >= 0 (k=0 is closed-book)"),
        ("fixed:k=3,j=1", "strategy 'fixed:k=3,j=1': use fixed:k=N with N >= 0"),
        ("fixed", "strategy 'fixed': use fixed:k=N"),
        ("fixed:k", "strategy 'fixed:k': expected key=value, got 'k'"),
        ("mdp:k=2", "strategy 'mdp:k=2': set MDP options on the run"),
    ],
)
def test_user_errors_keep_their_words(spec: str, message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        StrategyRegistry(plugins=list).parse(spec)


def test_a_kind_registered_in_code_parses_with_its_options_and_the_run_settings() -> None:
    reg = StrategyRegistry(plugins=list)
    reg.register("named", named)
    got = reg.parse("named:a=1, b = 2", {"k_step": 3})
    assert got == Named("named:a=1, b = 2|[('a', '1'), ('b', '2')]|['k_step']")
    assert reg.kinds() == ["fixed", "flare", "ircot", "iter-retgen", "mdp", "named"]
    with pytest.raises(
        UserError, match=r"use fixed:k=N, mdp, ircot, iter-retgen or flare, or named$"
    ):
        reg.parse("other")


def test_register_refuses_built_ins_taken_kinds_and_bad_names() -> None:
    reg = StrategyRegistry(plugins=list)
    with pytest.raises(ValueError, match="built into evalq"):
        reg.register("fixed", named)
    reg.register("named", named)
    reg.register("named", named)  # the same factory again is harmless
    with pytest.raises(ValueError, match="already registered"):
        reg.register("named", FixedK.from_spec)
    reg.register("named", FixedK.from_spec, replace=True)
    for bad in ("", "a:b", "k=1", "x,y"):
        with pytest.raises(ValueError, match="strategy kind"):
            reg.register(bad, named)


def test_register_strategy_works_as_a_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "REGISTRY", StrategyRegistry(plugins=list))

    @evalq.register_strategy("decorated")
    def decorated(spec: str, opts: dict[str, str], run_config: dict[str, Any]) -> Named:
        return Named("decorated")

    assert evalq.parse_strategy("decorated").name == "decorated"
    assert "decorated" in evalq.strategy_kinds()


def test_entry_point_plugins_load_once_on_first_lookup(plugin_modules: Path) -> None:
    calls = []

    def found() -> Iterable[EntryPoint]:
        calls.append(1)
        return plugins(("good", "good_plugin:factory"))

    reg = StrategyRegistry(plugins=found)
    assert calls == []
    assert reg.parse("good:k=4").name == "good"
    assert reg.parse("fixed:k=1") == FixedK(1)
    reg.kinds()
    assert calls == [1]


def test_a_broken_plugin_is_named_and_never_breaks_the_built_ins(
    plugin_modules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = StrategyRegistry(
        plugins=lambda: plugins(
            ("broken", "broken_plugin:factory"),
            ("missing", "good_plugin:no_such_factory"),
            ("good", "good_plugin:factory"),
        )
    )
    assert reg.parse("fixed:k=3") == FixedK(3)
    assert reg.parse("good").name == "good"
    assert reg.kinds() == ["fixed", "flare", "good", "ircot", "iter-retgen", "mdp"]
    with pytest.raises(UserError) as info:
        reg.parse("broken:k=1")
    assert str(info.value) == (
        "strategy plugin 'broken' (broken_plugin:factory) failed to load: "
        "ModuleNotFoundError: No module named 'no_such_dependency_of_a_plugin'"
    )
    with pytest.raises(UserError, match=r"'missing' \(good_plugin:no_such_factory\) failed"):
        reg.parse("missing")
    with pytest.raises(UserError, match=r"plugins that failed to load: broken, missing\)$"):
        reg.parse("magic")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2 and "'broken'" in warned[0] and "'missing'" in warned[1]


def test_a_plugin_factory_that_fails_is_named(plugin_modules: Path) -> None:
    reg = StrategyRegistry(
        plugins=lambda: plugins(
            ("buggy", "good_plugin:buggy"), ("wrong", "good_plugin:not_a_strategy")
        )
    )
    with pytest.raises(UserError, match=r"^strategy plugin 'buggy' .* ZeroDivisionError"):
        reg.parse("buggy")
    with pytest.raises(UserError, match=r"^strategy plugin 'wrong' .* not a strategy"):
        reg.parse("wrong")


def test_plugins_cannot_take_a_built_in_kind_or_be_installed_twice(
    plugin_modules: Path,
) -> None:
    reg = StrategyRegistry(
        plugins=lambda: plugins(
            ("fixed", "good_plugin:factory"),
            ("twice", "good_plugin:factory"),
            ("twice", "broken_plugin:factory"),
        )
    )
    assert reg.parse("fixed:k=2") == FixedK(2)
    with pytest.raises(UserError, match="strategy kind 'twice' is installed twice"):
        reg.parse("twice")


def test_plugins_are_found_through_installed_dist_info(
    plugin_modules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real discovery: a package's dist-info on sys.path, as pip installs it."""
    dist = plugin_modules / "good_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: good-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ngood = good_plugin:factory\nbroken = broken_plugin:factory\n"
    )
    reg = StrategyRegistry()
    assert reg.parse("good:k=2").name == "good"
    with pytest.raises(UserError, match=r"from good-plugin 1\.0\) failed to load"):
        reg.parse("broken")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_no_import_cycle_between_the_seam_the_strategies_and_the_registry() -> None:
    pkg = "evalq.rag.strategies"
    assert not {f"{pkg}.fixed", f"{pkg}.mdp", f"{pkg}.registry", pkg} & _imports(
        STRATEGIES / "base.py"
    )
    builtins = ("fixed.py", "mdp.py", "ircot.py", "iter_retgen.py", "flare.py", "iterative.py")
    for strategy in builtins:
        assert not {f"{pkg}.registry", pkg} & _imports(STRATEGIES / strategy)


def test_the_public_surface_is_enough_to_write_a_strategy() -> None:
    for name in set(evalq.__all__) - {"FleetLM"}:  # FleetLM: tests/generate (needs DSPy)
        assert getattr(evalq, name) is not None
    assert evalq.EpisodeContext.__module__ == "evalq.rag.strategies.base"
    assert evalq.register_strategy is registry.register_strategy
    with pytest.raises(AttributeError):
        _ = evalq.no_such_name  # type: ignore[attr-defined]
