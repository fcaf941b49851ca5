"""``fairsynth deploy`` for real: a SuperLink, its ServerApp executor and three SuperNodes with
their ClientApp executors as processes on 127.0.0.1, TLS and SuperNode authentication on.

The one-shot job must finish with the metrics that the same computation gives in one process
on the simulation's partition, Flower's recorded traffic must carry the released rows, a
SuperNode with an unregistered key must be refused, and every process — including the
ServerApp and ClientApp processes the executors started — must be gone afterwards, also when
the command is stopped by SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.pipeline import pipeline_config, run_pipeline
from common import comm, datasets
from common.global_model import fit_global_model
from common.partition import federated_split
from common.run_config import RunConfig
from common.schema import concat
from simulations.cli import main
from simulations.deployment.federation import COMPLETED
from simulations.processes import pid_alive

pytestmark = pytest.mark.slow

CLIENTS = 3
#: A cheap one-shot job: fair-only stage 1 with few iterations (no DP generator to train).
JOB = ["--order", "fair-only", "--iterations", "20", "--target", "0", "--rho", "10",
       "--allow-orders", "fair-only"]


def expected_metrics(data_dir: Path) -> tuple[dict, list[int]]:
    """The one-shot job computed in this process on the simulation's partition."""
    config = RunConfig.from_mapping({"order": "fair-only", "iterations": 20, "target": 0.0,
                                     "rho": 10.0})
    splits = federated_split(datasets.load("law_school", root=data_dir), clients=CLIENTS,
                             method="iid", seed=0)
    parts = [run_pipeline(s.train, pipeline_config(config), seed=1000 * k).rows
             for k, s in enumerate(splits)]
    model = fit_global_model(parts, lam=config.lam_server)
    test = concat([s.test for s in splits])
    return {**model.evaluate(test), "n": len(test)}, [len(p) for p in parts]


