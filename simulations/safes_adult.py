"""SAFES' own experiment on Adult (sex the sensitive attribute): AIM alone, TOT alone on the
real rows, and SAFES (AIM, then TOT fitted on AIM's rows) at each ε, with η the parity bound.

The paper's measures, on one 80/20 split per seed: the mean KS (continuous columns) and TVD
(every column) of the rows against the real training rows; the rows' own parity difference
``|P(y=1 | s=1) − P(y=1 | s=0)|`` (what TOT bounds by η); and the downstream logistic model
(the server's, λ cross-validated on the rows) trained on the rows and tested on the real test
rows: accuracy and |SPD|. The real training rows are the reference. Run::

    FAIRSYNTH_DATA_DIR=../shared/data python -m simulations.safes_adult \\
        [--epsilon 0.5 1 2 4 (none: the references only)] [--eta 0.1] [--delta 1e-9] [--seeds 0] \\
        [--out results/safes_adult.json]

Prints a table and writes JSON (every figure, the arguments and the commit). AIM's noise is
drawn from fresh OS entropy, as a client's is.
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

from clients.aim.config import AIMConfig  # noqa: E402
from clients.aim.discretise import BINNINGS, Discretiser  # noqa: E402
from clients.synthesizers import make_synthesizer  # noqa: E402
from clients.synthesizers.safes import tot_config  # noqa: E402
from clients.tot import TOT  # noqa: E402
from common.datasets import load  # noqa: E402
from common.global_model import fit_global_model  # noqa: E402
from common.partition import federated_split  # noqa: E402
from common.quality import quality_report  # noqa: E402
from common.run_config import RunConfig  # noqa: E402
from common.schema import TabularData  # noqa: E402
from simulations.results import mean_over_seeds, write_script_results  # noqa: E402


def label_parity(rows: TabularData) -> float:
    """``|P(y=1 | s=1) − P(y=1 | s=0)|`` of the rows themselves."""
    return float(abs(rows.y[rows.s == 1].mean() - rows.y[rows.s == 0].mean()))


def measure(rows: TabularData, train: TabularData, test: TabularData) -> dict:
    """The paper's measures of ``rows`` (see the module docstring)."""
    quality = quality_report(train, rows, test)
    model = fit_global_model([rows]).evaluate(test)
    return {"ks": quality["ks_mean"], "tvd": quality["tvd_mean"],
            "data_spd": label_parity(rows), "accuracy": float(model["accuracy"]),
            "spd": float(model["spd"]), "rows": len(rows)}


def run(epsilons: list[float], eta: float, delta: float, seeds: list[int],
        dataset: str = "adult", sensitive: str = "sex") -> list[dict]:
    torch.set_num_threads(1)
    data = load(dataset, sensitive=sensitive or None)
    records = []
    for seed in seeds:
        (split,) = federated_split(data, clients=1, seed=seed, test_fraction=0.2)
        train, test = split.train, split.test
        records.append({"release": "real rows", "epsilon": None, "seed": seed, "seconds": 0.0,
                        **measure(train, train, test)})
        config = RunConfig(dataset=dataset, synthesizer="safes", safes_eta=eta, delta=delta,
                           seed=seed)
        for binning in BINNINGS:
            bins = Discretiser(train.schema, AIMConfig().bins, binning)
            binned = bins.decode(bins.encode(train), np.random.default_rng(seed))
            records.append({"release": f"real rows, AIM's bins ({binning})", "epsilon": None,
                            "seed": seed, "seconds": 0.0, **measure(binned, train, test)})
        start = time.perf_counter()
        tot = TOT(tot_config(config)).fit(train)
        alone = tot.transform(train, np.random.default_rng(seed))
        records.append({"release": "TOT alone (no DP)", "epsilon": None, "seed": seed,
                        "seconds": time.perf_counter() - start, "eta_met": tot.report["eta_met"],
                        **measure(alone, train, test)})
        for eps in epsilons:
            start = time.perf_counter()
            (release,) = make_synthesizer(config.replace(epsilon=eps)).release(
                train, seed=seed, fractions=[1.0])
            seconds = time.perf_counter() - start
            spent = release.privacy.epsilon
            for name, rows in (("AIM alone", release.intermediate["stage2"]),
                               ("SAFES", release.rows)):
                record = {"release": name, "epsilon": eps, "epsilon_spent": spent,
                          "seed": seed, "seconds": seconds, **measure(rows, train, test)}
                if name == "SAFES":
                    record["eta_met"] = release.privacy.details["tot"]["eta_met"]
                print(record, flush=True)
                records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, nargs="*", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--eta", type=float, default=0.1)
    parser.add_argument("--delta", type=float, default=1e-9)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dataset", default="adult", help="another named dataset (default: adult)")
    parser.add_argument("--sensitive", default="sex", help="its sensitive column (adult: sex)")
    parser.add_argument("--out", type=Path, default=Path("results/safes_adult.json"))
    args = parser.parse_args()
    records = run(args.epsilon, args.eta, args.delta, args.seeds, args.dataset, args.sensitive)
    summary = mean_over_seeds(records, ["release", "epsilon"],
                              ["ks", "tvd", "data_spd", "accuracy", "spd", "seconds"])
    print("| rows | ε | KS | TVD | rows' \\|SPD\\| | LR acc % | LR \\|SPD\\| | s |")
    print("|---|---|---|---|---|---|---|---|")
    for s in summary:
        eps = "-" if s["epsilon"] is None else f"{s['epsilon']:g}"
        print(f"| {s['release']} | {eps} | {s['ks']:.3f} | {s['tvd']:.3f} | "
              f"{s['data_spd']:.3f} | {100 * s['accuracy']:.2f} | {s['spd']:.3f} | "
              f"{s['seconds']:.0f} |")
    write_script_results(args.out, {"records": records, "summary": summary}, args)


if __name__ == "__main__":
    main()
