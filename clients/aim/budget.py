r"""AIM's zero-concentrated-DP budget schedule (McKenna et al., PVLDB 2022, Algorithm 1).

The budget is ``ρ``-zCDP with ``ρ`` from ``(ε, δ)`` by :func:`common.privacy.zcdp_rho`
(Bun & Steinke 2016, Prop. 1.3: ``ρ``-zCDP implies ``(ρ + 2\sqrt{ρ\log(1/δ)}, δ)``-DP). zCDP
adds up over mechanisms; a Gaussian measurement of an L2-sensitivity-1 marginal with noise
``σ`` costs ``1/(2σ²)`` and the exponential mechanism with parameter ``ε`` costs ``ε²/8``
(Cesar & Rogers 2021, bounded range). With ``T`` rounds (paper: ``16·d``):

* initialisation: ``m`` marginals measured with ``σ₀ = \sqrt{T / (2 · 0.9 · ρ)}``, costing
  ``m/(2σ₀²) = 0.9·m·ρ/T`` (the paper: the ``d`` 1-way marginals, ``m = d``; with
  ``init = "group-label"``, ``(s, y)`` and the ``d − 2`` ``(s, y, feature)`` marginals);
* round ``t``: the exponential mechanism with ``ε_t`` (first ``\sqrt{8 · 0.1 · ρ/T}``), then one
  Gaussian measurement with ``σ_t``: ``ρ_t = ε_t²/8 + 1/(2σ_t²)`` (first ``ρ/T``: 10 % for the
  selection, 90 % for the measurement);
* annealing: when the model's answer to the measured marginal moved by at most
  ``\sqrt{2/π}·σ_t·n_cells`` (the expected L1 norm of its noise), ``σ`` halves and ``ε``
  doubles (each of the next rounds costs four times as much);
* last round: when less than ``2ρ_t`` would be left, the round spends all that remains,
  ``σ = \sqrt{1/(2 · 0.9 · ρ_{left})}``, ``ε = \sqrt{8 · 0.1 · ρ_{left}}``, so the rounds add up
  to ``ρ`` exactly.
"""

from __future__ import annotations

import math

from common.errors import ConfigError

#: Share of each round's budget spent on the measurement (the rest selects).
MEASURE_SHARE = 0.9


def zcdp_epsilon(rho: float, delta: float) -> float:
    r"""``ε = ρ + 2\sqrt{ρ\log(1/δ)}`` of ``ρ``-zCDP at ``δ`` (inverse of
    :func:`common.privacy.zcdp_rho`)."""
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


class Schedule:
    """The budget of one AIM fit: ``σ`` and ``ε`` of each round, and ``ρ`` spent so far.

    Parameters
    ----------
    rho : float
        The zCDP budget.
    rounds : int
        ``T``; must be at least ``initial`` so that the first measurements leave budget for the
        rounds.
    initial : int
        ``m``, the number of marginals measured before the first round.
    """

    def __init__(self, rho: float, *, rounds: int, initial: int):
        if rounds < initial:
            raise ConfigError(f"aim: rounds must be at least the number of marginals measured "
                              f"first ({initial}) so that they leave budget for the rounds, got "
                              f"{rounds}; use None (16 per attribute).")
        self.rho = float(rho)
        self.rounds = int(rounds)
        self.sigma = math.sqrt(rounds / (2.0 * MEASURE_SHARE * rho))
        self.epsilon = math.sqrt(8.0 * (1.0 - MEASURE_SHARE) * rho / rounds)
        self.initial_sigma, self.initial_epsilon = self.sigma, self.epsilon
        self.initial = int(initial)
        self.initial_rho = initial / (2.0 * self.sigma**2)
        self.used = self.initial_rho
        self.history: list[dict] = []
        self.finished = False

    def next_round(self) -> tuple[float, float, bool]:
        """Charge one round; returns its ``(σ, ε, last)``."""
        if self.finished:
            raise RuntimeError("the budget is spent")
        round_rho = 1.0 / (2.0 * self.sigma**2) + self.epsilon**2 / 8.0
        if self.rho - self.used < 2.0 * round_rho:
            left = self.rho - self.used
            self.sigma = math.sqrt(1.0 / (2.0 * MEASURE_SHARE * left))
            self.epsilon = math.sqrt(8.0 * (1.0 - MEASURE_SHARE) * left)
            self.finished = True
        cost = self.epsilon**2 / 8.0 + 1.0 / (2.0 * self.sigma**2)
        self.used += cost
        self.history.append({"sigma": self.sigma, "epsilon": self.epsilon, "rho": cost})
        return self.sigma, self.epsilon, self.finished

    def anneal(self) -> None:
        """Halve ``σ`` and double ``ε`` for the rounds to come."""
        self.sigma /= 2.0
        self.epsilon *= 2.0

    def size_limit(self, max_model_size: float) -> float:
        """Largest model (MB) allowed now: ``max_model_size · ρ_used / ρ``."""
        return max_model_size * self.used / self.rho
