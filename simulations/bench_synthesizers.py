"""Benchmark: each client synthesizer other than the seed pipeline on one Adult client, one core.

One client of the project's 2-client iid split of Adult (sex; about 18,000 training rows), torch and
BLAS on one thread. Timed: ``safes`` — the whole release at ε = 1 (AIM's fit and sample, TOT's
fit and transform; target 3 minutes); ``fair4free`` and ``fadm`` — their training and sampling,
the ``fair-only`` release, run-config defaults (target 5 minutes each). ``--repeats`` runs
each; the minimum and every run are reported with the process's peak resident memory and the
load average before and after (the machine may be shared). Run as a script so that the thread
settings apply before numpy and torch load::

    FAIRSYNTH_DATA_DIR=../shared/data python -m simulations.bench_synthesizers \\
        [--synthesizers safes fair4free fadm] [--repeats 1] [--out results/bench_synthesizers.json]

Prints JSON and writes it to ``--out``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from clients.synthesizers import make_synthesizer  # noqa: E402
from common.datasets import load  # noqa: E402
from common.global_model import fit_global_model  # noqa: E402
from common.jsonio import write_json  # noqa: E402
from common.partition import federated_split  # noqa: E402
from common.run_config import RunConfig  # noqa: E402
from simulations.results import commit  # noqa: E402

#: What is timed, and its target in seconds.
TARGETS = {"safes": 180.0, "fair4free": 300.0, "fadm": 300.0}


def config_for(name: str) -> RunConfig:
    """The run configuration timed for ``name`` (defaults; fair-only for the fair steps)."""
    if name == "safes":
        return RunConfig(dataset="adult", synthesizer="safes", epsilon=1.0)
    return RunConfig(dataset="adult", synthesizer=name, order="fair-only")


def bench(names: list[str], repeats: int) -> dict:
    torch.set_num_threads(1)
    client = federated_split(load("adult", sensitive="sex"), clients=2, seed=0)[0]
    out = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "cpus": os.cpu_count(), "threads": torch.get_num_threads()},
           "train_rows": len(client.train), "commit": commit(), "results": {}}
    for name in names:
        runs = []
        load_before = os.getloadavg()[0]
        for r in range(repeats):
            synth = make_synthesizer(config_for(name))
            start = time.perf_counter()
            (release,) = synth.release(client.train, seed=r, fractions=[1.0])
            runs.append(time.perf_counter() - start)
        report = fit_global_model([release.rows]).evaluate(client.test)
        out["results"][name] = {
            "seconds_min": min(runs), "seconds_runs": runs, "target_seconds": TARGETS[name],
            "within_target": min(runs) <= TARGETS[name], "rows": len(release.rows),
            "epsilon": release.privacy.epsilon, "accuracy": float(report["accuracy"]),
            "spd": float(report["spd"]), "load_before": load_before,
            "load_after": os.getloadavg()[0]}
        print(name, json.dumps(out["results"][name]), flush=True)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthesizers", nargs="+", choices=sorted(TARGETS),
                        default=list(TARGETS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/bench_synthesizers.json"))
    args = parser.parse_args()
    result = bench(args.synthesizers, args.repeats)
    print(json.dumps(result, indent=2))
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
