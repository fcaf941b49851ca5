"""Calibration of released rows to the DP statistics (package docstring, step 4).

Post-processing of DP outputs only: candidate rows are reweighted by exponential tilting
(:func:`tilt`; maximum-entropy calibration estimators, Deville & Särndal 1992) toward the DP
targets (:func:`calibration_weights`) and resampled per ``(s, y)`` cell
(:func:`systematic_sample`) in the sizes :func:`allocate` gives each cell.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize

from clients.dp_ctgan.representation import TableTransformer, scaled
from clients.dp_ctgan.statistics import Statistics
from common.errors import DataError


def calibration_weights(features: pd.DataFrame, cells: np.ndarray, *, stats: Statistics,
                        transformer: TableTransformer) -> np.ndarray:
    """Maximum-entropy weights of candidate rows (each cell's weights sum to 1) matching the
    DP targets: per cell, the feature means and category distributions; over all rows
    (cells weighted by their noisy shares), the mode distribution of every column.

    Parameters
    ----------
    features : pandas.DataFrame
        The candidate rows' features (original units).
    cells : numpy.ndarray
        Each candidate's ``(s, y)`` cell index.
    stats : Statistics
        The DP targets.
    transformer : TableTransformer
        The modes and categories the targets are expressed in.
    """
    st, tf = stats, transformer
    codes = tf.codes(features)
    A = scaled(features, st.ranges) if st.cell_means is not None else np.zeros((len(cells), 0))
    T = st.cell_means if st.cell_means is not None else np.zeros((4, 0))
    local, local_targets, glob, glob_targets = [], [], [], []
    offset_l = offset_g = 0
    j = 0
    for sp, k in zip(tf.spans, codes):
        if sp.continuous:
            glob.append(offset_g + k)
            glob_targets.append(st.mode_probs[sp.column.name])
            offset_g += len(st.mode_probs[sp.column.name])
        else:
            table = st.category_tables[j]
            j += 1
            rows = table.sum(1, keepdims=True)
            local.append(offset_l + k)
            local_targets.append(np.where(rows > 0, table / np.maximum(rows, 1e-12),
                                          1.0 / table.shape[1]))
            offset_l += table.shape[1]
    share = st.cell_counts / st.cell_counts.sum()
    return tilt(A, T, cells, share,
                local_codes=np.column_stack(local) if local else None,
                local_targets=np.column_stack(local_targets) if local_targets else None,
                codes=np.column_stack(glob) if glob else None,
                t=np.concatenate(glob_targets) if glob_targets else None)


def tilt(A: np.ndarray, T: np.ndarray, cells: np.ndarray, share: np.ndarray, *,
         local_codes: np.ndarray | None = None, local_targets: np.ndarray | None = None,
         codes: np.ndarray | None = None, t: np.ndarray | None = None,
         ridge: float = 1e-3, max_iter: int = 300) -> np.ndarray:
    r"""Exponential tilting of candidate rows toward per-cell and pooled moment targets.

    Row ``j`` of cell ``c(j)`` has dense features ``a_j`` (rows of ``A``) with per-cell
    targets ``T_c``; one-hot indicators ``h_j`` given by ``local_codes`` (``n × m`` indices: a 1
    at each) with per-cell targets ``local_targets[c]``; and one-hot indicators ``b_j`` given by
    ``codes`` with pooled targets ``t``. Weights
    ``w_j ∝ exp(θ_{c(j)}ᵀ a_j + φ_{c(j)}ᵀ h_j + λᵀ b_j)``, normalised within each cell, with
    ``θ, φ, λ`` minimising the convex dual

    .. math::

        L = \sum_c π_c \Bigl[\log \sum_{j \in c} e^{θ_cᵀ a_j + φ_cᵀ h_j + λᵀ b_j}
            − θ_cᵀ T_c − φ_cᵀ H_c\Bigr] − λᵀ t
            + \frac{r}{2}(\lVert θ\rVert^2 + \lVert φ\rVert^2 + \lVert λ\rVert^2),

    whose stationarity conditions are ``E_w[a | c] = T_c``, ``E_w[h | c] = H_c`` and
    ``Σ_c π_c E_w[b | c] = t``: the weighted candidates match the targets, and among all such
    weights these are the closest to uniform in Kullback–Leibler divergence. The ridge ``r``
    keeps the dual bounded when the (noisy) targets are not attainable; the match is then as
    close as it allows. One-hot constraints are index gathers and weighted bincounts.
    """
    n, p = len(cells), A.shape[1]
    lc = np.zeros((n, 0), dtype=np.int64) if local_codes is None else np.asarray(local_codes)
    gc = np.zeros((n, 0), dtype=np.int64) if codes is None else np.asarray(codes)
    H = np.zeros((4, 0)) if local_targets is None else np.asarray(local_targets)
    t = np.zeros(0) if t is None else np.asarray(t)
    ql, qg = H.shape[1], len(t)
    ml, mg = lc.shape[1], gc.shape[1]
    blocks = []
    for c in range(4):
        rows = np.flatnonzero(cells == c)
        if len(rows) and share[c] > 0:
            blocks.append((c, rows, np.ascontiguousarray(A[rows]), lc[rows], gc[rows]))
    size = 4 * p + 4 * ql + qg

    def unpack(z):
        return (z[:4 * p].reshape(4, p), z[4 * p:4 * (p + ql)].reshape(4, ql), z[4 * (p + ql):])

    def logits(theta, phi, lam, c, a_c, lc_c, gc_c):
        f = a_c @ theta[c] if p else np.zeros(len(a_c))
        if ql:
            f = f + phi[c][lc_c].sum(axis=1)
        if qg:
            f = f + lam[gc_c].sum(axis=1)
        return f

    def value_grad(z):
        theta, phi, lam = unpack(z)
        value = 0.5 * ridge * float(z @ z) - float(lam @ t)
        g_theta, g_phi, g_lam = ridge * theta, ridge * phi, ridge * lam - t
        for c, _, a_c, lc_c, gc_c in blocks:
            f = logits(theta, phi, lam, c, a_c, lc_c, gc_c)
            top = f.max()
            e = np.exp(f - top)
            total = e.sum()
            w = e / total
            value += share[c] * (top + math.log(total) - float(theta[c] @ T[c])
                                 - float(phi[c] @ H[c]))
            if p:
                g_theta[c] += share[c] * (w @ a_c - T[c])
            if ql:
                g_phi[c] += share[c] * (np.bincount(lc_c.ravel(), weights=np.repeat(w, ml),
                                                    minlength=ql) - H[c])
            if qg:
                g_lam += share[c] * np.bincount(gc_c.ravel(), weights=np.repeat(w, mg),
                                                minlength=qg)
        return value, np.concatenate([g_theta.ravel(), g_phi.ravel(), g_lam])

    z = np.zeros(size)
    if size:
        z = optimize.minimize(value_grad, z, jac=True, method="L-BFGS-B",
                              options={"maxiter": max_iter, "gtol": 1e-7}).x
    theta, phi, lam = unpack(z)
    weights = np.zeros(n)
    for c, rows, a_c, lc_c, gc_c in blocks:
        f = logits(theta, phi, lam, c, a_c, lc_c, gc_c)
        e = np.exp(f - f.max())
        weights[rows] = e / e.sum()
    return weights


def systematic_sample(weights: np.ndarray, cells: np.ndarray, alloc: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Per cell, ``alloc[c]`` candidates by systematic PPS sampling: candidate ``j`` is drawn
    ``⌊k w_j⌋`` or ``⌈k w_j⌉`` times, ``k w_j`` in expectation (``w`` sums to 1 per cell)."""
    keep = []
    for c, k in enumerate(alloc):
        if k == 0:
            continue
        rows = rng.permutation(np.flatnonzero(cells == c))
        cum = np.cumsum(weights[rows]) * k / weights[rows].sum()
        points = rng.random() + np.arange(k)
        keep.append(rows[np.minimum(np.searchsorted(cum, points, side="right"), len(rows) - 1)])
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` rows over cells in proportion to (noisy, non-negative) ``counts``: largest
    remainder, and at least one row for every cell with a count ≥ 1 when ``n`` allows."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    if counts.sum() <= 0:
        raise DataError("cannot allocate rows: every noisy cell count is 0.")
    quota = n * counts / counts.sum()
    alloc = np.floor(quota).astype(np.int64)
    positive = counts >= 1
    if n >= positive.sum():
        alloc[positive & (alloc == 0)] = 1
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while alloc.sum() < n:
        alloc[order[i % len(order)]] += 1
        i += 1
    while alloc.sum() > n:
        j = int(np.argmax(np.where(alloc > 1, alloc - quota, -np.inf)))
        alloc[j] -= 1
    return alloc
