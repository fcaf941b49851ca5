"""``fairsynth frontier``: the pipeline's fairness trade-off beside central fair references.

On the federation's split (``--clients``, the seeds), for every fairness target τ of the grid
(``--target``, by default 0.1, 0.05 and 0.02) and every ρ (``--rho``, none by default): the
server's
model on the union of the clients' stage-1 rows (``syn_1``) and on each release order's rows at
ε (``fair-then-private``, ``private-then-fair``), all evaluated on the pooled test rows; beside
them the central references of :mod:`simulations.central` on the pooled real training rows
(the constant classifier, the unconstrained model, fairlearn's ExponentiatedGradient at
several bounds and ThresholdOptimizer for accuracy and balanced accuracy, each with λ
cross-validated on those rows). Writes ``DIR/frontier.json`` (every
record and the means over seeds), ``DIR/tables.md`` and ``DIR/frontier_<measure>.png``, and
prints one verdict per point: how far it is from the central frontier at its own gap. Beside
each mean |gap|, its noise floor (:func:`noise_floor`): the mean |gap| that a model with no
gap at all would show on the same test rows, below which these rows do not tell a gap apart.

The DP noise is fresh on every run, so two runs of a release differ by up to a few hundredths
of the gap; ``--noise-seed`` fixes every client's noise, so that two commits or settings are
compared on the same draws (a paired comparison). Private-then-fair's generator reads the real
rows, not τ, so each client fits it once per seed and every τ runs stage 1 on the same DP rows
(from `2c760e1`; before, once per τ: three times the fits, and with fresh noise a new
draw for each τ).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

from clients.pipeline import pipeline_config, reuse_generators, run_pipeline_fractions
from clients.policy import client_noise_seed
from clients.synthesizers import make_synthesizer
from common.global_model import fit_global_model
from common.jsonio import write_json
from common.schema import concat
from simulations import central, options
from simulations.figures import plot_frontier
from simulations.results import Table, mean_over_seeds, write_tables

logger = logging.getLogger(__name__)

GRID = {"seed": [0, 1, 2], "measure": ["sp"], "target": [0.1, 0.05, 0.02], "rho": [],
        "epsilon": [1.0]}
RELEASES = ("fair-then-private", "private-then-fair", "safes", "fair4free", "fadm")
#: The releases run by default (the others, which have no stage 1 to sweep, on request).
DEFAULT_RELEASES = RELEASES[:2]
#: Releases without a stage-1 knob, run once per seed, measure and ε: SAFES, and Fair4Free or
#: FADM in stage 1's place in fair-then-private (their fair rows are shown too, as "NAME rows").
ONCE = ("safes", "fair4free", "fadm")
METRICS = ["accuracy", "balanced_accuracy", "positive_rate", "spd", "eod", "spd_se", "eod_se"]


def register(sub) -> None:
    parser = sub.add_parser("frontier", help="the pipeline's trade-off beside central fair "
                                             "references (fairlearn) on the same split")
    options.add_clients(parser)
    options.add_settings(parser, ("data", "stage 1", "stage 2", "safes", "fair4free", "fadm"),
                         grid=GRID,
                         include=("lam_server",), skip=("synthesizer", "order",
                                                        "stage2_fraction"))
    parser.add_argument("--releases", nargs="*", choices=RELEASES,
                        default=list(DEFAULT_RELEASES),
                        help="releases to run at each ε: the two orders (the default); safes, "
                             "and fair4free or fadm (fair-then-private with Fair4Free or FADM "
                             "in stage 1's place), once per seed and ε; none: stage 1 only, "
                             "syn_1 is always shown")
    parser.add_argument("--noise-seed", type=int, default=None, metavar="N",
                        help="seed every client's DP noise (one seed per client and split seed, "
                             "derived from N), so that two commits or settings are compared on "
                             "the same noise draws; voids the releases' guarantee against "
                             "anyone who knows it (default: fresh OS entropy, a new draw on "
                             "every run)")
    options.add_out(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    base, points = options.sweep_points(args, list(GRID))
    options.check_measures(base, points, args.clients)
    for point in points:
        for order in args.releases:
            if order in ONCE:
                make_synthesizer(base.replace(**point, synthesizer=order))  # its options
            else:
                pipeline_config(base.replace(**point, order=order)).stage2.check_options()
    records, references = sweep(base, points, args.clients, args.releases,
                                noise_seed=args.noise_seed)
    summary = noise_floor(mean_over_seeds(records, ["measure", "curve", "target", "rho",
                                                    "epsilon"], METRICS + ["local_gap"]))
    central_summary = noise_floor(mean_over_seeds(references, ["measure", "method", "setting"],
                                                  METRICS))
    verdicts = []
    for s in summary:
        gap = "spd" if s["measure"] == "sp" else "eod"
        refs = [r for r in central_summary if r["measure"] == s["measure"]]
        s["label"] = _label(s)
        s.update(central.frontier_gap(s, refs, gap=gap))
        verdicts.append(central.verdict(s, s, gap=gap, utility=base.utility))
    write_json(args.out / "frontier.json", {
        "records": records, "central": references, "summary": summary,
        "central_summary": central_summary, "verdicts": verdicts,
        "args": options.args_record(args)})
    for measure in sorted({s["measure"] for s in summary}):
        gap = "spd" if measure == "sp" else "eod"
        plot_frontier([s for s in summary if s["measure"] == measure],
                      [r for r in central_summary if r["measure"] == measure], gap=gap,
                      path=args.out / f"frontier_{measure}.png",
                      title=f"{measure.upper()}: the pipeline against central references "
                            "(mean over seeds)")
    write_tables(args.out / "tables.md", tables(summary, central_summary), argv=args.argv)
    print("\n".join(verdicts))
    print(f"wrote {args.out / 'frontier.json'}, {args.out / 'tables.md'} and the figures")
    return 0


def noise_floor(summary: list[dict]) -> list[dict]:
    """Adds to each mean over seeds ``spd_floor`` and ``eod_floor``: the mean |gap| that a
    model with no gap at all would show on the same test rows, ``√(2/π)`` times the seeds'
    mean standard error (``*_se`` of :func:`common.metrics.report_from_counts`, averaged by
    :func:`mean_over_seeds`; ``E|N(0, σ²)| = σ√(2/π)``). It counts the test rows' sampling
    alone, not the training's."""
    for s in summary:
        for gap in ("spd", "eod"):
            s[f"{gap}_floor"] = math.sqrt(2.0 / math.pi) * s[f"{gap}_se"]
    return summary


