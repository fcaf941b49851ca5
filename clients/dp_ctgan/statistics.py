"""The DP statistics of DP-CTGAN: every release except DP-SGD (package docstring, step 1).

Noisy ``(s, y)`` cell counts; DP bounds of the continuous columns without public ones; a
noisy, denoised histogram of every continuous column (its :class:`Marginal` and modes); the
noisy Gaussian-copula correlation of the continuous columns; noisy ``cell × category`` counts
of every categorical column; with calibration, the noisy feature sums of each cell. Each is a
Gaussian mechanism of :mod:`common.privacy` recorded in the fit's ledger.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from clients.dp_ctgan.config import DPCTGANConfig
from clients.dp_ctgan.representation import (
    Marginal,
    histogram_edges,
    integer_values,
    mode_edges,
    nearest_correlation,
    quantile_range,
    scaled,
)
from common import dp_queries, privacy
from common.errors import DataError
from common.schema import TabularData

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Statistics:
    """Everything :class:`~clients.dp_ctgan.DPCTGAN` knows about its input besides the
    discriminator: DP releases (post-processed) and public metadata."""

    bounds: dict[str, tuple[float, float]]
    cell_counts: np.ndarray  # 4 noisy counts, clipped at 0
    mode_probs: dict[str, np.ndarray]  # continuous column -> DP mode probabilities
    category_tables: list[np.ndarray]  # per categorical column: 4 × k noisy counts (≥ 0)
    cell_means: np.ndarray | None  # 4 × n_continuous DP means of the scaled features
    edges: dict[str, np.ndarray]  # continuous column -> mode boundaries
    marginals: dict[str, Marginal]  # continuous column -> DP law
    correlation: np.ndarray  # Gaussian-copula correlation of the continuous columns (DP)
    ranges: dict[str, tuple[float, float]]  # continuous column -> DP 0.5 %–99.5 % quantiles


def _spend(ledger: privacy.PrivacyLedger, config: DPCTGANConfig, name: str) -> float:
    """The noise multiplier of mechanism ``name`` for its share of the budget."""
    return ledger.noise_for(name, privacy.BudgetSplit(config.budget).share(name))


def dp_statistics(data: TabularData, cell: np.ndarray, *, config: DPCTGANConfig,
                  ledger: privacy.PrivacyLedger, rng: privacy.NoiseSource) -> Statistics:
    """Every DP release except DP-SGD, recorded in ``ledger``.

    Parameters
    ----------
    data : TabularData
        The private rows.
    cell : numpy.ndarray
        Each row's ``(s, y)`` cell index ``2·s + y``.
    config : DPCTGANConfig
        Budget shares, histogram resolution, modes, prior and calibration switches.
    ledger : common.privacy.PrivacyLedger
        The fit's ledger: sets every mechanism's noise and records it.
    rng : common.privacy.NoiseSource
        The noise source, fresh OS entropy unless seeded (drawn in a fixed order: bounds,
        cell counts, marginals, correlations, category counts, moments).
    """
    schema = data.schema
    cont = schema.continuous
    bounds = {c.name: c.bounds for c in cont if c.bounds is not None}
    missing = [c for c in cont if c.bounds is None]
    if missing:
        sigma = _spend(ledger, config, "bounds")
        m = len(missing)  # m histograms of sensitivity 1 each: one mechanism, noise σ√m
        for col in missing:
            values = data.features[col.name].to_numpy(dtype=np.float64)
            bounds[col.name] = dp_queries.dp_bounds(
                values, noise_multiplier=sigma * math.sqrt(m), rng=rng)
            logger.info("dp-ctgan: column %r has no public bounds; DP range %s",
                        col.name, bounds[col.name])
        ledger.record(privacy.Mechanism("bounds", sigma))

    sigma = _spend(ledger, config, "cell counts")
    counts = np.maximum(dp_queries.noisy_counts(cell, 4, noise_multiplier=sigma, rng=rng), 0.0)
    ledger.record(privacy.Mechanism("cell counts", sigma))
    if counts.sum() < 1:
        raise DataError("the noisy row count is below 1: too few rows for this ε.")

    edges, mode_probs, marginals = {}, {}, {}
    if cont:
        sigma = _spend(ledger, config, "marginals")
        fine = [histogram_edges(c, bounds[c.name], config.fine_bins) for c in cont]
        hists = dp_queries.noisy_histograms(
            [data.features[c.name].to_numpy(dtype=np.float64) for c in cont], fine,
            noise_multiplier=sigma, rng=rng)
        ledger.record(privacy.Mechanism("marginals", sigma))
        noise = sigma * math.sqrt(len(cont))  # each bin's noise std (see noisy_histograms)
        for col, e, h in zip(cont, fine, hists):
            h = dp_queries.project_counts(h, counts.sum(), threshold=3.0 * noise)
            edges[col.name] = mode_edges(col, bounds[col.name], e, h, config.modes)
            marginals[col.name] = Marginal.from_counts(
                e, h, discrete=integer_values(col, bounds[col.name]) is not None)
            per_mode = np.add.reduceat(marginals[col.name].probs,
                                       np.searchsorted(e, edges[col.name][:-1]))
            mode_probs[col.name] = per_mode / per_mode.sum()
    correlation = np.eye(len(cont))
    if len(cont) >= 2 and config.prior == "copula":
        # Σ_i u_i u_iᵀ of the normal scores, rows clipped to ‖u‖ ≤ C: the upper triangle
        # has L2 sensitivity ‖u uᵀ‖_F = ‖u‖² ≤ C².
        sigma = _spend(ledger, config, "correlations")
        u = np.column_stack([marginals[c.name].normal_scores(
            data.features[c.name].to_numpy(dtype=np.float64)) for c in cont])
        second = dp_queries.noisy_second_moments(
            u, clip_norm=config.copula_clip * math.sqrt(len(cont)), noise_multiplier=sigma,
            rng=rng)
        ledger.record(privacy.Mechanism("correlations", sigma))
        correlation = nearest_correlation(second / counts.sum())

    tables = []
    cats = schema.categorical
    if cats:
        sigma = _spend(ledger, config, "category counts")
        m = len(cats)  # one table per column, sensitivity 1 each: noise σ√m
        for col in cats:
            idx = {c: i for i, c in enumerate(col.categories)}
            codes = data.features[col.name].map(idx).to_numpy(dtype=np.int64)
            k = len(col.categories)
            noisy = dp_queries.noisy_counts(cell * k + codes, 4 * k,
                                         noise_multiplier=sigma * math.sqrt(m), rng=rng)
            floor = 3 * sigma * math.sqrt(m)
            table = np.stack([dp_queries.project_counts(row, total, threshold=floor)
                              for row, total in zip(noisy.reshape(4, k), counts)])
            tables.append(table)
        ledger.record(privacy.Mechanism("category counts", sigma))

    # Moments are taken on the DP 0.5 %–99.5 % range of each column (post-processing of
    # the marginals), much tighter than wide public bounds: less noise for the same budget.
    ranges = {c.name: quantile_range(marginals[c.name]) for c in cont}
    means = None
    if config.calibrate and cont:
        sigma = _spend(ledger, config, "moments")
        x = scaled(data.features, ranges)
        clip = math.sqrt(x.shape[1])  # every entry is in [−1, 1]: no row is ever clipped
        sums = dp_queries.noisy_sums(x, cell, 4, clip_norm=clip, noise_multiplier=sigma, rng=rng)
        ledger.record(privacy.Mechanism("moments", sigma))
        means = np.clip(sums / np.maximum(counts, 1.0)[:, None], -1.0, 1.0)
    return Statistics(bounds, counts, mode_probs, tables, means, edges, marginals,
                      correlation, ranges)
