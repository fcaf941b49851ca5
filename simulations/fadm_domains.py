"""FADM's own experiment: leave one of Adult's race domains out, with sex the sensitive
attribute (the paper's Table 1: ACC, R_DP and R_EOp per held-out domain and on average).

For each race category, FADM is trained (meta-learning across the other categories as its
domains) on every Adult row of the other categories, as many rows are sampled, and the
project's logistic model trained on them is tested on the held-out category's rows. The same
model trained on the real rows of the other categories is the reference. Run::

    FAIRSYNTH_DATA_DIR=../shared/data python -m simulations.fadm_domains \\
        [--iterations 2000] [--seeds 0] [--out results/fadm_domains.json]

Prints a table and writes JSON (every figure, the arguments and the commit).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from clients.fadm import FADM, FADMConfig  # noqa: E402
from common.datasets import load  # noqa: E402
from common.global_model import fit_global_model  # noqa: E402
from simulations.results import write_script_results  # noqa: E402

METRICS = ("accuracy", "dpr", "eor", "spd", "eod")


def run(iterations: int, seeds: list[int], lambda_z: float, steps: int) -> dict:
    torch.set_num_threads(1)
    data = load("adult", sensitive="sex")
    race = data.features["race"].astype(str).to_numpy()
    records = []
    for domain in sorted(set(race)):
        held = np.flatnonzero(race == domain)
        train = data.subset(np.flatnonzero(race != domain))
        test = data.subset(held)
        real = fit_global_model([train]).evaluate(test)
        for seed in seeds:
            start = time.perf_counter()
            model = FADM(FADMConfig(iterations=iterations, domain="race", lambda_z=lambda_z,
                                    steps=steps), seed=seed).fit(train)
            rows = model.sample(len(train), seed=seed + 1)
            seconds = time.perf_counter() - start
            synthetic = fit_global_model([rows]).evaluate(test)
            record = {"domain": domain, "seed": seed, "test_rows": len(held),
                      "seconds": seconds, **{f"fadm_{k}": float(synthetic[k]) for k in METRICS},
                      **{f"real_{k}": float(real[k]) for k in METRICS}}
            print(record, flush=True)
            records.append(record)
    domains = sorted({r["domain"] for r in records})
    mean = {d: {k: float(np.mean([r[k] for r in records if r["domain"] == d]))
                for k in records[0] if k not in ("domain", "seed")} for d in domains}
    mean["average"] = {k: float(np.mean([mean[d][k] for d in domains]))
                       for k in mean[domains[0]]}
    return {"records": records, "mean": mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lambda-z", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("results/fadm_domains.json"))
    args = parser.parse_args()
    result = run(args.iterations, args.seeds, args.lambda_z, args.steps)
    print("| held-out race | rows | FADM ACC % / R_DP / R_EOp | real rows ACC % / R_DP / R_EOp |")
    print("|---|---|---|---|")
    for domain, m in result["mean"].items():
        rows = "" if domain == "average" else f"{m['test_rows']:.0f}"
        print(f"| {domain} | {rows} | {100 * m['fadm_accuracy']:.2f} / {m['fadm_dpr']:.2f} / "
              f"{m['fadm_eor']:.2f} | {100 * m['real_accuracy']:.2f} / {m['real_dpr']:.2f} / "
              f"{m['real_eor']:.2f} |")
    write_script_results(args.out, result, args)


if __name__ == "__main__":
    main()
