r"""Quality of synthetic rows against real rows (METHOD.md, § Metrics; as in SAFES).

* **KS** per continuous column: the two-sample Kolmogorov–Smirnov statistic
  ``sup_x |F_real(x) − F_syn(x)|`` of the empirical CDFs (0: same distribution of values).
* **TVD** per column: total variation distance ``½ Σ_b |p_real(b) − p_syn(b)|`` of the two
  histograms — categories for a categorical column; one bin per integer for an integer column
  with at most 32 values in its public bounds; else 20 equal-width bins over the public bounds
  (over the two samples' joint range when the schema declares none). Also for ``s``, ``y`` and
  the ``(s, y)`` cell.
* **TSTR** (train on synthetic, test on real): accuracy on real test rows of the server's
  logistic model (:func:`common.global_model.fit_global_model`) trained on the synthetic rows,
  next to **TRTR** (the same model trained on the real training rows).
* **Density and coverage** (Naeem et al., 2020; Fair4Free's fidelity measures): with
  ``r_i`` the distance from real row ``i`` to its ``k``-th nearest real neighbour (itself
  excluded), density ``= (1/kM) Σ_j Σ_i 1[‖y_j − x_i‖ < r_i]`` over the ``M`` synthetic rows
  ``y_j`` (≈ 1 when they are distributed as the real ones; above 1 where they crowd dense
  regions) and coverage ``= (1/N) Σ_i 1[min_j ‖y_j − x_i‖ < r_i]`` (the share of real
  neighbourhoods that hold a synthetic row). Rows are compared in the encoding of
  :class:`common.encoding.Encoder` fitted on the real rows, with ``s`` and ``y``.
* **Server fairness**: :func:`server_metrics` — the server model trained on the union of the
  clients' rows, evaluated on the pooled real test rows (accuracy, |SPD|, |EOD|, …).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import cdist

from common.encoding import Encoder
from common.global_model import fit_global_model
from common.schema import Column, TabularData

#: Histogram bins of a continuous column for the TVD (integer columns: one per value).
TVD_BINS = 20
MAX_INTEGER_BINS = 32


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS statistic ``sup_x |F_a(x) − F_b(x)|`` (empirical CDFs, ties handled)."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        return float("nan")
    points = np.concatenate([a, b])
    fa = np.searchsorted(a, points, side="right") / a.size
    fb = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def tvd(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance ``½ Σ |p/Σp − q/Σq|`` of two histograms (counts or weights)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("nan")
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def _edges(column: Column, values: np.ndarray) -> np.ndarray:
    lo, hi = column.bounds if column.bounds is not None else (values.min(), values.max())
    if column.integer:
        ints = np.arange(math.ceil(lo), math.floor(hi) + 1)
        if 1 <= len(ints) <= MAX_INTEGER_BINS:
            return np.concatenate([ints - 0.5, [ints[-1] + 0.5]])
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, TVD_BINS + 1)


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin; values outside the edges go to the end bins."""
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(idx, minlength=len(edges) - 1)


def column_distances(real: TabularData, synthetic: TabularData) -> dict[str, dict[str, float]]:
    """Per feature (and for ``s``, ``y`` and the ``(s, y)`` cell): ``ks`` (continuous columns)
    and ``tvd``."""
    out: dict[str, dict[str, float]] = {}
    for col in real.schema.features:
        a, b = real.features[col.name], synthetic.features[col.name]
        if col.kind == "categorical":
            cats = list(col.categories)
            pa = a.value_counts().reindex(cats, fill_value=0).to_numpy()
            pb = b.value_counts().reindex(cats, fill_value=0).to_numpy()
            out[col.name] = {"tvd": tvd(pa, pb)}
            continue
        a, b = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
        edges = _edges(col, np.concatenate([a, b]))
        out[col.name] = {"ks": ks_statistic(a, b),
                         "tvd": tvd(_histogram(a, edges), _histogram(b, edges))}
    cell_real = 2 * real.s.astype(int) + real.y
    cell_syn = 2 * synthetic.s.astype(int) + synthetic.y
    for name, x, z in (("s", real.s, synthetic.s), ("y", real.y, synthetic.y),
                       ("cell", cell_real, cell_syn)):
        k = 4 if name == "cell" else 2
        out[name] = {"tvd": tvd(np.bincount(x, minlength=k), np.bincount(z, minlength=k))}
    return out


