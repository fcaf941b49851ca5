"""Failing and malicious clients, and reproducibility.

* A client that raises, hangs or dies (:mod:`clients.faults`): the server waits up to its
  ``timeout``, proceeds while ``min-clients`` valid replies remain, names every failed node
  with its reason, and fails with every reason otherwise — through the in-process grid (fast)
  and on Flower's simulation engine (Ray, slow). The deployment's counterpart is in
  ``test_deploy_federation.py``.
* Malicious or malformed replies on the simulation engine: each is rejected with a logged
  reason, and the union the server trains on is exactly the honest clients' rows.
* The same seed gives bit-identical released rows, model and metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

import numpy as np
import pytest
from federation_helpers import LocalGrid, open_app, ray_test
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType
from flwr.clientapp import ClientApp

from clients.faults import Fault, InjectedFault, parse_assignments
from clients.pipeline import pipeline_config, run_pipeline
from clients.policy import PrivacyPolicy
from common import datasets, protocol
from common.errors import PUBLIC_REASONS, ConfigError, ReplyError
from common.global_model import fit_global_model
from common.partition import federated_split
from common.run_config import RunConfig
from server.oneshot import run_oneshot
from server.traffic import CountingGrid
from simulations.engine import simulate

pytestmark = pytest.mark.usefixtures("task_identity")

RUN = {"dataset": "synthetic", "order": "real", "seed": 3, "min-clients": 1}


def _splits(config: RunConfig, clients: int):
    return federated_split(datasets.load(config.dataset, seed=config.seed), clients=clients,
                           method=config.partition, seed=config.seed,
                           test_fraction=config.test_fraction)


# --------------------------------------------------------------------------- fault specs


def test_fault_specs_parse_and_bad_ones_name_the_valid_values():
    assert parse_assignments(["1:hang", "3:die@train"]) == {
        1: Fault("hang", "query"), 3: Fault("die", "train")}
    for bad, match in [("1:explode", "KIND"), ("x:hang", "PARTITION:KIND"),
                       ("2:raise@fit", "PHASE"), ("hang", "PARTITION:KIND")]:
        with pytest.raises(ConfigError, match=match):
            parse_assignments([bad])
    with pytest.raises(ConfigError, match="twice"):
        parse_assignments(["1:hang", "1:die"])


def test_a_fault_strikes_only_in_its_phase():
    fault = Fault("raise", "train")
    fault.strike("query")  # not its phase: nothing happens
    with pytest.raises(InjectedFault, match="during train"):
        fault.strike("train")


# --------------------------------------------------------------------------- in-process grid


def test_a_raising_and_a_silent_client_are_skipped_and_named():
    config = RunConfig.from_mapping(RUN)

    def silent(partition_id, request, reply):  # partition 2 never answers (hung or dead)
        return None if partition_id == 2 else reply

    local = LocalGrid(open_app(config, faults={1: Fault("raise")}), 4,
                      tamper=silent)
    result = run_oneshot(CountingGrid(local), config)
    reasons = {r["node_id"]: r["reason"] for r in result.rejected if r["phase"] == "query"}
    assert reasons == {1001: "the client failed: InjectedFault: injected fault: the client "
                             "raised during query",
                       1002: "no reply before the timeout"}
    assert sorted(c["node_id"] for c in result.clients) == [1000, 1003]
    # The model goes only to the nodes that answered: not to the silent one.
    evaluated = sorted(n for n, t in local.delivered if t == MessageType.EVALUATE)
    assert evaluated == [1000, 1001, 1003]
    splits = _splits(config, 4)
    expected = fit_global_model([splits[0].train, splits[3].train], lam=config.lam_server)
    np.testing.assert_allclose(result.model_params["layer0.weight"][0], expected.w,
                               rtol=1e-12, atol=1e-14)


def test_a_node_the_superlink_reports_offline_is_named_and_not_asked_again():
    """A SuperNode that died mid-round: after Flower's liveness window the SuperLink answers
    the query in its place, with an error reply from its own node ID (Flower's own function
    makes it here). The server names the dead node, proceeds with the others, and does not
    send it the model (nor send anything to the SuperLink's node ID)."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.server.superlink.linkstate.utils import (
        create_message_error_unavailable_res_message,
    )

    config = RunConfig.from_mapping(RUN)

    def offline(partition_id, request, reply):
        if partition_id != 2:
            return reply
        gone = create_message_error_unavailable_res_message(request.metadata, "node_unavail")
        assert gone.metadata.src_node_id == SUPERLINK_NODE_ID
        return gone

    local = LocalGrid(open_app(config), 3, tamper=offline)
    result = run_oneshot(CountingGrid(local), config)
    assert [(r["node_id"], r["phase"], r["reason"]) for r in result.rejected] == [
        (1002, "query", "its SuperNode went offline before it replied (no heartbeat within "
                        "Flower's liveness window)")]
    assert sorted(c["node_id"] for c in result.clients) == [1000, 1001]
    evaluated = sorted(n for n, t in local.delivered if t == MessageType.EVALUATE)
    assert evaluated == [1000, 1001]
    splits = _splits(config, 3)
    expected = fit_global_model([splits[0].train, splits[1].train], lam=config.lam_server)
    np.testing.assert_allclose(result.model_params["layer0.weight"][0], expected.w,
                               rtol=1e-12, atol=1e-14)


