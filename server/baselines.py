"""The FedAvg and FairFed flows (METHOD.md, § Baselines), with Flower's own strategy loop.

1. One ``query.moments`` exchange: each client sends its row count and per-column sums and
   sums of squares; the server pools them into one feature scaling for everybody
   (:func:`common.comm.encoder_from_moments`, equal to fitting it on the union).
2. ``R`` rounds of Flower's ``Strategy.start`` with
   :class:`flwr.serverapp.strategy.FedAvg` or :class:`server.strategy.fairfed.FairFed`: the
   global model goes to every client, each runs local SGD and sends its model back, the
   server averages (weights ``n_k``, or FairFed's ``ω_k``). Per-round federated evaluation is
   off (it would add ``K·d`` numbers a round that the formula does not count).
3. One evaluation broadcast of the final model, pooled exactly as in the one-shot flow.

The formula ``2·K·R·d`` covers step 2; steps 1 and 3 are counted and reported apart.

DP-FedAvg (``dp-fedavg``, sample-level) skips step 1: the column moments are private, so the
scaling comes from the schema's declared bounds (:meth:`common.encoding.Encoder.from_bounds`,
no rows read). In step 2 each client runs DP-SGD (:mod:`clients.dp_sgd`) on the run's public
plan (:class:`common.dp_fedavg.DPSGDPlan`), the models are averaged with equal weights, and
every round's reply carries the ε spent so far; the result's ``privacy`` holds the plan and
the largest ε any client reports (checked against the plan's own figure).
"""

from __future__ import annotations

import logging
import math
import time

from flwr.app import Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from common import comm, mlp, protocol
from common.dp_fedavg import DPSGDPlan
from common.encoding import Encoder
from common.errors import ConfigError, ReplyError
from common.run_config import RunConfig
from server.evaluation import (
    evaluate_on_clients,
    wait_for_nodes,
)
from server.result import FederationResult
from server.strategy.fairfed import FairFed
from server.traffic import CountingGrid
from server.validation import Rejection, client_failure, expected_schema

logger = logging.getLogger(__name__)

MOMENTS = f"{MessageType.QUERY}.{protocol.MOMENTS_ACTION}"


def pooled_scaling(grid: CountingGrid, nodes: list[int], config: RunConfig):
    """Ask every node for its moments; returns the pooled Encoder and the rejections."""
    messages = [Message(RecordDict(), dst_node_id=n, message_type=MOMENTS) for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=config.timeout))
    parts, schemas, rejected = [], [], []
    for m in replies:
        node = m.metadata.src_node_id
        try:
            if m.has_error():
                raise ReplyError(client_failure(m))
            moments, schema = protocol.read_moments(m.content)
            schemas.append(schema)
            parts.append(moments)
        except ReplyError as exc:
            rejected.append(Rejection(node, MOMENTS, str(exc)))
    if len(parts) < config.min_clients:
        reasons = "; ".join(f"node {r.node_id}: {r.reason}" for r in rejected) or "none"
        raise ReplyError(f"only {len(parts)} client(s) sent their moments, fewer than "
                         f"min-clients = {config.min_clients}. Rejected: {reasons}")
    if any(s != schemas[0] for s in schemas):
        raise ReplyError("the clients' schemas differ; every client must hold the same columns.")
    for r in rejected:
        logger.warning("moments: skipped node %d: %s", r.node_id, r.reason)
    return comm.encoder_from_moments(schemas[0], parts), rejected


def public_scaling(config: RunConfig) -> Encoder:
    """DP-FedAvg's feature scaling: the federation's schema's declared bounds, no rows read."""
    schema = expected_schema(config)
    if schema is None:
        raise ConfigError("dp-fedavg scales the features by the declared schema's bounds, and "
                          f"the server cannot read the schema {config.schema!r}; give the "
                          "server the same schema file as the clients.")
    return Encoder.from_bounds(schema)


