r"""What stage 1 measures and penalises about a linear model's fairness on the client's real rows.

Both measures compare two groups over a set of rows: statistical parity (SP) over all rows,
equal opportunity (EO) over the rows with ``y = 1``. On those rows, with scores
``d_i = wᵀx_i``:

- the **gap** of the classifier ``ŷ = 1[d > 0]`` is ``P(ŷ=1 | s=1) − P(ŷ=1 | s=0)`` (SPD or EOD,
  what the metrics report); it is piecewise constant in ``w``, so it cannot be descended;
- a **relaxation** ``g(w)`` stands in for it in the outer loss:

  * ``"covariance"`` — the paper's Zafar decision-boundary covariance
    ``Cov(s, d) = (1/n) Σ_i (s_i − s̄) d_i``. It is linear in ``w``, but its zero is not the
    gap's zero: a model can have no covariance and a large gap (the scores of one group can be
    spread wider than the other's);
  * ``"gap"`` — the smooth gap ``mean_{s=1} σ(d/T) − mean_{s=0} σ(d/T)``, the difference of
    the groups' mean predicted probabilities. As ``T → 0`` it becomes the gap itself; at
    ``T = 1`` it is the gap of the randomised classifier ``ŷ ~ Bernoulli(σ(d))``, whose zero
    is that of the soft group rates.

Both are of the form ``g(w) = Σ_i a_i(d_i)``, so their gradient is ``Xᵀ r`` for a row vector
``r``; the outer loss adds ``r`` to its own row vector and does one pass over ``X``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from common import logistic

Relaxation = Literal["covariance", "gap"]
RELAXATIONS = ("covariance", "gap")


class GroupRows:
    """The rows a measure compares and the two groups among them (float64 weights).

    ``rate`` holds ``+1/n₁`` on the measure's rows with ``s = 1``, ``−1/n₀`` on those with
    ``s = 0`` and 0 elsewhere, so that ``rate · v`` is the difference of the groups' means of
    ``v``; an empty group gets weight 0 (its rate counts as equal to the other's).
    """

    def __init__(self, s: np.ndarray, y: np.ndarray, measure: str):
        s = np.asarray(s, dtype=np.float64)
        rows = np.ones(len(s), bool) if measure == "sp" else np.asarray(y) == 1
        n1, n0 = float(np.sum(rows & (s == 1))), float(np.sum(rows & (s == 0)))
        both = n1 > 0 and n0 > 0
        self.rate = np.zeros(len(s))
        if both:
            self.rate[rows & (s == 1)] = 1.0 / n1
            self.rate[rows & (s == 0)] = -1.0 / n0
        # Zafar's covariance (1/n) Σ (s_i − s̄) d_i over the measure's rows.
        n = float(rows.sum())
        self.covariance = np.zeros(len(s))
        if n:
            self.covariance[rows] = (s[rows] - s[rows].mean()) / n

    def gap(self, scores: np.ndarray) -> float:
        """The gap of ``ŷ = 1[d > 0]`` (SPD or EOD, signed)."""
        return float(self.rate @ (scores > 0))


class Covariance:
    """``g(w) = Cov(s, wᵀx)`` on the measure's rows (the paper's relaxation)."""

    def __init__(self, groups: GroupRows, X: np.ndarray):
        self.groups = groups
        self.c = groups.covariance @ X  # g(w) = cᵀw

    def value_rows(self, scores: np.ndarray) -> tuple[float, np.ndarray]:
        """``g`` and the row vector ``r`` with ``∇_w g = Xᵀ r``."""
        return float(self.groups.covariance @ scores), self.groups.covariance


class SmoothGap:
    """``g(w) = mean_{s=1} σ(d/T) − mean_{s=0} σ(d/T)`` on the measure's rows."""

    def __init__(self, groups: GroupRows, temperature: float = 1.0):
        self.groups, self.temperature = groups, float(temperature)
        self._active = np.flatnonzero(groups.rate)

    def value_rows(self, scores: np.ndarray) -> tuple[float, np.ndarray]:
        rate, T = self.groups.rate, self.temperature
        r = np.zeros(len(scores))
        idx = self._active
        p = logistic.sigmoid(scores[idx] / T)
        r[idx] = rate[idx] * p * (1.0 - p) / T
        return float(rate[idx] @ p), r


def make_relaxation(name: str, X: np.ndarray, s: np.ndarray, y: np.ndarray, measure: str,
                    temperature: float = 1.0):
    """The relaxation ``name`` of ``measure`` on the rows ``X`` (design matrix)."""
    groups = GroupRows(s, y, measure)
    if name == "covariance":
        return Covariance(groups, X)
    return SmoothGap(groups, temperature)
