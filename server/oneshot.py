"""The one-shot flow: one query to every client, one model back (METHOD.md, § Server).

1. Wait for ``min-clients`` nodes; send every connected node one query in a single
   ``send_and_receive``. Each client runs its pipeline and replies with its released rows.
2. Validate every reply (:mod:`server.validation`); a bad or failed reply is logged with its
   reason and skipped while at least ``min-clients`` valid ones remain.
3. Train the server's model on the union of the accepted rows: logistic regression (eq. 16,
   Newton, :func:`common.global_model.fit_global_model`) or an MLP (Adam,
   :func:`common.mlp.train`); features are scaled by the union's own statistics.
4. Send the model back once; every client evaluates it on its test split and the server pools
   the statistics into metrics on the union of all test rows.

Traffic: ``Σ_k Ñ₂ₖ·q`` numbers up and ``K·d`` down (the formula of METHOD.md), in the replies to the
query and in the model broadcast; the query itself and the evaluation statistics are counted too,
in the run's totals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from flwr.app import Message, MessageType
from flwr.common.constant import ErrorCode

from common import comm, mlp, protocol
from common.encoding import Encoder
from common.global_model import fit_global_model
from common.run_config import RunConfig
from common.schema import TabularData, concat
from server.evaluation import evaluate_on_clients, wait_for_nodes
from server.result import FederationResult
from server.traffic import CountingGrid
from server.validation import accept_releases, expected_schema

logger = logging.getLogger(__name__)


def train_server_model(parts: Sequence[TabularData], config: RunConfig
                       ) -> tuple[dict[str, np.ndarray], Encoder]:
    """The server's model on the union of ``parts`` and the scaling it was trained with."""
    if config.model == "logistic":
        model = fit_global_model(parts, lam=config.lam_server)
        return {"layer0.weight": model.w[None, :]}, model.encoder
    union = concat(parts)
    encoder = Encoder.fit(union)
    X = encoder.design(union)
    start = mlp.init_params(X.shape[1], config.hidden_sizes, seed=config.seed)
    params = mlp.train(start, X, union.y, epochs=config.mlp_epochs, lr=config.mlp_lr,
                       batch_size=config.mlp_batch_size, l2=config.mlp_weight_decay,
                       seed=config.seed, optimizer="adam")
    return params, encoder


def run_oneshot(grid: CountingGrid, config: RunConfig) -> FederationResult:
    """Run the one-shot flow on ``grid`` (see the module docstring)."""
    start = time.perf_counter()
    nodes = wait_for_nodes(grid, config.min_clients, timeout=config.timeout)
    logger.info("one-shot: querying %d node(s)", len(nodes))
    expected = expected_schema(config)
    # A client whose schema has the expected digest need not send it.
    ask = protocol.query_content(max_rows=config.max_rows,
                                 schema_digest=expected.digest() if expected else "")
    query = [Message(ask, dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
    replies = list(grid.send_and_receive(query, timeout=config.timeout))
    releases, rejected = accept_releases(replies, queried=nodes, max_rows=config.max_rows,
                                         min_clients=config.min_clients, expected=expected)
    parts = [r.data for r in releases]
    t_fit = time.perf_counter()
    params, encoder = train_server_model(parts, config)
    t_fit = time.perf_counter() - t_fit
    # The model goes to every node that answered; one that did not (hung, crashed, cut off)
    # would only make the evaluation wait for the timeout a second time, and one that the
    # SuperLink reported offline is gone.
    responsive = sorted({m.metadata.src_node_id for m in replies
                         if not (m.has_error() and m.error.code == ErrorCode.NODE_UNAVAILABLE)})
    metrics, per_node, eval_rejected = evaluate_on_clients(
        grid, node_ids=responsive, params=params, encoder=encoder, timeout=config.timeout)
    evaluated = {c["node_id"]: c["evaluation_epsilon"] for c in per_node}
    q = len(encoder.schema.features) + 2
    d = mlp.n_params(params)
    rows = [len(r.data) for r in releases]
    result = FederationResult(
        strategy="oneshot",
        model=config.model,
        params=d,
        columns=q,
        metrics={**metrics, "server_fit_seconds": t_fit},
        rounds=1,
        exchanges=tuple(grid.exchanges),
        # The model goes to every node that answered, the rows come from the accepted ones.
        formula_numbers={"up": comm.oneshot_numbers(rows=rows, columns=q, params=d)["up"],
                         "down": len(responsive) * d},
        covered=((MessageType.QUERY, "up"), (MessageType.EVALUATE, "down")),
        clients=tuple({"node_id": r.node_id, "rows": len(r.data), "privacy": r.privacy,
                       "metrics": r.metrics, "rows_sha256": r.digest,
                       "evaluation_epsilon": evaluated.get(r.node_id)} for r in releases),
        rejected=tuple(r.as_dict() for r in [*rejected, *eval_rejected]),
        seconds=time.perf_counter() - start,
        config=config.to_mapping(),
        model_params=params,
    )
    return result
