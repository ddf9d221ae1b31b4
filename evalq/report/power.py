"""How many questions a paired comparison needs: McNemar's test's sample size.

Connor, R. J. (1987), "Sample size for testing differences in proportions for the
paired-sample design", Biometrics 43(1):207-211, eq. (3):

    n = (z_{1-alpha/2} sqrt(psi) + z_{1-beta} sqrt(psi - delta^2))^2 / delta^2

with psi the probability that a pair is discordant (one side right, the other wrong) and
delta = p(only A right) - p(only B right), the accuracy difference A - B.
"""

from __future__ import annotations

import math

from scipy.stats import norm

from evalq.errors import UserError


def mcnemar_questions(diff: float, p_discordant: float, power: float, alpha: float) -> int:
    """Questions (pairs) for a two-sided McNemar test at ``alpha`` to reach ``power``.

    Raises:
        UserError: If the inputs cannot describe paired proportions.
    """
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise UserError("--alpha and --power must be in (0, 1)")
    if not 0 < p_discordant <= 1:
        raise UserError(f"--p-discordant must be in (0, 1], got {p_discordant}")
    delta = abs(diff)
    # delta = p10 - p01 and psi = p10 + p01, so |delta| <= psi; equality leaves no variance.
    if not 0 < delta < p_discordant:
        raise UserError(
            f"--diff must be non-zero and smaller in size than --p-discordant ({p_discordant})"
        )
    z_alpha = float(norm.ppf(1 - alpha / 2))
    z_beta = float(norm.ppf(power))
    root = z_alpha * math.sqrt(p_discordant) + z_beta * math.sqrt(p_discordant - delta**2)
    return math.ceil(root**2 / delta**2)
