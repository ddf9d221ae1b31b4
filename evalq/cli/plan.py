"""``evalq plan``: how many questions a paired comparison needs."""

from __future__ import annotations

import click

from evalq.report.power import mcnemar_questions


@click.command("plan")
@click.option("--diff", type=float, required=True, help="Accuracy difference A - B to detect.")
@click.option(
    "--p-discordant",
    type=float,
    required=True,
    help="Share of questions where exactly one side is right.",
)
@click.option("--power", type=float, default=0.8, show_default=True)
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Two-sided level.")
def plan(diff: float, p_discordant: float, power: float, alpha: float) -> None:
    """Questions needed for McNemar's test to detect a paired difference (Connor 1987)."""
    n = mcnemar_questions(diff, p_discordant, power, alpha)
    click.echo(
        f"{n} questions: McNemar's test at alpha {alpha:g} detects a difference of "
        f"{100 * diff:+g} pp with power {power:g} when {100 * p_discordant:g}% of pairs "
        "are discordant (Connor 1987)"
    )
