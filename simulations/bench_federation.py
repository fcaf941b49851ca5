"""Benchmark: ``fairsynth simulate`` end to end, a 50-client and a 500-client federation.

Run as a script (it starts the command line in a subprocess and watches its process tree)::

    FAIRSYNTH_DATA_DIR=../shared/data python -m simulations.bench_federation \\
        [--skip-k50] [--k500] [--out results/bench_federation.json]

Measures, for the default run (Law School, 2 clients, fair-then-private, ε = 1; target
≤ 60 s), for Law School split 50 ways (target ≤ 10 min), with ``--k500`` for Adult split
500 ways (target ≤ 15 min), and with ``--large K`` for a table of K copies of Adult's rows
read as a CSV of your own with Adult's declared schema (K = 6: 271,332 rows, the size of the
largest public fairness tables; target ≤ 10 min): wall time of the whole command
(Python start, Ray start, both stages on every client, server, evaluation) and peak memory,
as the largest sum of resident set sizes over the command's process tree (the CLI and every
Ray process it starts, sampled every 0.2 s from ``/proc``) and as the CLI process's own
high-water mark (``VmHWM``, where the server trains).
Prints JSON and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import datasets
from common.jsonio import write_json
from simulations import processes

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def high_water(pid: int) -> int:
    """Peak resident bytes of ``pid`` so far (``VmHWM``)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants."""
    return sum(_rss(pid) for pid in [root, *processes.descendants(root)])


def measure(argv: list[str], *, target_seconds: float) -> dict:
    """Run ``fairsynth`` with ``argv`` and measure wall time and peak memory."""
    with tempfile.TemporaryDirectory(prefix="bench-fed-") as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "FLWR_HOME": str(Path(tmp) / "flwr"),
               "FLWR_TELEMETRY_ENABLED": "0"}
        cmd = [sys.executable, "-m", "simulations.cli", *argv, "--out", str(out)]
        peak = cli_peak = 0
        load_before = os.getloadavg()[0]  # other work on the machine slows the run
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, cli_peak
            while not done.is_set():
                peak = max(peak, tree_rss(proc.pid))
                cli_peak = max(cli_peak, high_water(proc.pid))
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
        result = json.loads((out / "results.json").read_text())
    return {
        "command": "fairsynth " + " ".join(argv),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "wall_seconds": round(wall, 2),
        "target_seconds": target_seconds,
        "meets_target": wall <= target_seconds,
        "peak_rss_process_tree_mib": round(peak / 2**20, 1),
        "peak_rss_cli_process_mib": round(cli_peak / 2**20, 1),
        "clients": result["clients_requested"],
        "accuracy": result["metrics"]["accuracy"],
        "spd": result["metrics"]["spd"],
        "bytes_up": result["traffic"]["bytes_up"],
        "bytes_down": result["traffic"]["bytes_down"],
        "server_flow_seconds": round(result["seconds"], 2),
        "client_seconds": [c["metrics"].get("seconds") for c in result["clients"]],
        "rejected": result["rejected"],
        "stdout_table": stdout.strip().splitlines()[-4:],
    }


def large_table(folder: Path, *, copies: int) -> tuple[Path, Path]:
    """A CSV of ``copies`` shuffled copies of Adult's rows (sensitive column sex, label income)
    and Adult's declared schema beside it: a wide-enough table of the size of the largest
    public fairness tables, from data every checkout has."""
    adult = datasets.load("adult")
    schema = adult.schema
    frame = adult.features.copy()
    frame[schema.sensitive] = np.where(adult.s == 1, schema.privileged, "Female")
    frame[schema.label] = np.where(adult.y == 1, schema.favourable, "<=50K")
    big = pd.concat([frame] * copies, ignore_index=True).sample(frac=1.0, random_state=0)
    csv, declared = folder / f"adult_x{copies}.csv", folder / f"adult_x{copies}_schema.json"
    big.to_csv(csv, index=False)
    declared.write_text(json.dumps({**dataclasses.asdict(schema), "name": csv.stem}))
    return csv, declared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_federation.json"))
    parser.add_argument("--skip-k50", action="store_true", help="no 50-client run")
    parser.add_argument("--k500", action="store_true",
                        help="also Adult split 500 ways (about 10 minutes)")
    parser.add_argument("--large", type=int, default=0, metavar="K",
                        help="also a CSV of K copies of Adult's rows (K = 6: 271,332 rows)")
    args = parser.parse_args(argv)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "simulate_default": measure(["simulate"], target_seconds=60),
    }
    if not args.skip_k50:
        report["simulate_k50"] = measure(["simulate", "--clients", "50"], target_seconds=600)
    if args.k500:
        report["simulate_adult_k500"] = measure(["simulate", "--dataset", "adult",
                                                 "--clients", "500"], target_seconds=900)
    if args.large:
        with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
            csv, schema = large_table(Path(tmp), copies=args.large)
            report[f"simulate_adult_x{args.large}"] = measure(
                ["simulate", "--csv", str(csv), "--schema", str(schema)], target_seconds=600)
    write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