def test_too_few_replies_fail_with_each_failed_node_and_its_reason():
    config = RunConfig.from_mapping({**RUN, "min-clients": 3})
    local = LocalGrid(open_app(config, faults={0: Fault("raise")}), 3,
                      tamper=lambda k, req, rep: None if k == 2 else rep)
    with pytest.raises(ReplyError) as info:
        run_oneshot(CountingGrid(local), config)
    message = str(info.value)
    assert "only 1 of 3 clients sent valid rows, fewer than min-clients = 3" in message
    assert "node 1000: the client failed: InjectedFault: injected fault" in message
    assert "node 1002: no reply before the timeout" in message


def test_a_users_error_on_a_node_is_a_generic_error_reply_and_a_full_log_line(tmp_path, caplog):
    """A node whose data file is missing answers with a code and a generic sentence (an error
    message can quote a path, a cell or a count: none of it reaches the server); the message
    itself goes to the client's log."""
    config = RunConfig.from_mapping(RUN)
    missing = tmp_path / "nowhere.csv"

    def node_config(k):
        return {"data-path": str(missing)} if k == 1 else {}

    local = LocalGrid(open_app(config), 2, node_config=node_config)
    with caplog.at_level(logging.ERROR, logger="clients.client_app"):
        result = run_oneshot(CountingGrid(local), config)
    (rejected,) = [r for r in result.rejected if r["phase"] == "query"]
    assert rejected["reason"] == f"the client failed: {PUBLIC_REASONS['DataError']}"
    assert str(missing) not in rejected["reason"]
    assert any(f"DataError: the node's data-path {missing} does not exist" in m
               for m in caplog.messages)


def test_a_fault_in_the_node_config_strikes_like_the_mapping():
    """``fault`` in the node config (how a deployment injects it) strikes like ``faults``."""
    config = RunConfig.from_mapping(RUN)
    local = LocalGrid(open_app(config), 2,
                      node_config=lambda k: {"fault": "raise"} if k == 0 else {})
    result = run_oneshot(CountingGrid(local), config)
    assert [r["node_id"] for r in result.rejected] == [1000]
    assert "injected fault" in result.rejected[0]["reason"]


