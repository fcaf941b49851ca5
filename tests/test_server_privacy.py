"""Privacy against the party that runs the server: each test is an attack the server could
mount, and checks that it fails (and, where it shows the attack, that it works without the fix).

- The DP noise is fresh OS entropy: knowing the run config's seed does not let the server
  recompute it (with a shared seed, the count noise of two neighbouring datasets cancels and N
  falls out of the release size).
- No reply of a private order holds a function of the true row count: δ is the run's, not
  1/(N√N); timings stay in the client's log.
- Errors reach the server as a code and a generic sentence.
- The client's privacy policy refuses the real rows, an ε or δ above its limits, the
  non-private handlers and a second evaluation; its evaluation is noisy by default.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from federation_helpers import LocalGrid, ray_test
from flwr.app import RecordDict
from scipy import stats

from clients.client_app import make_client_app
from clients.dp_ctgan import DPCTGAN, DPCTGANConfig
from clients.dp_generators import GENERATORS, register_generator
from clients.handlers import evaluate_content, moments_content, release_content
from clients.label_model import DPLabelModel
from clients.policy import PrivacyPolicy, client_noise_seed
from common import privacy, protocol
from common.datasets import make_synthetic
from common.encoding import Encoder
from common.errors import ConfigError, PolicyError, ReplyError
from common.metrics import group_counts
from common.run_config import RunConfig
from server.oneshot import run_oneshot
from server.traffic import CountingGrid

pytestmark = pytest.mark.usefixtures("task_identity")

SMALL = {"epochs": 1.0, "sample_rate": 0.25, "generator_dims": (16,),
         "discriminator_dims": (16,), "noise_dim": 8, "progress": False}


# --------------------------------------------------------------------------- the noise


def test_fresh_noise_differs_and_a_seed_reproduces_it():
    a, b = privacy.NoiseSource(), privacy.NoiseSource()
    assert not np.array_equal(a.normal(0, 1, 50), b.normal(0, 1, 50))
    c, d = privacy.NoiseSource(5), privacy.NoiseSource(5)
    np.testing.assert_array_equal(c.normal(0, 2, (3, 4)), d.normal(0, 2, (3, 4)))
    # One seed, two mechanisms: independent streams, so their noise cannot cancel.
    fit, evaluation = (privacy.NoiseSource(5, purpose=p).normal(0, 1, 200)
                       for p in ("dp-ctgan fit", "evaluation"))
    assert abs(np.corrcoef(fit, evaluation)[0, 1]) < 0.3
    assert c.reproducible and not a.reproducible
    assert privacy.NoiseSource().torch_seed() != privacy.NoiseSource().torch_seed()


def test_the_hardened_noise_is_the_same_gaussian():
    """Four OS-random Box–Muller draws summed and halved: N(0, σ²) (Kolmogorov–Smirnov)."""
    noise = privacy.NoiseSource(secure=True)
    x = noise.normal(1.0, 3.0, size=20_000)
    assert stats.kstest((x - 1.0) / 3.0, "norm").pvalue > 1e-6
    assert abs(x.std() / 3.0 - 1.0) < 0.03  # 20,000 draws: the sd's relative error is ~0.5 %
    assert noise.normal(0.0, 1.0, size=(2, 3)).shape == (2, 3)
    with pytest.raises(ConfigError, match="cannot be seeded"):
        privacy.NoiseSource(1, secure=True)


def _noisy_rows(data, **config) -> float:
    """The generator's DP estimate of the row count before rounding (the release size rounds
    it; comparing rounded sizes, fresh noise gives a difference of exactly one row by chance
    a few times in a hundred)."""
    return float(DPCTGAN(DPCTGANConfig(delta=1e-6, **SMALL, **config)).fit(data)
                 .stats.cell_counts.sum())


def test_the_server_cannot_recompute_the_count_noise():
    """The attack: on neighbours of 400 and 399 rows, noise drawn from a seed the server knows
    is the same noise, so the noisy counts differ by exactly one row and the release size
    gives N away. With fresh noise (the default) the difference is not one row."""
    data = make_synthetic(400, seed=3)
    smaller = data.subset(np.arange(1, 400))
    seeded = [_noisy_rows(d, seed=0, noise_seed=0) for d in (data, smaller)]
    assert seeded[0] - seeded[1] == pytest.approx(1.0, abs=1e-9)  # the attack, when seeded
    fresh = [_noisy_rows(d, seed=0) for d in (data, smaller)]
    assert abs(fresh[0] - fresh[1] - 1.0) > 1e-6
    assert _noisy_rows(data, seed=0) != _noisy_rows(data, seed=0)  # same run, new noise


# --------------------------------------------------------------------------- replies


@pytest.fixture
def constant_generator(monkeypatch):
    """A DP generator whose every release is data-independent (the DP mechanisms replaced by
    constants, fair-then-private's DP label model too): what remains of a reply can then depend
    on the data only through a leak."""

    def constant_labels(data, reference, mechanism, noise):
        encoder = Encoder.fit(reference)
        return DPLabelModel(encoder, np.linspace(-1, 1, encoder.design(reference).shape[1]),
                            lam=0.0, clip=1.0)

    monkeypatch.setattr(DPLabelModel, "fit", staticmethod(constant_labels))
    monkeypatch.setattr(DPLabelModel, "check", lambda *a: 1.0)  # its noisy count, constant

    class Constant:
        def __init__(self, *, epsilon, delta, seed, **_):
            self.epsilon, self.delta = epsilon, delta

        def fit(self, data, *, reserve=()):
            self.schema = data.schema
            return self

        def noisy_rows(self):
            return 300

        def sample(self, n, *, seed=None):
            template = make_synthetic(n, seed=1)
            return template

        def privacy_spent(self):
            return {"epsilon": self.epsilon, "delta": self.delta, "accountant": "rdp"}

    register_generator("constant-probe")(Constant)
    yield "constant-probe"
    GENERATORS.pop("constant-probe")


def _reply_parts(content: RecordDict) -> dict:
    rows = content[protocol.ROWS][protocol.ROWS].numpy()
    meta = dict(content[protocol.META])
    metrics = dict(content[protocol.METRICS])
    return {"rows": rows.tobytes(), "meta": meta, "metrics": metrics}


@pytest.mark.parametrize("order", ["private-only", "private-then-fair", "fair-then-private"])
def test_a_private_reply_is_the_same_for_neighbouring_datasets(constant_generator, order):
    """With the DP mechanisms data-independent, the whole reply (rows, schema, privacy report,
    metrics) of a dataset and of the same dataset minus one row are identical: no field is a
    function of N (not δ, not the timings)."""
    data = make_synthetic(400, seed=2)
    config = RunConfig(order=order, generator=constant_generator, iterations=3,
                       stage1_fraction=0.5)
    policy = PrivacyPolicy()
    replies = [_reply_parts(release_content(d, config, 7, policy=policy))
               for d in (data, data.subset(np.arange(1, len(data))))]
    assert replies[0] == replies[1]
    assert not any(k.startswith("seconds") or k == "train-rows" for k in replies[0]["metrics"])


def test_a_non_private_reply_keeps_its_timings_and_size():
    data = make_synthetic(200, seed=2)
    reply = release_content(data, RunConfig(order="real"), 1, policy=PrivacyPolicy.open())
    metrics = dict(reply[protocol.METRICS])
    assert metrics["train-rows"] == 200 and "seconds" in metrics


# --------------------------------------------------------------------------- the policy


def test_the_policy_reads_the_node_config_and_refuses_bad_values():
    policy = PrivacyPolicy.from_node_config({
        "privacy-orders": "private-only, real", "privacy-max-epsilon": "2",
        "privacy-max-delta": 1e-4, "privacy-nonprivate": "true", "dp-noise-seed": 9})
    assert policy.orders == ("private-only", "real") and policy.max_epsilon == 2.0
    assert policy.nonprivate and policy.noise_seed == 9
    assert PrivacyPolicy.from_node_config(policy.to_node_config()) == policy
    assert PrivacyPolicy.from_node_config({}) == PrivacyPolicy()
    for bad, match in [({"privacy-orders": "everything"}, "choose among"),
                       ({"privacy-max-epsilon": "-1"}, "must be > 0"),
                       ({"privacy-nonprivate": "maybe"}, "not a boolean"),
                       ({"dp-noise-seed": 1, "dp-secure-mode": True}, "exclude each other")]:
        with pytest.raises(ConfigError, match=match):
            PrivacyPolicy.from_node_config(bad)


@pytest.mark.parametrize("settings, match", [
    ({"order": "real"}, "release 'real' is outside"),
    ({"order": "fair-only"}, "release 'fair-only' is outside"),
    ({"epsilon": 8.0}, "epsilon = 8 exceeds this client's limit 1"),
    ({"delta": 1e-3}, "delta = 0.001 exceeds this client's limit 1e-05"),
])
def test_by_default_a_client_refuses_releases_outside_its_policy(settings, match):
    with pytest.raises(PolicyError, match=match):
        release_content(make_synthetic(100, seed=1), RunConfig(**settings), 1,
                        policy=PrivacyPolicy())


def test_by_default_the_non_private_handlers_do_not_answer():
    data = make_synthetic(100, seed=1)
    with pytest.raises(PolicyError, match="query.moments.*does not allow it"):
        moments_content(data, PrivacyPolicy())
    moments_content(data, PrivacyPolicy(nonprivate=True))


def _model_content(data):
    encoder = Encoder.fit(data)
    w = np.linspace(-1.0, 1.0, encoder.design(data).shape[1])
    return protocol.model_content({"layer0.weight": w[None, :]}, encoder), encoder, w


def test_the_default_evaluation_is_noisy_budgeted_and_once_per_run():
    data = make_synthetic(2000, seed=4)
    content, encoder, w = _model_content(data)
    exact = group_counts(data.y, encoder.design(data) @ w, sensitive=data.s)
    config = RunConfig()
    reply = dict(evaluate_content(data, content, config, policy=PrivacyPolicy(),
                                  run=(11, 1))[protocol.METRICS])
    assert reply[protocol.EVALUATION_EPSILON] <= PrivacyPolicy().evaluation_epsilon
    assert not any(k.startswith("sum-") for k in reply)  # no sums of d(x)
    assert reply["n"] != exact["n"] or reply["correct"] != exact["correct"]
    # n sums 8 noisy cells and correct 4; within 6 standard deviations of the exact counts
    sigma = 1 / math.sqrt(2 * privacy.zcdp_rho(PrivacyPolicy().evaluation_epsilon, 1e-6))
    assert abs(reply["n"] - exact["n"]) <= 6 * sigma * math.sqrt(8)
    assert abs(reply["correct"] - exact["correct"]) <= 6 * sigma * math.sqrt(4)
    with pytest.raises(PolicyError, match="already had its private evaluation"):
        evaluate_content(data, content, config, policy=PrivacyPolicy(), run=(11, 1))
    exact_reply = dict(evaluate_content(data, content, config,
                                        policy=PrivacyPolicy(nonprivate=True))[protocol.METRICS])
    assert {k: exact_reply[k] for k in exact} == exact


def test_the_evaluation_noise_is_calibrated_to_its_epsilon():
    """σ of the 8-cell Gaussian mechanism against the zCDP formula, and its ε (Opacus' RDP
    accountant) within the budget; the counts derived from the cells agree with fairlearn's
    metrics on the exact cells."""
    s, y = np.array([0, 0, 1, 1] * 50), np.array([0, 1] * 100)
    yhat = np.array([1, 0, 0, 1] * 50)
    cells, report = privacy.noisy_evaluation_cells(s, y, yhat, epsilon=0.5, delta=1e-6,
                                                   noise=privacy.NoiseSource(0))
    rho = privacy.zcdp_rho(0.5, 1e-6)
    assert report["noise_multiplier"] == pytest.approx(1 / math.sqrt(2 * rho))
    assert report["epsilon"] <= 0.5 and cells.sum() > 0 and (cells >= 0).all()


# --------------------------------------------------------------------------- in a federation


def test_client_noise_seeds_never_share_a_stream():
    """Every (noise seed, client seed) pair gets its own noise seed: neighbouring noise seeds
    with shifted clients (which a sum N + s would merge) included; None stays fresh noise."""
    seeds = [client_noise_seed(n, s + 1000 * k) for n in range(4) for s in range(3)
             for k in range(3)]
    assert len(set(seeds)) == len(seeds)
    assert client_noise_seed(5, 0) != client_noise_seed(4, 1)
    assert client_noise_seed(7, 2) == client_noise_seed(7, 2)
    assert all(isinstance(s, int) and s >= 0 for s in seeds)
    assert client_noise_seed(None, 3) is None


def test_clients_given_one_noise_seed_never_add_the_same_noise(monkeypatch):
    """One policy seed for every node (a simulation's --noise-seed, one policy for every
    container) is keyed by each client's own seed. The attack it stops: two clients that drew
    the same noise would give the server the exact difference of their true counts."""
    from clients import handlers

    def cells(shift: int, seed: int) -> np.ndarray:
        s, y = np.repeat([0, 0, 1, 1], 3000 + shift), np.tile([0, 1], 2 * (3000 + shift))
        return privacy.noisy_evaluation_cells(s, y, y, epsilon=0.5, delta=1e-6,
                                              noise=privacy.NoiseSource(seed,
                                                                        purpose="evaluation"))[0]

    occupied = cells(0, 7) > 1000  # the four cells with ŷ = y; each gains 40 rows
    assert occupied.sum() == 4
    np.testing.assert_array_equal((cells(40, 7) - cells(0, 7))[occupied], 40)
    assert not np.array_equal((cells(40, 7) - cells(0, 8))[occupied], np.full(4, 40))

    seeds = []
    real = handlers.NoiseSource
    monkeypatch.setattr(handlers, "NoiseSource",
                        lambda seed=None, **kw: seeds.append(seed) or real(seed, **kw))
    config = RunConfig(dataset="synthetic", min_clients=2, seed=3)
    content, _, _ = _model_content(make_synthetic(300, seed=4))
    grid = LocalGrid(make_client_app(config, policy=PrivacyPolicy(noise_seed=7)), 2)
    replies = grid.send_and_receive([grid.create_message(content, "evaluate", node, "")
                                     for node in grid.get_node_ids()])
    assert all(not r.has_error() for r in replies)
    assert seeds == [client_noise_seed(7, 3), client_noise_seed(7, 1003)]
    assert len(set(seeds)) == 2 and 7 not in seeds


def test_in_process_the_clients_refuse_a_run_outside_their_default_policy():
    config = RunConfig(dataset="synthetic", order="real", min_clients=1)
    with pytest.raises(ReplyError, match="policy: release 'real' is outside"):
        run_oneshot(CountingGrid(LocalGrid(make_client_app(config), 2)), config)


def test_a_node_config_policy_can_allow_what_the_default_refuses():
    config = RunConfig(dataset="synthetic", order="real", min_clients=2)
    grid = LocalGrid(make_client_app(config), 2,
                     node_config=lambda k: {"privacy-orders": "real"})
    result = run_oneshot(CountingGrid(grid), config)
    assert len(result.clients) == 2
    assert not math.isnan(result.metrics["accuracy"]) and math.isnan(result.metrics["cov"])


def test_a_default_one_shot_run_is_private_end_to_end():
    """Fair-then-private within the default policy: released, then a noisy evaluation whose
    metrics are close to the exact ones on the same model."""
    config = RunConfig(dataset="synthetic", min_clients=2, iterations=10,
                       generator_options='{"epochs": 1.0, "generator_dims": [16], '
                                         '"discriminator_dims": [16], "noise_dim": 8}')
    private = run_oneshot(CountingGrid(LocalGrid(make_client_app(config), 2)), config)
    assert not private.rejected
    assert all(0 < c["evaluation_epsilon"] <= 0.5 for c in private.clients)
    assert math.isnan(private.metrics["cov"])  # the sums of d(x) were not sent
    assert 0.0 <= private.metrics["accuracy"] <= 1.0


@ray_test
def test_on_ray_the_clients_refuse_a_run_outside_their_default_policy():
    from flwr.simulation import run_simulation

    from server.server_app import make_server_app

    config = RunConfig(dataset="synthetic", order="real", min_clients=2)
    errors = []
    with pytest.raises(ReplyError, match="only 0 of 2 clients"):
        run_simulation(server_app=make_server_app(config, on_error=errors.append),
                       client_app=make_client_app(config), num_supernodes=2,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": 2, "log_to_driver": False}})
    (error,) = errors
    assert str(error).count("policy: release 'real' is outside this client's privacy policy") == 2


def test_the_command_line_refuses_a_run_the_clients_would_refuse(capsys):
    from simulations.cli import main

    assert main(["simulate", "--dataset", "synthetic", "--order", "real"]) == 2
    err = capsys.readouterr().err
    assert "release 'real' is outside" in err and "--allow-orders" in err


def test_secure_mode_reaches_opacus_and_the_statistics():
    data = make_synthetic(300, seed=5)
    gen = DPCTGAN(DPCTGANConfig(delta=1e-6, secure_mode=True, **SMALL)).fit(data)
    assert gen.critic.optimizer.secure_mode is True
    assert gen.privacy_spent()["epsilon"] <= 1.0
    with pytest.raises(ConfigError, match="cannot be seeded"):
        DPCTGANConfig(secure_mode=True, noise_seed=1)
