"""``--ray-address``: a simulation on a Ray head started apart, on loopback, and stopped after.

The head and the driver both run with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which keeps Ray's
node address on 127.0.0.1 on both sides (docs/deployment.md, § An existing Ray cluster). The
head carries a resource no embedded engine has, so the run's record proves which cluster it ran
on; it is stopped through its own process group (not ``ray stop``, which would stop every Ray
on the machine), and no process of it may outlive the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from federation_helpers import ray_test

ROOT = Path(__file__).resolve().parent.parent
PROBE = "fairsynth_probe"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.fixture()
def ray_head():
    """A Ray head on 127.0.0.1 with 2 CPUs and 3 units of :data:`PROBE`; yields its address."""
    ray = Path(sys.executable).with_name("ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths are limited
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
         "--node-ip-address", "127.0.0.1", "--resources", json.dumps({PROBE: 3}),
         "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        lines = []
        for line in head.stdout:  # "--block" prints its banner, then waits
            lines.append(line)
            if "will now block" in line or time.monotonic() > deadline:
                break
        if head.poll() is not None or "will now block" not in "".join(lines):
            pytest.fail("the Ray head did not start:\n" + "".join(lines[-20:]))
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # "ray start --block" stops its processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        for pid in [head.pid, *_processes_mentioning(temp)]:
            try:
                os.killpg(pid, signal.SIGKILL) if pid == head.pid else os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        head.stdout.close()
        time.sleep(1)
        left = _processes_mentioning(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"processes of the Ray head outlived it: {left}"


@ray_test
def test_simulate_runs_on_a_separately_started_ray_head(ray_head, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "FLWR_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "simulate", "--dataset", "synthetic",
         "--order", "real", "--allow-orders", "real", "--clients", "3",
         "--ray-address", ray_head, "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"ran on the Ray cluster at {ray_head} (1 node(s), 2 CPUs)" in done.stdout
    result = json.loads((out / "results.json").read_text())
    runtime = result["runtime"]
    assert runtime["ray_address"] == ray_head and runtime["embedded"] is False
    assert runtime["resources"][PROBE] == 3  # only the head started here has this resource
    assert [e["messages_down"] for e in result["exchanges"]] == [3, 3]
    assert 0.6 < result["metrics"]["accuracy"] < 0.9


def test_an_unreachable_cluster_is_a_clear_error(tmp_path):
    port = _free_port()  # nothing listens there
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "FLWR_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "simulate", "--dataset", "synthetic",
         "--order", "real", "--allow-orders", "real", "--clients", "2",
         "--ray-address", f"127.0.0.1:{port}", "--out", str(tmp_path / "run")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert f"cannot connect to the Ray cluster at '127.0.0.1:{port}'" in done.stderr
    assert "ray start --head" in done.stderr
