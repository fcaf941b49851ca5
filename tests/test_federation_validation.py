"""The server's checks of one-shot replies, one failure at a time (no runtime needed)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from common import protocol
from common.datasets import make_synthetic
from common.errors import ReplyError
from common.schema import Column, Schema
from server.validation import accept_releases, parse_release

pytestmark = pytest.mark.usefixtures("task_identity")




DATA = make_synthetic(60, seed=1)


def release(node: int, rows: np.ndarray | None = None, *, schema: Schema = DATA.schema,
            error: str | None = None) -> Message:
    """A reply to a one-shot query from ``node``, laid out as the ClientApp lays it out."""
    request = Message(RecordDict(), dst_node_id=node, message_type="query")
    request.metadata.__dict__["_message_id"] = f"q{node}"
    if error is not None:
        return Message(Error(code=3, reason=error), reply_to=request)
    rows = DATA.to_array() if rows is None else rows
    content = RecordDict({
        protocol.ROWS: ArrayRecord({protocol.ROWS: Array(rows)}),
        protocol.META: ConfigRecord({"schema": schema.to_json(), "privacy": '{"order": "real"}'}),
        protocol.METRICS: MetricRecord({protocol.NUM_EXAMPLES: len(rows)}),
    })
    return Message(content, reply_to=request)


def test_a_valid_release_round_trips():
    got = parse_release(release(3), max_rows=100)
    assert got.node_id == 3 and got.privacy == {"order": "real"}
    np.testing.assert_array_equal(got.data.to_array(), DATA.to_array())
    assert got.data.schema == DATA.schema


@pytest.mark.parametrize("rows, message", [
    (DATA.to_array()[:, :-1], r"shape \(60, 5\); expected \(n, 6\)"),
    (DATA.to_array()[0], "shape"),
    (DATA.to_array().astype(np.float32), "dtype float32; expected float64"),
    (np.where(np.eye(60, 6) == 1, np.inf, DATA.to_array()), "NaN or inf"),
    (np.column_stack([DATA.to_array()[:, :-2], np.full(60, 0.5), DATA.to_array()[:, -1]]),
     "sensitive column must be 0/1"),
    (np.column_stack([DATA.to_array()[:, :-1], np.full(60, -1.0)]), "label column must be 0/1"),
    (np.vstack([DATA.to_array()] * 2), "120 rows, more than the cap of 100"),
    (DATA.to_array()[:0], "no rows"),
])
def test_a_malformed_release_is_rejected_with_its_reason(rows, message):
    with pytest.raises(ReplyError, match=message):
        parse_release(release(3, rows), max_rows=100)


def test_categorical_codes_must_be_valid():
    schema = Schema("toy", (Column("c", kind="categorical", categories=("a", "b")),), "s", "1",
                    "y", "1")
    rows = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    with pytest.raises(ReplyError, match="integer codes in"):
        parse_release(release(3, rows, schema=schema), max_rows=10)


def test_error_replies_and_foreign_schemas_are_rejected():
    with pytest.raises(ReplyError, match="the client failed: out of budget"):
        parse_release(release(3, error="out of budget"), max_rows=100)
    other = make_synthetic(60, seed=1, n_features=3)
    with pytest.raises(ReplyError, match="schema differs"):
        parse_release(release(3, other.to_array(), schema=other.schema), max_rows=100,
                      schema=DATA.schema)


def test_accept_keeps_the_majority_and_logs_every_rejection(caplog):
    other = make_synthetic(60, seed=1, n_features=3)
    replies = [release(1), release(2), release(3, other.to_array(), schema=other.schema),
               release(4, error="crashed")]
    with caplog.at_level(logging.WARNING, logger="server.validation"):
        accepted, rejected = accept_releases(replies, queried=[1, 2, 3, 4, 5], max_rows=100,
                                             min_clients=2)
    assert [r.node_id for r in accepted] == [1, 2]
    reasons = {r.node_id: r.reason for r in rejected}
    assert set(reasons) == {3, 4, 5}
    assert "schema differs" in reasons[3] and "crashed" in reasons[4]
    assert "no reply" in reasons[5]
    assert sum("rejected the reply of node" in m for m in caplog.messages) == 3
    with pytest.raises(ReplyError, match="only 2 of 5 clients.*node 5: no reply"):
        accept_releases(replies, queried=[1, 2, 3, 4, 5], max_rows=100, min_clients=3)
