"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot state).

Each function returns a :class:`~matplotlib.figure.Figure`; :func:`png_bytes` renders one.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from evalq.rag.mdp_solver import ACTIONS, PRESETS, MDPParams, solve
from evalq.report.adaptivity import StrategyAdaptivity
from evalq.report.compare import Estimate
from evalq.report.episodes import StrategyEpisodes
from evalq.report.summary import StrategySummary

FIGSIZE = (6.4, 4.4)
DPI = 100
# The three regions of the threshold policy, shaded behind the Q curves.
POLICY_COLOURS = {"retrieve": "#dbe9f6", "reason": "#fde9d4", "terminate": "#dff2df"}


@dataclass(frozen=True)
class RunPolicy:
    """The MDP a run used: its parameters and the thresholds stored with the run."""

    params: MDPParams
    theta_cont: float
    theta_star: float


def run_policy(config: dict[str, Any]) -> RunPolicy | None:
    """The run's MDP from its stored config, rebuilt as the worker rebuilt it; None without one."""
    mdp = config.get("mdp")
    if not isinstance(mdp, dict) or "theta_star" not in mdp:
        return None
    known = MDPParams.__dataclass_fields__
    preset = PRESETS.get(str(mdp.get("preset", "base")), PRESETS["base"])
    params = preset.with_overrides(**{k: v for k, v in mdp.items() if k in known})
    return RunPolicy(params, float(mdp.get("theta_cont", 0.0)), float(mdp["theta_star"]))


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _error(estimate: Estimate) -> tuple[float, float]:
    """Distances from the value down and up to the interval's ends (0 without an interval)."""
    if estimate.value is None or estimate.interval is None:
        return 0.0, 0.0
    low, high = estimate.interval
    return max(estimate.value - low, 0.0), max(high - estimate.value, 0.0)


def _colours(count: int) -> list[str]:
    """The default colour cycle's colours, repeated as needed: one per strategy."""
    cycle: list[str] = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(count)]


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


# A point's label is its spec when this short, else its kind: whole specs with every option
# (flare:k=2,theta=0.8,beta=0.4,steps=4) ran over each other; the legend has them in full.
POINT_LABEL_CHARS = 12


def _point_label(strategy: str) -> str:
    """``fixed:k=3`` and ``mdp`` as they are; ``ircot:k=2,steps=4`` as ``ircot``."""
    return strategy if len(strategy) <= POINT_LABEL_CHARS else strategy.split(":")[0]


