"""Checking what clients send before the server uses it.

A one-shot reply must carry one ``ArrayRecord`` ``rows`` with one 2-D float64 array of at
least one and at most ``max_rows`` rows, as many columns as the schema's wire format
(features, ``s``, ``y``), finite values, 0/1 in ``s`` and ``y`` and valid category codes; and
a ``ConfigRecord`` ``meta`` with the schema (JSON) that every accepted client shares. A reply
that fails any check, an error reply and a missing reply are each rejected with the reason,
logged, and skipped; the round fails only when fewer than ``min-clients`` replies remain.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import Message

from common import comm
from common.errors import DataError, ReplyError
from common.schema import Schema, TabularData

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Release:
    """One client's accepted rows with what it reported about them."""

    node_id: int
    data: TabularData
    privacy: dict
    metrics: dict


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A node whose reply was not used, and why."""

    node_id: int
    phase: str
    reason: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _schema(message: Message) -> Schema:
    content = message.content
    if comm.META not in content.config_records:
        raise ReplyError(f"the reply has no ConfigRecord {comm.META!r} with the schema.")
    text = content.config_records[comm.META].get("schema")
    if not isinstance(text, str):
        raise ReplyError("the reply's meta record has no schema string.")
    try:
        return Schema.from_json(text)
    except DataError as exc:
        raise ReplyError(str(exc)) from exc


def parse_release(message: Message, *, max_rows: int, schema: Schema | None = None) -> Release:
    """Validate one reply to a one-shot query; raises :class:`ReplyError` with the reason.

    Parameters
    ----------
    message : the reply.
    max_rows : the row cap of one reply.
    schema : the schema the rows must follow (default: the one the reply declares).
    """
    node = message.metadata.src_node_id
    if message.has_error():
        raise ReplyError(f"the client failed: {message.error.reason}")
    content = message.content
    declared = _schema(message)
    if schema is not None and declared != schema:
        raise ReplyError("its schema differs from the one the other clients share.")
    schema = declared
    records = content.array_records
    if comm.ROWS not in records or len(records[comm.ROWS]) != 1:
        raise ReplyError(
            f"expected one ArrayRecord {comm.ROWS!r} holding one array, got records "
            f"{sorted(records)}."
        )
    array = next(iter(records[comm.ROWS].values()))
    q = len(schema.features) + 2
    if np.dtype(array.dtype) != np.float64:
        raise ReplyError(f"the rows have dtype {array.dtype}; expected float64.")
    if len(array.shape) != 2 or array.shape[1] != q:
        raise ReplyError(
            f"the rows have shape {tuple(array.shape)}; expected (n, {q}) for the columns "
            f"{schema.wire_columns}."
        )
    n = array.shape[0]
    if n < 1:
        raise ReplyError("the reply holds no rows.")
    if n > max_rows:
        raise ReplyError(f"the reply holds {n} rows, more than the cap of {max_rows} (max-rows).")
    try:
        values = array.numpy()
    except Exception as exc:  # noqa: BLE001 (any decoding failure is the client's fault)
        raise ReplyError(f"the rows cannot be decoded ({exc}).") from exc
    if values.shape != tuple(array.shape) or values.dtype != np.float64:
        raise ReplyError("the decoded rows do not match their declared shape and dtype.")
    try:
        data = TabularData.from_array(values, schema)
    except DataError as exc:
        raise ReplyError(str(exc)) from exc
    meta = content.config_records[comm.META]
    try:
        privacy = json.loads(meta.get("privacy", "{}"))
    except (TypeError, json.JSONDecodeError) as exc:
        raise ReplyError(f"the privacy report is not JSON ({exc}).") from exc
    metric_records = content.metric_records
    metrics = dict(metric_records[comm.METRICS]) if comm.METRICS in metric_records else {}
    logger.debug("node %d released %d rows", node, n)
    return Release(node_id=node, data=data, privacy=privacy, metrics=metrics)


def accept_releases(
    replies: Iterable[Message], *, queried: Sequence[int], max_rows: int, min_clients: int
) -> tuple[list[Release], list[Rejection]]:
    """Validate every reply; keep the valid ones that share the majority schema.

    Raises
    ------
    ReplyError
        If fewer than ``min_clients`` replies are accepted (the message lists every reason).
    """
    replies = list(replies)
    rejected: list[Rejection] = []
    answered = {m.metadata.src_node_id for m in replies}
    for node in queried:
        if node not in answered:
            rejected.append(Rejection(node, "query", "no reply before the timeout"))
    # The schema most clients declare is the federation's; a lone deviating client is rejected.
    declared: dict[int, Schema] = {}
    for m in replies:
        if not m.has_error():
            try:
                declared[m.metadata.src_node_id] = _schema(m)
            except ReplyError:
                pass
    majority = None
    if declared:
        counts = Counter(s.to_json() for s in declared.values())
        majority = Schema.from_json(counts.most_common(1)[0][0])
    accepted = []
    for m in replies:
        node = m.metadata.src_node_id
        try:
            accepted.append(parse_release(m, max_rows=max_rows, schema=majority))
        except ReplyError as exc:
            rejected.append(Rejection(node, "query", str(exc)))
    for r in rejected:
        logger.warning("rejected the reply of node %d: %s", r.node_id, r.reason)
    if len(accepted) < min_clients:
        reasons = "; ".join(f"node {r.node_id}: {r.reason}" for r in rejected) or "none"
        raise ReplyError(
            f"only {len(accepted)} of {len(queried)} clients sent valid rows, fewer than "
            f"min-clients = {min_clients}. Rejected: {reasons}"
        )
    return accepted, rejected
