"""``evalq plan``: McNemar sample sizes by Connor's (1987) formula."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from evalq.cli.main import cli
from evalq.errors import UserError
from evalq.report.power import mcnemar_questions


def test_formula_by_hand() -> None:
    """delta .05, psi .3, power .8, alpha .05: (1.96 sqrt(.3) + .8416 sqrt(.2975))^2 / .0025."""
    assert mcnemar_questions(0.05, 0.3, 0.8, 0.05) == 940


def test_power_reached_by_simulation() -> None:
    """At the planned n, McNemar's exact test rejects in about ``power`` of simulated runs."""
    n = mcnemar_questions(0.1, 0.3, 0.8, 0.05)
    rng = np.random.default_rng(0)
    p10, p01 = (0.3 + 0.1) / 2, (0.3 - 0.1) / 2
    rejected = 0
    for _ in range(300):
        cells = rng.multinomial(n, [p10, p01, 1 - p10 - p01])
        discordant = int(cells[0] + cells[1])
        rejected += binomtest(int(cells[0]), discordant, 0.5).pvalue < 0.05
    assert 0.7 <= rejected / 300 <= 0.9


def test_impossible_inputs_are_user_errors() -> None:
    """A difference as large as the discordant share leaves nothing to test."""
    with pytest.raises(UserError):
        mcnemar_questions(0.3, 0.3, 0.8, 0.05)
    result = CliRunner().invoke(cli, ["plan", "--diff", "0.5", "--p-discordant", "0.3"])
    assert result.exit_code != 0 and "--diff" in result.output


def test_cli() -> None:
    """The command prints the number of questions."""
    result = CliRunner().invoke(cli, ["plan", "--diff", "0.05", "--p-discordant", "0.3"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("940 questions")
