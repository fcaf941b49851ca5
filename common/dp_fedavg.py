"""DP-FedAvg's public schedule: the DP-SGD plan that every client of a run follows.

Every figure here is a function of the run configuration alone (ε, δ, the sampling rate
``q``, local epochs ``E``, rounds ``R``, the clipping norm ``C``), never of a client's rows, so
the server can compute it too, and a client may report the ε it has spent. The training that
follows the plan is :mod:`clients.dp_sgd`.

Two mechanisms share the budget: once per run, a noisy row count ``N̂ = N + N(0, σ_n²)``
(:data:`COUNT_SHARE` of the zCDP budget), which sets DP-SGD's expected batch ``q·N̂`` — the
divisor of the noisy gradient sum; dividing by the true ``q·N`` would make every model a
function of the row count outside the mechanism — and then the ``T`` DP-SGD steps, whose
noise multiplier is calibrated on what remains (the RDP ledger composes both).
"""

from __future__ import annotations

import dataclasses
import functools

from common.errors import ConfigError
from common.privacy import Mechanism, PrivacyLedger, epsilon_of

#: Names of the accountant's mechanisms.
MECHANISM = "DP-FedAvg local DP-SGD"
COUNT = "DP-FedAvg row count"
#: zCDP share of the noisy row count (σ_n ≈ 53 at ε = 1, δ = 1e-6: a batch size off by a few
#: percent on a client of a few thousand rows).
COUNT_SHARE = 0.01


@dataclasses.dataclass(frozen=True)
class DPSGDPlan:
    """The run's DP-SGD schedule: public, the same on every client.

    An epoch is ``round(1/q)`` Poisson-sampled steps; ``count_noise`` is the noisy row
    count's σ_n; ``noise_multiplier`` is the smallest ``σ`` (bisection to 0.1 %) for which the
    count and ``rounds × steps_per_round`` steps at ``sample_rate`` spend at most ``epsilon``
    at ``delta`` under the RDP accountant (:meth:`common.privacy.PrivacyLedger.calibrate`).
    """

    epsilon: float
    delta: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    max_grad_norm: float
    noise_multiplier: float
    count_noise: float

    @classmethod
    def for_config(cls, config) -> DPSGDPlan:
        """The plan of a :class:`common.run_config.RunConfig`."""
        return cls.for_run(epsilon=config.epsilon, delta=config.delta,
                           sample_rate=config.dp_sample_rate, local_epochs=config.local_epochs,
                           rounds=config.rounds, max_grad_norm=config.dp_clip)

    @classmethod
    def for_run(cls, *, epsilon: float, delta: float, sample_rate: float, local_epochs: int,
                rounds: int, max_grad_norm: float) -> DPSGDPlan:
        return _plan(float(epsilon), float(delta), float(sample_rate), int(local_epochs),
                     int(rounds), float(max_grad_norm))

    @property
    def steps(self) -> int:
        """``T``, the run's DP-SGD steps."""
        return self.rounds * self.steps_per_round

    def epsilon_after(self, rounds_done: int) -> float:
        """ε spent (RDP accountant, at ``delta``) once ``rounds_done`` rounds have run (the
        row count is drawn in the first)."""
        if rounds_done <= 0:
            return 0.0
        return epsilon_of([Mechanism(COUNT, self.count_noise),
                           Mechanism(MECHANISM, self.noise_multiplier, self.sample_rate,
                                     rounds_done * self.steps_per_round)], self.delta)[0]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=64)
def _plan(epsilon: float, delta: float, sample_rate: float, local_epochs: int, rounds: int,
          max_grad_norm: float) -> DPSGDPlan:
    if not (0 < sample_rate <= 1):
        raise ConfigError(f"run config: dp-sample-rate = {sample_rate:g} must lie in (0, 1].")
    if not max_grad_norm > 0:
        raise ConfigError(f"run config: dp-clip = {max_grad_norm:g} must be > 0.")
    steps_per_round = local_epochs * max(1, int(round(1.0 / sample_rate)))
    ledger = PrivacyLedger(epsilon=epsilon, delta=delta)
    count_noise = ledger.noise_for(COUNT, COUNT_SHARE)
    ledger.record(Mechanism(COUNT, count_noise))
    sigma = ledger.calibrate(MECHANISM, sample_rate=sample_rate,
                             steps=rounds * steps_per_round)
    return DPSGDPlan(epsilon=epsilon, delta=delta, sample_rate=sample_rate,
                     steps_per_round=steps_per_round, rounds=rounds,
                     max_grad_norm=max_grad_norm, noise_multiplier=sigma,
                     count_noise=count_noise)
