"""DP-FedAvg (sample-level): the public plan against Opacus' accountant, one DP-SGD step
against a hand-computed clipped mean, the noise's scale, the round ledger in the node's state,
a reply that says nothing of the row count, and a run end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
from federation_helpers import ray_test
from flwr.app import RecordDict

from clients import dp_sgd
from clients.handlers import dp_train_content
from clients.policy import PrivacyPolicy
from common import protocol
from common.datasets import make_synthetic
from common.dp_fedavg import DPSGDPlan
from common.encoding import Encoder
from common.errors import ConfigError, PolicyError
from common.run_config import RunConfig
from common.schema import Column, Schema


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
@pytest.mark.parametrize("epsilon,q,epochs,rounds", [(1.0, 0.01, 1, 20), (4.0, 0.02, 2, 5)])
def test_the_plan_spends_the_target_by_opacus_own_accountant(epsilon, q, epochs, rounds):
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    plan = DPSGDPlan.for_run(epsilon=epsilon, delta=1e-6, sample_rate=q, local_epochs=epochs,
                             rounds=rounds, max_grad_norm=1.0)
    assert plan.steps == rounds * epochs * round(1 / q)
    # The row count's Gaussian: 1 % of the zCDP budget ρ, σ_n = 1/√(2·0.01·ρ) (Bun–Steinke).
    rho = (math.sqrt(epsilon + math.log(1e6)) - math.sqrt(math.log(1e6))) ** 2
    assert plan.count_noise == pytest.approx(1 / math.sqrt(2 * 0.01 * rho))
    # Opacus' own calibration of DP-SGD alone (its default orders) gives a σ a little below
    # the plan's, which also pays for the count
    theirs = get_noise_multiplier(target_epsilon=epsilon, target_delta=1e-6, sample_rate=q,
                                  steps=plan.steps, accountant="rdp", epsilon_tolerance=0.001)
    assert theirs * 0.97 <= plan.noise_multiplier <= theirs * 1.05
    # and its accountant, fed the count and the plan's steps, puts them at the target (to its
    # coarser orders)
    acc = RDPAccountant()
    acc.history = [(plan.count_noise, 1.0, 1), (plan.noise_multiplier, q, plan.steps)]
    assert acc.get_epsilon(1e-6) == pytest.approx(epsilon, rel=0.03)
    spent = [plan.epsilon_after(r) for r in range(rounds + 1)]
    assert spent[0] == 0 and all(a < b for a, b in zip(spent, spent[1:]))
    assert 0.99 * epsilon <= spent[-1] <= epsilon


def test_the_plan_refuses_impossible_settings():
    with pytest.raises(ConfigError, match="dp-sample-rate"):
        DPSGDPlan.for_run(epsilon=1, delta=1e-6, sample_rate=0, local_epochs=1, rounds=1,
                          max_grad_norm=1)
    with pytest.raises(ConfigError, match="dp-clip"):
        DPSGDPlan.for_run(epsilon=1, delta=1e-6, sample_rate=0.1, local_epochs=1, rounds=1,
                          max_grad_norm=0)
    with pytest.raises(ConfigError, match="dp-sample-rate"):
        RunConfig(dp_sample_rate=1.5)


def _plan(**changes) -> DPSGDPlan:
    values = {"epsilon": 1.0, "delta": 1e-6, "sample_rate": 1.0, "steps_per_round": 1,
              "rounds": 1, "max_grad_norm": 1.0, "noise_multiplier": 1e-12, "count_noise": 50.0}
    return DPSGDPlan(**{**values, **changes})


def test_one_step_is_the_mean_of_the_clipped_per_sample_gradients():
    rng = np.random.default_rng(0)
    X = np.c_[3 * rng.normal(size=(50, 4)), np.ones(50)]
    y = (rng.random(50) < 0.5).astype(float)
    w = rng.normal(size=5) * 0.3
    lr, clip = 0.7, 2.0
    new = dp_sgd.train({"layer0.weight": w[None, :]}, X, y, plan=_plan(max_grad_norm=clip),
                       expected_batch_size=50, lr=lr, l2=0.0, seed=1)
    p = 1 / (1 + np.exp(-X @ w))
    g = (p - y)[:, None] * X  # per-sample gradients of the logistic loss
    norms = np.linalg.norm(g, axis=1)
    assert (norms > clip).any() and (norms < clip).any()  # the clipping matters here
    clipped = g * np.minimum(1.0, clip / norms)[:, None]
    np.testing.assert_allclose(new["layer0.weight"][0], w - lr * clipped.mean(axis=0),
                               rtol=0, atol=1e-6)  # Opacus divides by ‖g‖ + 1e-6


def test_the_noise_has_the_planned_scale():
    # Zero inputs give zero gradients: one step moves each weight by lr·σ·C/B·N(0, 1).
    n, width, lr, sigma, clip = 40, 400, 0.5, 3.0, 2.0
    X = np.zeros((n, width))
    y = np.ones(n)
    new = dp_sgd.train({"layer0.weight": np.zeros((1, width))}, X, y,
                       plan=_plan(noise_multiplier=sigma, max_grad_norm=clip),
                       expected_batch_size=25, lr=lr, l2=0.0, seed=3)
    # divided by the given expected batch (a noisy q·N̂), not by the true batch of 40
    sd = np.std(new["layer0.weight"]) / (lr * sigma * clip / 25)
    assert 0.85 < sd < 1.15


def test_the_round_ledger_lives_in_the_node_state_and_stops_at_the_plan():
    state = RecordDict()
    plan = _plan(rounds=2)
    ledger = dp_sgd.RoundLedger(state)
    for r in range(2):
        assert ledger.begin_round(plan) == r
        assert ledger.end_round() == r + 1
    again = dp_sgd.RoundLedger(state)  # a new ClientApp call, the same node state
    with pytest.raises(PolicyError, match="budget is spent: 2 of 2"):
        again.begin_round(plan)
    # the noisy row count is drawn once per run and read back in later rounds
    from common.privacy import NoiseSource

    first = dp_sgd.RoundLedger(state).row_count(plan, 1000, NoiseSource(1))
    assert first != 1000 and abs(first - 1000) < 6 * plan.count_noise
    assert dp_sgd.RoundLedger(state).row_count(plan, 1000, NoiseSource(2)) == first
    other = RecordDict()
    dp_sgd.RoundLedger(other).begin_round(plan)
    with pytest.raises(PolicyError, match="plan changed"):
        dp_sgd.RoundLedger(other).begin_round(_plan(rounds=3))


def _train_message(data, seed=0):
    encoder = Encoder.from_bounds(data.schema)
    width = encoder.design(data).shape[1]
    content = protocol.model_content({"layer0.weight": np.zeros((1, width))}, encoder)
    return content


def test_the_reply_carries_no_function_of_the_row_count():
    config = RunConfig(strategy="dp-fedavg", rounds=3, dp_sample_rate=0.1)
    plan = DPSGDPlan.for_config(config)
    replies = []
    for n in (400, 900):
        data = make_synthetic(n, seed=n)
        state = RecordDict()
        reply = dp_train_content(data, _train_message(data), config, seed=0,
                                 policy=PrivacyPolicy(), state=state)
        replies.append(dict(reply[protocol.METRICS]))
    assert replies[0] == replies[1] == {protocol.NUM_EXAMPLES: 1,
                                        protocol.EPSILON_SPENT: plan.epsilon_after(1)}


def test_the_client_policy_bounds_the_training_budget():
    data = make_synthetic(400, seed=1)
    config = RunConfig(strategy="dp-fedavg", epsilon=4.0)
    with pytest.raises(PolicyError, match="epsilon = 4 exceeds"):
        dp_train_content(data, _train_message(data), config, seed=0, policy=PrivacyPolicy(),
                         state=RecordDict())
    with pytest.raises(PolicyError, match="exceeds"):
        PrivacyPolicy().check_run(config)
    PrivacyPolicy(max_epsilon=4.0).check_run(config)  # no non-private handler needed
    with pytest.raises(ConfigError, match="not below 1/N"):
        dp_train_content(data, _train_message(data), RunConfig(strategy="dp-fedavg", delta=0.01),
                         seed=0, policy=PrivacyPolicy(max_delta=0.1), state=RecordDict())


def test_scaling_from_declared_bounds_reads_no_rows():
    schema = Schema(name="t", features=(Column("a", bounds=(10.0, 30.0)),
                                        Column("c", kind="categorical", categories=("u", "v"))),
                    sensitive="s", privileged="1", label="y", favourable="1")
    enc = Encoder.from_bounds(schema)
    np.testing.assert_allclose(enc.mean, [20.0])
    np.testing.assert_allclose(enc.std, [10.0])
    bare = Schema(name="t", features=(Column("a"),), sensitive="s", privileged="1", label="y",
                  favourable="1")
    with pytest.raises(ConfigError, match=r"no bounds for the continuous column\(s\) \['a'\]"):
        Encoder.from_bounds(bare)


@ray_test
def test_a_dp_fedavg_run_spends_at_most_its_budget(data_dir):
    from simulations.engine import simulate

    config = RunConfig(strategy="dp-fedavg", rounds=3, data_dir=str(data_dir), seed=1)
    result = simulate(config, clients=2, policy=PrivacyPolicy(nonprivate=True))
    plan = DPSGDPlan.for_config(config)
    assert result.rounds == 3 and result.strategy == "dp-fedavg"
    assert [e.phase for e in result.exchanges] == ["train"] * 3 + ["evaluate"]  # no moments
    assert result.privacy["epsilon_per_round"] == pytest.approx(
        [plan.epsilon_after(r) for r in (1, 2, 3)])
    assert result.privacy["epsilon"] <= config.epsilon
    assert math.isfinite(result.metrics["accuracy"]) and result.metrics["accuracy"] > 0.5


def test_a_seeded_round_repeats_and_a_secure_one_does_not():
    # Batches and noise follow the seed (drawn fresh by the client unless it seeds its noise);
    # Opacus' secure noise cannot be replayed from it.
    rng = np.random.default_rng(5)
    X = np.c_[rng.normal(size=(200, 3)), np.ones(200)]
    y = (rng.random(200) < 0.5).astype(float)
    start = {"layer0.weight": np.zeros((1, 4))}
    plan = _plan(sample_rate=0.1, steps_per_round=10, noise_multiplier=1.0)
    kwargs = {"plan": plan, "expected_batch_size": 20, "lr": 0.5, "l2": 0.0, "seed": 1}
    a, b = (dp_sgd.train(start, X, y, **kwargs) for _ in range(2))
    np.testing.assert_array_equal(a["layer0.weight"], b["layer0.weight"])
    c, d = (dp_sgd.train(start, X, y, secure_mode=True, **kwargs) for _ in range(2))
    assert not np.array_equal(c["layer0.weight"], d["layer0.weight"])
