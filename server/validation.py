"""Checking what clients send before the server uses it.

A one-shot reply must carry one ``ArrayRecord`` ``rows`` with one 2-D float64 array of at
least one and at most ``max_rows`` rows, as many columns as the schema's wire format
(features, ``s``, ``y``), finite values, 0/1 in ``s`` and ``y``, valid category codes and
continuous values within reach of the schema's public ranges; and a ``ConfigRecord`` ``meta``
naming its schema (the digest of the federation's schema, or the schema itself).

The federation's schema is the dataset's declared public schema when the server knows it
(named datasets: :func:`common.datasets.public_schema`; for a bring-your-own CSV, its declared
schema file when the server can read it); else it is the schema that a strict majority of the
replies declare. A reply that fails any check, an error reply and a missing reply are each
rejected with the reason, logged, and skipped; the round fails only when fewer than
``min-clients`` replies remain. A rejected reply contributes nothing to the union.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.app import Message
from flwr.common.constant import ErrorCode

from common import datasets, protocol
from common.errors import DataError, ReplyError
from common.run_config import RunConfig
from common.schema import Schema, TabularData

logger = logging.getLogger(__name__)

#: A continuous value more than this many range widths outside its column's public range is
#: not a value of that column: no stage moves rows that far (stage 1 keeps every column's
#: mean and spread; the DP generator stays inside the bounds).
RANGE_SLACK = 1.0

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclasses.dataclass(frozen=True)
class Release:
    """One client's accepted rows with what it reported about them."""

    node_id: int
    data: TabularData
    privacy: dict
    metrics: dict
    digest: str = ""  # SHA-256 of the rows as received (to compare runs bit for bit)


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A node whose reply was not used, and why."""

    node_id: int
    phase: str
    reason: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def client_failure(message: Message) -> str:
    """A one-line reason for an error reply: the client's own message when it sent one, else
    the runtime's error class and first sentence (without tracebacks and terminal colours)."""
    if message.error.code == ErrorCode.NODE_UNAVAILABLE:
        return ("its SuperNode went offline before it replied (no heartbeat within Flower's "
                "liveness window)")
    text = _ANSI.sub("", message.error.reason or "").strip()
    found = re.search(r"Message: (.*?)(?:'>)?\s*$", text, re.S)  # a ClientApp exception
    if found:
        detail = found.group(1).strip()
    else:
        wrapped = re.match(r"<class '(?:[\w.]+\.)?([\w()]+)'>:<'(.*?)(?:'>)?$", text, re.S)
        detail = f"{wrapped.group(1)}: {wrapped.group(2)}" if wrapped else text
    detail = " ".join(detail.split())
    if len(detail) > 400:
        detail = detail[:397] + "..."
    return f"the client failed: {detail or f'error code {message.error.code}'}"


def expected_schema(config: RunConfig) -> Schema | None:
    """The federation's schema when the configuration names it: a named dataset's, or your own
    CSV's declared schema file (``schema``) when it can be read here; else None (the replies'
    majority schema is the federation's)."""
    if not config.csv:
        return datasets.public_schema(config.dataset, sensitive=config.sensitive or None)
    if config.schema:
        try:
            return datasets.read_schema(config.schema)
        except DataError as exc:
            logger.warning("the declared schema cannot be read on the server (%s); the "
                           "replies' majority schema is the federation's", exc)
    return None


def declared_schema(message: Message, expected: Schema | None = None) -> Schema:
    """The schema a reply declares: its ``schema`` JSON, or ``expected`` named by digest."""
    content = message.content
    if protocol.META not in content.config_records:
        raise ReplyError(f"the reply has no ConfigRecord {protocol.META!r} naming its schema.")
    meta = content.config_records[protocol.META]
    text, digest = meta.get(protocol.SCHEMA), meta.get(protocol.SCHEMA_DIGEST)
    if isinstance(text, str):
        try:
            schema = Schema.from_json(text)
        except DataError as exc:
            raise ReplyError(str(exc)) from exc
        if digest is not None and digest != schema.digest():
            raise ReplyError("the reply's schema digest does not match the schema it sent.")
        return schema
    if isinstance(digest, str) and expected is not None and digest == expected.digest():
        return expected
    if isinstance(digest, str):
        raise ReplyError(f"the reply names schema digest {digest[:12]}…, which is not the "
                         "federation's, and does not send the schema itself.")
    raise ReplyError("the reply's meta record names no schema.")