def tstr_accuracy(synthetic: TabularData, real_test: TabularData, *, lam: float = 0.0) -> float:
    """Accuracy on ``real_test`` of the server's logistic model trained on ``synthetic``."""
    return fit_global_model([synthetic], lam=lam).evaluate(real_test)["accuracy"]


def server_metrics(parts: Sequence[TabularData], test: TabularData, *,
                   lam: float = 0.0) -> dict[str, float]:
    """The server model trained on the union of ``parts``, evaluated on ``test``."""
    return fit_global_model(parts, lam=lam).evaluate(test)


def quality_report(real_train: TabularData, synthetic: TabularData, real_test: TabularData,
                   *, lam: float = 0.0) -> dict:
    """Summary of :func:`column_distances` plus TSTR and TRTR accuracy.

    Keys: ``ks_mean``, ``ks_max`` (continuous features), ``tvd_mean``, ``tvd_max`` (features),
    ``cell_tvd``, ``tstr_accuracy``, ``trtr_accuracy`` and ``columns`` (the per-column values).
    """
    cols = column_distances(real_train, synthetic)
    feats = [c.name for c in real_train.schema.features]
    ks = [cols[c]["ks"] for c in feats if "ks" in cols[c]]
    tv = [cols[c]["tvd"] for c in feats]
    return {
        "ks_mean": float(np.mean(ks)) if ks else float("nan"),
        "ks_max": float(np.max(ks)) if ks else float("nan"),
        "tvd_mean": float(np.mean(tv)) if tv else float("nan"),
        "tvd_max": float(np.max(tv)) if tv else float("nan"),
        "cell_tvd": cols["cell"]["tvd"],
        "tstr_accuracy": tstr_accuracy(synthetic, real_test, lam=lam),
        "trtr_accuracy": tstr_accuracy(real_train, real_test, lam=lam),
        "columns": cols,
    }


def density_coverage_arrays(real: np.ndarray, synthetic: np.ndarray, k: int = 5,
                            *, chunk: int = 1024) -> dict[str, float]:
    """Density and coverage (module docstring) of the rows of ``synthetic`` against those of
    ``real`` (2-D arrays of the same width); Euclidean distances (scipy's ``cdist``), ``chunk``
    rows at a time."""
    real, synthetic = np.asarray(real, dtype=np.float64), np.asarray(synthetic, dtype=np.float64)
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise ValueError(f"need two 2-D arrays of the same width, got {real.shape} and "
                         f"{synthetic.shape}.")
    if not 1 <= k < len(real) or len(synthetic) == 0:
        raise ValueError(f"need 1 ≤ k < {len(real)} real rows and a synthetic row, got k = {k} "
                         f"and {len(synthetic)} synthetic rows.")
    radius = np.empty(len(real))
    for start in range(0, len(real), chunk):
        d = cdist(real[start:start + chunk], real)
        radius[start:start + chunk] = np.partition(d, k, axis=1)[:, k]  # [:, 0] is itself
    inside = np.zeros(len(synthetic))
    covered = np.zeros(len(real), dtype=bool)
    for start in range(0, len(synthetic), chunk):
        hit = cdist(synthetic[start:start + chunk], real) < radius[None, :]
        inside[start:start + chunk] = hit.sum(axis=1)
        covered |= hit.any(axis=0)
    return {"density": float(inside.mean() / k), "coverage": float(covered.mean())}


def density_coverage(real: TabularData, synthetic: TabularData, k: int = 5,
                     *, max_rows: int = 5000, seed: int = 0) -> dict[str, float]:
    """Density and coverage of ``synthetic`` against ``real`` in the real rows' encoding (with
    ``s`` and ``y``); at most ``max_rows`` rows of each, drawn at random with ``seed``."""
    encoder = Encoder.fit(real)
    rng = np.random.default_rng(seed)

    def embed(data: TabularData) -> np.ndarray:
        if len(data) > max_rows:
            data = data.subset(np.sort(rng.choice(len(data), max_rows, replace=False)))
        return np.column_stack([encoder.encode_z(data), data.s, data.y])

    return density_coverage_arrays(embed(real), embed(synthetic), k)