def test_descendants_and_their_titles_come_from_proc():
    import subprocess
    import sys

    from simulations import processes

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in processes.descendants(os.getpid())
        assert processes.title(child.pid) == sys.executable
        assert os.getpid() not in processes.descendants(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert processes.title(child.pid) == ""


# --------------------------------------------------------------------------- Ray (slow)


@ray_test
def test_simulation_survives_clients_that_raise_die_and_hang(caplog):
    config = RunConfig.from_mapping({**RUN, "timeout": 20.0})
    faults = {1: Fault("raise"), 2: Fault("die"), 3: Fault("hang")}
    flower_level = logging.getLogger("flwr").level
    with caplog.at_level(logging.WARNING, logger="server.validation"):
        result = simulate(config, clients=4, faults=faults, policy=PrivacyPolicy.open())
    # The hung call was stopped (else simulate would not return) and Flower's logger, quietened
    # while it was, has its level back.
    assert logging.getLogger("flwr").level == flower_level
    query = [r for r in result.rejected if r["phase"] == "query"]
    reasons = sorted(r["reason"] for r in query)
    assert len(query) == 3 and len(result.clients) == 1
    assert reasons[0] == "no reply before the timeout"  # the hung client
    assert any("injected fault: the client raised during query" in r for r in reasons)
    assert any(r.startswith("the client failed: Actor") for r in reasons)  # the dead one
    assert sum("rejected the reply of node" in m for m in caplog.messages) == 3
    # Two exchanges; the hung node gets no model, the others all evaluate it.
    assert [(e.phase, e.messages_down) for e in result.exchanges] == [
        ("query", 4), ("evaluate", 3)]
    assert not [r for r in result.rejected if r["phase"] == "evaluate"]
    splits = _splits(config, 4)
    expected = fit_global_model([splits[0].train], lam=config.lam_server)
    np.testing.assert_allclose(result.model_params["layer0.weight"][0], expected.w,
                               rtol=1e-12, atol=1e-14)


@ray_test
def test_simulation_fails_clearly_when_too_few_clients_remain():
    config = RunConfig.from_mapping({**RUN, "min-clients": 2})
    with pytest.raises(ReplyError, match="only 1 of 2 clients.*injected fault"):
        simulate(config, clients=2, faults={0: Fault("raise")}, policy=PrivacyPolicy.open())


def _attack(kind: str, reply):
    """Replace the rows (or the schema) of ``reply`` as a malicious client would."""
    rows = reply.content[protocol.ROWS][protocol.ROWS].numpy().copy()
    if kind == "nan":
        rows[3, 1] = np.nan
    elif kind == "inf":
        rows[5, 0] = np.inf
    elif kind == "shape":
        rows = rows[:, :-1].copy()
    elif kind == "labels":
        rows[:, -1] = 2.0 * rows[:, -1]
    elif kind == "sensitive":
        rows[0, -2] = 0.5
    elif kind == "too-many":
        rows = np.vstack([rows] * 4)
    elif kind == "range":
        rows[0, 0] = 1e6  # x0's public range is [-8, 8]
    elif kind == "dtype":
        rows = rows.astype(np.float32)
    elif kind == "schema":
        other = datasets.synthetic_schema(5)
        reply.content[protocol.META] = ConfigRecord({protocol.SCHEMA: other.to_json(),
                                                 protocol.PRIVACY: "{}"})
        return reply
    reply.content[protocol.ROWS] = ArrayRecord({protocol.ROWS: Array(rows)})
    return reply


ATTACKS = {  # partition → (attack, what the logged reason must say)
    1: ("nan", "NaN or inf"), 2: ("inf", "NaN or inf"), 3: ("shape", "shape"),
    4: ("labels", "label column must be 0/1"), 5: ("sensitive", "sensitive column must be 0/1"),
    6: ("too-many", "more than the cap"), 7: ("range", "far outside its public range"),
    8: ("dtype", "dtype float32"), 9: ("schema", "schema differs from the federation's"),
}
HONEST = (0, 10)


@ray_test
def test_malicious_replies_never_reach_the_union(caplog):
    from flwr.simulation import run_simulation

    from server.server_app import make_server_app

    clients = 11
    mapping = RunConfig.from_mapping({**RUN, "max-rows": 1000}).to_mapping()
    inner = open_app(RunConfig.from_mapping(mapping))
    app = ClientApp()

    @app.query()
    def query(msg, context):
        reply = inner(msg, context)
        k = context.node_config["partition-id"]
        return _attack(ATTACKS[k][0], reply) if k in ATTACKS else reply

    @app.evaluate()
    def evaluate(msg, context):
        return inner(msg, context)

    results = []
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": 2, "log_to_driver": False}}
    with caplog.at_level(logging.WARNING, logger="server.validation"):
        run_simulation(server_app=make_server_app(RunConfig.from_mapping(mapping),
                                                  on_result=results.append),
                       client_app=app, num_supernodes=clients, backend_config=backend)
    (result,) = results
    assert len(result.rejected) == len(ATTACKS) and len(result.clients) == len(HONEST)
    logged = [m for m in caplog.messages if "rejected the reply of node" in m]
    for attack, reason in ATTACKS.values():
        assert sum(reason in r["reason"] for r in result.rejected) >= 1, attack
        assert any(reason in m for m in logged), attack
    # The union is exactly the honest clients' rows: same model as a centralised fit on them.
    splits = _splits(RunConfig.from_mapping(mapping), clients)
    honest = [splits[k].train for k in HONEST]
    digests = sorted(hashlib.sha256(np.ascontiguousarray(p.to_array()).tobytes()).hexdigest()
                     for p in honest)
    assert sorted(c["rows_sha256"] for c in result.clients) == digests
    expected = fit_global_model(honest, lam=RunConfig.from_mapping(mapping).lam_server)
    np.testing.assert_allclose(result.model_params["layer0.weight"][0], expected.w,
                               rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- reproducibility

#: A quick DP generator (few steps, small networks) for the reproducibility checks.
QUICK_DP = {"order": "fair-then-private", "iterations": 20, "rho": 10.0,
            "generator-options": json.dumps({"epochs": 1.0, "generator_dims": [16],
                                             "discriminator_dims": [16], "noise_dim": 8})}


def _seeded(config, noise_seed):
    return dataclasses.replace(config, stage2=dataclasses.replace(config.stage2,
                                                                  noise_seed=noise_seed))


def test_the_same_seeds_give_bit_identical_rows_from_the_pipeline(toy):
    """A private run is reproducible only with the client's own noise seed as well."""
    config = _seeded(pipeline_config(RunConfig.from_mapping(QUICK_DP)), 99)
    first, second = (run_pipeline(toy, config, seed=11) for _ in range(2))
    np.testing.assert_array_equal(first.rows.to_array(), second.rows.to_array())
    assert first.privacy == second.privacy
    other = run_pipeline(toy, config, seed=12)
    assert not np.array_equal(first.rows.to_array(), other.rows.to_array())
    other_noise = run_pipeline(toy, _seeded(config, 100), seed=11)
    assert not np.array_equal(first.rows.to_array(), other_noise.rows.to_array())


def test_without_a_noise_seed_identical_private_runs_release_different_rows(toy):
    """The DP noise is fresh OS entropy: the run config's seed (which the server knows) does
    not fix it, so the same run twice releases different rows and different noisy counts."""
    config = pipeline_config(RunConfig.from_mapping({**QUICK_DP, "order": "private-only"}))
    first, second = (run_pipeline(toy, config, seed=11) for _ in range(2))
    assert not np.array_equal(first.rows.to_array(), second.rows.to_array())
    counts = {len(run_pipeline(toy, config, seed=11).rows) for _ in range(6)}
    assert len(counts | {len(first.rows), len(second.rows)}) > 1


@ray_test
def test_the_same_seed_gives_bit_identical_simulations():
    mapping = {**RUN, **QUICK_DP, "min-clients": 3}
    policy = PrivacyPolicy(noise_seed=7)  # the clients' own seed: reproducible, not private
    runs = [simulate(RunConfig.from_mapping(mapping), clients=3, policy=policy)
            for _ in range(2)]
    rows = [sorted(c["rows_sha256"] for c in r.clients) for r in runs]
    assert rows[0] == rows[1] and len(set(rows[0])) == 3
    np.testing.assert_array_equal(runs[0].model_params["layer0.weight"],
                                  runs[1].model_params["layer0.weight"])
    # The evaluation is private (noisy cells, Cov and Corr NaN), and seeded by the same seed.
    np.testing.assert_equal(runs[0].metrics, {**runs[1].metrics, "server_fit_seconds":
                                              runs[0].metrics["server_fit_seconds"]})
    assert [e.payload_up for e in runs[0].exchanges] == [e.payload_up for e in runs[1].exchanges]
