"""What a client runs before it releases rows: stage 1, stage 2, in a named order.

Orders (a registry keyed by the run-config string, like Opacus' accountants):

* ``fair-then-private`` — the paper: stage 1 on the real rows, then the DP generator on the
  stage-1 rows. The (ε, δ) covers stage 2's input (the stage-1 rows) only. The generator
  re-learns the group gap that stage 1 removed, so ``Stage2Config.repair`` mends its rows:
  ``"relabel"`` draws their labels from a DP logistic model of the stage-1 rows
  (:mod:`clients.label_model`; its budget is a share of the same (ε, δ)); ``"stage1"`` runs
  stage 1 once more on the DP rows, which it reads alone (post-processing: same (ε, δ)).
* ``private-then-fair`` — the DP generator on the real rows, then stage 1 with the DP rows in
  place of the real rows. End-to-end (ε, δ)-DP for the real rows (post-processing).
* ``fair-only`` — stage 1 only; no formal privacy.
* ``private-only`` — the DP generator on the real rows; (ε, δ) covers the real rows.
* ``real`` — the real training rows themselves (the baseline; nothing is protected).

Every order's (ε, δ) is the composition of *everything* the DP generator read (its DP
statistics and DP-SGD; :mod:`common.privacy`), and its :class:`PrivacyReport` says which rows
that guarantee is about. :func:`run_pipeline_fractions` runs an order at several release
fractions from one fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar

import numpy as np

from clients import label_model
from clients.dp_generators import GENERATORS, make_generator
from clients.stage1 import FairDistiller, Stage1Config, Stage1Result
from common.errors import ConfigError
from common.global_model import fit_global_model
from common.privacy import NoiseSource
from common.run_config import RunConfig
from common.schema import TabularData

logger = logging.getLogger(__name__)

COVERS_REAL = "the real training rows"
COVERS_REAL_POST = "the real training rows, end to end: stage 1 only post-processes the DP rows"
COVERS_STAGE1 = "the stage-1 rows only (stage 2's input), not the real rows they were computed from"
COVERS_NOTHING = "nothing: the released rows carry no formal privacy guarantee"
#: Below this many rows (the DP generator's own estimate) private-then-fair warns that AIM,
#: ``--generator auto``'s choice for it, made less fair rows than DP-CTGAN on four of the six
#: tables of at most 2,400 rows a client measured, and more fair ones at 8,000 and above.
SMALL_TABLE = 5_000


@dataclasses.dataclass(frozen=True)
class PrivacyReport:
    """What the (ε, δ) of a pipeline run covers, and how it was spent."""

    order: str
    epsilon: float | None
    delta: float | None
    covers: str
    details: dict = dataclasses.field(default_factory=dict)

    #: What :meth:`summary` keeps of ``details``: the DP-SGD figures a reader checks first.
    SUMMARY_DETAILS = ("generator", "accountant", "noise_multiplier", "sample_rate", "steps")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> dict:
        """The report without the per-mechanism budget split (what a client sends the server;
        the whole report stays in the client's log)."""
        kept = {k: self.details[k] for k in self.SUMMARY_DETAILS if k in self.details}
        return {"order": self.order, "epsilon": self.epsilon, "delta": self.delta,
                "covers": self.covers, **kept}


#: How fair-then-private mends the DP generator's rows before release.
REPAIRS = ("off", "relabel", "stage1")


@dataclasses.dataclass(frozen=True)
class Stage2Config:
    """Stage-2 settings shared by every DP generator.

    ``delta`` must lie below ``1/N`` for the generator's input size ``N`` on every client; it
    is never derived from ``N`` (a δ of ``1/(N√N)`` sent with a release gives ``N`` back).
    ``fraction`` is ``Ñ₂ / N`` (paper: 1.0 and 0.1). ``generator`` names a registered DP
    generator; ``options`` holds that generator's own hyperparameters. ``noise_seed`` and
    ``secure_mode`` come from the client's privacy policy (:mod:`clients.policy`), never from
    the run config: the DP noise is fresh OS entropy unless the client seeds it. ``repair``
    (fair-then-private only; :data:`REPAIRS`): how the DP rows are mended before release, and
    ``label_share`` the share of the budget the ``"relabel"`` repair's label model spends.
    ``auto_generator``: ``generator`` was chosen by ``--generator auto`` (an error about its
    options then says so).
    """

    epsilon: float = 1.0
    delta: float = 1e-6
    fraction: float = 1.0
    generator: str = "dp-ctgan"
    options: dict = dataclasses.field(default_factory=dict)
    noise_seed: int | None = None
    secure_mode: bool = False
    repair: str = "off"
    label_share: float = label_model.SHARE
    auto_generator: bool = dataclasses.field(default=False, compare=False)  # provenance only

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"stage 2: epsilon must be a finite number > 0, got {self.epsilon}.")
        if not 0 < self.delta < 1:
            raise ConfigError(f"stage 2: delta must lie in (0, 1), got {self.delta}.")
        if not 0 < self.fraction <= 1:
            raise ConfigError(
                f"stage 2: fraction (Ñ₂/N) must lie in (0, 1], got {self.fraction}."
            )
        if self.repair not in REPAIRS:
            raise ConfigError(f"stage 2: unknown repair {self.repair!r}; choose one of "
                              f"{list(REPAIRS)}.")
        label_model.label_mechanisms(epsilon=self.epsilon, delta=self.delta,
                                     share=self.label_share)  # validates label_share
        if self.generator not in GENERATORS:
            raise ConfigError(f"stage 2: unknown DP generator {self.generator!r}; valid names are "
                              f"{sorted(GENERATORS)}.")
        reserved = sorted(set(self.options) & {"epsilon", "delta", "seed", "noise_seed"})
        if reserved:
            raise ConfigError(
                f"stage 2: the generator options may not set {reserved}: the budget and the seed "
                "are set by --epsilon/--delta/--seed (run config: epsilon, delta, seed), and the "
                "DP noise's seed only by the client (node config dp-noise-seed)."
            )

    def check_options(self) -> None:
        """Build (not fit) the configured generator, so a bad option fails before any work."""
        try:
            make_generator(self.generator, epsilon=self.epsilon, delta=self.delta,
                           **self.options)
        except ConfigError as exc:
            if not self.auto_generator:
                raise
            raise ConfigError(f"{exc} (--generator auto chose {self.generator}; name with "
                              "--generator the generator these options are for)") from None

    def check_delta_for(self, n: int) -> float:
        """δ for an input of ``n`` rows; raises if it is not below ``1/n``."""
        if self.delta >= 1.0 / n:
            raise ConfigError(
                f"stage 2: delta = {self.delta:g} is not below 1/N = {1.0 / n:g} for N = {n} rows: "
                "such a δ allows releasing a real row outright. Use a smaller --delta."
            )
        return self.delta