def largest_epsilon(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """DP-FedAvg's round metrics: the largest ε spent that any client reports."""
    spent = []
    for record in records:
        metrics = next(iter(record.metric_records.values()), {})
        value = metrics.get(protocol.EPSILON_SPENT)
        spent.append(float(value) if isinstance(value, (int, float)) else math.nan)
    return MetricRecord({protocol.EPSILON_SPENT: max(spent) if spent else math.nan})


def make_strategy(config: RunConfig) -> FedAvg:
    """Flower's FedAvg, or FairFed, as configured (every node trains every round)."""
    common = {"fraction_train": 1.0, "fraction_evaluate": 0.0,
              "min_train_nodes": config.min_clients, "min_available_nodes": config.min_clients,
              "weighted_by_key": protocol.NUM_EXAMPLES, "arrayrecord_key": protocol.MODEL,
              "configrecord_key": protocol.CONFIG}
    if config.strategy == "dp-fedavg":
        return FedAvg(train_metrics_aggr_fn=largest_epsilon, **common)
    if config.strategy == "fairfed":
        return FairFed(beta=config.fairfed_beta, measure=config.measure,
                       reweigh=config.fairfed_reweigh, **common)
    return FedAvg(**common)


def dp_report(plan: DPSGDPlan, round_metrics) -> dict:
    """DP-FedAvg's privacy: the public plan, the ε the plan spends over the rounds that ran,
    and the largest ε a client reported (a client over the plan's figure is logged)."""
    rounds = sorted(round_metrics)
    reported = [float(round_metrics[r].get(protocol.EPSILON_SPENT, math.nan)) for r in rounds]
    planned = plan.epsilon_after(len(rounds))
    if reported and not reported[-1] <= planned * (1 + 1e-9):
        logger.warning("a client reports ε = %.4f spent, above the plan's %.4f", reported[-1],
                       planned)
    return {"mechanism": "DP-SGD (sample-level), each client's local steps", "plan": plan.as_dict(),
            "covers": "the real training rows of each client, against the server too (it sees "
                      "only noisy models)",
            "epsilon": reported[-1] if reported else 0.0, "epsilon_planned": planned,
            "delta": plan.delta, "epsilon_per_round": reported}


def run_baseline(grid: CountingGrid, config: RunConfig) -> FederationResult:
    """Run FedAvg or FairFed (``config.strategy``) on ``grid``; see the module docstring."""
    start = time.perf_counter()
    nodes = wait_for_nodes(grid, config.min_clients, timeout=config.timeout)
    private = config.strategy == "dp-fedavg"
    if private:
        plan = DPSGDPlan.for_config(config)
        encoder, rejected = public_scaling(config), []
    else:
        encoder, rejected = pooled_scaling(grid, nodes, config)
    n_inputs = encoder.n_z + 2
    initial = mlp.init_params(n_inputs, config.network_hidden, seed=config.seed)
    strategy = make_strategy(config)
    outcome = strategy.start(grid=grid, initial_arrays=protocol.model_record(initial),
                             num_rounds=config.rounds, timeout=config.timeout,
                             train_config=protocol.scaling_record(encoder))
    params = {k: v.numpy() for k, v in outcome.arrays.items()}
    metrics, per_node, eval_rejected = evaluate_on_clients(
        grid, node_ids=nodes, params=params, encoder=encoder, timeout=config.timeout)
    d = mlp.n_params(params)
    history = tuple(getattr(strategy, "history", ()))
    train_rounds = [e for e in grid.exchanges if e.phase == MessageType.TRAIN]
    return FederationResult(
        strategy=config.strategy,
        model=config.model,
        params=d,
        columns=len(encoder.schema.features) + 2,
        metrics=metrics,
        rounds=(0 if private else 1) + len(train_rounds),
        exchanges=tuple(grid.exchanges),
        formula_numbers={"train": comm.fedavg_numbers(clients=len(nodes), rounds=config.rounds,
                                                      params=d)},
        covered=((MessageType.TRAIN, "up"), (MessageType.TRAIN, "down")),
        clients=tuple({"node_id": c["node_id"], "test_rows": c["n"]} for c in per_node),
        rejected=tuple(r.as_dict() for r in [*rejected, *eval_rejected]),
        history=tuple({**h, "local_gaps": {str(k): v for k, v in h["local_gaps"].items()},
                       "weights": {str(k): v for k, v in h["weights"].items()}}
                      for h in history),
        seconds=time.perf_counter() - start,
        config=config.to_mapping(),
        privacy=dp_report(plan, outcome.train_metrics_clientapp) if private else {},
        model_params=params,
    )
