"""What a client computes for each message: the content of its replies.

The ClientApp (:mod:`clients.client_app`) reads the configuration and the node's data, then
calls one of these; each reads the server's message and builds the reply through the message
contract (:mod:`common.protocol`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np
from flwr.app import RecordDict

from clients import dp_sgd
from clients.policy import PrivacyPolicy
from clients.synthesizers import make_synthesizer
from common import comm, mlp, protocol
from common.dp_fedavg import DPSGDPlan
from common.errors import ConfigError, PolicyError
from common.metrics import counts_from_cells, group_counts
from common.privacy import NoiseSource, noisy_evaluation_cells
from common.run_config import RunConfig
from common.schema import TabularData

logger = logging.getLogger(__name__)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True,
                      default=lambda v: v.item() if hasattr(v, "item") else str(v))


def release_content(train: TabularData, config: RunConfig, seed: int, *,
                    policy: PrivacyPolicy, expected_digest: str = "") -> RecordDict:
    """Run the client synthesizer on ``train``, within this client's privacy ``policy``; the
    reply content of a one-shot query.

    ``meta`` carries the schema's digest, and the schema itself only when it differs from
    ``expected_digest`` (the server's, sent with the query) or the server sent none; and the
    privacy report's summary (the whole report goes to this client's log). A private order's
    reply holds nothing that is a function of the true row count: the number of rows released
    follows the generator's noisy count, δ is the run's, and the timings (which grow with N)
    stay in the client's log.
    """
    policy.check_release(config)
    start = time.perf_counter()
    synthesizer = make_synthesizer(config, noise_seed=policy.noise_seed,
                                   secure_mode=policy.secure_mode)
    [result] = synthesizer.release(train, seed=seed, fractions=[config.stage2_fraction])
    rows = result.rows.to_array()
    seconds = time.perf_counter() - start
    metrics = {protocol.NUM_EXAMPLES: len(rows)}
    if result.privacy.epsilon is None:  # no guarantee to keep: timings and N may go
        metrics["train-rows"] = len(train)
        metrics["seconds"] = seconds
        metrics.update({f"seconds-{k}": float(v) for k, v in result.seconds.items()})
    logger.info("released %d rows (%s) in %.2fs (%s); privacy: %s", len(rows), config.order,
                seconds, _json(result.seconds), _json(result.privacy.as_dict()))
    return protocol.release_content(rows, schema=result.rows.schema,
                                    privacy_json=_json(result.privacy.summary()),
                                    expected=expected_digest, metrics=metrics)


def moments_content(train: TabularData, policy: PrivacyPolicy) -> RecordDict:
    """Row count and per-column sums and sums of squares (the baselines' pooled scaling);
    exact, so only under a policy that allows the non-private handlers."""
    policy.check_nonprivate("query.moments (exact row count and column sums)")
    return protocol.moments_content(comm.moments(train), train.schema)


def train_content(train: TabularData, content: RecordDict, config: RunConfig, seed: int, *,
                  policy: PrivacyPolicy) -> RecordDict:
    """FedAvg/FairFed local step: SGD from the received model on the training rows (only
    under a policy that allows the non-private handlers)."""
    policy.check_nonprivate("train (a model fitted to the real rows)")
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


def dp_train_content(train: TabularData, content: RecordDict, config: RunConfig, seed: int, *,
                     policy: PrivacyPolicy, state: RecordDict) -> RecordDict:
    """DP-FedAvg local step: one round of DP-SGD from the received model, within the run's
    (ε, δ) and this client's policy (:mod:`clients.dp_sgd`). ``state`` is the node's
    ``Context.state``, where the run's round count survives between messages.

    The reply holds the model, a weight of 1 (equal weights: ``N`` would disclose the row
    count) and the ε spent so far, a function of the run configuration alone.
    """
    policy.check_budget(config)
    if config.delta >= 1.0 / max(len(train), 1):
        raise ConfigError(f"delta = {config.delta:g} is not below 1/N = {1 / len(train):g} of "
                          f"the {len(train)} training rows; use a smaller --delta.")
    plan = DPSGDPlan.for_config(config)
    ledger = dp_sgd.RoundLedger(state)
    done = ledger.begin_round(plan)
    encoder = protocol.read_scaling(content[protocol.CONFIG], train.schema)
    noise = NoiseSource(policy.noise_seed, secure=policy.secure_mode,
                        purpose=f"dp-fedavg round {done} of seed {seed}")
    n_hat = ledger.row_count(plan, len(train), noise)
    new = dp_sgd.train(protocol.model_params(content[protocol.MODEL]), encoder.design(train),
                       train.y, plan=plan, expected_batch_size=plan.sample_rate * n_hat,
                       lr=config.local_lr, l2=config.l2, seed=noise.torch_seed(),
                       secure_mode=policy.secure_mode)
    done = ledger.end_round()
    spent = plan.epsilon_after(done)
    logger.info("DP-FedAvg round %d of %d: ε spent %.4f of %g (σ = %.4g, q = %g, %d steps a "
                "round)", done, plan.rounds, spent, plan.epsilon, plan.noise_multiplier,
                plan.sample_rate, plan.steps_per_round)
    return RecordDict({protocol.MODEL: protocol.model_record(new),
                       **protocol.metrics_content({protocol.NUM_EXAMPLES: 1,
                                                   protocol.EPSILON_SPENT: spent})})


#: Private evaluations answered, by (run, node): at most one per run (module docstring of
#: :mod:`clients.policy`). Per process; see docs/privacy.md for what this does not cover.
_EVALUATED: set[tuple[int, int]] = set()
_EVALUATED_LOCK = threading.Lock()


def evaluate_content(test: TabularData, content: RecordDict, config: RunConfig, *,
                     policy: PrivacyPolicy, run: tuple[int, int] = (0, 0)) -> RecordDict:
    """Group statistics of the received model on the test rows.

    Exact (:func:`common.metrics.group_counts`) under a policy that allows the non-private
    handlers; otherwise the ``(s, y, ŷ)`` cells under the Gaussian mechanism at the policy's
    evaluation ε and the run's δ (:func:`common.privacy.noisy_evaluation_cells`), once per
    ``run`` (run id, node id), without the sums of ``d(x)`` and with the noisy row count.
    """
    encoder = protocol.read_scaling(content[protocol.CONFIG], test.schema)
    d = mlp.decision(protocol.model_params(content[protocol.MODEL]), encoder.design(test))
    if policy.nonprivate:
        counts = group_counts(test.y, d, sensitive=test.s)
        return protocol.metrics_content({protocol.NUM_EXAMPLES: len(test), **counts})
    if config.delta > policy.max_delta:
        raise PolicyError(f"delta = {config.delta:g} exceeds this client's limit "
                          f"{policy.max_delta:g}.")
    if config.delta >= 1.0 / max(len(test), 1):
        raise ConfigError(f"delta = {config.delta:g} is not below 1/N = {1 / len(test):g} of "
                          f"the {len(test)} test rows; use a smaller --delta.")
    with _EVALUATED_LOCK:
        if run in _EVALUATED:
            raise PolicyError("this run already had its private evaluation; a second one would "
                              "spend the evaluation budget again.")
        _EVALUATED.add(run)
    noise = NoiseSource(policy.noise_seed, secure=policy.secure_mode, purpose="evaluation")
    cells, report = noisy_evaluation_cells(test.s, test.y, (d > 0).astype(np.int64),
                                           epsilon=policy.evaluation_epsilon,
                                           delta=config.delta, noise=noise)
    logger.info("private evaluation: %s", _json(report))
    counts = counts_from_cells(cells)
    return protocol.metrics_content({protocol.NUM_EXAMPLES: counts["n"], **counts,
                                     protocol.EVALUATION_EPSILON: report["epsilon"]})
