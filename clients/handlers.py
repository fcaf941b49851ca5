"""What a client computes for each message: the content of its replies.

The ClientApp (:mod:`clients.client_app`) reads the configuration and the node's data, then
calls one of these; each reads the server's message and builds the reply through the message
contract (:mod:`common.protocol`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
from flwr.app import RecordDict

from clients.synthesizers import make_synthesizer
from common import comm, mlp, protocol
from common.metrics import group_counts
from common.run_config import RunConfig
from common.schema import TabularData

logger = logging.getLogger(__name__)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True,
                      default=lambda v: v.item() if hasattr(v, "item") else str(v))


def release_content(train: TabularData, config: RunConfig, seed: int, *,
                    expected_digest: str = "") -> RecordDict:
    """Run the client synthesizer on ``train``; the reply content of a one-shot query.

    ``meta`` carries the schema's digest, and the schema itself only when it differs from
    ``expected_digest`` (the server's, sent with the query) or the server sent none; and the
    privacy report's summary (the whole report goes to this client's log).
    """
    start = time.perf_counter()
    [result] = make_synthesizer(config).release(train, seed=seed,
                                                fractions=[config.stage2_fraction])
    rows = result.rows.to_array()
    seconds = time.perf_counter() - start
    metrics = {protocol.NUM_EXAMPLES: len(rows), "seconds": seconds}
    if result.privacy.epsilon is None:  # a private order would disclose N with it
        metrics["train-rows"] = len(train)
    metrics.update({f"seconds-{k}": float(v) for k, v in result.seconds.items()})
    logger.info("released %d rows (%s) in %.2fs; privacy: %s", len(rows), config.order, seconds,
                _json(result.privacy.as_dict()))
    return protocol.release_content(rows, schema=result.rows.schema,
                                    privacy_json=_json(result.privacy.summary()),
                                    expected=expected_digest, metrics=metrics)


def moments_content(train: TabularData) -> RecordDict:
    """Row count and per-column sums and sums of squares (the baselines' pooled scaling)."""
    return protocol.moments_content(comm.moments(train), train.schema)


def train_content(train: TabularData, content: RecordDict, config: RunConfig, seed: int
                  ) -> RecordDict:
    """FedAvg/FairFed local step: SGD from the received model on the training rows."""
    cfg = content[protocol.CONFIG]
    encoder = protocol.read_scaling(cfg, train.schema)
    X = encoder.design(train)
    params = protocol.model_params(content[protocol.MODEL])
    metrics: dict[str, float] = {protocol.NUM_EXAMPLES: len(train)}
    if bool(cfg.get(protocol.FAIRNESS_STATS, False)):  # FairFed: the received model's gap
        metrics.update(group_counts(train.y, mlp.decision(params, X), sensitive=train.s))
    weight = (mlp.reweighing(train.s, train.y) if bool(cfg.get(protocol.REWEIGH, False))
              else None)
    round_ = int(cfg.get(protocol.SERVER_ROUND, 0))
    new = mlp.train(params, X, train.y, epochs=config.local_epochs, lr=config.local_lr,
                    batch_size=config.local_batch_size, l2=config.l2,
                    seed=seed + 7919 * round_, optimizer="sgd", sample_weight=weight)
    d = mlp.decision(new, X)
    margin = (2.0 * train.y - 1.0) * d
    metrics["train-loss"] = float(np.mean(np.logaddexp(0.0, -margin)))
    return RecordDict({protocol.MODEL: protocol.model_record(new),
                       **protocol.metrics_content(metrics)})


def evaluate_content(test: TabularData, content: RecordDict) -> RecordDict:
    """Group statistics of the received model on the test rows."""
    encoder = protocol.read_scaling(content[protocol.CONFIG], test.schema)
    d = mlp.decision(protocol.model_params(content[protocol.MODEL]), encoder.design(test))
    counts = group_counts(test.y, d, sensitive=test.s)
    return protocol.metrics_content({protocol.NUM_EXAMPLES: len(test), **counts})
