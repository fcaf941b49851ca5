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
"""

from __future__ import annotations

import logging
import time

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp.strategy import FedAvg

from common import comm, mlp, protocol
from common.errors import ReplyError
from common.run_config import RunConfig
from server.evaluation import (
    evaluate_on_clients,
    wait_for_nodes,
)
from server.result import FederationResult
from server.strategy.fairfed import FairFed
from server.traffic import CountingGrid
from server.validation import Rejection, client_failure

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


def make_strategy(config: RunConfig) -> FedAvg:
    """Flower's FedAvg, or FairFed, as configured (every node trains every round)."""
    common = {"fraction_train": 1.0, "fraction_evaluate": 0.0,
              "min_train_nodes": config.min_clients, "min_available_nodes": config.min_clients,
              "weighted_by_key": protocol.NUM_EXAMPLES, "arrayrecord_key": protocol.MODEL,
              "configrecord_key": protocol.CONFIG}
    if config.strategy == "fairfed":
        return FairFed(beta=config.fairfed_beta, measure=config.measure,
                       reweigh=config.fairfed_reweigh, **common)
    return FedAvg(**common)


def run_baseline(grid: CountingGrid, config: RunConfig) -> FederationResult:
    """Run FedAvg or FairFed (``config.strategy``) on ``grid``; see the module docstring."""
    start = time.perf_counter()
    nodes = wait_for_nodes(grid, config.min_clients, timeout=config.timeout)
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
        rounds=1 + len(train_rounds),
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
        model_params=params,
    )