def check_public_ranges(data: TabularData) -> None:
    """Reject continuous values far outside their column's public range (see RANGE_SLACK)."""
    for col in data.schema.continuous:
        if col.bounds is None:
            continue
        lo, hi = col.bounds
        slack = RANGE_SLACK * (hi - lo)
        values = data.features[col.name].to_numpy(dtype=np.float64)
        outside = (values < lo - slack) | (values > hi + slack)
        if outside.any():
            worst = values[outside][np.argmax(np.abs(values[outside] - (lo + hi) / 2))]
            raise ReplyError(
                f"column {col.name!r} holds {int(outside.sum())} value(s) such as {worst:g}, "
                f"far outside its public range [{lo:g}, {hi:g}]."
            )


def parse_release(message: Message, *, max_rows: int, schema: Schema | None = None
                  ) -> Release:
    """Validate one reply to a one-shot query; raises :class:`ReplyError` with the reason.

    Parameters
    ----------
    message : the reply.
    max_rows : the row cap of one reply.
    schema : the federation's schema, which the rows must follow and which a reply may name by
        its digest alone (default: the one the reply declares).
    """
    node = message.metadata.src_node_id
    if message.has_error():
        raise ReplyError(client_failure(message))
    content = message.content
    declared = declared_schema(message, schema)
    if schema is not None and declared != schema:
        raise ReplyError(f"its schema differs from the federation's: "
                         f"{schema.difference(declared)}.")
    schema = declared
    records = content.array_records
    if protocol.ROWS not in records or len(records[protocol.ROWS]) != 1:
        raise ReplyError(
            f"expected one ArrayRecord {protocol.ROWS!r} holding one array, got records "
            f"{sorted(records)}."
        )
    array = next(iter(records[protocol.ROWS].values()))
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
    check_public_ranges(data)
    meta = content.config_records[protocol.META]
    try:
        privacy = json.loads(meta.get(protocol.PRIVACY, "{}"))
    except (TypeError, json.JSONDecodeError) as exc:
        raise ReplyError(f"the privacy report is not JSON ({exc}).") from exc
    if not isinstance(privacy, dict):
        raise ReplyError("the privacy report is not a JSON object.")
    metric_records = content.metric_records
    metrics = dict(metric_records[protocol.METRICS]) if protocol.METRICS in metric_records else {}
    logger.debug("node %d released %d rows", node, n)
    digest = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
    return Release(node_id=node, data=data, privacy=privacy, metrics=metrics, digest=digest)


def federation_schema(replies: Sequence[Message], expected: Schema | None
                      ) -> tuple[Schema | None, str]:
    """The schema replies must follow: ``expected``, else the one a strict majority of the
    replies declare (with the reason when there is none)."""
    if expected is not None:
        return expected, ""
    declared = []
    for m in replies:
        if not m.has_error():
            try:
                declared.append(declared_schema(m).to_json())
            except ReplyError:
                pass
    if not declared:
        return None, ""
    ranked = Counter(declared).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, (f"the clients declare {len(ranked)} different schemas and none is held by "
                      "a majority; give every client the same columns and categories.")
    return Schema.from_json(ranked[0][0]), ""


def accept_releases(
    replies: Iterable[Message], *, queried: Sequence[int], max_rows: int, min_clients: int,
    expected: Schema | None = None,
) -> tuple[list[Release], list[Rejection]]:
    """Validate every reply against the federation's schema; keep the valid ones, ordered by
    the SHA-256 of their rows.

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
    schema, no_majority = federation_schema(replies, expected)
    accepted = []
    for m in replies:
        node = m.metadata.src_node_id
        try:
            if no_majority and not m.has_error():
                raise ReplyError(no_majority)
            accepted.append(parse_release(m, max_rows=max_rows, schema=schema))
        except ReplyError as exc:
            rejected.append(Rejection(node, "query", str(exc)))
    for r in rejected:
        logger.warning("rejected the reply of node %d: %s", r.node_id, r.reason)
    # A canonical order (by content), so the union, and the model trained on it, do not
    # depend on the order in which replies arrived: the same seeds give the same bits.
    accepted.sort(key=lambda r: r.digest)
    if len(accepted) < min_clients:
        reasons = "; ".join(f"node {r.node_id}: {r.reason}" for r in rejected) or "none"
        raise ReplyError(
            f"only {len(accepted)} of {len(queried)} clients sent valid rows, fewer than "
            f"min-clients = {min_clients}. Rejected: {reasons}"
        )
    return accepted, rejected
