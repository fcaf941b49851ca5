"""The federation end to end: the one-shot flow, reply rejection, FedAvg/FairFed flows.

Most tests drive the real ServerApp flows and the real ClientApp through ``LocalGrid``, a Grid
that hands each message to the ClientApp in this process (no Ray: milliseconds per message).
Two slow tests run the same apps on Flower's simulation engine (Ray), as ``fairsynth
simulate`` does.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
from federation_helpers import LocalGrid, open_app, ray_test
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp

from clients.client_app import train_content
from clients.policy import PrivacyPolicy
from common import comm, datasets, mlp, protocol
from common.errors import ReplyError
from common.global_model import fit_global_model
from common.partition import federated_split
from common.protocol import model_record, scaling_record
from common.run_config import RunConfig
from common.schema import concat
from server.baselines import run_baseline
from server.oneshot import run_oneshot
from server.server_app import make_server_app
from server.traffic import CountingGrid

pytestmark = pytest.mark.usefixtures("task_identity")

RUN = {"dataset": "synthetic", "order": "real", "seed": 3, "min-clients": 2}




def _with_rows(reply: Message, rows: np.ndarray) -> Message:
    """``reply`` with its rows replaced."""
    reply.content[protocol.ROWS] = ArrayRecord({protocol.ROWS: Array(rows)})
    return reply


def _splits(config: RunConfig, clients: int):
    data = datasets.load(config.dataset, seed=config.seed)
    return federated_split(data, clients=clients, method=config.partition, seed=config.seed,
                           alpha=config.alpha, test_fraction=config.test_fraction)


def test_oneshot_queries_each_client_once_and_broadcasts_once():
    config = RunConfig.from_mapping(RUN)
    local = LocalGrid(open_app(config), 3)
    grid = CountingGrid(local)
    result = run_oneshot(grid, config)

    # Exactly one query and one model message per node, in two exchanges.
    assert sorted(local.delivered) == sorted(
        [(n, MessageType.QUERY) for n in local.contexts]
        + [(n, MessageType.EVALUATE) for n in local.contexts])
    assert [(e.phase, e.messages_down, e.messages_up) for e in result.exchanges] == [
        (MessageType.QUERY, 3, 3), (MessageType.EVALUATE, 3, 3)]
    assert result.rounds == 1 and not result.rejected

    # The server's model and pooled metrics equal a centralised computation on the same rows.
    splits = _splits(config, 3)
    expected = fit_global_model([s.train for s in splits], lam=config.lam_server)
    np.testing.assert_allclose(result.model_params["layer0.weight"][0], expected.w,
                               rtol=1e-12, atol=1e-14)
    test = concat([s.test for s in splits])
    truth = expected.evaluate(test)
    for key in ("accuracy", "spd", "eod", "dpr", "eor", "cov", "corr"):
        assert result.metrics[key] == pytest.approx(truth[key], rel=1e-9, abs=1e-12)

    # Rows up: Σ_k N_k·q numbers of 8 bytes; model down: K·d.
    q = len(splits[0].train.schema.features) + 2
    rows = sum(len(s.train) for s in splits)
    query, evaluate = result.exchanges
    assert query.payload_up == 8 * rows * q
    assert evaluate.payload_down == 8 * 3 * result.params
    check = result.formula_check()
    assert check["ratio_payload"] == 1.0
    assert 1.0 < check["ratio_bytes"] < 1.1


@pytest.mark.parametrize("tamper, reason", [
    (lambda req, rep, rows: _with_rows(rep, rows[:, :-1].copy()), "shape"),
    (lambda req, rep, rows: _with_rows(rep, np.where(np.arange(rows.size).reshape(rows.shape)
                                                     == 5, np.nan, rows)), "NaN"),
    (lambda req, rep, rows: _with_rows(rep, np.column_stack([rows[:, :-1], 2 * rows[:, -1]])),
     "0/1"),
    (lambda req, rep, rows: _with_rows(rep, np.vstack([rows] * 3)), "cap"),
    (lambda req, rep, rows: _with_rows(rep, rows.astype(np.float32)), "dtype"),
    (lambda req, rep, rows: Message(Error(code=3, reason="stage 2 ran out of memory"),
                                    reply_to=req), "out of memory"),
])
def test_a_bad_reply_is_rejected_with_its_reason_and_the_round_completes(tamper, reason,
                                                                          caplog):
    config = RunConfig.from_mapping({**RUN, "max-rows": 2000})

    def corrupt_first(partition_id, request, reply):
        if partition_id != 0 or request.metadata.message_type != MessageType.QUERY:
            return reply
        return tamper(request, reply, reply.content[protocol.ROWS][protocol.ROWS].numpy())

    local = LocalGrid(open_app(config), 3, tamper=corrupt_first)
    with caplog.at_level(logging.WARNING, logger="server.validation"):
        result = run_oneshot(CountingGrid(local), config)
    bad = 1000
    assert [r["node_id"] for r in result.rejected] == [bad]
    assert reason in result.rejected[0]["reason"]
    assert any(reason in m and str(bad) in m for m in caplog.messages)
    assert sorted(c["node_id"] for c in result.clients) == [1001, 1002]
    # The model is the one on the two valid clients' rows; all three evaluate it.
    splits = _splits(config, 3)
    expected = fit_global_model([s.train for s in splits[1:]], lam=config.lam_server)
    np.testing.assert_allclose(result.model_params["layer0.weight"][0], expected.w,
                               rtol=1e-12, atol=1e-14)
    truth = expected.evaluate(concat([s.test for s in splits]))
    assert result.metrics["accuracy"] == pytest.approx(truth["accuracy"], abs=1e-12)
    assert result.metrics["spd"] == pytest.approx(truth["spd"], abs=1e-12)


def test_too_few_valid_replies_fail_the_round_with_every_reason():
    config = RunConfig.from_mapping({**RUN, "min-clients": 3, "max-rows": 10})
    local = LocalGrid(open_app(config), 3)
    with pytest.raises(ReplyError, match="only 0 of 3 clients.*min-clients = 3.*cap of 10"):
        run_oneshot(CountingGrid(local), config)


def test_a_failing_pipeline_is_reported_by_every_client(caplog):
    config = RunConfig.from_mapping({**RUN, "order": "fair-only", "rho": 10.0,
                                     "stage1-fraction": 0.0001})
    local = LocalGrid(open_app(config), 2)
    with caplog.at_level(logging.ERROR, logger="clients.client_app"):
        with pytest.raises(ReplyError, match="node 1000: the client failed: config-error"):
            run_oneshot(CountingGrid(local), config)
    assert sum("non-empty" in m for m in caplog.messages) == 2  # the reason, in each log


def test_fair_only_pipeline_releases_fairer_rows():
    base = RunConfig.from_mapping(RUN)
    fair = RunConfig.from_mapping({**RUN, "order": "fair-only", "target": 0.0, "rho": 1000.0,
                                   "iterations": 60})
    results = [run_oneshot(CountingGrid(LocalGrid(open_app(c), 2)), c)
               for c in (base, fair)]
    assert results[1].metrics["spd"] < 0.5 * results[0].metrics["spd"]
    assert [c["privacy"]["order"] for c in results[1].clients] == ["fair-only", "fair-only"]


@pytest.mark.parametrize("strategy", ["fedavg", "fairfed"])
def test_baselines_run_R_rounds_and_move_2KRd_numbers(strategy):
    config = RunConfig.from_mapping({**RUN, "strategy": strategy, "rounds": 3})
    local = LocalGrid(open_app(config), 2)
    result = run_baseline(CountingGrid(local), config)
    phases = [e.phase for e in result.exchanges]
    assert phases == ["query.moments", "train", "train", "train", "evaluate"]
    assert result.rounds == 4
    d = result.params
    assert d == 4 + 2  # synthetic: four features, s and the intercept
    check = result.formula_check()
    assert check["formula_numbers"] == 2 * 2 * 3 * d
    assert check["ratio_payload"] == 1.0
    assert 0.6 < result.metrics["accuracy"] < 0.9
    if strategy == "fairfed":
        assert [h["round"] for h in result.history] == [1, 2, 3]
        for h in result.history:
            assert sum(h["weights"].values()) == pytest.approx(1.0)


def test_fedavg_with_an_mlp_trains_the_configured_network():
    config = RunConfig.from_mapping({**RUN, "strategy": "fedavg", "rounds": 2, "model": "mlp",
                                     "mlp-hidden": "8,4"})
    result = run_baseline(CountingGrid(LocalGrid(open_app(config), 2)),
                          config)
    assert result.params == mlp.count_params(6, (8, 4)) == 6 * 8 + 8 + 8 * 4 + 4 + 4 + 1
    assert result.formula_check()["ratio_payload"] == 1.0


def test_oneshot_with_an_mlp_trains_it_on_the_union_of_the_replies():
    config = RunConfig.from_mapping({**RUN, "model": "mlp", "mlp-hidden": "8,4",
                                     "mlp-epochs": 3})
    local = LocalGrid(open_app(config), 2)
    result = run_oneshot(CountingGrid(local), config)
    assert result.params == mlp.count_params(6, (8, 4))
    # The same network trained here on the union of the two clients' rows, in the server's
    # canonical order (by each release's SHA-256).
    from common.encoding import Encoder

    splits = _splits(config, 2)
    parts = sorted((s.train for s in splits),
                   key=lambda p: hashlib.sha256(p.to_array().tobytes()).hexdigest())
    union = concat(parts)
    encoder = Encoder.fit(union)
    start = mlp.init_params(encoder.n_z + 2, (8, 4), seed=config.seed)
    expected = mlp.train(start, encoder.design(union), union.y, epochs=3, lr=config.mlp_lr,
                         batch_size=config.mlp_batch_size, l2=config.mlp_weight_decay,
                         seed=config.seed, optimizer="adam")
    for key, value in expected.items():
        np.testing.assert_array_equal(result.model_params[key], value)
    assert result.formula_check()["ratio_payload"] == 1.0


def test_fairfed_with_an_mlp_runs_and_moves_2KRd_numbers():
    config = RunConfig.from_mapping({**RUN, "strategy": "fairfed", "rounds": 2, "model": "mlp",
                                     "mlp-hidden": "8,4"})
    result = run_baseline(CountingGrid(LocalGrid(open_app(config), 2)),
                          config)
    d = mlp.count_params(6, (8, 4))
    assert result.params == d
    assert result.formula_check()["formula_numbers"] == 2 * 2 * 2 * d
    assert result.formula_check()["ratio_payload"] == 1.0
    assert [h["round"] for h in result.history] == [1, 2]


# --------------------------------------------------------------------------- Ray (slow)

BACKEND = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
           "init_args": {"num_cpus": 2, "log_to_driver": False}}


@ray_test
def test_simulation_engine_oneshot_with_a_corrupt_client():
    from flwr.simulation import run_simulation

    mapping = RunConfig.from_mapping(RUN).to_mapping()
    inner = open_app(RunConfig.from_mapping(mapping))
    app = ClientApp()

    @app.query()
    def query(msg, context):
        reply = inner(msg, context)
        if context.node_config["partition-id"] == 0:
            rows = reply.content["rows"]["rows"].numpy()
            rows[7, 0] = np.nan
            reply.content["rows"] = ArrayRecord({"rows": Array(rows)})
        return reply

    @app.evaluate()
    def evaluate(msg, context):
        return inner(msg, context)

    results = []
    run_simulation(server_app=make_server_app(RunConfig.from_mapping(mapping),
                                              on_result=results.append),
                   client_app=app, num_supernodes=3, backend_config=BACKEND)
    (result,) = results
    assert [(e.phase, e.messages_down, e.messages_up) for e in result.exchanges] == [
        ("query", 3, 3), ("evaluate", 3, 3)]
    assert len(result.rejected) == 1 and "NaN" in result.rejected[0]["reason"]
    assert len(result.clients) == 2
    splits = _splits(RunConfig.from_mapping(mapping), 3)
    q = len(splits[0].train.schema.features) + 2
    assert result.exchanges[0].payload_up == 8 * q * sum(len(s.train) for s in splits)
    expected = fit_global_model([s.train for s in splits[1:]],
                                lam=RunConfig.from_mapping(mapping).lam_server)
    np.testing.assert_allclose(result.model_params["layer0.weight"][0], expected.w,
                               rtol=1e-12, atol=1e-14)
    truth = expected.evaluate(concat([s.test for s in splits]))
    assert result.metrics["accuracy"] == pytest.approx(truth["accuracy"], abs=1e-12)


@ray_test
def test_simulation_engine_fedavg_aggregate_is_the_weighted_average():
    from flwr.simulation import run_simulation

    # Dirichlet shares give the two clients very different sizes, so the weighted and the
    # plain average differ.
    config = RunConfig.from_mapping({**RUN, "strategy": "fedavg", "rounds": 1,
                                     "partition": "dirichlet", "alpha": 0.5})
    mapping = config.to_mapping()
    results = []
    run_simulation(server_app=make_server_app(RunConfig.from_mapping(mapping),
                                              on_result=results.append),
                   client_app=open_app(RunConfig.from_mapping(mapping)), num_supernodes=2,
                   backend_config=BACKEND)
    (result,) = results
    # Each client's local step recomputed here, then averaged by hand: Σ n_k w_k / Σ n_k.
    splits = _splits(config, 2)
    encoder = comm.encoder_from_moments(splits[0].train.schema,
                                        [comm.moments(s.train) for s in splits])
    start = mlp.init_params(encoder.n_z + 2, (), seed=config.seed)
    local, sizes = [], []
    for k, s in enumerate(splits):
        content = RecordDict({protocol.MODEL: model_record(start),
                              protocol.CONFIG: scaling_record(encoder)})
        content[protocol.CONFIG]["server-round"] = 1
        reply = train_content(s.train, content, config, seed=config.seed + 1000 * k,
                              policy=PrivacyPolicy.open())
        local.append(reply[protocol.MODEL]["layer0.weight"].numpy())
        sizes.append(len(s.train))
    average = (sizes[0] * local[0] + sizes[1] * local[1]) / (sizes[0] + sizes[1])
    np.testing.assert_allclose(result.model_params["layer0.weight"], average, rtol=1e-10,
                               atol=1e-12)
    assert max(sizes) > 1.5 * min(sizes)
    plain = (local[0] + local[1]) / 2
    assert np.max(np.abs(result.model_params["layer0.weight"] - plain)) > 1e-4
