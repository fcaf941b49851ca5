r"""What the parties exchange besides rows, models and metrics, and what every exchange costs.

**Feature scaling.** For the baselines the server pools one scaling for all clients from
per-client moments (:func:`moments`, :func:`encoder_from_moments`). The metrics that clients
pool from sufficient statistics are in :mod:`common.metrics`; the messages that carry all of
this are defined in :mod:`common.protocol`.

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
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from common.encoding import Encoder
from common.errors import ReplyError
from common.schema import Schema, TabularData

#: Bytes per number on the wire: rows and model weights travel as float64.
BYTES_PER_NUMBER = 8


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
