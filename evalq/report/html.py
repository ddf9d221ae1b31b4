"""``evalq report``: one self-contained HTML page of a run's results, plus its plots as PNG files.

The page embeds every plot as a base64 PNG and styles itself inline, so it can be mailed or
archived as one file; the PNGs sit beside it for papers and slides.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from sqlalchemy.orm import Session

from evalq.report import plots
from evalq.report.adaptivity import (
    RECALL_TEST,
    Adaptivity,
    by_retrievals_rows,
    load_adaptivity,
    summary_rows,
)
from evalq.report.compare import (
    Comparison,
    Estimate,
    compare,
    load_paired,
    title,
    to_rows,
)
from evalq.report.episodes import RunEpisodes, load_run_episodes
from evalq.report.summary import StatsOptions, StrategySummary, summarise

REPORT_FILE = "report.html"
# The strategy every other one is compared with, when the run has it.
REFERENCE_STRATEGY = "mdp"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1d1d1f; background: #fff; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f2f2f2; text-align: left; } td.num { text-align: right; }
.plots { display: grid; grid-template-columns: repeat(2, 600px); gap: 16px; }
figure { margin: 0; } figure img { width: 600px; height: auto; display: block; }
figcaption, .caption { font-size: 12px; color: #555; }
"""


@dataclass(frozen=True)
class Plot:
    """One figure of the report: its file name stem, caption and PNG bytes."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Report:
    """What ``write_report`` wrote."""

    html: Path
    images: tuple[Path, ...]


def _percent(estimate: Estimate) -> str:
    """``78.0% [74.1, 81.9]``, or ``-`` without data."""
    if estimate.value is None:
        return "-"
    text = f"{estimate.value * 100:.1f}%"
    if estimate.interval is not None:
        low, high = estimate.interval
        text += f" [{low * 100:.1f}, {high * 100:.1f}]"
    return text


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}g}"


def _with_interval(estimate: Estimate) -> str:
    """``0.42 [0.40, 0.45]``, or ``-`` without data."""
    if estimate.value is None:
        return "-"
    text = _number(estimate.value)
    if estimate.interval is not None:
        text += f" [{_number(estimate.interval[0])}, {_number(estimate.interval[1])}]"
    return text


def _table(
    headers: Sequence[str] | None, rows: Iterable[Sequence[str]], numeric_from: int = 1
) -> str:
    """An HTML table (no header row without headers); cells from ``numeric_from`` right-aligned."""
    head = ""
    if headers is not None:
        head = (
            "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead>"
        )
    body = []
    for row in rows:
        cells = "".join(
            f"<td class='num'>{html.escape(c)}</td>"
            if i >= numeric_from
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _run_table(episodes: RunEpisodes) -> str:
    run = episodes.run
    rows = [
        ("run", f"{run.id}" + (f" ({run.name})" if run.name else "")),
        ("model", run.model),
        ("dataset", f"{run.dataset} ({run.difficulty})"),
        ("questions", f"{run.n} (seed {run.seed}), {run.repeats} repeat(s)"),
        ("strategies", ", ".join(s.strategy for s in episodes.strategies) or "none"),
        ("status", run.status),
        ("created", run.created_at.isoformat(timespec="seconds")),
        ("finished", run.finished_at.isoformat(timespec="seconds") if run.finished_at else "-"),
        ("code version", run.code_version),
    ]
    mdp = run.config.get("mdp")
    if isinstance(mdp, dict) and "theta_star" in mdp:
        rows.append(
            (
                "MDP",
                f"preset {mdp.get('preset', '-')}"
                + (f" (saved set {mdp['param_set']})" if mdp.get("param_set") else "")
                + f", θ_cont = {float(mdp.get('theta_cont', 0)):.2f}, "
                f"θ* = {float(mdp['theta_star']):.2f}",
            )
        )
    return _table(None, rows, numeric_from=2)


def _strategy_table(summaries: Sequence[StrategySummary]) -> str:
    headers = [
        "strategy",
        "episodes",
        "ok",
        "excluded",
        "accuracy",
        "accuracy (attempted)",
        "mean cost",
        "steps",
        "retrievals",
        "tokens",
        "latency (s)",
    ]
    rows = [
        [
            s.strategy,
            str(s.total),
            str(s.ok),
            ", ".join(f"{status} {count}" for status, count in s.excluded.items()) or "0",
            _percent(s.accuracy),
            f"{_percent(s.accuracy_attempted)} (n={s.attempted})",
            _with_interval(s.cost),
            _number(s.mean_steps),
            _number(s.mean_retrievals),
            _number(s.mean_tokens),
            _number(s.mean_latency_s),
        ]
        for s in summaries
    ]
    return _table(headers, rows)


def _difficulty_table(summaries: Sequence[StrategySummary]) -> str:
    groups: list[str] = []
    for summary in summaries:
        groups += [d.difficulty for d in summary.by_difficulty if d.difficulty not in groups]
    rows = []
    for group in groups:
        row = [group]
        for summary in summaries:
            cell = next((d for d in summary.by_difficulty if d.difficulty == group), None)
            row.append(f"{_percent(cell.accuracy)} (n={cell.n})" if cell else "-")
        rows.append(row)
    return _table(["difficulty", *(s.strategy for s in summaries)], rows)


def _comparison_html(comparison: Comparison) -> str:
    headers, rows, caption = to_rows(comparison)
    lines = "".join(f"<div>{html.escape(line)}</div>" for line in caption)
    return (
        f"<h3>{html.escape(title(comparison))}</h3>"
        f"{_table(headers, rows)}<div class='caption'>{lines}</div>"
    )


def _comparisons(
    session: Session, episodes: RunEpisodes, options: StatsOptions
) -> list[Comparison]:
    """The reference strategy (``mdp``, else the first) against each other one with ok episodes."""
    present = [s.strategy for s in episodes.strategies if s.ok]
    if len(present) < 2:
        return []
    reference = REFERENCE_STRATEGY if REFERENCE_STRATEGY in present else present[0]
    run_id = episodes.run.id
    return [
        compare(
            load_paired(session, run_id, reference, run_id, other),
            confidence=options.confidence,
            n_resamples=options.n_resamples,
            method=options.method,
            seed=options.seed,
        )
        for other in present
        if other != reference
    ]


def _adaptivity_html(report: Adaptivity, figure: Plot) -> str:
    """The adaptivity section: the retrievals histogram and the two tables."""
    image = base64.b64encode(figure.png).decode("ascii")
    headers, rows = summary_rows(report)
    by_headers, by_rows = by_retrievals_rows(report)
    caption = (
        f"Retrieve success with its {report.confidence * 100:g}% Clopper-Pearson interval; "
        "recall is a retrieve step's share of the question's gold passages, over steps judged "
        f"successful and not; p: {RECALL_TEST} (ranks, tie-corrected: step recall takes few "
        "values). Steps of one episode are treated as independent."
        + (f" Note: {report.gold_note}." if report.gold_note else "")
    )
    return (
        f"<figure><img alt='{html.escape(figure.name)}' src='data:image/png;base64,{image}'>"
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
        f"{_table(headers, rows)}<p class='caption'>{html.escape(caption)}</p>"
        f"<h3>Accuracy and F1 by number of retrievals</h3>{_table(by_headers, by_rows)}"
    )


def draw_adaptivity_plot(report: Adaptivity) -> Plot:
    """The retrievals-per-episode histogram, rendered."""
    return Plot(
        "retrievals_histogram",
        "Retrievals per episode (ok episodes), per strategy.",
        plots.png_bytes(plots.retrievals_histogram(report.strategies)),
    )


def draw_plots(
    episodes: RunEpisodes, summaries: Sequence[StrategySummary], confidence: float
) -> list[Plot]:
    """The figures, rendered: accuracy/cost, steps, difficulty and, with MDP, the policy."""
    figures = [
        (
            "accuracy_vs_cost",
            "Accuracy against mean cost per strategy; bars are bootstrap intervals of both.",
            plots.accuracy_vs_cost(summaries, confidence),
        ),
        (
            "steps_histogram",
            "Steps per episode (ok episodes), per strategy.",
            plots.steps_histogram(episodes.strategies),
        ),
        (
            "accuracy_by_difficulty",
            "Accuracy per difficulty with bootstrap intervals.",
            plots.accuracy_by_difficulty(summaries, confidence),
        ),
    ]
    policy = plots.run_policy(episodes.run.config)
    if policy is not None:
        mdp = episodes.strategy(REFERENCE_STRATEGY)
        figures.append(
            (
                "mdp_policy",
                "Q(U, a) of the run's MDP: retrieve below θ_cont, reason up to θ*, then answer. "
                "Below: the progress U at which MDP episodes answered.",
                plots.mdp_policy(policy, mdp.final_u if mdp is not None else []),
            )
        )
    return [Plot(name, caption, plots.png_bytes(figure)) for name, caption, figure in figures]


def render_html(
    episodes: RunEpisodes,
    summaries: Sequence[StrategySummary],
    comparisons: Sequence[Comparison],
    figures: Sequence[Plot],
    options: StatsOptions,
    adaptivity: tuple[Adaptivity, Plot] | None = None,
) -> str:
    """The whole page as one HTML string, images inline."""
    run = episodes.run
    heading = f"evalq report: run {run.id}" + (f" ({run.name})" if run.name else "")
    images = "".join(
        f"<figure><img alt='{html.escape(p.name)}' "
        f"src='data:image/png;base64,{base64.b64encode(p.png).decode('ascii')}'>"
        f"<figcaption>{html.escape(p.caption)}</figcaption></figure>"
        for p in figures
    )
    compared = "".join(_comparison_html(c) for c in comparisons) or (
        "<p>Fewer than two strategies have ok episodes: nothing to compare.</p>"
    )
    try:
        evalq_version = version("evalq")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        evalq_version = "unknown"
    settings = (
        f"Intervals: {options.confidence * 100:g}% bootstrap ({options.method}, "
        f"{options.n_resamples} resamples, seed {options.seed}) over ok episodes; "
        "invalid and error episodes are counted, not scored, except in accuracy (attempted): "
        "over ok and error episodes, an error counting as a wrong answer."
    )
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(heading)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(heading)}</h1>{_run_table(episodes)}"
        f"<h2>Results per strategy</h2>{_strategy_table(summaries)}"
        f"<p class='caption'>{html.escape(settings)}</p>"
        f"<h2>Plots</h2><div class='plots'>{images}</div>"
        + (
            f"<h2>Does the policy adapt?</h2>{_adaptivity_html(*adaptivity)}"
            if adaptivity is not None
            else ""
        )
        + f"<h2>Accuracy by difficulty</h2>{_difficulty_table(summaries)}"
        f"<h2>Paired comparisons</h2>{compared}"
        f"<p class='caption'>Generated {generated} by evalq {html.escape(evalq_version)}.</p>"
        "</body></html>\n"
    )


def write_report(
    session: Session, run_id: int, out_dir: Path, options: StatsOptions | None = None
) -> Report:
    """Write ``report.html`` and one PNG per plot into ``out_dir`` (created if missing).

    Raises:
        UserError: The run does not exist.
    """
    options = options or StatsOptions()
    episodes = load_run_episodes(session, run_id)
    summaries = summarise(episodes, options)
    comparisons = _comparisons(session, episodes, options)
    figures = draw_plots(episodes, summaries, options.confidence)
    # Whether a policy adapts is a question only where one can: runs with the MDP strategy.
    adaptive: tuple[Adaptivity, Plot] | None = None
    if episodes.strategy(REFERENCE_STRATEGY) is not None:
        adaptivity = load_adaptivity(session, run_id, options.confidence)
        adaptive = (adaptivity, draw_adaptivity_plot(adaptivity))
    out_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for figure in [*figures, *([adaptive[1]] if adaptive else [])]:
        path = out_dir / f"{figure.name}.png"
        path.write_bytes(figure.png)
        images.append(path)
    page = out_dir / REPORT_FILE
    page.write_text(
        render_html(episodes, summaries, comparisons, figures, options, adaptive),
        encoding="utf-8",
    )
    return Report(page, tuple(images))
