"""The MDP-RAG decision model: value iteration over information progress U, and its thresholds.

State U in [0, u_max] on a uniform grid; actions retrieve, reason, terminate. Retrieve moves
U up by ``delta_r`` with probability ``p_s``, reason moves it up by ``delta_p``, terminate is
absorbing and pays the quality ``sigma(U)``. The solution is summarised by two thresholds:
retrieve below ``theta_cont``, reason up to ``theta_star``, terminate from ``theta_star`` on.
Thresholds are a pure function of :class:`MDPParams`, so they are solved once per parameter set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from evalq.errors import UserError

FloatArray = npt.NDArray[np.float64]
QualityName = Literal["linear", "sqrt", "saturating", "sigmoid"]
Action = Literal["retrieve", "reason", "terminate"]

QUALITY_NAMES: tuple[str, ...] = get_args(QualityName)
# Column order of MDPSolution.q.
ACTIONS: tuple[Action, ...] = ("retrieve", "reason", "terminate")
# Bumped whenever solve() changes in a way that can move a threshold, so cached rows go stale.
SOLVER_VERSION = 1
# Q values closer than this count as equal, so float noise cannot move a threshold.
TIE_TOL = 1e-9
_THRESHOLD_DIGITS = 12

_FLOAT_FIELDS = (
    "delta_r",
    "delta_p",
    "p_s",
    "c_r",
    "c_p",
    "mu",
    "gamma",
    "u_max",
    "quality_k",
    "k_phi",
    "tol",
)
_INT_FIELDS = ("grid_size", "max_iterations")


@dataclass(frozen=True)
class MDPParams:
    """Parameters of the decision model; every field can affect the solved thresholds.

    Attributes:
        delta_r: Progress a successful retrieve adds to U.
        delta_p: Progress a reason step adds to U.
        p_s: Probability that a retrieve succeeds.
        c_r: Cost of one retrieve.
        c_p: Cost of one reason step.
        mu: Weight of cost against quality; a step's reward is ``-mu * cost``.
        gamma: Discount factor in (0, 1].
        u_max: Upper end of the progress scale.
        grid_size: Number of grid points over [0, u_max].
        quality: Shape of the terminal quality ``sigma(U)``.
        quality_k: Steepness of the ``saturating`` and ``sigmoid`` qualities.
        shaping: Add potential shaping ``gamma * Phi(U') - Phi(U)`` to step rewards.
        k_phi: Slope of the potential ``Phi(U) = k_phi * U``.
        max_iterations: Cap on value-iteration sweeps.
        tol: Value iteration stops when ``max |V - V_old| < tol``.
    """

    delta_r: float
    delta_p: float
    p_s: float
    c_r: float
    c_p: float
    mu: float
    gamma: float
    u_max: float = 1.0
    grid_size: int = 101
    quality: QualityName = "linear"
    quality_k: float = 5.0
    shaping: bool = False
    k_phi: float = 1.0
    max_iterations: int = 10_000
    tol: float = 1e-6

    def __post_init__(self) -> None:
        # Coerce so that 1 and 1.0 give the same parameters, JSON and hash.
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        for name in _INT_FIELDS:
            object.__setattr__(self, name, _as_int(name, getattr(self, name)))
        if not isinstance(self.shaping, bool):
            raise UserError(f"MDP parameter shaping must be true or false, got {self.shaping!r}")
        self._validate()

    def _validate(self) -> None:
        if self.quality not in QUALITY_NAMES:
            raise UserError(
                f"unknown MDP quality {self.quality!r}; choose one of {', '.join(QUALITY_NAMES)}"
            )
        if not 0.0 <= self.p_s <= 1.0:
            raise UserError(f"MDP parameter p_s must be in [0, 1], got {self.p_s}")
        if not 0.0 < self.gamma <= 1.0:
            raise UserError(f"MDP parameter gamma must be in (0, 1], got {self.gamma}")
        for name in ("c_r", "c_p", "mu", "delta_r", "delta_p"):
            if getattr(self, name) < 0.0:
                raise UserError(f"MDP parameter {name} must be >= 0, got {getattr(self, name)}")
        if self.u_max <= 0.0:
            raise UserError(f"MDP parameter u_max must be > 0, got {self.u_max}")
        if self.grid_size < 2:
            raise UserError(f"MDP parameter grid_size must be >= 2, got {self.grid_size}")
        if self.quality_k <= 0.0:
            raise UserError(f"MDP parameter quality_k must be > 0, got {self.quality_k}")
        if self.max_iterations < 1:
            raise UserError(f"MDP parameter max_iterations must be >= 1, got {self.max_iterations}")
        if self.tol <= 0.0:
            raise UserError(f"MDP parameter tol must be > 0, got {self.tol}")
        du = self.u_max / (self.grid_size - 1)
        for name in ("delta_r", "delta_p"):
            delta = getattr(self, name)
            # A positive step that snaps to zero grid cells would silently make the action useless.
            if delta > 0.0 and int(np.rint(delta / du)) == 0:
                raise UserError(
                    f"MDP parameter {name}={delta} is below half a grid cell ({du:g}); "
                    "raise grid_size"
                )

    def to_json(self) -> dict[str, Any]:
        """All parameters as a JSON-ready dict (stored with runs and cached thresholds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MDPParams:
        """Parameters from a dict as written by :meth:`to_json`.

        Args:
            data: Field names to values; fields with defaults may be left out.

        Returns:
            The validated parameters.

        Raises:
            UserError: On an unknown or missing field, or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown MDP parameter(s): {', '.join(unknown)}")
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise UserError(f"missing MDP parameter(s): {', '.join(missing)}")
        return cls(**dict(data))

    def with_overrides(self, **overrides: Any) -> MDPParams:
        """A copy with some fields replaced, validated like a new instance.

        Raises:
            UserError: On an unknown field or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UserError(f"unknown MDP parameter(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)


def _as_float(name: str, value: object) -> float:
    # bool is an int subclass; True as a cost is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UserError(f"MDP parameter {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"MDP parameter {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"MDP parameter {name} must be finite, got {value!r}")
    return number


def _as_int(name: str, value: object) -> int:
    number = _as_float(name, value)
    if not number.is_integer():
        raise UserError(f"MDP parameter {name} must be an integer, got {value!r}")
    return int(number)


PRESETS: dict[str, MDPParams] = {
    "base": MDPParams(delta_r=0.15, delta_p=0.08, p_s=0.7, c_r=0.2, c_p=0.1, mu=0.6, gamma=1.0),
    "multi_gpu": MDPParams(
        delta_r=0.15, delta_p=0.03, p_s=0.8, c_r=0.12, c_p=0.06, mu=0.6, gamma=0.98
    ),
    "early": MDPParams(delta_r=0.25, delta_p=0.08, p_s=0.8, c_r=0.05, c_p=0.02, mu=0.6, gamma=0.98),
}


# Stored with a saved set's parameters (``mdp calibrate --save``) and set with --mdp-set like
# them, but not among them: they do not change the solved thresholds or their cache key.
RUN_OPTIONS = ("judge_threshold",)


def lookup_preset(name: str, saved: Mapping[str, Mapping[str, Any]] | None = None) -> MDPParams:
    """A built-in preset, or else a saved parameter set (``evalq mdp calibrate --save``), by name.

    Args:
        name: The preset or saved set's name.
        saved: Saved sets' names to their stored parameters (every field, as ``to_json``,
            and any of ``RUN_OPTIONS``, which are left out here).

    Raises:
        UserError: If neither has the name (the message lists both), or a saved set's
            stored parameters are no longer valid.
    """
    if name in PRESETS:
        return PRESETS[name]
    saved = saved or {}
    if name in saved:
        return MDPParams.from_json({k: v for k, v in saved[name].items() if k not in RUN_OPTIONS})
    known = ", ".join(PRESETS) + (f"; saved: {', '.join(sorted(saved))}" if saved else "")
    raise UserError(f"unknown MDP preset {name!r}: choose {known} (see `evalq mdp presets`)")


def quality(u: npt.ArrayLike, params: MDPParams) -> FloatArray:
    """Terminal quality ``sigma(U)`` with ``x = U / u_max``, elementwise.

    Args:
        u: Progress value(s).
        params: Supplies ``quality``, ``quality_k`` and ``u_max``.

    Returns:
        ``sigma(U)`` with the shape of ``u``.
    """
    x = np.asarray(u, dtype=np.float64) / params.u_max
    k = params.quality_k
    if params.quality == "linear":
        return x
    if params.quality == "sqrt":
        return np.sqrt(x)
    if params.quality == "saturating":
        return 1.0 - np.exp(-k * x)
    return 1.0 / (1.0 + np.exp(-k * (x - 0.5)))


@dataclass(frozen=True)
class MDPSolution:
    """Converged values and the thresholds read from them.

    Attributes:
        u_grid: Grid points over [0, u_max].
        q: Action values, shape ``(grid_size, 3)``, columns in :data:`ACTIONS` order.
        v: State values, ``max`` of ``q`` over actions.
        iterations: Value-iteration sweeps performed.
        converged: Whether ``max |V - V_old| < tol`` was reached before ``max_iterations``.
        theta_cont: Retrieve below this progress.
        theta_star: Terminate at or above this progress.
    """

    u_grid: FloatArray
    q: FloatArray
    v: FloatArray
    iterations: int
    converged: bool
    theta_cont: float
    theta_star: float


def _next_index(u_grid: FloatArray, delta: float, params: MDPParams) -> npt.NDArray[np.intp]:
    """Grid index of ``min(U + delta, u_max)``: the nearest grid point (``np.rint``), clipped."""
    du = params.u_max / (params.grid_size - 1)
    target = np.minimum(u_grid + delta, params.u_max)
    return np.clip(np.rint(target / du), 0, params.grid_size - 1).astype(np.intp)


def solve(params: MDPParams) -> MDPSolution:
    """Solve the decision model by value iteration, vectorised over the grid.

    ``V`` starts at the terminate value ``sigma(U)`` (always available, so a lower bound) and
    each sweep applies one Bellman backup to every state at once.

    Args:
        params: The decision model.

    Returns:
        The converged (or capped) values and the thresholds.
    """
    u_grid = np.linspace(0.0, params.u_max, params.grid_size)
    sigma = quality(u_grid, params)
    up_r = _next_index(u_grid, params.delta_r, params)
    up_p = _next_index(u_grid, params.delta_p, params)
    gamma, p_s = params.gamma, params.p_s

    reward_r = np.full_like(u_grid, -params.mu * params.c_r)
    reward_p = np.full_like(u_grid, -params.mu * params.c_p)
    if params.shaping:
        phi = params.k_phi * u_grid
        reward_r += p_s * (gamma * phi[up_r] - phi) + (1.0 - p_s) * (gamma * phi - phi)
        reward_p += gamma * phi[up_p] - phi

    def backup(v: FloatArray) -> FloatArray:
        q_retrieve = reward_r + gamma * (p_s * v[up_r] + (1.0 - p_s) * v)
        q_reason = reward_p + gamma * v[up_p]
        return np.stack([q_retrieve, q_reason, sigma], axis=1)

    v = sigma.copy()
    converged = False
    iterations = 0
    while iterations < params.max_iterations:
        v_new = backup(v).max(axis=1)
        iterations += 1
        delta = float(np.max(np.abs(v_new - v)))
        v = v_new
        if delta < params.tol:
            converged = True
            break

    q = backup(v)
    theta_cont, theta_star = thresholds_from_q(u_grid, q, params.u_max)
    return MDPSolution(
        u_grid=u_grid,
        q=q,
        v=q.max(axis=1),
        iterations=iterations,
        converged=converged,
        theta_cont=theta_cont,
        theta_star=theta_star,
    )


def thresholds_from_q(u_grid: FloatArray, q: FloatArray, u_max: float) -> tuple[float, float]:
    """Read ``(theta_cont, theta_star)`` from action values.

    ``theta_star`` is the smallest grid U with Q(terminate) >= max(Q(retrieve), Q(reason)),
    ``u_max`` if none; ``theta_cont`` is the smallest U below ``theta_star`` with
    Q(reason) > Q(retrieve), ``theta_star`` if none. Ties within :data:`TIE_TOL` count as equal.

    Args:
        u_grid: Grid points.
        q: Action values, columns in :data:`ACTIONS` order.
        u_max: Upper end of the progress scale.

    Returns:
        The two thresholds.
    """
    q_retrieve, q_reason, q_terminate = q[:, 0], q[:, 1], q[:, 2]
    terminates = q_terminate >= np.maximum(q_retrieve, q_reason) - TIE_TOL
    star_index = int(np.argmax(terminates)) if terminates.any() else len(u_grid)
    theta_star = float(u_grid[star_index]) if star_index < len(u_grid) else u_max
    reasons = (q_reason > q_retrieve + TIE_TOL)[:star_index]
    theta_cont = float(u_grid[int(np.argmax(reasons))]) if reasons.any() else theta_star
    # linspace gives 0.9400000000000001; store and show the grid point itself.
    return round(theta_cont, _THRESHOLD_DIGITS), round(theta_star, _THRESHOLD_DIGITS)


def policy_action(u: float, theta_cont: float, theta_star: float) -> Action:
    """The threshold policy: terminate if ``u >= theta_star``, retrieve if ``u < theta_cont``.

    Args:
        u: Current progress.
        theta_cont: Retrieve below this.
        theta_star: Terminate at or above this.

    Returns:
        ``"terminate"``, ``"retrieve"`` or, between the thresholds, ``"reason"``.
    """
    if u >= theta_star:
        return "terminate"
    if u < theta_cont:
        return "retrieve"
    return "reason"


def param_hash(params: MDPParams) -> str:
    """Stable sha256 hex digest of the parameters that can change the solution.

    ``quality_k`` only counts for the saturating and sigmoid qualities and ``k_phi`` only with
    shaping on, so equivalent parameter sets share one cached solution.

    Args:
        params: The decision model.

    Returns:
        64 lowercase hex characters.
    """
    relevant = params.to_json()
    if params.quality not in ("saturating", "sigmoid"):
        del relevant["quality_k"]
    if not params.shaping:
        del relevant["k_phi"]
    relevant["solver_version"] = SOLVER_VERSION
    canonical = json.dumps(relevant, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