@dataclasses.dataclass(frozen=True)
class FairRows:
    """What a fair step other than stage 1 returns: its rows, seconds, and the gap (SPD or EOD)
    that a logistic model fitted on those rows has on the rows it read."""

    data: TabularData
    seconds: float
    gap: float


def fair_model_rows(model, data: TabularData, n_out: int, measure: str, seed: int
                    ) -> FairRows:
    """A fair generative ``model`` (``fit(data)``, ``sample(n, seed=)``) as a fair step: fitted
    on ``data``, ``n_out`` rows sampled; the gap is that of the server's logistic model (λ
    cross-validated) fitted on them, measured on ``data``."""
    start = time.perf_counter()
    rows = model.fit(data).sample(n_out, seed=seed + 1)
    seconds = time.perf_counter() - start
    report = fit_global_model([rows]).evaluate(data)
    return FairRows(rows, seconds, float(report["spd_signed" if measure == "sp"
                                                else "eod_signed"]))


#: Fair steps that can stand in for stage 1: ``(rows, n_out, measure, seed, options) ->
#: FairRows`` (``clients/synthesizers/`` registers them with their synthesizer).
FAIR_STEPS: dict[str, Callable[..., FairRows]] = {}


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """An order, stage 1 and stage 2; ``fair`` names the fair step (``"bilevel"``: stage 1,
    else one of :data:`FAIR_STEPS`, with ``fair_options``), which plays stage 1's role in every
    order."""

    order: str = "fair-then-private"
    stage1: Stage1Config = dataclasses.field(default_factory=Stage1Config)
    stage2: Stage2Config = dataclasses.field(default_factory=Stage2Config)
    fair: str = "bilevel"
    fair_options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ConfigError(f"unknown order {self.order!r}; choose one of {sorted(ORDERS)}.")

    def check_delta(self, n_train: int) -> None:
        """Raise if δ is not below ``1/N`` of the generator's input on a client with
        ``n_train`` training rows (the stage-1 rows in fair-then-private), before any work."""
        if self.order in ("real", "fair-only"):
            return
        n = n_train
        if self.order == "fair-then-private":
            n = self.stage1.synthetic_rows(n_train)
        self.stage2.check_delta_for(n)


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """The rows a client may release, what protects them, the seconds per stage, and the
    intermediate rows of the order (``"stage1"``: the stage-1 rows of fair-then-private;
    ``"stage2"``: the DP rows of private-then-fair and of a repaired fair-then-private, with the
    generator's own labels) for experiments, and the gap (SPD or EOD)
    that stage 1 reached on the rows it read (the real rows; the DP rows in private-then-fair);
    never released."""

    rows: TabularData
    privacy: PrivacyReport
    seconds: dict[str, float]
    intermediate: dict[str, TabularData] = dataclasses.field(default_factory=dict)
    stage1_gap: float | None = None


