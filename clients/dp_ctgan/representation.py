"""The table as the generator sees it, and the DP laws its modes are cut from.

CTGAN's mode-specific normalisation with modes fixed *without reading the rows*
(:class:`TableTransformer`), the DP marginal of a continuous column (:class:`Marginal`) and
the helpers that build both from public bounds and DP histograms.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import torch
from scipy import special
from torch.nn import functional as F

from common.schema import Column, Schema

#: An integer column with at most this many values in its bounds gets one mode per value.
MAX_INTEGER_MODES = 16


def integer_values(column: Column, bounds: tuple[float, float]) -> np.ndarray | None:
    """The integers inside ``bounds`` when ``column`` is an integer column with few of them."""
    values = np.arange(math.ceil(bounds[0]), math.floor(bounds[1]) + 1, dtype=np.float64)
    return values if column.integer and 2 <= len(values) <= MAX_INTEGER_MODES else None


#: An integer column with at most this many values gets one DP histogram bin per value.
MAX_INTEGER_BINS = 256


def histogram_edges(column: Column, bounds: tuple[float, float], fine_bins: int) -> np.ndarray:
    """Edges of a column's DP histogram: one bin per integer for an integer column with at most
    :data:`MAX_INTEGER_BINS` values (integer data piles up on popular values, e.g. 40 hours a
    week); for one with more, a unit bin at each bound (e.g. a capital gain of 0) and
    ``fine_bins − 1`` equal bins between; else ``fine_bins`` equal bins. (A bin's noise does
    not grow with the number of bins; spurious bins are thresholded away.)"""
    lo, hi = bounds
    values = np.arange(math.ceil(lo), math.floor(hi) + 1, dtype=np.float64)
    if column.integer and 2 <= len(values) <= MAX_INTEGER_BINS:
        return np.concatenate([values - 0.5, [values[-1] + 0.5]])
    if column.integer and hi - lo >= fine_bins:
        lo, hi = math.ceil(lo), math.floor(hi)
        return np.concatenate([[lo - 0.5], np.linspace(lo + 0.5, hi - 0.5, fine_bins - 1),
                               [hi + 0.5]])
    return np.linspace(lo, hi, fine_bins + 1)


def mode_edges(column: Column, bounds: tuple[float, float], fine_edges: np.ndarray,
               counts: np.ndarray, modes: int) -> np.ndarray:
    """Mode boundaries from a (noisy) fine histogram: per integer, or ``modes`` bins of about
    equal mass cut at fine-bin edges (equal widths when the histogram holds no mass)."""
    if integer_values(column, bounds) is not None:
        return fine_edges
    mass = np.maximum(counts, 0.0)
    if mass.sum() <= 0:
        return np.linspace(bounds[0], bounds[1], modes + 1)
    cum = np.concatenate([[0.0], np.cumsum(mass)]) / mass.sum()
    cuts = np.searchsorted(cum, np.linspace(0, 1, modes + 1)[1:-1])
    inner = np.unique(np.clip(cuts, 1, len(fine_edges) - 2))
    return np.concatenate([[fine_edges[0]], fine_edges[inner], [fine_edges[-1]]])


@dataclasses.dataclass(frozen=True)
class Marginal:
    """A continuous column's law from its DP histogram (post-processing): a point mass at each
    integer of a per-integer histogram, else uniform inside each fine bin."""

    edges: np.ndarray
    probs: np.ndarray  # > 0, sums to 1
    discrete: bool

    @classmethod
    def from_counts(cls, edges: np.ndarray, counts: np.ndarray, *, discrete: bool) -> Marginal:
        # + 1e-6: every bin keeps a sliver of mass, so the CDF is strictly increasing
        mass = np.maximum(np.asarray(counts, dtype=np.float64), 0.0) + 1e-6
        return cls(np.asarray(edges, dtype=np.float64), mass / mass.sum(), discrete)

    @property
    def cum(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(self.probs)])

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Mid-point CDF: ``P(X < x) + P(X = x)/2`` (discrete) or the CDF (continuous)."""
        if self.discrete:
            k = np.clip(np.searchsorted(self.edges, x, side="right") - 1, 0, len(self.probs) - 1)
            return self.cum[k] + 0.5 * self.probs[k]
        return np.interp(x, self.edges, self.cum)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Quantile function (inverse of :meth:`cdf` for the continuous part)."""
        if self.discrete:
            k = np.clip(np.searchsorted(self.cum[1:], u, side="left"), 0, len(self.probs) - 1)
            return 0.5 * (self.edges[k] + self.edges[k + 1])
        return np.interp(u, self.cum, self.edges)

    def normal_scores(self, x: np.ndarray) -> np.ndarray:
        """``Φ⁻¹(F(x))``: the column on the Gaussian-copula scale."""
        return special.ndtri(np.clip(self.cdf(x), 1e-6, 1 - 1e-6))


def nearest_correlation(matrix: np.ndarray, *, floor: float = 1e-2) -> np.ndarray:
    """A valid correlation matrix near a noisy symmetric one (eigenvalues clipped at ``floor``,
    then the diagonal rescaled to 1)."""
    sym = 0.5 * (matrix + matrix.T)
    d = np.sqrt(np.clip(np.diag(sym), 1e-3, None))
    corr = sym / np.outer(d, d)
    vals, vecs = np.linalg.eigh(corr)
    corr = (vecs * np.clip(vals, floor, None)) @ vecs.T
    d = np.sqrt(np.diag(corr))
    return corr / np.outer(d, d)


@dataclasses.dataclass(frozen=True)
class Span:
    """Where one feature sits in a generator row: ``[α, one-hot mode]`` for a continuous
    column (``1 + K`` entries), a one-hot block for a categorical one."""

    column: Column
    start: int
    width: int
    edges: np.ndarray | None = None  # continuous: K + 1 mode boundaries

    @property
    def continuous(self) -> bool:
        return self.edges is not None

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def half(self) -> np.ndarray:
        return 0.5 * np.diff(self.edges)

    @property
    def logits(self) -> slice:
        """The one-hot block (modes or categories)."""
        return slice(self.start + 1 if self.continuous else self.start, self.start + self.width)


class TableTransformer:
    """Mode-specific normalisation with modes fixed from public or DP information.

    Parameters
    ----------
    schema : Schema
    edges : dict
        ``name -> K + 1`` mode boundaries for every continuous column; its first and last
        entries are the range values are clipped to.
    """

    def __init__(self, schema: Schema, edges: dict[str, np.ndarray]):
        self.schema = schema
        spans, start = [], 0
        for col in schema.features:
            if col.kind == "categorical":
                spans.append(Span(col, start, len(col.categories)))
                start += len(col.categories)
            else:
                e = np.asarray(edges[col.name], dtype=np.float64)
                spans.append(Span(col, start, len(e), e))
                start += len(e)
        self.spans = spans
        self.width = start

    def codes(self, features: pd.DataFrame) -> list[np.ndarray]:
        """Mode (continuous) or category (categorical) index of every value, per column."""
        out = []
        for sp in self.spans:
            values = features[sp.column.name]
            if sp.continuous:
                x = values.to_numpy(dtype=np.float64)
                out.append(np.clip(np.searchsorted(sp.edges, x, side="right") - 1, 0,
                                   len(sp.edges) - 2))
            else:
                idx = {c: i for i, c in enumerate(sp.column.categories)}
                out.append(values.map(idx).to_numpy(dtype=np.int64))
        return out

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        """Rows as an ``N × width`` float32 matrix (values clipped to the mode range first)."""
        n = len(features)
        out = np.zeros((n, self.width), dtype=np.float32)
        rows = np.arange(n)
        for sp, k in zip(self.spans, self.codes(features)):
            if sp.continuous:
                x = np.clip(features[sp.column.name].to_numpy(dtype=np.float64),
                            sp.edges[0], sp.edges[-1])
                out[:, sp.start] = np.clip((x - sp.centers[k]) / sp.half[k], -1.0, 1.0)
            out[rows, sp.logits.start + k] = 1.0
        return out

    def inverse(self, matrix: np.ndarray, *, round_integers: bool = False) -> pd.DataFrame:
        """Features in original units from a generated matrix (arg-max of each one-hot block)."""
        data = {}
        for sp in self.spans:
            k = matrix[:, sp.logits].argmax(axis=1)
            if not sp.continuous:
                data[sp.column.name] = np.asarray(sp.column.categories, dtype=object)[k]
                continue
            alpha = np.clip(matrix[:, sp.start], -1.0, 1.0)
            lo, hi = sp.edges[0], sp.edges[-1]
            if integer_values(sp.column, (lo + 0.5, hi - 0.5)) is not None:
                lo, hi = lo + 0.5, hi - 0.5  # per-integer modes: the bounds are the end values
            x = np.clip(sp.centers[k] + alpha * sp.half[k], lo, hi)
            if round_integers and sp.column.integer:
                x = np.clip(np.round(x), math.ceil(lo), math.floor(hi))
            data[sp.column.name] = x
        return pd.DataFrame(data, columns=self.schema.feature_names)

    def activate(self, raw: torch.Tensor, *, tau: float = 0.2, hard: bool = False) -> torch.Tensor:
        """Generator output → row: ``tanh`` on offsets, Gumbel-softmax on one-hot blocks."""
        parts = []
        for sp in self.spans:
            if sp.continuous:
                parts.append(torch.tanh(raw[:, sp.start:sp.start + 1]))
            parts.append(F.gumbel_softmax(raw[:, sp.logits], tau=tau, hard=hard))
        return torch.cat(parts, dim=1)


# --------------------------------------------------------------------------- networks



def scaled(features: pd.DataFrame, ranges: dict[str, tuple[float, float]]) -> np.ndarray:
    """Continuous columns clipped to ``ranges`` and mapped to [−1, 1] (``N × len(ranges)``)."""
    cols = []
    for name, (lo, hi) in ranges.items():
        x = np.clip(features[name].to_numpy(dtype=np.float64), lo, hi)
        cols.append((2.0 * x - (lo + hi)) / (hi - lo))
    return np.column_stack(cols) if cols else np.zeros((len(features), 0))


def quantile_range(marginal: Marginal, *, tail: float = 0.005) -> tuple[float, float]:
    """The ``[tail, 1 − tail]`` quantiles of a DP marginal (a non-empty interval)."""
    lo, hi = (float(v) for v in marginal.ppf(np.array([tail, 1.0 - tail])))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi
