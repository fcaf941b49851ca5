"""Fair4Free's own experiment on Adult: the paper's Table 2 measures for each sensitive
attribute (sex, race) and distance-correlation weight β.

On one 80/20 split per seed, Fair4Free (teacher VAE with the distance-correlation penalty, then
the student distilled from noise alone) is fitted on the training rows and as many rows are
sampled. Measured, as the paper does, with a downstream classifier trained on the rows and
tested on the real test rows — a random forest (the paper's; 100 trees, scikit-learn) and the
project's logistic model (λ cross-validated) — the demographic-parity ratio (DPR), the
equalised-odds ratio (EOR), accuracy, recall and F1; and the rows' fidelity to the real
training rows: density and coverage (:func:`common.quality.density_coverage`, k = 5, at most
5,000 rows of each). The same classifiers on the real training rows are the reference. Run::

    FAIRSYNTH_DATA_DIR=../shared/data python -m simulations.fair4free_adult \\
        [--sensitive sex race] [--beta 1] [--epochs 60] [--seeds 0] \\
        [--out results/fair4free_adult.json]

Prints a table and writes JSON (every figure, the arguments and the commit).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.metrics import f1_score, recall_score  # noqa: E402

from clients.fair4free import Fair4Free, Fair4FreeConfig  # noqa: E402
from common.datasets import load  # noqa: E402
from common.encoding import Encoder  # noqa: E402
from common.global_model import fit_global_model  # noqa: E402
from common.metrics import fairness_report  # noqa: E402
from common.partition import federated_split  # noqa: E402
from common.quality import density_coverage  # noqa: E402
from common.schema import TabularData  # noqa: E402
from simulations.results import mean_over_seeds, write_script_results  # noqa: E402

METRICS = ("dpr", "eor", "accuracy", "recall", "f1")


def _scores(test: TabularData, predicted: np.ndarray) -> dict:
    report = fairness_report(test.y, predicted.astype(np.int8), sensitive=test.s)
    return {"dpr": float(report["dpr"]), "eor": float(report["eor"]),
            "accuracy": float(report["accuracy"]),
            "recall": float(recall_score(test.y, predicted, zero_division=0)),
            "f1": float(f1_score(test.y, predicted, zero_division=0))}


def downstream(rows: TabularData, test: TabularData, seed: int) -> dict:
    """Both classifiers trained on ``rows``, scored on ``test`` (``rf_*`` and ``lr_*``)."""
    encoder = Encoder.fit(rows)
    forest = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    forest.fit(encoder.design(rows), rows.y)
    rf = _scores(test, forest.predict(encoder.design(test)))
    lr = _scores(test, fit_global_model([rows]).decision(test) > 0)
    return {**{f"rf_{k}": v for k, v in rf.items()}, **{f"lr_{k}": v for k, v in lr.items()}}


def run(sensitives: list[str], betas: list[float], epochs: int, seeds: list[int]) -> list[dict]:
    torch.set_num_threads(1)
    records = []
    for sensitive in sensitives:
        data = load("adult", sensitive=sensitive)
        for seed in seeds:
            (split,) = federated_split(data, clients=1, seed=seed, test_fraction=0.2)
            train, test = split.train, split.test
            records.append({"rows": "real rows", "sensitive": sensitive, "beta": None,
                            "seed": seed, "seconds": 0.0, **downstream(train, test, seed),
                            "density": None, "coverage": None})
            for beta in betas:
                start = time.perf_counter()
                config = Fair4FreeConfig(beta=beta, teacher_epochs=epochs, student_epochs=epochs)
                rows = Fair4Free(config, seed=seed).fit(train).sample(len(train), seed=seed + 1)
                seconds = time.perf_counter() - start
                record = {"rows": "Fair4Free", "sensitive": sensitive, "beta": beta,
                          "seed": seed, "seconds": seconds, **downstream(rows, test, seed),
                          **density_coverage(train, rows, seed=seed)}
                print(record, flush=True)
                records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensitive", nargs="+", default=["sex", "race"])
    parser.add_argument("--beta", type=float, nargs="+", default=[1.0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=Path("results/fair4free_adult.json"))
    args = parser.parse_args()
    records = run(args.sensitive, args.beta, args.epochs, args.seeds)
    scores = [f"{clf}_{k}" for clf in ("rf", "lr") for k in METRICS]
    summary = mean_over_seeds(records, ["rows", "sensitive", "beta"],
                              [*scores, "density", "coverage", "seconds"])
    print("| rows | s | β | classifier | DPR | EOR | ACC | recall | F1 | density | coverage |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        beta = "-" if s["beta"] is None else f"{s['beta']:g}"
        fidelity = ("- | -" if math.isnan(s["density"])
                    else f"{s['density']:.3f} | {s['coverage']:.3f}")
        for clf in ("rf", "lr"):
            print(f"| {s['rows']} | {s['sensitive']} | {beta} | {clf.upper()} | " + " | ".join(
                f"{s[f'{clf}_{k}']:.3f}" for k in METRICS) + f" | {fidelity} |")
    write_script_results(args.out, {"records": records, "summary": summary}, args)


if __name__ == "__main__":
    main()