def _label(s: dict) -> str:
    if s["curve"] == "real":
        return "real rows"
    eps = "" if s["epsilon"] is None else f"ε = {s['epsilon']:g}"
    if s["curve"].split()[0] in ONCE:  # no stage-1 knob
        return f"{s['curve']} ({eps})" if eps else s["curve"]
    return f"{s['curve']} ({options.point_label(s)}{', ' + eps if eps else ''})"


def sweep(base, points: list[dict], clients: int, releases, *, noise_seed: int | None = None
          ) -> tuple[list[dict], list[dict]]:
    """The pipeline's records and the central references, per seed; ``noise_seed`` seeds each
    client's DP noise (:func:`client_noise_seed`; None: fresh OS entropy). A generator that
    does not depend on τ (private-then-fair's, on the real rows) is fitted once per client and
    seed and shared by every τ (:func:`clients.pipeline.reuse_generators`)."""
    with reuse_generators():
        return _sweep(base, points, clients, releases, noise_seed)


def _sweep(base, points: list[dict], clients: int, releases, noise_seed: int | None
           ) -> tuple[list[dict], list[dict]]:
    records, references, done, done_once = [], [], set(), set()
    splits = seed = test = None
    for point in points:
        if point["seed"] != seed:
            seed = point["seed"]
            splits = options.client_splits(base.replace(seed=seed), clients)
            test = concat([s.test for s in splits])
        config = base.replace(**point)
        trains = [s.train for s in splits]
        key = (seed, config.measure)
        if key not in done:  # per seed and measure: the real rows and the references
            done.add(key)
            records.append(_record(config, "real", None, trains, test))
            start = time.perf_counter()
            for ref in central.central_references(trains, test, measure=config.measure,
                                                  seed=seed):
                references.append({**ref, "seed": seed, "measure": config.measure})
            logger.info("central references (seed %d): %.1f s", seed,
                        time.perf_counter() - start)
        if (seed, config.measure, config.epsilon) not in done_once:
            done_once.add((seed, config.measure, config.epsilon))
            for name in [r for r in releases if r in ONCE]:
                records += _once(config, name, splits, test, noise_seed)
        if not config.target and config.rho == 0:
            continue  # the real rows, recorded above
        # syn_1 comes with fair-then-private's stage 1, else from a stage-1-only run.
        orders = [*releases] + ([] if "fair-then-private" in releases else ["fair-only"])
        for order in [o for o in orders if o not in ONCE]:
            results = []
            for k, s in enumerate(splits):
                client = config.replace(order=order, seed=seed + 1000 * k)
                pipeline = pipeline_config(client)
                pipeline = dataclasses.replace(pipeline, stage2=dataclasses.replace(
                    pipeline.stage2, noise_seed=client_noise_seed(noise_seed, client.seed)))
                results.append(run_pipeline_fractions(s.train, pipeline, [1.0],
                                                      seed=client.seed)[0])
            local_gap = max(abs(r.stage1_gap) for r in results)
            if order in ("fair-then-private", "fair-only"):
                stage1 = [r.intermediate.get("stage1", r.rows) for r in results]
                records.append(_record(config, "syn_1", None, stage1, test, local_gap))
            if order in RELEASES:
                records.append(_record(config, order, config.epsilon,
                                       [r.rows for r in results], test, local_gap))
    return records, references


