"""Sending a model to the clients once and pooling their test statistics.

Every client evaluates the model on its own test split and replies with group statistics
(:func:`common.metrics.group_counts`); the server adds them up, so the metrics are those of the
model on the union of all clients' test rows (:func:`common.metrics.report_from_counts`). A
client whose privacy policy does not allow exact statistics replies with noisy counts and the ε
they spent, and without the sums behind Cov and Corr (which are then NaN).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from common import protocol
from common.encoding import Encoder
from common.errors import ReplyError
from common.metrics import (
    COUNT_KEYS,
    check_counts,
    pool,
    report_from_counts,
)
from server.validation import Rejection, client_failure

logger = logging.getLogger(__name__)


def wait_for_nodes(grid: Grid, minimum: int, *, timeout: float, poll: float = 0.2) -> list[int]:
    """Node ids once at least ``minimum`` are connected; ReplyError after ``timeout`` s."""
    end = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < minimum:
        if time.monotonic() > end:
            raise ReplyError(
                f"only {len(nodes)} node(s) connected within {timeout:g} s; min-clients is "
                f"{minimum}. Start more SuperNodes or lower min-clients."
            )
        time.sleep(poll)
    return nodes


def evaluate_on_clients(
    grid: Grid,
    *,
    node_ids: Sequence[int],
    params: Mapping[str, np.ndarray],
    encoder: Encoder,
    timeout: float,
) -> tuple[dict[str, float], list[dict], list[Rejection]]:
    """Broadcast the model once; returns the pooled report, per-node counts, rejections."""
    content = protocol.model_content(params, encoder)
    messages = [Message(content, dst_node_id=node, message_type=MessageType.EVALUATE)
                for node in node_ids]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    rejected, per_node = [], []
    answered = {m.metadata.src_node_id for m in replies}
    rejected += [Rejection(n, "evaluate", "no reply before the timeout")
                 for n in node_ids if n not in answered]
    for m in replies:
        node = m.metadata.src_node_id
        try:
            if m.has_error():
                raise ReplyError(client_failure(m))
            reply = protocol.reply_metrics(m.content)
            counts = check_counts(reply)
            # A private evaluation's noisy counts, and its ε (None: an exact evaluation).
            per_node.append({"node_id": node, **counts,
                             "evaluation_epsilon": reply.get(protocol.EVALUATION_EPSILON)})
        except ReplyError as exc:
            rejected.append(Rejection(node, "evaluate", str(exc)))
    for r in rejected:
        logger.warning("evaluation: skipped node %d: %s", r.node_id, r.reason)
    if not per_node:
        raise ReplyError("no client returned valid evaluation statistics; see the log.")
    # Summed in a canonical order (by value), so floating-point sums do not depend on the
    # order in which replies arrived.
    ordered = sorted(per_node, key=lambda c: tuple(c[k] for k in COUNT_KEYS))
    report = report_from_counts(pool(ordered))
    return report, per_node, rejected