def pipeline_config(config: RunConfig) -> PipelineConfig:
    """The pipeline that a federation's run configuration describes (raises ConfigError if
    invalid): what every client runs, and what the server checks before it asks them."""
    stage1 = Stage1Config(
        measure=config.measure, relaxation=config.relaxation, rho=config.rho,
        tolerance=config.tolerance or None, target=config.target or None,
        lam_in=config.lam_in, lam_out=config.lam_out, lr=config.lr,
        iterations=config.iterations, fraction=config.stage1_fraction, solver=config.solver,
        anchor=config.anchor, keep_moments=config.keep_moments, utility=config.utility,
        seed=config.seed,
    )
    stage2 = Stage2Config(
        epsilon=config.epsilon, delta=config.delta, fraction=config.stage2_fraction,
        generator=config.dp_generator, options=config.generator_kwargs,
        repair=config.repair_mode, label_share=config.label_share,
        auto_generator=config.generator == "auto",
    )
    return PipelineConfig(order=config.order, stage1=stage1, stage2=stage2)


Order = Callable[[TabularData, PipelineConfig, int], PipelineResult]
#: Same, for several release fractions at once: ``(train, config, seed, fractions) -> results``.
MultiOrder = Callable[[TabularData, PipelineConfig, int, Sequence[float]], list[PipelineResult]]
ORDERS: dict[str, Order] = {}
_MULTI: dict[str, MultiOrder] = {}


def register_order(name: str) -> Callable[[MultiOrder], MultiOrder]:
    """Register an order given as a function of several release fractions; ``ORDERS[name]``
    runs it at ``config.stage2.fraction``."""
    def wrap(fn: MultiOrder) -> MultiOrder:
        _MULTI[name] = fn

        def single(train: TabularData, config: PipelineConfig, seed: int) -> PipelineResult:
            return fn(train, config, seed, [config.stage2.fraction])[0]

        single.__doc__ = fn.__doc__
        ORDERS[name] = single
        return fn
    return wrap


