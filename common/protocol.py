"""The message contract between the ClientApp and the ServerApp: keys, builders, parsers.

This is the one module of :mod:`common` that imports Flower: both apps build and read their
messages here, so the two sides cannot drift apart. What each message carries
(``docs/protocol.md`` has the full table):

=====================  ========================================  ==============================
message type           server → client                           client → server
=====================  ========================================  ==============================
``query``              ``config``: the expected schema digest     ``rows``, ``meta``, ``metrics``
``query.moments``      —                                          ``metrics`` (n, sum, sumsq),
                                                                  ``meta`` (schema)
``train``              ``arrays`` (model), ``config`` (scaling,   ``arrays``, ``metrics``
                       round, fairness-stats, reweigh)
``evaluate``           ``arrays`` (model), ``config`` (scaling)   ``metrics`` (group counts)
=====================  ========================================  ==============================

Model weights and rows travel as float64 ``ArrayRecord``\\ s; everything else in
``ConfigRecord``/``MetricRecord``. Checks of what a *reply* holds that need the federation's
context (schema, public ranges, row caps) are the server's (:mod:`server.validation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from common.encoding import Encoder
from common.errors import ConfigError, ReplyError
from common.schema import Schema

ROWS = "rows"  # ArrayRecord (and its one array) with the released wire matrix
META = "meta"  # ConfigRecord: schema digest (and JSON), privacy report summary JSON
SCHEMA = "schema"  # in META: the schema as JSON (when the server does not know it already)
SCHEMA_DIGEST = "schema-digest"  # in META and in the query's CONFIG: SHA-256 of the schema JSON
PRIVACY = "privacy"  # in META: the privacy report's summary as JSON
METRICS = "metrics"  # MetricRecord: counts, num-examples
MODEL = "arrays"  # ArrayRecord of model parameters (Flower's FedAvg uses this key)
CONFIG = "config"  # ConfigRecord sent with a model (Flower's FedAvg uses this key)
NUM_EXAMPLES = "num-examples"  # FedAvg's weighting key
EPSILON_SPENT = "epsilon-spent"  # in a DP-FedAvg train reply's METRICS: ε spent so far
EVALUATION_EPSILON = "evaluation-epsilon"  # in an evaluate reply's METRICS: ε of a private one
MOMENTS_ACTION = "moments"  # "query.moments": per-client moments for feature scaling
ENCODER_MEAN = "encoder-mean"  # in CONFIG: the pooled means of the continuous columns
ENCODER_STD = "encoder-std"  # in CONFIG: the pooled standard deviations
SERVER_ROUND = "server-round"  # in CONFIG of train: the round number
FAIRNESS_STATS = "fairness-stats"  # in CONFIG of train: reply with group counts (FairFed)
REWEIGH = "reweigh"  # in CONFIG of train: reweigh the rows locally (FairFed)


# --------------------------------------------------------------------------- models


def model_record(params: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Model parameters as an ``ArrayRecord`` of float64 arrays (names kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float64))
                        for k, v in params.items()})


def model_params(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The parameters of a model record (name → array)."""
    return {k: v.numpy() for k, v in record.items()}


def scaling_record(encoder: Encoder) -> ConfigRecord:
    """The feature scaling that travels with a model (continuous means and stds)."""
    return ConfigRecord({ENCODER_MEAN: [float(v) for v in encoder.mean],
                         ENCODER_STD: [float(v) for v in encoder.std]})


def read_scaling(config: ConfigRecord, schema: Schema) -> Encoder:
    """The server's feature scaling from a model's ``config``, checked against ``schema``."""
    mean = np.asarray(config.get(ENCODER_MEAN, []), dtype=np.float64)
    std = np.asarray(config.get(ENCODER_STD, []), dtype=np.float64)
    n_cont = len(schema.continuous)
    if mean.shape != (n_cont,) or std.shape != (n_cont,) or np.any(std <= 0):
        raise ConfigError(
            f"the server's feature scaling has {mean.size} mean(s) and {std.size} std(s); this "
            f"client's data has {n_cont} continuous columns (and every std must be > 0)."
        )
    return Encoder(schema=schema, mean=mean, std=std)


def model_content(params: Mapping[str, np.ndarray], encoder: Encoder,
                  **config: Any) -> RecordDict:
    """A message carrying a model, its scaling and further ``config`` entries."""
    return RecordDict({MODEL: model_record(params),
                       CONFIG: ConfigRecord({**scaling_record(encoder), **config})})


# --------------------------------------------------------------------------- one-shot release


MAX_ROWS = "max-rows"  # in a one-shot query's CONFIG: the row cap of the reply


def query_content(*, max_rows: int, schema_digest: str = "") -> RecordDict:
    """A one-shot query: the row cap and the digest of the schema the server expects (none:
    the client sends its schema)."""
    ask: dict[str, Any] = {MAX_ROWS: max_rows}
    if schema_digest:
        ask[SCHEMA_DIGEST] = schema_digest
    return RecordDict({CONFIG: ConfigRecord(ask)})


def expected_digest(content: RecordDict) -> str:
    """The schema digest a one-shot query carries (``""`` if none)."""
    if CONFIG in content.config_records:
        return str(content.config_records[CONFIG].get(SCHEMA_DIGEST, ""))
    return ""


def release_content(rows: np.ndarray, *, schema: Schema, privacy_json: str,
                    expected: str = "", metrics: Mapping[str, float] | None = None
                    ) -> RecordDict:
    """A one-shot reply: the wire matrix, the schema's digest (and the schema itself when the
    server expects another or none), the privacy summary and ``metrics``."""
    meta = {SCHEMA_DIGEST: schema.digest(), PRIVACY: privacy_json}
    if schema.digest() != expected:
        meta[SCHEMA] = schema.to_json()
    return RecordDict({
        ROWS: ArrayRecord({ROWS: Array(np.ascontiguousarray(rows, dtype=np.float64))}),
        META: ConfigRecord(meta),
        METRICS: MetricRecord(dict(metrics or {})),
    })


# --------------------------------------------------------------------------- statistics


def metrics_content(metrics: Mapping[str, float]) -> RecordDict:
    """A reply that carries only a ``MetricRecord`` (evaluation statistics)."""
    return RecordDict({METRICS: MetricRecord(dict(metrics))})


def reply_metrics(content: RecordDict) -> dict[str, Any]:
    """The ``metrics`` record of a reply; :class:`ReplyError` if it has none."""
    if METRICS not in content.metric_records:
        raise ReplyError(f"the reply has no MetricRecord {METRICS!r}.")
    return dict(content.metric_records[METRICS])


def read_moments(content: RecordDict) -> tuple[dict[str, Any], Schema]:
    """The moments and schema of a ``query.moments`` reply; :class:`ReplyError` if malformed."""
    try:
        metrics = content.metric_records[METRICS]
        schema = Schema.from_json(content.config_records[META][SCHEMA])
        moments = {"n": metrics["n"], "sum": list(metrics["sum"]),
                   "sumsq": list(metrics["sumsq"])}
    except (KeyError, TypeError) as exc:
        raise ReplyError(f"the moments reply lacks {exc}.") from exc
    return moments, schema


def moments_content(moments: Mapping[str, Any], schema: Schema) -> RecordDict:
    """A ``query.moments`` reply: row count, per-column sums and sums of squares."""
    return RecordDict({
        METRICS: MetricRecord({"n": moments["n"], "sum": [float(v) for v in moments["sum"]],
                               "sumsq": [float(v) for v in moments["sumsq"]]}),
        META: ConfigRecord({SCHEMA: schema.to_json()}),
    })