def _once(config, name: str, splits, test, noise_seed: int | None = None) -> list[dict]:
    """A release without a stage-1 knob on every client (``fair4free`` and ``fadm``: in
    fair-then-private, with their fair rows before the DP generator as ``NAME rows``)."""
    config = config.replace(target=0.0, rho=0.0, synthesizer=name, order="fair-then-private")
    results = []
    for k, s in enumerate(splits):
        client = config.replace(seed=config.seed + 1000 * k)
        synthesizer = make_synthesizer(client, noise_seed=client_noise_seed(noise_seed,
                                                                            client.seed))
        results.append(synthesizer.release(s.train, seed=client.seed, fractions=[1.0])[0])
    out = [_record(config, name, config.epsilon, [r.rows for r in results], test)]
    if name != "safes":
        out.append(_record(config, f"{name} rows", None,
                           [r.intermediate["stage1"] for r in results], test))
    return out


def _record(config, curve: str, epsilon, parts, test, local_gap=None) -> dict:
    report = fit_global_model(parts, lam=config.lam_server).evaluate(test)
    real = curve == "real"
    record = {"seed": config.seed, "measure": config.measure, "curve": curve,
              "target": 0.0 if real else float(config.target),
              "rho": 0.0 if real or config.target else float(config.rho), "epsilon": epsilon,
              "local_gap": local_gap, **{k: float(report[k]) for k in METRICS}}
    logger.info("%s", record)
    return record


def tables(summary: list[dict], references: list[dict]) -> list[Table]:
    out = []
    for measure in sorted({s["measure"] for s in summary}):
        gap = "spd" if measure == "sp" else "eod"
        refs = sorted((r for r in references if r["measure"] == measure),
                      key=lambda r: (r["method"], r[gap]))
        out.append(Table(f"central references, {measure.upper()} (pooled real training rows; "
                         "mean over seeds; floor: the mean |gap| of a model with no gap on these "
                         "test rows)", ["method", "setting", "acc %", "bal",
                                        f"|{gap.upper()}|", "floor"],
                         [[r["method"], r["setting"] or "-", f"{100 * r['accuracy']:.2f}",
                           f"{r['balanced_accuracy']:.3f}", f"{r[gap]:.4f}",
                           f"{r[gap + '_floor']:.4f}"] for r in refs]))
        rows = []
        for s in sorted((s for s in summary if s["measure"] == measure),
                        key=lambda s: (s["curve"] != "real", s["curve"], -s["target"],
                                       s["rho"])):
            short = s["accuracy_shortfall"]
            rows.append([s["label"], f"{100 * s['accuracy']:.2f}",
                         f"{s['balanced_accuracy']:.3f}", f"{s[gap]:.4f}",
                         f"{s[gap + '_floor']:.4f}",
                         "-" if short is None else f"{short:+.2f}",
                         "-" if short is None else f"{s['balanced_shortfall']:+.2f}"])
        out.append(Table(f"the pipeline, {measure.upper()} (shortfall: points below the best "
                         "central reference that is at least as fair; '-': fairer than all)",
                         ["point", "acc %", "bal", f"|{gap.upper()}|", "floor",
                          "acc shortfall", "bal shortfall"], rows))
    return out