def run_pipeline(train: TabularData, config: PipelineConfig, *, seed: int = 0) -> PipelineResult:
    """Run ``config.order`` on a client's training rows; returns the rows it may release."""
    return ORDERS[config.order](train, config, seed)


def run_pipeline_fractions(train: TabularData, config: PipelineConfig,
                           fractions: Sequence[float], *, seed: int = 0) -> list[PipelineResult]:
    """:func:`run_pipeline` at several release fractions ``Ñ₂/N`` (``config.stage2.fraction`` is
    ignored), sharing what does not depend on the fraction: stage 1 and the DP generator's fit
    are run once, and every fraction gets its own sample. Same privacy as one run: the rows of
    each fraction are post-processing of one fit."""
    for f in fractions:
        dataclasses.replace(config.stage2, fraction=f)  # validates f
    return _MULTI[config.order](train, config, seed, list(fractions))


def _stage1(data: TabularData, config: PipelineConfig, seed: int, **changes
            ) -> Stage1Result | FairRows:
    stage1 = dataclasses.replace(config.stage1, seed=seed, **changes)
    if config.fair == "bilevel":
        return FairDistiller(stage1).fit(data)
    return FAIR_STEPS[config.fair](data, stage1.synthetic_rows(len(data)), stage1.measure, seed,
                                   config.fair_options)


def _n_out(fraction: float, n: float) -> int:
    return max(1, round(fraction * n))


#: Fitted generators that :func:`reuse_generators` lets a sweep share (None: no sharing).
_SHARED: ContextVar[dict | None] = ContextVar("shared_generators", default=None)


