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
* **Server fairness**: :func:`server_metrics` — the server model trained on the union of the
  clients' rows, evaluated on the pooled real test rows (accuracy, |SPD|, |EOD|, …).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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
