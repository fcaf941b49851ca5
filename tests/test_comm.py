"""Byte accounting against serialised messages; pooled statistics against centralised metrics."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    equal_opportunity_difference,
)
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from hypothesis import given, settings
from hypothesis import strategies as st

from common import comm, protocol
from common.datasets import make_synthetic
from common.encoding import Encoder
from common.errors import ReplyError
from common.metrics import (
    check_counts,
    fairness_report,
    group_counts,
    pool,
    report_from_counts,
)
from common.schema import concat
from server.traffic import CountingGrid, message_bytes, payload_bytes

pytestmark = pytest.mark.usefixtures("task_identity")




def rows_message(n: int, q: int = 12, node: int = 7) -> Message:
    rows = np.random.default_rng(n).normal(size=(n, q))
    content = RecordDict({protocol.ROWS: ArrayRecord({protocol.ROWS: Array(rows)}),
                          protocol.META: ConfigRecord({"schema": "{}"}),
                          protocol.METRICS: MetricRecord({protocol.NUM_EXAMPLES: n})})
    return Message(content, dst_node_id=node, message_type="query")


class EchoGrid:
    """A grid whose clients reply with a fixed content."""

    def __init__(self, reply_content):
        self.reply_content = reply_content

    def get_node_ids(self):
        return [7, 8]

    def send_and_receive(self, messages, *, timeout=None):
        out = []
        for i, m in enumerate(messages):
            m.metadata.__dict__["_message_id"] = f"id-{i}"
            out.append(Message(self.reply_content, reply_to=m))
        return out


def test_counted_bytes_equal_the_serialised_messages():
    down = [rows_message(10, node=7), rows_message(20, node=8)]
    grid = CountingGrid(EchoGrid(rows_message(1000).content))
    replies = grid.send_and_receive(down)
    (exchange,) = grid.exchanges
    # Independent size: the bytes protobuf writes for each message.
    assert exchange.bytes_down == sum(len(message_to_proto(m).SerializeToString()) for m in down)
    assert exchange.bytes_up == sum(len(message_to_proto(m).SerializeToString())
                                    for m in replies)
    assert (exchange.messages_down, exchange.messages_up) == (2, 2)
    assert exchange.payload_down == 8 * 12 * (10 + 20)
    assert exchange.payload_up == 2 * 8 * 12 * 1000
    # What was counted is what arrives: the serialised message decodes to the same rows.
    back = message_from_proto(message_to_proto(replies[0]))
    np.testing.assert_array_equal(back.content[protocol.ROWS][protocol.ROWS].numpy(),
                                  replies[0].content[protocol.ROWS][protocol.ROWS].numpy())
    # An empty exchange (FedAvg's evaluation when it is off) is not recorded.
    assert grid.send_and_receive([]) == [] and len(grid.exchanges) == 1


def test_each_extra_row_costs_exactly_q_float64_numbers():
    # 1000 → 2000 rows of 12 columns: the data grows by 8·12·1000 bytes and nothing else
    # changes size (the npy header is padded, the length varints stay 3 bytes).
    small, large = rows_message(1000), rows_message(2000)
    assert message_bytes(large) - message_bytes(small) == 8 * 12 * 1000
    assert payload_bytes(large.content) == 8 * 12 * 2000
    # Framing per message: metadata, keys, npy header, the metrics and meta records.
    assert 0 < message_bytes(small) - payload_bytes(small.content) < 600


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(0, 10_000))
def test_pooled_statistics_give_the_metrics_of_the_union(clients, seed):
    data = make_synthetic(300, seed=seed)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, 300), clients - 1, replace=False))
    parts = [data.subset(idx) for idx in np.split(rng.permutation(300), cuts)]
    w = rng.normal(size=len(data.schema.features) + 2)
    encoder = Encoder.fit(data)
    stats = [group_counts(p.y, encoder.design(p) @ w, sensitive=p.s) for p in parts]
    pooled = report_from_counts(pool(stats))
    union = concat(parts)
    d = encoder.design(union) @ w
    truth = fairness_report(union.y, (d > 0).astype(int), sensitive=union.s, decision=d)
    for key in ("accuracy", "balanced_accuracy", "positive_rate", "spd", "eod", "spd_signed",
                "eod_signed", "dpr", "eor", "cov", "corr", "cov_eo", "corr_eo"):
        assert pooled[key] == pytest.approx(truth[key], rel=1e-9, abs=1e-12), key
    yhat = (d > 0).astype(int)
    assert pooled["spd"] == pytest.approx(
        demographic_parity_difference(union.y, yhat, sensitive_features=union.s), abs=1e-12)
    assert pooled["eod"] == pytest.approx(
        equal_opportunity_difference(union.y, yhat, sensitive_features=union.s), abs=1e-12)


def test_counts_reject_impossible_statistics():
    good = group_counts(np.array([1, 0, 1]), np.array([0.5, -1.0, 2.0]),
                             sensitive=np.array([1, 0, 0]))
    assert check_counts(good) == good
    for change, message in [({"n": 4.0}, "inconsistent"), ({"tp-s0": 9.0}, "inconsistent"),
                            ({"correct": -1.0}, "non-negative"),
                            ({"sum-d": float("nan")}, "non-finite")]:
        with pytest.raises(ReplyError, match=message):
            check_counts({**good, **change})
    with pytest.raises(ReplyError, match="lack"):
        check_counts({"n": 1.0})


def test_pooled_moments_equal_the_scaler_fitted_on_the_union():
    data = make_synthetic(500, seed=4)
    parts = [data.subset(np.arange(0, 120)), data.subset(np.arange(120, 500))]
    pooled = comm.encoder_from_moments(data.schema, [comm.moments(p) for p in parts])
    direct = Encoder.fit(data)
    np.testing.assert_allclose(pooled.mean, direct.mean, rtol=1e-12)
    np.testing.assert_allclose(pooled.std, direct.std, rtol=1e-9)


def test_formulas_and_their_crossover():
    assert comm.fedavg_numbers(clients=2, rounds=20, params=12) == 960
    assert comm.oneshot_numbers(rows=[8319, 8319], columns=12, params=12) == {
        "up": 2 * 8319 * 12, "down": 24}
    d_star = comm.crossover_params(rows_per_client=8319, columns=12, rounds=20)
    # At d*, 2·K·R·d = K·(Ñ₂·q + d).
    assert 2 * 2 * 20 * d_star == pytest.approx(2 * (8319 * 12 + d_star))