@contextlib.contextmanager
def reuse_generators() -> Iterator[None]:
    """Within the block, a DP generator fitted to the same rows (the same object), with the same
    stage-2 settings, seed and reserved mechanisms, is fitted once and reused. A sweep over τ
    then fits each client's private-then-fair (and private-only) generator once per seed, and
    its points differ by τ alone, on the same DP rows. Only sweeps use it; a client's every
    release gets a fit of its own."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _fit_generator(data: TabularData, config: PipelineConfig, seed: int, reserve=()):
    """Fit the configured DP generator on ``data`` with ``reserve`` (mechanisms another step
    runs on ``data``) in its accounting; returns it and the fit's seconds (a fit shared by
    :func:`reuse_generators` reports the seconds it took once)."""
    shared = _SHARED.get()
    key = (id(data), repr(config.stage2), seed, repr(tuple(reserve)))
    if shared is not None and key in shared and shared[key][0] is data:
        return shared[key][1], shared[key][2]
    start = time.perf_counter()
    cfg = config.stage2
    options = dict(cfg.options)
    if cfg.noise_seed is not None:
        options["noise_seed"] = cfg.noise_seed
    if cfg.secure_mode:
        options["secure_mode"] = True
    generator = make_generator(cfg.generator, epsilon=cfg.epsilon,
                               delta=cfg.check_delta_for(len(data)), seed=seed, **options)
    generator.fit(data, reserve=reserve)
    seconds = time.perf_counter() - start
    if shared is not None:  # holding ``data`` keeps its id from being reused while shared
        shared[key] = (data, generator, seconds)
    return generator, seconds


def _first_use(generator) -> bool:
    """False when :func:`reuse_generators` already handed this fitted generator out (a sweep
    says what it has to say of a fit once, not once per τ)."""
    shared = _SHARED.get()
    if shared is None:
        return True
    mark = ("used", id(generator))
    first = mark not in shared
    shared[mark] = generator  # held, so that its id is not reused while shared
    return first


def _sample(generator, n: int, seed: int) -> tuple[TabularData, float]:
    start = time.perf_counter()
    rows = generator.sample(n, seed=seed)
    return rows, time.perf_counter() - start


def _stage1_on_dp_rows(generator, n: float, config: PipelineConfig, seed: int,
                       fractions: Sequence[float]):
    """Draw ``n`` DP rows once and run stage 1 on them alone at each fraction: post-processing,
    so the generator's (ε, δ) covers the result. Returns the rows, the sampling's seconds and
    one stage-1 result per fraction (shared by private-then-fair and the repair)."""
    private, t = _sample(generator, _n_out(1.0, n), seed + 1)
    return private, t, [_stage1(private, config, seed, fraction=f) for f in fractions]


def _dp_report(order: str, generator, covers: str, **details) -> PrivacyReport:
    spent = generator.privacy_spent()
    return PrivacyReport(order, spent["epsilon"], spent["delta"], covers, {**spent, **details})


@register_order("real")
def _real(train: TabularData, config: PipelineConfig, seed: int,
          fractions: Sequence[float]) -> list[PipelineResult]:
    """The real training rows (every fraction: all of them)."""
    result = PipelineResult(train, PrivacyReport("real", None, None, COVERS_NOTHING), {})
    return [result for _ in fractions]


@register_order("fair-only")
def _fair_only(train: TabularData, config: PipelineConfig, seed: int,
               fractions: Sequence[float]) -> list[PipelineResult]:
    """Stage 1 only, at its own fraction ``config.stage1.fraction``."""
    fair = _stage1(train, config, seed)
    result = PipelineResult(fair.data, PrivacyReport("fair-only", None, None, COVERS_NOTHING),
                            {"stage1": fair.seconds}, stage1_gap=fair.gap)
    return [result for _ in fractions]


@register_order("private-only")
def _private_only(train: TabularData, config: PipelineConfig, seed: int,
                  fractions: Sequence[float]) -> list[PipelineResult]:
    """The DP generator on the real rows; ``fraction · N̂`` rows per fraction (``N̂``: the
    generator's DP estimate of the row count, so the release size does not disclose ``N``)."""
    generator, fit = _fit_generator(train, config, seed)
    report = _dp_report("private-only", generator, COVERS_REAL)
    out = []
    for i, f in enumerate(fractions):
        rows, t = _sample(generator, _n_out(f, generator.noisy_rows()), seed + 1 + i)
        out.append(PipelineResult(rows, report, {"stage2": fit + t}))
    return out


@register_order("fair-then-private")
def _fair_then_private(train: TabularData, config: PipelineConfig, seed: int,
                       fractions: Sequence[float]) -> list[PipelineResult]:
    """Stage 1 on the real rows, the DP generator on the stage-1 rows; ``fraction · N̂`` rows
    (``N̂``: the generator's DP estimate of its input size, scaled back by ``Ñ/N``), mended by
    ``config.stage2.repair``: ``"relabel"`` draws their labels from a DP label model of the
    stage-1 rows, whose mechanism the generator's accounting reserves (one (ε, δ) for both);
    ``"stage1"`` puts ``N̂`` DP rows through stage 1 once more at fraction ``Ñ₂/N``, as in
    private-then-fair: it reads only the DP rows, so the (ε, δ) is unchanged. When the label
    model's check finds it no better than a constant, ``"stage1"`` mends the rows instead
    (``"off"`` with the balanced utility, whose label-balanced rows it refuses)."""
    fair = _stage1(train, config, seed)
    cfg = config.stage2
    reserve = ()
    if cfg.repair == "relabel":
        reserve = label_model.label_mechanisms(epsilon=cfg.epsilon, delta=cfg.delta,
                                               share=cfg.label_share)
    generator, fit = _fit_generator(fair.data, config, seed, reserve)
    n_hat = generator.noisy_rows() / config.stage1.fraction  # the stage-1 rows are Ñ = fraction·N
    labels, details, repair = None, {"repair": cfg.repair}, cfg.repair
    if cfg.repair == "relabel":
        start = time.perf_counter()
        reference, _ = _sample(generator, _n_out(1.0, generator.noisy_rows()),
                               seed + 1 + len(fractions))
        noise = NoiseSource(cfg.noise_seed, secure=cfg.secure_mode, purpose="label model")
        labels = label_model.DPLabelModel.fit(fair.data, reference, reserve[0], noise)
        margin = labels.check(fair.data, labels.constant(reference), reserve[1], noise)
        details["label_model_margin"] = margin
        if margin <= 0:
            labels = None
            # the stage-1 repair reads only DP rows; it is refused with label-balanced rows
            repair = "off" if config.stage1.utility == "balanced" else "stage1"
            details["repair"] = f"relabel, then {repair}"
            logger.warning(
                "fair-then-private: the DP label model, drowned in its noise, predicts the "
                "stage-1 rows no better than a constant does (noisy margin %.0f rows), so the "
                "release is mended by repair %r instead. More rows, or a larger epsilon or "
                "label-share, avoid this; on two of the three small tables measured "
                "--generator aim released more accurate rows (docs/held-out.md, 'Which "
                "generator for which table').",
                margin, repair)
        fit += time.perf_counter() - start
    if repair == "stage1":
        report = _dp_report("fair-then-private", generator, COVERS_STAGE1, **details)
        private, t, again = _stage1_on_dp_rows(generator, n_hat, config, seed, fractions)
        return [PipelineResult(a.data, report,
                               {"stage1": fair.seconds, "stage2": fit + t, "repair": a.seconds},
                               intermediate={"stage1": fair.data, "stage2": private},
                               stage1_gap=fair.gap) for a in again]
    report = _dp_report("fair-then-private", generator, COVERS_STAGE1, **details)
    intermediate = {"stage1": fair.data}
    if labels is not None:
        intermediate["stage2"] = reference  # the generator's rows with its own labels
    out = []
    for i, f in enumerate(fractions):
        rows, t = _sample(generator, _n_out(f, n_hat), seed + 1 + i)
        if labels is not None:
            rows = labels.relabel(rows, np.random.default_rng(seed + 1 + i))
        out.append(PipelineResult(rows, report, {"stage1": fair.seconds, "stage2": fit + t},
                                  intermediate=intermediate, stage1_gap=fair.gap))
    return out


@register_order("private-then-fair")
def _private_then_fair(train: TabularData, config: PipelineConfig, seed: int,
                       fractions: Sequence[float]) -> list[PipelineResult]:
    """The DP generator on the real rows, ``N̂`` DP rows in place of the real ones (``N̂``: the
    generator's DP estimate of ``N``), then stage 1 on them at fraction ``Ñ₂/N`` (so the
    released size is ``fraction · N̂``). Logs a warning (on the client only) when ``auto`` gave
    AIM a table of fewer than :data:`SMALL_TABLE` rows by ``N̂``."""
    generator, fit = _fit_generator(train, config, seed)
    n_hat = generator.noisy_rows()
    if (config.stage2.auto_generator and config.stage2.generator == "aim"
            and n_hat < SMALL_TABLE and _first_use(generator)):
        logger.warning(
            "private-then-fair: about %d rows (the generator's DP estimate) is a small table for "
            "AIM, which --generator auto chose: on four of the six tables of at most 2,400 rows "
            "a client measured, private-then-fair's rows were less fair with AIM than with "
            "DP-CTGAN (docs/fairness.md, 'Which generator for private-then-fair'); consider "
            "--generator dp-ctgan.", n_hat)
    private, t, fair = _stage1_on_dp_rows(generator, n_hat, config, seed, fractions)
    report = _dp_report("private-then-fair", generator, COVERS_REAL_POST)
    return [PipelineResult(a.data, report, {"stage2": fit + t, "stage1": a.seconds},
                           intermediate={"stage2": private}, stage1_gap=a.gap) for a in fair]
