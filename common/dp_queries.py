"""The DP statistics of stage 2's generators: noisy counts, histograms, clipped sums and second
moments, the projection of noisy counts onto a distribution, and DP column bounds.

Each function is one Gaussian mechanism whose L2 sensitivity (add/remove one row) is stated in
its docstring; the caller sizes ``noise_multiplier`` from its budget (:class:`common.privacy.
PrivacyLedger`) and records the mechanism there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from common.errors import DataError


def noisy_counts(codes: np.ndarray, k: int, *, noise_multiplier: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Histogram of integer ``codes`` in ``[0, k)`` plus ``N(0, σ²)`` per bin.

    One row changes one bin by 1: L2 sensitivity 1 (add/remove).
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= k):
        raise DataError(f"category codes must lie in [0, {k}).")
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    return counts + rng.normal(0.0, noise_multiplier, size=k)


def noisy_histograms(columns: Sequence[np.ndarray], edges: Sequence[np.ndarray], *,
                     noise_multiplier: float, rng: np.random.Generator) -> list[np.ndarray]:
    """One histogram per column (values outside the edges go to the end bins), released together.

    A row adds 1 to one bin of each of the ``m`` histograms: L2 sensitivity ``√m``, so every
    bin gets ``N(0, σ²m)``.
    """
    m = len(columns)
    out = []
    for values, e in zip(columns, edges):
        idx = np.clip(np.searchsorted(e, values, side="right") - 1, 0, len(e) - 2)
        counts = np.bincount(idx, minlength=len(e) - 1).astype(np.float64)
        out.append(counts + rng.normal(0.0, noise_multiplier * math.sqrt(m), size=len(counts)))
    return out


def clip_rows(rows: np.ndarray, clip_norm: float) -> np.ndarray:
    """Scale each row to L2 norm at most ``clip_norm``."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows * np.minimum(1.0, clip_norm / np.maximum(norms, 1e-300))


def noisy_sums(rows: np.ndarray, groups: np.ndarray, k: int, *, clip_norm: float,
               noise_multiplier: float, rng: np.random.Generator) -> np.ndarray:
    """Per-group sums of rows clipped to L2 norm ``clip_norm``, plus ``N(0, (σ·clip)²)``.

    A row belongs to one group, so the ``k × d`` release has L2 sensitivity ``clip_norm``.
    """
    rows = clip_rows(np.asarray(rows, dtype=np.float64), clip_norm)
    sums = np.zeros((k, rows.shape[1]))
    np.add.at(sums, np.asarray(groups, dtype=np.int64), rows)
    return sums + rng.normal(0.0, noise_multiplier * clip_norm, size=sums.shape)


def noisy_second_moments(rows: np.ndarray, *, clip_norm: float, noise_multiplier: float,
                         rng: np.random.Generator) -> np.ndarray:
    """``Σ_i u_i u_iᵀ`` of rows clipped to L2 norm ``clip_norm``, noise on the upper triangle.

    ``‖u uᵀ‖_F = ‖u‖² ≤ C²`` bounds the L2 sensitivity of the upper triangle (diagonal
    included), so each of its entries gets ``N(0, (σC²)²)``; the lower triangle mirrors it.
    """
    u = clip_rows(np.asarray(rows, dtype=np.float64), clip_norm)
    d = u.shape[1]
    iu = np.triu_indices(d)
    upper = (u.T @ u)[iu] + rng.normal(0.0, noise_multiplier * clip_norm**2, size=len(iu[0]))
    out = np.zeros((d, d))
    out[iu] = upper
    return out + np.triu(out, 1).T


def project_counts(noisy: np.ndarray, total: float, *, threshold: float = 0.0) -> np.ndarray:
    r"""Denoised non-negative counts summing to ``total``.

    Bins below ``threshold`` are set to 0 (if any bin passes it). If the rest sums to more than
    ``total``, they become ``max(h − τ, 0)`` with ``τ ≥ 0`` set by the sum — the Euclidean
    projection onto the scaled simplex; if to less, they are scaled up (empty bins stay empty).

    Clipping noisy counts at 0 alone leaves ``≈ 0.4σ`` of spurious mass in every empty bin,
    which fattens the tails of a sparse histogram; a threshold of ``3σ`` lets an empty bin
    through with probability 0.13 %. Post-processing: no privacy cost.
    """
    h = np.asarray(noisy, dtype=np.float64)
    if total <= 0 or h.size == 0:
        return np.zeros_like(h)
    if threshold > 0 and np.any(h >= threshold):
        h = np.where(h >= threshold, h, 0.0)
    positive = np.maximum(h, 0.0)
    if positive.sum() <= total:
        if positive.sum() <= 1e-9 * total:  # nothing left: spread evenly
            return np.full_like(h, total / h.size)
        return positive * (total / positive.sum())
    u = np.sort(h)[::-1]
    css = np.cumsum(u) - total
    k = np.arange(1, len(u) + 1)
    rho = np.flatnonzero(u - css / k > 0)[-1]
    tau = css[rho] / (rho + 1)
    return np.maximum(h - tau, 0.0)


#: Data-independent grid for DP bounds of a column without public bounds: 0 and ±10^(j/4).
def _bounds_grid() -> np.ndarray:
    pos = 10.0 ** (np.arange(-24, 41) / 4.0)  # 1e-6 … 1e10
    return np.concatenate([-pos[::-1], [0.0], pos])


def dp_bounds(values: np.ndarray, *, noise_multiplier: float, rng: np.random.Generator,
              threshold: float | None = None) -> tuple[float, float]:
    """A range holding most of ``values``, from a noisy histogram on a fixed log-spaced grid.

    The range runs from the lowest to the highest bin whose noisy count exceeds ``threshold``
    (default ``4σ``, so that an empty bin passes with probability ≈ 3e-5). One row moves one
    count: sensitivity 1.
    """
    grid = _bounds_grid()
    (counts,) = noisy_histograms([values], [grid], noise_multiplier=noise_multiplier, rng=rng)
    tau = 4.0 * noise_multiplier if threshold is None else threshold
    hot = np.flatnonzero(counts > tau)
    if hot.size == 0:
        raise DataError(
            "too few rows to estimate a column's range privately; declare its bounds in the "
            "schema (Column.bounds) or use a larger ε."
        )
    lo, hi = float(grid[hot[0]]), float(grid[hot[-1] + 1])
    return lo, hi