def accuracy_vs_cost(summaries: Sequence[StrategySummary], confidence: float) -> Figure:
    """Accuracy against mean cost per strategy, with both intervals as error bars."""
    figure = Figure(figsize=FIGSIZE)
    ax = figure.add_subplot()
    points = [s for s in summaries if s.accuracy.value is not None and s.cost.value is not None]
    if not points:
        _empty(ax, "no ok episodes")
        return figure
    for summary, colour in zip(points, _colours(len(points)), strict=True):
        acc, cost = summary.accuracy.value, summary.cost.value
        assert acc is not None and cost is not None
        acc_err, cost_err = _error(summary.accuracy), _error(summary.cost)
        ax.errorbar(
            [cost],
            [acc * 100],
            xerr=[[cost_err[0]], [cost_err[1]]],
            yerr=[[acc_err[0] * 100], [acc_err[1] * 100]],
            fmt="o",
            markersize=8,
            capsize=4,
            color=colour,
            label=f"{summary.strategy} (n={summary.ok})",
        )
        label = _point_label(summary.strategy)
        ax.annotate(label, (cost, acc * 100), textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel("mean cost per episode")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-5, 105)
    ax.set_title(f"Accuracy against cost ({confidence * 100:g}% bootstrap intervals)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return figure


def steps_histogram(strategies: Sequence[StrategyEpisodes]) -> Figure:
    """How many steps episodes took, side-by-side bars per strategy (ok episodes)."""
    figure = Figure(figsize=FIGSIZE)
    ax = figure.add_subplot()
    present = [s for s in strategies if s.ok]
    if not present:
        _empty(ax, "no ok episodes")
        return figure
    top = int(max(np.max(s.steps) for s in present))
    series = [
        (s.strategy, [int(n) for n in np.bincount(s.steps.astype(np.int64), minlength=top + 1)])
        for s in present
    ]
    _grouped_bars(ax, series, "steps per episode (retrieve, reason and answer)")
    ax.set_title("Steps per episode")
    return figure


def _grouped_bars(ax: Any, series: Sequence[tuple[str, Sequence[int]]], xlabel: str) -> None:
    """Side-by-side bars: per label, how many episodes had each count 0, 1, ... (x axis)."""
    counts = np.arange(0, max(len(frequency) for _, frequency in series))
    width = 0.8 / len(series)
    for i, ((label, frequency), colour) in enumerate(
        zip(series, _colours(len(series)), strict=True)
    ):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(counts + offset, frequency, width=width, color=colour, label=label)
    ax.set_xticks(counts)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("episodes")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")


def retrievals_histogram(strategies: Sequence[StrategyAdaptivity]) -> Figure:
    """How many retrievals episodes made, side-by-side bars per strategy (ok episodes)."""
    figure = Figure(figsize=FIGSIZE)
    ax = figure.add_subplot()
    present = [s for s in strategies if s.episodes]
    if not present:
        _empty(ax, "no ok episodes")
        return figure
    top = max(max(s.histogram, default=0) for s in present)
    series = [(s.strategy, [s.histogram.get(c, 0) for c in range(top + 1)]) for s in present]
    _grouped_bars(ax, series, "retrievals per episode")
    ax.set_title("Retrievals per episode: one bar per strategy means no adaptation")
    return figure


def accuracy_by_difficulty(summaries: Sequence[StrategySummary], confidence: float) -> Figure:
    """Accuracy per difficulty, grouped bars per strategy with interval whiskers."""
    figure = Figure(figsize=FIGSIZE)
    ax = figure.add_subplot()
    groups: list[str] = []
    for summary in summaries:
        groups += [d.difficulty for d in summary.by_difficulty if d.difficulty not in groups]
    if not groups:
        _empty(ax, "no ok episodes")
        return figure
    positions = np.arange(len(groups))
    width = 0.8 / max(len(summaries), 1)
    for i, (summary, colour) in enumerate(zip(summaries, _colours(len(summaries)), strict=True)):
        by_name = {d.difficulty: d for d in summary.by_difficulty}
        values, lows, highs = [], [], []
        for group in groups:
            cell = by_name.get(group)
            value = cell.accuracy.value if cell and cell.accuracy.value is not None else np.nan
            low, high = _error(cell.accuracy) if cell else (0.0, 0.0)
            values.append(value * 100)
            lows.append(low * 100)
            highs.append(high * 100)
        offset = (i - (len(summaries) - 1) / 2) * width
        ax.bar(
            positions + offset,
            values,
            width=width,
            yerr=[lows, highs],
            capsize=3,
            color=colour,
            label=summary.strategy,
        )
    ax.set_xticks(positions, groups)
    ax.set_ylim(0, 125)  # room above 100% for the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Accuracy by difficulty ({confidence * 100:g}% bootstrap intervals)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncol=min(len(summaries), 4), fontsize="small")
    return figure


def mdp_policy(policy: RunPolicy, final_u: Sequence[float] | np.ndarray) -> Figure:
    """Q(U, a) of the run's MDP with the policy's regions, and where MDP episodes stopped."""
    solution = solve(policy.params)
    figure = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * 1.35))
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    u_max = policy.params.u_max
    regions = (
        ("retrieve", 0.0, policy.theta_cont),
        ("reason", policy.theta_cont, policy.theta_star),
        ("terminate", policy.theta_star, u_max),
    )
    for ax in (top, bottom):
        for action, start, end in regions:
            if end > start:
                ax.axvspan(start, end, color=POLICY_COLOURS[action], zorder=0)
    for column, action in enumerate(ACTIONS):
        top.plot(solution.u_grid, solution.q[:, column], label=f"Q(U, {action})", linewidth=2)
    # θ_cont labelled to the right of its line, θ* to the left (it often sits near u_max).
    for name, theta, style, side in (
        ("θ_cont", policy.theta_cont, "--", "left"),
        ("θ*", policy.theta_star, "-.", "right"),
    ):
        for ax in (top, bottom):
            ax.axvline(theta, color="black", linestyle=style, linewidth=1)
        top.annotate(
            f"{name} = {theta:.2f}",
            (theta, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3 if side == "left" else -3, -12 if side == "left" else -26),
            textcoords="offset points",
            ha=side,
        )
    top.set_ylabel("Q(U, a)")
    top.set_title(
        f"MDP policy (p_s={policy.params.p_s:g}, c_r={policy.params.c_r:g}, "
        f"c_p={policy.params.c_p:g}, mu={policy.params.mu:g}, gamma={policy.params.gamma:g})"
    )
    top.legend(loc="lower right", fontsize="small")
    top.grid(alpha=0.3)
    stops = np.asarray(final_u, dtype=np.float64)
    if len(stops):
        bins = np.linspace(0.0, u_max, min(policy.params.grid_size, 41))
        bottom.hist(stops, bins=bins, color="#555555")
        bottom.set_ylabel("episodes")
    else:
        bottom.text(
            0.5, 0.5, "no MDP episodes", ha="center", va="center", transform=bottom.transAxes
        )
    bottom.set_xlabel("information progress U (bottom: U at which MDP episodes answered)")
    bottom.set_xlim(0.0, u_max)
    return figure
