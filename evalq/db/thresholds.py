"""Solved MDP thresholds, cached in the database by a hash of their parameters."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from evalq.db.models import Threshold
from evalq.errors import UserError
from evalq.rag.mdp_solver import MDPParams, param_hash, solve


def thresholds_for(session: Session, params: MDPParams) -> tuple[float, float]:
    """``(theta_cont, theta_star)`` for ``params``: from the cache, else solved and cached.

    The row is flushed inside a savepoint, not committed: the caller owns the transaction.
    If another worker inserted the same hash first, its row is read back instead.

    Args:
        session: An open session; its transaction is left open.
        params: The decision model.

    Returns:
        The two thresholds.

    Raises:
        UserError: If value iteration did not converge within ``max_iterations``.
    """
    key = param_hash(params)
    cached = session.get(Threshold, key)
    if cached is not None:
        return cached.theta_cont, cached.theta_star

    solution = solve(params)
    if not solution.converged:
        raise UserError(
            f"MDP value iteration did not converge in {params.max_iterations} iterations "
            f"(tol {params.tol:g}); raise max_iterations or tol"
        )
    row = Threshold(
        param_hash=key,
        params=params.to_json(),
        theta_cont=solution.theta_cont,
        theta_star=solution.theta_star,
        iterations=solution.iterations,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        # Another worker cached the same parameters between our read and our insert.
        winner = session.get(Threshold, key, populate_existing=True)
        if winner is None:
            raise
        return winner.theta_cont, winner.theta_star
    return row.theta_cont, row.theta_star
