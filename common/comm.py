r"""What the parties exchange besides rows and models, and what every exchange costs.

**Sufficient statistics.** Clients never send predictions. To evaluate a model on the union of
all clients' test rows, each client sends counts and sums (:func:`group_counts`); the server
adds them up (:func:`pool`) and computes the metrics of METHOD.md § Metrics from the totals
(:func:`report_from_counts`). The result is exactly the metric on the union, not an average of
per-client metrics (which would be wrong for SPD/EOD: the group sizes differ per client):

.. math::

    \mathrm{SPD} = \frac{\sum_k \mathrm{pos}_{k,0}}{\sum_k n_{k,0}}
                 - \frac{\sum_k \mathrm{pos}_{k,1}}{\sum_k n_{k,1}}, \qquad
    \mathrm{Cov} = \frac{\sum s\,d}{N} - \frac{\sum s}{N}\,\frac{\sum d}{N}.

The same counts, computed on a client's training rows, are FairFed's group statistics.
Feature scaling for the baselines is pooled the same way from per-client moments
(:func:`moments`, :func:`encoder_from_moments`).

**Byte accounting.** :class:`Exchange` records one server↔clients exchange (messages and
serialised bytes in each direction); the formulas of METHOD.md § Communication cost count
*numbers*:

.. math::

    \text{FedAvg: } 2 K R d, \qquad
    \text{one-shot: } \underbrace{\textstyle\sum_k \tilde N_{2,k}\, q}_{\text{up}}
    + \underbrace{K d}_{\text{down}},

so one-shot moves fewer numbers once :math:`2 R d > \tilde N_2 q + d`, i.e. for
:math:`d > d^* = \tilde N_2 q / (2R - 1)` (:func:`crossover_params`).

This module is Flower-free; the server's counting of real serialised message sizes is in
:mod:`server.traffic`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from common.encoding import Encoder
from common.errors import ReplyError
from common.schema import Schema, TabularData

#: Record and field names of the messages (shared by the ClientApp and the ServerApp).
ROWS = "rows"  # ArrayRecord (and its one array) with the released wire matrix
META = "meta"  # ConfigRecord: schema digest (and JSON), privacy report summary JSON
SCHEMA = "schema"  # in META: the schema as JSON (when the server does not know it already)
SCHEMA_DIGEST = "schema-digest"  # in META and in the query's CONFIG: SHA-256 of the schema JSON
PRIVACY = "privacy"  # in META: the privacy report's summary as JSON
METRICS = "metrics"  # MetricRecord: counts, timings, num-examples
MODEL = "arrays"  # ArrayRecord of model parameters (Flower's FedAvg uses this key)
CONFIG = "config"  # ConfigRecord sent with a model (Flower's FedAvg uses this key)
NUM_EXAMPLES = "num-examples"  # FedAvg's weighting key
MOMENTS_ACTION = "moments"  # "query.moments": per-client moments for feature scaling

#: Keys of the group statistics (one float each; integers where they are counts).
COUNT_KEYS = (
    "n", "correct",
    "n-s0", "n-s1", "pos-s0", "pos-s1",          # statistical parity
    "n-y1-s0", "n-y1-s1", "tp-s0", "tp-s1",      # equal opportunity
    "sum-d", "sum-d2", "sum-sd",                 # covariance and correlation of s and d(x)
    "sum-d-y1", "sum-d2-y1", "sum-sd-y1",        # the same among y = 1 (equal opportunity)
)
#: Bytes per number on the wire: rows and model weights travel as float64.
BYTES_PER_NUMBER = 8


# --------------------------------------------------------------------------- statistics


def group_counts(y_true: np.ndarray, decision: np.ndarray, *, sensitive: np.ndarray
                 ) -> dict[str, float]:
    """Counts and sums from which :func:`report_from_counts` recovers every metric.

    Parameters
    ----------
    y_true : array of 0/1
    decision : array of float
        ``d(x)``; the prediction is ``ŷ = 1[d(x) > 0]``.
    sensitive : array of 0/1 (keyword-only: it must not be swapped with the labels)
    """
    y = np.asarray(y_true).astype(np.int64)
    s = np.asarray(sensitive).astype(np.int64)
    d = np.asarray(decision, dtype=np.float64)
    yhat = (d > 0).astype(np.int64)
    pos1 = y == 1
    return {
        "n": float(len(y)),
        "correct": float(np.sum(yhat == y)),
        "n-s0": float(np.sum(s == 0)),
        "n-s1": float(np.sum(s == 1)),
        "pos-s0": float(np.sum(yhat[s == 0])),
        "pos-s1": float(np.sum(yhat[s == 1])),
        "n-y1-s0": float(np.sum(pos1 & (s == 0))),
        "n-y1-s1": float(np.sum(pos1 & (s == 1))),
        "tp-s0": float(np.sum(yhat[pos1 & (s == 0)])),
        "tp-s1": float(np.sum(yhat[pos1 & (s == 1)])),
        "sum-d": float(np.sum(d)),
        "sum-d2": float(np.sum(d * d)),
        "sum-sd": float(np.sum(s * d)),
        "sum-d-y1": float(np.sum(d[pos1])),
        "sum-d2-y1": float(np.sum(d[pos1] * d[pos1])),
        "sum-sd-y1": float(np.sum(s[pos1] * d[pos1])),
    }


def check_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """Validate one client's statistics; raises :class:`ReplyError` naming the problem."""
    missing = [k for k in COUNT_KEYS if k not in counts]
    if missing:
        raise ReplyError(f"the statistics lack the key(s) {missing}.")
    out = {k: float(counts[k]) for k in COUNT_KEYS}
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise ReplyError(f"the statistics hold non-finite value(s) for {bad}.")
    integral = [k for k in COUNT_KEYS if not k.startswith("sum-")]
    if any(out[k] < 0 or not out[k].is_integer() for k in integral):
        raise ReplyError("the counts must be non-negative integers.")
    if out["n-s0"] + out["n-s1"] != out["n"] or out["correct"] > out["n"]:
        raise ReplyError("the counts are inconsistent: n-s0 + n-s1 ≠ n, or correct > n.")
    for part, whole in (("pos-s0", "n-s0"), ("pos-s1", "n-s1"), ("tp-s0", "n-y1-s0"),
                        ("tp-s1", "n-y1-s1"), ("n-y1-s0", "n-s0"), ("n-y1-s1", "n-s1")):
        if out[part] > out[whole]:
            raise ReplyError(f"the counts are inconsistent: {part} > {whole}.")
    return out