def test_deployed_oneshot_job_with_tls_and_supernode_authentication(tmp_path, data_dir):
    out = tmp_path / "deploy"
    code = main(["deploy", "--dataset", "law_school", "--data-dir", str(data_dir),
                 "--clients", str(CLIENTS), *JOB, "--strategies", "oneshot",
                 "--run-timeout", "150", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tls"] and summary["supernode_authentication"]
    assert summary["superlink"].startswith("127.0.0.1:")

    # An unregistered key is refused by the SuperLink, and no extra node came online.
    refusal = summary["unregistered_supernode"]
    assert refusal["refused"] and refusal["exit_code"] not in (0, None)
    assert refusal["online_before"] == refusal["online_after"] == CLIENTS
    assert refusal["superlink_log"], "the SuperLink did not log the refusal"

    run = summary["runs"]["oneshot"]
    assert run["status"] == COMPLETED
    result = json.loads(Path(run["result_path"]).read_text())
    assert len(result["clients"]) == CLIENTS and not result["rejected"]

    # Same rows, same model, same metrics as in one process on the simulation's partition.
    want, rows = expected_metrics(data_dir)
    assert sorted(c["rows"] for c in result["clients"]) == sorted(rows)
    for key in ("accuracy", "spd", "eod", "n"):
        assert run["metrics"][key] == pytest.approx(want[key], abs=1e-9), key

    # Flower's recorded traffic: the released rows went up (float64 payload), and Flower's
    # byte count agrees with the ServerApp's own count of the serialised messages.
    traffic, counted = run["network_traffic"], run["app_traffic"]
    q = len(datasets.LAW_SCHOOL.features) + 2
    payload_up = comm.BYTES_PER_NUMBER * q * sum(rows)
    assert counted["payload_up"] >= payload_up
    assert traffic["inbound-bytes"] >= payload_up
    assert traffic["inbound-bytes"] == pytest.approx(counted["bytes_up"], rel=0.02)
    assert traffic["total-bytes"] == traffic["inbound-bytes"] + traffic["outbound-bytes"]
    assert 0 < traffic["outbound-bytes"] < traffic["inbound-bytes"] / 50

    # Every process is gone: the 2 + 2K started ones and those the executors started.
    assert summary["pids_left"] == []
    groups = set(summary["process_groups"])  # 2 + 2K components and the unregistered node
    assert len(groups) == 2 + 2 * CLIENTS + 1 and groups <= set(summary["pids"])
    assert len(summary["pids"]) >= len(groups) + 1 + CLIENTS  # + the ServerApp and ClientApps
    assert not [p for p in summary["pids"] if pid_alive(p, groups=groups)]


def flower_processes_under(path: Path) -> list[int]:
    """Live processes whose command line mentions ``path`` (all of a deployment's components
    name files under its work folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(path) in cmdline and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_sigterm_during_startup_stops_every_process(tmp_path, data_dir):
    out = tmp_path / "deploy"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulations.cli", "deploy", "--dataset", "law_school",
         "--data-dir", str(data_dir), "--clients", str(CLIENTS), *JOB, "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "logs" / "supernode-2.log").exists():
                break
            time.sleep(0.2)
        started = flower_processes_under(out)
        assert proc.poll() is None and len(started) >= 3, (
            f"the deployment did not start: {proc.communicate()[0] if proc.poll() else ''}")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # a failure above must not leave the pipe to the next test
        left = flower_processes_under(out)
        for pid in left:  # a failed shutdown must not leak processes into the next tests
            os.kill(pid, signal.SIGKILL)
    assert left == []
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by signal 15" in output and "Traceback" not in output


def test_deployed_oneshot_survives_clients_that_raise_die_and_hang(tmp_path, data_dir):
    """Four SuperNodes: one honest, one whose ClientApp raises, one whose ClientApp process
    exits without a reply, one that never answers. The server waits its timeout, trains on
    the honest rows, names the three others with their reasons, and nothing is left running
    (the hung ClientApp process included)."""
    out = tmp_path / "deploy"
    job = ["--dataset", "synthetic", "--order", "fair-only", "--iterations", "20",
           "--allow-orders", "fair-only"]
    code = main(["deploy", *job, "--clients", "4", "--strategies", "oneshot",
                 "--min-clients", "1", "--timeout", "45", "--inject-fault", "1:raise",
                 "--inject-fault", "2:die", "--inject-fault", "3:hang",
                 "--run-timeout", "300", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    run = summary["runs"]["oneshot"]
    assert run["status"] == COMPLETED
    assert len(run["clients"]) == 1
    reasons = sorted(r["reason"] for r in run["rejected"] if r["phase"] == "query")
    assert reasons == ["no reply before the timeout", "no reply before the timeout",
                       "the client failed: InjectedFault: injected fault: the client raised "
                       "during query"]
    # The model is the honest client's; the two nodes that answered evaluate it.
    config = RunConfig.from_mapping({"dataset": "synthetic", "order": "fair-only",
                                     "iterations": 20})
    splits = federated_split(datasets.load("synthetic"), clients=4, method="iid", seed=0)
    rows = run_pipeline(splits[0].train, pipeline_config(config), seed=0).rows
    want = fit_global_model([rows], lam=config.lam_server).evaluate(
        concat([splits[0].test, splits[1].test]))
    for key in ("accuracy", "spd", "eod"):
        assert run["metrics"][key] == pytest.approx(want[key], abs=1e-9), key
    assert summary["pids_left"] == []
    groups = set(summary["process_groups"])
    assert not [p for p in summary["pids"] if pid_alive(p, groups=groups)]


def test_deployed_clients_refuse_what_their_policy_does_not_allow(tmp_path):
    """The refusal happens on the SuperNodes, from their node config: the run config is the
    server's (here it asks for the real rows, past the command's own check, as a server
    operator could), and every client answers with its policy's rule instead of rows."""
    from clients.policy import PrivacyPolicy
    from simulations.deploy import client_data
    from simulations.deployment import DeploymentError
    from simulations.deployment.flower_config import app_dir
    from simulations.deployment.run import deploy_federation

    config = RunConfig(dataset="synthetic", order="real", min_clients=2, timeout=60.0)
    with pytest.raises(DeploymentError) as info:
        deploy_federation(out=tmp_path / "deploy", app=app_dir(None),
                          run_config=config.to_mapping(), strategies=["oneshot"],
                          client_data=client_data(config, 2),
                          policy=PrivacyPolicy().to_node_config(), run_timeout=150.0)
    assert "policy: release 'real' is outside this client's privacy policy" in str(info.value)
