"""FedAvg and FairFed aggregation against hand-computed examples (no runtime needed)."""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from common import protocol
from common.errors import ConfigError
from common.metrics import gap, pool
from common.protocol import model_record
from common.run_config import RunConfig
from server.baselines import make_strategy
from server.strategy.fairfed import FairFed, fairfed_weights

pytestmark = pytest.mark.usefixtures("task_identity")




def reply(node: int, weights: np.ndarray, metrics: dict) -> Message:
    """A train reply from ``node`` laid out as the ClientApp lays it out."""
    request = Message(RecordDict(), dst_node_id=node, message_type="train")
    request.metadata.__dict__["_message_id"] = f"request-{node}"
    content = RecordDict({protocol.MODEL: model_record({"layer0.weight": weights}),
                          protocol.METRICS: MetricRecord(metrics)})
    return Message(content, reply_to=request)


def counts(n_s0, pos_s0, n_s1, pos_s1) -> dict:
    """Consistent group statistics with the given group sizes and positive predictions."""
    return {"n": n_s0 + n_s1, "correct": pos_s0 + pos_s1, "n-s0": n_s0, "n-s1": n_s1,
            "pos-s0": pos_s0, "pos-s1": pos_s1, "n-y1-s0": n_s0, "n-y1-s1": n_s1,
            "tp-s0": pos_s0, "tp-s1": pos_s1, "sum-d": 0.0, "sum-d2": 1.0, "sum-sd": 0.0,
            "sum-d-y1": 0.0, "sum-d2-y1": 1.0, "sum-sd-y1": 0.0}


def test_fedavg_aggregate_is_the_example_weighted_average():
    # n = (10, 30): (10·[1, 2, 3] + 30·[5, 6, 7]) / 40 = [4, 5, 6].
    replies = [reply(1, np.array([[1.0, 2.0, 3.0]]), {protocol.NUM_EXAMPLES: 10}),
               reply(2, np.array([[5.0, 6.0, 7.0]]), {protocol.NUM_EXAMPLES: 30})]
    strategy = make_strategy(RunConfig(strategy="fedavg"))
    assert type(strategy) is FedAvg
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["layer0.weight"].numpy(), [[4.0, 5.0, 6.0]], rtol=1e-15)


# Three clients with n = (100, 300, 600) and local statistical parity gaps
#   F_A = 25/50 − 40/50 = −3/10,  F_B = 30/100 − 100/200 = −1/5,  F_C = 100/200 − 200/400 = 0;
# pooled: F = 155/350 − 340/650 = −73/910.  Δ = (200, 109, 73)/910, mean Δ = 191/1365.
# β = 1: ω = (1/10, 3/10, 6/10) − (Δ − mean Δ) = (11/546, 437/1365, 1801/2730)  (sums to 1).
# β = 2: ω_A = 1/10 − 2(Δ_A − mean Δ) < 0 → 0; the others renormalised:
#   (0, 929/2893, 1964/2893).
STATS = [counts(50, 25, 50, 40), counts(100, 30, 200, 100), counts(200, 100, 400, 200)]
SIZES = [100, 300, 600]
EXPECTED = {1.0: [Fraction(11, 546), Fraction(437, 1365), Fraction(1801, 2730)],
            2.0: [Fraction(0), Fraction(929, 2893), Fraction(1964, 2893)]}


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_fairfed_weights_match_the_hand_computed_example(beta):
    local = [gap(c, "sp") for c in STATS]
    assert local == pytest.approx([-0.3, -0.2, 0.0])
    global_gap = gap(pool(STATS), "sp")
    assert global_gap == pytest.approx(-73 / 910)
    omega = fairfed_weights(previous=[None] * 3, sizes=SIZES, local_gaps=local,
                            global_gap=global_gap, beta=beta)
    np.testing.assert_allclose(omega, [float(f) for f in EXPECTED[beta]], rtol=1e-12, atol=1e-15)


def test_fairfed_beta_zero_is_fedavg_and_undefined_gaps_keep_their_weight():
    omega = fairfed_weights(previous=[None] * 3, sizes=SIZES, local_gaps=[-0.3, -0.2, 0.0],
                            global_gap=-0.1, beta=0.0)
    np.testing.assert_allclose(omega, [0.1, 0.3, 0.6])
    # Client B's gap is undefined: Δ_A = 0.2, Δ_C = 0.1, Δ_B := mean = 0.15, so ω_B stays:
    # ω = (0.1 − 0.05, 0.3, 0.6 + 0.05).
    omega = fairfed_weights(previous=[0.1, 0.3, 0.6], sizes=SIZES,
                            local_gaps=[-0.3, float("nan"), 0.0], global_gap=-0.1, beta=1.0)
    np.testing.assert_allclose(omega, [0.05, 0.3, 0.65], atol=1e-15)
    with pytest.raises(ConfigError, match="β"):
        fairfed_weights(previous=[None], sizes=[1], local_gaps=[0.0], global_gap=0.0, beta=-1)


def test_fairfed_aggregate_uses_its_weights_and_keeps_them_across_rounds(caplog):
    strategy = FairFed(beta=1.0, measure="sp", weighted_by_key=protocol.NUM_EXAMPLES)
    w = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[2.0, 2.0]])]
    replies = [reply(n, wk, {protocol.NUM_EXAMPLES: nk, **ck})
               for n, wk, nk, ck in zip((11, 12, 13), w, SIZES, STATS)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    omega = np.array([float(f) for f in EXPECTED[1.0]])
    np.testing.assert_allclose(arrays["layer0.weight"].numpy(),
                               omega[0] * w[0] + omega[1] * w[1] + omega[2] * w[2], rtol=1e-12)
    assert metrics["global-gap"] == pytest.approx(-73 / 910)
    assert strategy.weights == pytest.approx(dict(zip((11, 12, 13), omega)))
    # Round 2 starts from round 1's ω (not from n_k/n): same statistics, one more step.
    strategy.aggregate_train(2, replies)
    delta = np.array([200, 109, 73]) / 910
    second = np.maximum(omega - (delta - delta.mean()), 0)
    np.testing.assert_allclose(list(strategy.weights.values()), second / second.sum(),
                               rtol=1e-12)
    assert [h["round"] for h in strategy.history] == [1, 2]
    # A reply with inconsistent statistics is skipped with a warning.
    bad = reply(14, w[0], {protocol.NUM_EXAMPLES: 5, **{**STATS[0], "pos-s0": 60.0}})
    with caplog.at_level(logging.WARNING, logger="server.strategy.fairfed"):
        strategy.aggregate_train(3, [*replies, bad])
    assert any("node 14" in m and "pos-s0 > n-s0" in m for m in caplog.messages)
    assert 14 not in strategy.weights


def test_fairfed_asks_the_clients_for_statistics_and_reweighing():
    class TwoNodes:
        def get_node_ids(self):
            return [5, 6]

    strategy = FairFed(reweigh=True, min_available_nodes=2, min_train_nodes=2)
    messages = list(strategy.configure_train(1, model_record({"layer0.weight": np.zeros((1, 2))}),
                                             ConfigRecord(), TwoNodes()))
    assert sorted(m.metadata.dst_node_id for m in messages) == [5, 6]
    for m in messages:
        cfg = m.content[protocol.CONFIG]
        assert cfg["fairness-stats"] is True and cfg["reweigh"] is True
        assert cfg["server-round"] == 1
    with pytest.raises(ConfigError, match="measure"):
        FairFed(measure="acc")