def pool(counts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise sum of several clients' statistics."""
    total = dict.fromkeys(COUNT_KEYS, 0.0)
    for c in counts:
        for k in COUNT_KEYS:
            total[k] += float(c[k])
    return total


def _rate(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return float("nan")
    hi = max(a, b)
    return 1.0 if hi == 0 else min(a, b) / hi


def report_from_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """Accuracy, balanced accuracy, P(ŷ=1), |SPD|, |EOD|, DPR, EOR, Cov and Corr (SP and EO)
    from (pooled) statistics.

    Same keys and definitions as :func:`common.metrics.fairness_report`; a rate whose group
    is empty is NaN.
    """
    n = counts["n"]
    sp0, sp1 = _rate(counts["pos-s0"], counts["n-s0"]), _rate(counts["pos-s1"], counts["n-s1"])
    tp0 = _rate(counts["tp-s0"], counts["n-y1-s0"])
    tp1 = _rate(counts["tp-s1"], counts["n-y1-s1"])
    positives = counts["n-y1-s0"] + counts["n-y1-s1"]
    true_pos = counts["tp-s0"] + counts["tp-s1"]
    tpr, tnr = _rate(true_pos, positives), _rate(counts["correct"] - true_pos, n - positives)
    cov, corr = _cov_corr(n, counts["n-s1"], counts["sum-d"], counts["sum-d2"], counts["sum-sd"])
    cov_eo, corr_eo = _cov_corr(counts["n-y1-s0"] + counts["n-y1-s1"], counts["n-y1-s1"],
                                counts["sum-d-y1"], counts["sum-d2-y1"], counts["sum-sd-y1"])
    return {
        "accuracy": _rate(counts["correct"], n),
        "balanced_accuracy": (float(np.nanmean([tpr, tnr]))
                              if not (math.isnan(tpr) and math.isnan(tnr)) else float("nan")),
        "positive_rate": _rate(counts["pos-s0"] + counts["pos-s1"], n),
        "spd_signed": sp0 - sp1,
        "eod_signed": tp0 - tp1,
        "spd": abs(sp0 - sp1),
        "eod": abs(tp0 - tp1),
        "dpr": _ratio(sp0, sp1),
        "eor": _ratio(tp0, tp1),
        "cov": cov,
        "corr": corr,
        "cov_eo": cov_eo,
        "corr_eo": corr_eo,
        "n": n,
    }


def _cov_corr(n: float, n_s1: float, sum_d: float, sum_d2: float, sum_sd: float
              ) -> tuple[float, float]:
    """Population covariance and correlation of a binary ``s`` and ``d`` from sums."""
    mean_s, mean_d = _rate(n_s1, n), _rate(sum_d, n)
    cov = _rate(sum_sd, n) - mean_s * mean_d
    var_s = mean_s * (1.0 - mean_s)  # s is binary: E[s²] = E[s]
    var_d = _rate(sum_d2, n) - mean_d * mean_d
    denom = math.sqrt(var_s * var_d) if var_s > 0 and var_d > 0 else 0.0
    return cov, cov / denom if denom > 0 else float("nan")


def gap(counts: Mapping[str, float], measure: str) -> float:
    """The signed fairness gap (SPD for ``"sp"``, EOD for ``"eo"``) of the statistics."""
    report = report_from_counts(counts)
    return report["spd_signed"] if measure == "sp" else report["eod_signed"]


def moments(data: TabularData) -> dict[str, list[float] | float]:
    """Row count and per-continuous-column sums and sums of squares of ``data``."""
    cont = [c.name for c in data.schema.continuous]
    values = data.features[cont].to_numpy(dtype=np.float64) if cont else np.empty((len(data), 0))
    return {"n": float(len(data)), "sum": values.sum(axis=0).tolist(),
            "sumsq": (values * values).sum(axis=0).tolist()}


def encoder_from_moments(schema: Schema, parts: Sequence[Mapping]) -> Encoder:
    """The :class:`Encoder` that :meth:`Encoder.fit` would give on the union of the parts.

    Pooled mean ``Σ sum / Σ n`` and population standard deviation
    ``sqrt(Σ sumsq / Σ n − mean²)`` (a constant column keeps std 1, as in ``Encoder.fit``).
    """
    n_cont = len(schema.continuous)
    n = sum(float(p["n"]) for p in parts)
    if n <= 0:
        raise ReplyError("no client reported any rows; cannot scale the features.")
    for p in parts:
        if len(p["sum"]) != n_cont or len(p["sumsq"]) != n_cont:
            raise ReplyError(
                f"a client reported moments of {len(p['sum'])} columns; the schema has {n_cont}."
            )
    total = np.sum([np.asarray(p["sum"], dtype=np.float64) for p in parts], axis=0)
    total_sq = np.sum([np.asarray(p["sumsq"], dtype=np.float64) for p in parts], axis=0)
    mean = total / n
    var = np.maximum(total_sq / n - mean * mean, 0.0)
    std = np.sqrt(var)
    return Encoder(schema=schema, mean=mean.reshape(n_cont), std=np.where(std > 0, std, 1.0))


# --------------------------------------------------------------------------- bytes


@dataclasses.dataclass(frozen=True)
class Exchange:
    """One server↔clients exchange: messages out, replies in, and their serialised sizes.

    ``bytes_*`` are whole serialised messages (metadata, records, keys); ``payload_*`` are
    the array bytes alone (number of array elements × item size), which is what METHOD.md's
    formula counts.
    """

    index: int
    phase: str
    messages_down: int
    messages_up: int
    bytes_down: int
    bytes_up: int
    payload_down: int
    payload_up: int
    seconds: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def totals(exchanges: Iterable[Exchange]) -> dict[str, int]:
    """Sum of bytes and payload in each direction over ``exchanges``."""
    out = {"bytes_down": 0, "bytes_up": 0, "payload_down": 0, "payload_up": 0}
    for e in exchanges:
        for k in out:
            out[k] += getattr(e, k)
    return out


def fedavg_numbers(*, clients: int, rounds: int, params: int) -> int:
    """Numbers FedAvg moves in ``R`` rounds: ``2·K·R·d`` (model down and up)."""
    return 2 * clients * rounds * params


def oneshot_numbers(*, rows: Sequence[int], columns: int, params: int) -> dict[str, int]:
    """Numbers the one-shot scheme moves: ``Σ_k Ñ₂ₖ·q`` up and ``K·d`` down."""
    return {"up": int(sum(rows)) * columns, "down": len(rows) * params}


def crossover_params(*, rows_per_client: float, columns: int, rounds: int) -> float:
    """Model size ``d*`` above which one-shot moves fewer numbers than FedAvg.

    From ``2·K·R·d = K·(Ñ₂·q + d)``: ``d* = Ñ₂·q / (2R − 1)``.
    """
    return rows_per_client * columns / (2 * rounds - 1)
