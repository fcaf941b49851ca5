r"""TOT, the fairness transform of SAFES: Calmon et al.'s optimised pre-processing.

Calmon, Wei, Vinzamuri, Natesan Ramamurthy & Varshney, "Optimized Pre-Processing for
Discrimination Prevention", NeurIPS 2017; SAFES (Giddens et al., 2024) applies it to the rows a
DP synthesizer released. TOT learns a randomised map ``P(x̂, ŷ | d, x, y)`` of a row's features
``x`` and label ``y`` given its sensitive attribute ``d``, and draws each row's new ``(x̂, ŷ)``
from it. The map solves a linear programme over the empirical distribution ``p(d, x, y)`` of the
rows it is fitted on:

* **utility**: minimise the total variation ``½‖p(x̂, ŷ) − p(x, y)‖₁`` between the transformed
  and the original distribution of ``(x, y)``;
* **discrimination** (eqs. 2–3 of the paper, the form of its Adult experiment):
  ``|P(ŷ = 1 | d = 0) − P(ŷ = 1 | d = 1)| ≤ η`` — a bound on the statistical parity difference
  of the transformed labels;
* **distortion** (eq. 5, the excess-distortion form): for every ``(d, x, y)``,
  ``P(δ ≥ 1) ≤ c``, ``P(δ ≥ 2) ≤ c/2`` and ``P(δ ≥ 3) = 0``, where ``δ`` adds up the steps a row
  moves: one per bin of an ordered (binned continuous) column, one per changed category, one
  for a changed label; a move of two bins or more in a column costs 3 (never allowed). The
  thresholds and the ``(c, c/2, 0)`` shares are those of the paper's Adult example.

The domain has to be small for the programme (``|D|·|X×Y|²`` unknowns), so, as the paper does,
the map acts on a few columns only: the ``columns`` named, or those most informative about the
label (mutual information on the fitted rows), taken greedily while ``|X×Y|`` stays within
``cells`` (a column a G-test at level 0.001 cannot tell from independent of the label is left
out); continuous columns are cut into ``bins`` equal-width bins of their public bounds.
The other columns are passed through unchanged. A changed continuous value is drawn from the
fitted rows' values in its new bin (uniform in the bin when there are none).

TOT reads only the rows it is given: fitted on DP rows, it is post-processing and the DP
guarantee of those rows carries over to its output.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
from scipy import optimize, sparse, stats

from clients.aim.discretise import Discretiser
from common.errors import ConfigError, DataError
from common.schema import Schema, TabularData

logger = logging.getLogger(__name__)

#: Distortion levels of the excess-distortion constraints, and the cost of a forbidden move.
LEVELS = (1.0, 2.0)
FORBIDDEN = 3.0


@dataclasses.dataclass(frozen=True)
class TOTConfig:
    """Options of :class:`TOT` (validated).

    eta : the bound on ``|P(ŷ=1|d=0) − P(ŷ=1|d=1)|`` after the transform.
    distortion : the share ``c`` of each ``(d, x, y)`` cell's rows that may move one step
        (``c/2`` two steps; none three).
    cells : the largest ``|X × Y|`` of the transform's domain (its columns' values × 2 labels).
    bins : equal-width bins of a continuous column, on its public bounds.
    columns : the feature columns the transform may change; empty: chosen by mutual
        information with the label, within ``cells``.
    """

    eta: float = 0.1
    distortion: float = 0.1
    cells: int = 256
    bins: int = 4
    columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"safes: eta = {self.eta} must lie in [0, 1] (the largest "
                              "statistical parity difference left after the transform).")
        if not 0.0 <= self.distortion <= 1.0:
            raise ConfigError(f"safes: distortion = {self.distortion} must lie in [0, 1] (the "
                              "share of each cell's rows the transform may change).")
        if self.bins < 2:
            raise ConfigError(f"safes: bins = {self.bins} must be at least 2.")
        if self.cells < 4:
            raise ConfigError(f"safes: cells = {self.cells} must be at least 4 (one column of "
                              "two values, times two labels).")

    def check_schema(self, schema: Schema) -> dict[str, int]:
        """The public domain's sizes of ``schema``'s features; raises :class:`ConfigError` if
        ``columns`` names a column the schema lacks or makes more than ``cells`` cells."""
        sizes = Discretiser(schema, self.bins, "linear").sizes
        names = list(schema.feature_names)
        unknown = sorted(set(self.columns) - set(names))
        if unknown:
            raise ConfigError(f"safes: columns {unknown} are not feature columns of this data; "
                              f"choose among {names}.")
        total = 2 * int(np.prod([sizes[c] for c in self.columns]))
        if self.columns and total > self.cells:
            raise ConfigError(f"safes: columns {list(self.columns)} make {total} cells, more "
                              f"than cells = {self.cells}; name fewer columns, lower bins or "
                              "raise cells.")
        return sizes


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """``I(a; b)`` in nats, of two integer code arrays (their empirical joint distribution)."""
    joint = pd.crosstab(a, b).to_numpy(dtype=np.float64, copy=True)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) @ joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())


def distortion_matrix(sizes: list[int], ordered: list[bool]) -> np.ndarray:
    """``δ`` between every pair of ``(x, y)`` cells (rows: old, columns: new). Cells are indexed
    ``x·2 + y`` with ``x`` the mixed-radix code of the columns (the first varies slowest)."""
    grids = np.meshgrid(*[np.arange(k) for k in sizes], np.arange(2), indexing="ij")
    codes = np.stack([g.ravel() for g in grids], axis=1)  # (cells, columns + 1)
    delta = np.zeros((len(codes), len(codes)))
    forbidden = np.zeros_like(delta, dtype=bool)
    for j, is_ordered in enumerate([*ordered, False]):  # the label: one step if it changes
        diff = np.abs(codes[:, None, j] - codes[None, :, j])
        if is_ordered:
            delta += diff
            forbidden |= diff >= 2
        else:
            delta += diff > 0
    return np.where(forbidden, FORBIDDEN, np.minimum(delta, FORBIDDEN))


class Infeasible(ConfigError):
    """No map meets the discrimination bound within the distortion bound."""


def solve_map(p: np.ndarray, delta: np.ndarray, eta: float | None, distortion: float
              ) -> tuple[np.ndarray, float]:
    """The optimised map ``P[d, a, b] = P((x̂,ŷ) = b | d, (x,y) = a)`` for the distribution
    ``p[d, a]`` (sums to 1), and its total variation; raises :class:`Infeasible` if no map
    meets the bounds. Labels are the cells' last digit (``b % 2``). With ``eta=None``, the map
    of least statistical parity difference within the distortion bound, and that difference.

    Unknowns: the map (``|D|·C²``), one ``t_b`` per cell for the total variation and ``z`` for
    the least-difference form."""
    n_d, C = p.shape
    R, n_p = n_d * C, n_d * C * C
    p_xy, p_d = p.sum(axis=0), p.sum(axis=1)
    eye_c = sparse.identity(C, format="csr")
    no_tz = sparse.csr_matrix((R, C + 1))
    # each row of the map is a distribution
    a_eq = sparse.hstack([sparse.kron(sparse.identity(R), np.ones((1, C))), no_tz])
    # total variation: ±(Σ_r p_r P[r, b] − p_xy[b]) ≤ t_b
    mix = sparse.kron(p.ravel()[None, :], eye_c)
    no_z = sparse.csr_matrix((C, 1))
    tv = sparse.vstack([sparse.hstack([mix, -eye_c, no_z]), sparse.hstack([-mix, -eye_c, no_z])])
    # statistical parity of ŷ: g_d · P = P(ŷ = 1 | d);  ±(g_0 − g_1) · P ≤ η (or ≤ z)
    positive = (np.arange(C) % 2 == 1).astype(np.float64)
    g = [np.concatenate([np.zeros(d * C * C), np.kron(p[d] / p_d[d], positive),
                         np.zeros((n_d - 1 - d) * C * C)]) for d in range(n_d)]
    gap = np.concatenate([g[0] - g[1], np.zeros(C)])
    z = [0.0] if eta is not None else [-1.0]
    parity = sparse.csr_matrix(np.vstack([np.append(gap, z), np.append(-gap, z)]))
    # excess distortion: Σ_b 1[δ(a, b) ≥ c_k] P[r, b] ≤ share_k, for every r = (d, a)
    rows = []
    for level in LEVELS:
        hit = sparse.csr_matrix(delta >= level, dtype=np.float64)
        rows.append(sparse.hstack([sparse.block_diag([hit[a] for a in range(C)] * n_d), no_tz]))
    bound = 0.0 if eta is None else eta
    a_ub = sparse.vstack([tv, parity, *rows], format="csr")
    b_ub = np.concatenate([p_xy, -p_xy, [bound, bound], np.full(R, distortion),
                           np.full(R, distortion / 2.0)])
    upper = np.concatenate([np.tile(np.where(delta >= FORBIDDEN, 0.0, 1.0).ravel(), n_d),
                            np.full(C + 1, np.inf)])
    cost = np.zeros(n_p + C + 1)
    if eta is None:
        cost[-1] = 1.0
    else:
        cost[n_p:n_p + C] = 0.5
    res = optimize.linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=np.ones(R),
                           bounds=np.stack([np.zeros(len(cost)), upper], axis=1), method="highs")
    if res.status == 2:
        raise Infeasible(
            f"safes: no transform brings the statistical parity difference to {bound:g} or less "
            f"while changing at most a share {distortion:g} of each cell's rows; raise "
            "safes_eta or safes_distortion.")
    if res.status != 0:
        raise RuntimeError(f"safes: the transform's linear programme failed ({res.message}).")
    mapping = np.clip(res.x[:n_p].reshape(n_d, C, C), 0.0, None)
    mapping /= mapping.sum(axis=2, keepdims=True)
    return mapping, float(res.fun)


class TOT:
    """Fit the optimised map on some rows (:meth:`fit`), apply it to rows (:meth:`transform`)."""

    def __init__(self, config: TOTConfig) -> None:
        self.config = config
        self.columns: list[str] = []
        self.mapping: np.ndarray | None = None
        self.report: dict = {}

    # ------------------------------------------------------------------ fit
    def _choose(self, codes: dict[str, np.ndarray], sizes: dict[str, int],
                names: list[str]) -> list[str]:
        cfg = self.config
        if cfg.columns:
            return list(cfg.columns)
        y, n = codes["y"], len(codes["y"])
        info = {c: mutual_information(codes[c], y) for c in names}
        chosen, total = [], 2
        for c in sorted(names, key=lambda c: -info[c]):
            # the G-test of independence: 2·n·I ~ χ²(k − 1) when the column says nothing
            related = 2 * n * info[c] > stats.chi2.ppf(0.999, max(sizes[c] - 1, 1))
            if related and total * sizes[c] <= cfg.cells:
                chosen.append(c)
                total *= sizes[c]
        return chosen

    def fit(self, rows: TabularData) -> TOT:
        """Choose the columns and solve for the map on the distribution of ``rows``."""
        if len(rows) == 0:
            raise DataError("safes: the transform has no rows to fit on.")
        cfg = self.config
        sizes = cfg.check_schema(rows.schema)
        self.domain = Discretiser(rows.schema, cfg.bins, "linear")
        codes = self.domain.encode(rows)
        names = list(rows.schema.feature_names)
        self.columns = self._choose(codes, sizes, names)
        kinds = {c.name: c.kind for c in rows.schema.features}
        self.sizes = [sizes[c] for c in self.columns]
        ordered = [kinds[c] != "categorical" for c in self.columns]
        cell = self._cells(codes)
        C = 2 * int(np.prod(self.sizes))
        counts = np.zeros((2, C))
        np.add.at(counts, (codes["s"], cell), 1.0)
        self._pool = {c: (codes[c], rows.features[c].to_numpy()) for c in self.columns
                      if kinds[c] != "categorical"}
        before = _parity(counts)
        if (counts.sum(axis=1) == 0).any():
            logger.warning("safes: the rows hold one group only; the transform leaves them "
                           "unchanged (statistical parity needs both groups).")
            self.mapping = np.broadcast_to(np.eye(C), (2, C, C)).copy()
            tv, eta = 0.0, cfg.eta
        else:
            self.mapping, tv, eta = self._solve(counts / counts.sum(),
                                                distortion_matrix(self.sizes, ordered))
        after = _parity(np.einsum("da,dab->db", counts, self.mapping))
        self.report = {"columns": self.columns, "cells": C, "eta": cfg.eta, "eta_met": eta,
                       "distortion": cfg.distortion, "tv": tv,
                       "spd_before": before, "spd_after": after}
        logger.info("safes: transform on %s (%d cells): total variation %.4f, statistical "
                    "parity difference %.4f -> %.4f", self.columns, C, tv, before, after)
        return self

    def _solve(self, p: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The map at ``eta``; if the distortion bound cannot reach it, the map at the least
        difference it can reach (with a warning): the transform does what it is allowed to,
        and its report says which bound it met."""
        cfg = self.config
        try:
            return (*solve_map(p, delta, cfg.eta, cfg.distortion), cfg.eta)
        except Infeasible:
            _, least = solve_map(p, delta, None, cfg.distortion)
            eta = least * (1 + 1e-6) + 1e-9  # the least difference, and room for the solver
            logger.warning("safes: a share %g of each cell's rows cannot bring the statistical "
                           "parity difference to %g; the transform brings it to %.4f, the least "
                           "it can (raise safes_distortion to go further).", cfg.distortion,
                           cfg.eta, least)
            return (*solve_map(p, delta, eta, cfg.distortion), eta)

    def _cells(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        x = np.zeros(len(codes["y"]), dtype=np.int64)
        for c, k in zip(self.columns, self.sizes):
            x = x * k + codes[c]
        return x * 2 + codes["y"]

    # ------------------------------------------------------------------ apply
    def transform(self, rows: TabularData, rng: np.random.Generator) -> TabularData:
        """Each row's ``(x̂, ŷ)`` drawn from the map; the other columns unchanged."""
        if self.mapping is None:
            raise RuntimeError("safes: transform() before fit().")
        codes = self.domain.encode(rows)
        cell = self._cells(codes)
        probs = self.mapping[codes["s"], cell]  # (n, C)
        new = (probs.cumsum(axis=1) < rng.random((len(rows), 1))).sum(axis=1)
        new = np.minimum(new, probs.shape[1] - 1)
        features = rows.features.copy()
        x, y_new = new // 2, (new % 2).astype(np.int8)
        for c, k in reversed(list(zip(self.columns, self.sizes))):
            x, code = x // k, x % k
            moved = code != codes[c]
            if moved.any():
                features.iloc[np.flatnonzero(moved), features.columns.get_loc(c)] = (
                    self._values(rows, c, code[moved], rng))
        return TabularData(schema=rows.schema, features=features, s=rows.s.copy(), y=y_new)

    def _values(self, rows: TabularData, column: str, code: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """Values for rows that move to bin/category ``code`` of ``column``."""
        col = next(c for c in rows.schema.features if c.name == column)
        if col.kind == "categorical":
            return np.asarray(col.categories, dtype=object)[code]
        fitted_codes, fitted_values = self._pool[column]
        out = np.empty(len(code))
        for b in np.unique(code):
            where = code == b
            pool = fitted_values[fitted_codes == b]
            if len(pool):
                out[where] = rng.choice(pool, where.sum())
            else:
                edges = self.domain.edges[column]
                out[where] = edges[b] + rng.random(where.sum()) * (edges[b + 1] - edges[b])
                if col.integer:
                    out[where] = np.rint(out[where])
        return out


def _parity(counts: np.ndarray) -> float:
    """``P(y=1|d=0) − P(y=1|d=1)`` of a ``(2, cells)`` count table (labels: the last digit);
    nan when a group is empty."""
    totals = counts.sum(axis=1)
    if (totals == 0).any():
        return float("nan")
    positive = counts[:, 1::2].sum(axis=1)
    return float(positive[0] / totals[0] - positive[1] / totals[1])
