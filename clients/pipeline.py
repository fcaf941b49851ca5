"""What a client runs before it releases rows: stage 1, stage 2, in a named order.

Orders (a registry keyed by the run-config string, like Opacus' accountants):

* ``fair-then-private`` — the paper: stage 1 on the real rows, then the DP generator on the
  stage-1 rows. The (ε, δ) covers stage 2's input (the stage-1 rows) only.
* ``private-then-fair`` — the DP generator on the real rows, then stage 1 with the DP rows in
  place of the real rows. End-to-end (ε, δ)-DP for the real rows (post-processing).
* ``fair-only`` — stage 1 only; no formal privacy.
* ``private-only`` — the DP generator on the real rows; (ε, δ) covers the real rows.
* ``real`` — the real training rows themselves (the baseline; nothing is protected).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable

from clients.stage1 import FairDistiller, Stage1Config
from common.errors import ConfigError
from common.schema import TabularData

logger = logging.getLogger(__name__)

COVERS_REAL = "the real training rows"
COVERS_STAGE1 = "the stage-1 rows only (stage 2's input), not the real rows they were computed from"
COVERS_NOTHING = "nothing: the released rows carry no formal privacy guarantee"


@dataclasses.dataclass(frozen=True)
class PrivacyReport:
    """What the (ε, δ) of a pipeline run covers, and how it was spent."""

    order: str
    epsilon: float | None
    delta: float | None
    covers: str
    details: dict = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Stage2Config:
    """Stage-2 settings shared by every DP generator.

    ``delta=None`` means ``1 / (N·√N)`` for the generator's input size ``N``. ``fraction`` is
    ``Ñ₂ / N`` (paper: 1.0 and 0.1). ``generator`` names a registered DP generator;
    ``options`` holds that generator's own hyperparameters.
    """

    epsilon: float = 1.0
    delta: float | None = None
    fraction: float = 1.0
    generator: str = "dp-ctgan"
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"stage 2: epsilon must be a finite number > 0, got {self.epsilon}.")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ConfigError(f"stage 2: delta must lie in (0, 1), got {self.delta}.")
        if not 0 < self.fraction <= 1:
            raise ConfigError(
                f"stage 2: fraction (Ñ₂/N) must lie in (0, 1], got {self.fraction}."
            )

    def resolve_delta(self, n: int) -> float:
        """δ for an input of ``n`` rows; raises if it is not below ``1/n``."""
        delta = 1.0 / (n * math.sqrt(n)) if self.delta is None else self.delta
        if delta >= 1.0 / n:
            raise ConfigError(
                f"stage 2: delta = {delta:g} is not below 1/N = {1.0 / n:g} for N = {n} rows: such "
                "a δ allows releasing a real row outright. Use δ ≤ 1/(N·√N) (the default)."
            )
        return delta


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    order: str = "fair-then-private"
    stage1: Stage1Config = dataclasses.field(default_factory=Stage1Config)
    stage2: Stage2Config = dataclasses.field(default_factory=Stage2Config)

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ConfigError(f"unknown order {self.order!r}; choose one of {sorted(ORDERS)}.")


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    rows: TabularData
    privacy: PrivacyReport
    seconds: dict[str, float]


Order = Callable[[TabularData, PipelineConfig, int], PipelineResult]
ORDERS: dict[str, Order] = {}


def register_order(name: str) -> Callable[[Order], Order]:
    def wrap(fn: Order) -> Order:
        ORDERS[name] = fn
        return fn
    return wrap


def run_pipeline(train: TabularData, config: PipelineConfig, *, seed: int = 0) -> PipelineResult:
    """Run ``config.order`` on a client's training rows; returns the rows it may release."""
    return ORDERS[config.order](train, config, seed)


def _stage1(data: TabularData, config: PipelineConfig, seed: int) -> tuple[TabularData, float]:
    cfg = dataclasses.replace(config.stage1, seed=seed)
    result = FairDistiller(cfg).fit(data)
    return result.data, result.seconds


@register_order("real")
def _real(train: TabularData, config: PipelineConfig, seed: int) -> PipelineResult:
    return PipelineResult(train, PrivacyReport("real", None, None, COVERS_NOTHING), {})


@register_order("fair-only")
def _fair_only(train: TabularData, config: PipelineConfig, seed: int) -> PipelineResult:
    rows, t1 = _stage1(train, config, seed)
    return PipelineResult(rows, PrivacyReport("fair-only", None, None, COVERS_NOTHING),
                          {"stage1": t1})


def _stage2(data: TabularData, n_out: int, config: PipelineConfig, seed: int):
    """Fit the configured DP generator on ``data`` and sample ``n_out`` rows."""
    from clients.dp_generators import make_generator  # torch/opacus: imported on first use

    start = time.perf_counter()
    cfg = config.stage2
    generator = make_generator(cfg.generator, epsilon=cfg.epsilon,
                               delta=cfg.resolve_delta(len(data)), seed=seed, **cfg.options)
    generator.fit(data)
    rows = generator.sample(n_out)
    return rows, generator.privacy_spent(), time.perf_counter() - start


@register_order("private-only")
def _private_only(train: TabularData, config: PipelineConfig, seed: int) -> PipelineResult:
    n_out = max(1, round(config.stage2.fraction * len(train)))
    rows, spent, t2 = _stage2(train, n_out, config, seed)
    report = PrivacyReport("private-only", spent["epsilon"], spent["delta"], COVERS_REAL, spent)
    return PipelineResult(rows, report, {"stage2": t2})


@register_order("fair-then-private")
def _fair_then_private(train: TabularData, config: PipelineConfig, seed: int) -> PipelineResult:
    fair, t1 = _stage1(train, config, seed)
    n_out = max(1, round(config.stage2.fraction * len(train)))
    rows, spent, t2 = _stage2(fair, n_out, config, seed)
    report = PrivacyReport("fair-then-private", spent["epsilon"], spent["delta"], COVERS_STAGE1,
                           spent)
    return PipelineResult(rows, report, {"stage1": t1, "stage2": t2})


@register_order("private-then-fair")
def _private_then_fair(train: TabularData, config: PipelineConfig, seed: int) -> PipelineResult:
    # The DP rows stand in for the real rows: as many as the real data, then stage 1 with its
    # own fraction; the released size is Ñ₂ = fraction₂ · N.
    private, spent, t2 = _stage2(train, len(train), config, seed)
    cfg1 = dataclasses.replace(config.stage1, seed=seed, fraction=config.stage2.fraction)
    fair = FairDistiller(cfg1).fit(private)
    report = PrivacyReport("private-then-fair", spent["epsilon"], spent["delta"], COVERS_REAL,
                           spent)
    return PipelineResult(fair.data, report, {"stage2": t2, "stage1": fair.seconds})
