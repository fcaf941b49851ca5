r"""Privacy accounting, the DP noise and the private evaluation (the DP statistics that stage 2's
generators query are in :mod:`common.dp_queries`).

Every access the stage-2 generator makes to its input rows is one of the mechanisms below,
and every mechanism is recorded in a :class:`PrivacyLedger`, which composes them with Opacus'
Rényi-DP accountant (Mironov 2017; Mironov, Talwar & Zhang 2019) and converts the total to
``(ε, δ)``-DP with Balle et al. (2020, Thm. 21). Neighbouring datasets differ by adding or
removing one row.

Gaussian mechanism. A query ``f`` with L2 sensitivity ``Δ`` released as ``f(D) + N(0, σ²Δ²I)``
(``σ``: the *noise multiplier*) is ``(α, α/(2σ²))``-RDP for every ``α > 1``. Poisson
subsampling at rate ``q`` (each row joins a batch independently with probability ``q``) and
``T`` repetitions give the sampled Gaussian mechanism of DP-SGD, whose RDP Opacus computes
numerically; RDP adds up over mechanisms:

.. math::

    \varepsilon_{\text{RDP}}(\alpha)
        = \sum_k T_k\, \varepsilon^{(k)}_{\text{SGM}}(\alpha; q_k, \sigma_k),
    \qquad \varepsilon = \min_\alpha\; \varepsilon_{\text{RDP}}(\alpha)
        + \log\frac{\alpha - 1}{\alpha} - \frac{\log\delta + \log\alpha}{\alpha - 1}.

Budget split. A :class:`BudgetSplit` gives each auxiliary statistic (cell counts, column
bounds, moments) a share ``f_k`` of the zero-concentrated-DP budget ``ρ`` that ``(ε, δ)`` allows
(Bun & Steinke 2016: ``ε = ρ + 2\sqrt{ρ \log(1/δ)}``), i.e. noise ``σ_k = 1/\sqrt{2 f_k ρ}``.
The discriminator's DP-SGD then gets what remains: its noise multiplier is the smallest one for
which the ledger, with every mechanism composed, stays within the target ``ε``
(:meth:`PrivacyLedger.calibrate`). Each statistic's stand-alone ``ε`` is reported too; those do
not add up (RDP composition is tighter than adding ``ε``\ s).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import secrets
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from common.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: RDP orders: every integer to 63, a few fractional ones below 8 (where small-ε optima sit
#: less often) and larger ones, which small ε with tiny δ can need. Fewer fractional orders than
#: Opacus' default list keep the calibration fast; ε is an upper bound at any set of orders.
ALPHAS: tuple[float, ...] = tuple(sorted(
    [1.1, 1.25, 1.5, 1.75, 2.25, 2.5, 2.75, 3.25, 3.5, 3.75, 4.5, 5.5, 6.5, 7.5]
    + list(range(2, 64)) + [72, 80, 96, 112, 128, 160, 192, 256, 320, 384, 512, 768, 1024]
))

#: Largest noise multiplier the calibration tries before it gives up.
MAX_NOISE_MULTIPLIER = 1e4


def check_budget(*, epsilon: float, delta: float, n: int) -> None:
    """Raise :class:`ConfigError` unless ``ε > 0`` is finite and ``0 < δ < 1/n``.

    ``δ ≥ 1/n`` would allow a mechanism that publishes a random row outright.
    """
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"epsilon must be a finite number > 0, got {epsilon!r}.")
    if n < 1:
        raise DataError("the DP generator got no rows; it needs at least one training row.")
    if not (isinstance(delta, (int, float)) and 0 < delta < 1.0 / n):
        raise ConfigError(
            f"delta must lie in (0, 1/N) = (0, {1.0 / n:.3g}) for N = {n} rows, got {delta!r}; "
            "the usual choice is δ = 1/(N·√N)."
        )


def zcdp_rho(epsilon: float, delta: float) -> float:
    r"""The zCDP budget ``ρ`` with ``ρ + 2\sqrt{ρ\log(1/δ)} = ε`` (Bun & Steinke 2016,
    Prop. 1.3)."""
    log_inv = math.log(1.0 / delta)
    return (math.sqrt(log_inv + epsilon) - math.sqrt(log_inv)) ** 2


def gaussian_noise_multiplier(share: float, rho: float) -> float:
    """Noise multiplier of a Gaussian mechanism that spends ``share · ρ`` of a zCDP budget."""
    if not 0 < share <= 1:
        raise ConfigError(f"a budget share must lie in (0, 1], got {share}.")
    return 1.0 / math.sqrt(2.0 * share * rho)


@dataclasses.dataclass(frozen=True)
class Mechanism:
    """One (possibly subsampled, repeated) Gaussian mechanism.

    Attributes
    ----------
    name : str
        What it released (e.g. ``"cell counts"``).
    noise_multiplier : float
        Noise standard deviation divided by the query's L2 sensitivity.
    sample_rate : float
        Poisson sampling rate ``q`` (1: every row is used, the plain Gaussian mechanism).
    steps : int
        Number of repetitions ``T``.
    """

    name: str
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ConfigError(
                f"{self.name}: noise multiplier must be > 0, got {self.noise_multiplier}.")
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(
                f"{self.name}: sample rate must lie in (0, 1], got {self.sample_rate}.")
        if int(self.steps) != self.steps or self.steps < 1:
            raise ConfigError(f"{self.name}: steps must be an integer ≥ 1, got {self.steps}.")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def mechanism_zcdp(mechanism: Mechanism) -> float:
    """zCDP ``ρ`` of an unsampled Gaussian mechanism repeated ``T`` times: ``T/(2σ²)`` (Bun &
    Steinke 2016, Prop. 1.6 and Lemma 2.3)."""
    if mechanism.sample_rate != 1.0:
        raise ConfigError(f"{mechanism.name}: only an unsampled Gaussian mechanism has a zCDP "
                          f"cost; its sample rate is {mechanism.sample_rate}.")
    return mechanism.steps / (2.0 * mechanism.noise_multiplier ** 2)


def mechanism_rdp(mechanism: Mechanism, alphas: Sequence[float] = ALPHAS) -> np.ndarray:
    """RDP curve of one mechanism at the orders ``alphas`` (Opacus' sampled-Gaussian analysis)."""
    from opacus.accountants.analysis import rdp as rdp_analysis  # imports torch: on first use

    return np.asarray(rdp_analysis.compute_rdp(q=mechanism.sample_rate,
                                               noise_multiplier=mechanism.noise_multiplier,
                                               steps=int(mechanism.steps), orders=list(alphas)))


def rdp_to_epsilon(rdp: np.ndarray, delta: float,
                   alphas: Sequence[float] = ALPHAS) -> tuple[float, float]:
    """``(ε, best α)`` of an RDP curve at ``δ`` (Opacus' conversion, Balle et al. 2020)."""
    from opacus.accountants.analysis import rdp as rdp_analysis

    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": the ε returned is still a valid upper bound.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        eps, alpha = rdp_analysis.get_privacy_spent(orders=list(alphas), rdp=rdp, delta=delta)
    return float(eps), float(alpha)


def epsilon_of(mechanisms: Sequence[Mechanism], delta: float,
               alphas: Sequence[float] = ALPHAS) -> tuple[float, float]:
    """``(ε, best α)`` of the composition of ``mechanisms`` at ``δ`` (RDP adds up)."""
    if not mechanisms:
        return 0.0, float("nan")
    return rdp_to_epsilon(sum(mechanism_rdp(m, alphas) for m in mechanisms), delta, alphas)


@dataclasses.dataclass(frozen=True)
class BudgetSplit:
    """Shares of the zCDP budget ``ρ`` for auxiliary statistics; DP-SGD gets the rest.

    ``shares`` maps a statistic's name to its share in (0, 1). A statistic that a run does not
    need (e.g. column bounds when the schema declares them) is not spent, and its share goes to
    DP-SGD; the shares actually spent must leave at least :data:`MIN_SGD_SHARE` for DP-SGD
    (:meth:`PrivacyLedger.noise_for` checks).
    """

    shares: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, share in self.shares.items():
            if not (isinstance(share, (int, float)) and 0 < share < 1):
                raise ConfigError(f"budget share of {name!r} must lie in (0, 1), got {share!r}.")

    def share(self, name: str) -> float:
        if name not in self.shares:
            raise ConfigError(f"no budget share for {name!r}; shares are {dict(self.shares)}.")
        return self.shares[name]


#: Least share of the zCDP budget left for DP-SGD after the auxiliary statistics.
MIN_SGD_SHARE = 0.1


class PrivacyLedger:
    """Records every mechanism run on one dataset and composes them (RDP, add/remove).

    Parameters
    ----------
    epsilon, delta : float
        The target budget: :meth:`noise_for` and :meth:`calibrate` size the noise so that the
        composition never exceeds it, and :meth:`epsilon` reports what was really spent.
    """

    def __init__(self, *, epsilon: float, delta: float):
        self.target_epsilon = float(epsilon)
        self.delta = float(delta)
        self.rho = zcdp_rho(epsilon, delta)
        self.mechanisms: list[Mechanism] = []
        self.shares: dict[str, float] = {}  # of the budget left by the reserved mechanisms
        self.reserved: dict[str, float] = {}  # zCDP share of each reserved mechanism
        self._curves: list[np.ndarray] = []  # RDP curve of each recorded mechanism
        self._rdp = np.zeros(len(ALPHAS))  # their sum

    def noise_for(self, name: str, share: float) -> float:
        """Noise multiplier of a Gaussian mechanism given ``share`` of the zCDP budget that
        the reserved mechanisms (:meth:`reserve`) leave."""
        sigma = gaussian_noise_multiplier(share, self.rho * (1.0 - self.reserved_share))
        spent = sum(self.shares.values()) + share
        if spent > 1 - MIN_SGD_SHARE:
            raise ConfigError(
                f"the statistics' budget shares add up to {spent:.2f}; leave at least "
                f"{MIN_SGD_SHARE} of the budget for DP-SGD (lower the shares, now "
                f"{ {**self.shares, name: share} })."
            )
        self.shares[name] = share
        return sigma

    @property
    def reserved_share(self) -> float:
        """The share of ``ρ`` that reserved mechanisms spend."""
        return sum(self.reserved.values())

    def reserve(self, mechanism: Mechanism) -> None:
        """Record an unsampled Gaussian mechanism that runs outside this ledger's owner, before
        any other: its zCDP share comes off the budget the statistics' shares divide, and
        :meth:`calibrate` composes it."""
        if len(self.mechanisms) > len(self.reserved):
            raise ConfigError("a ledger reserves mechanisms before it records any other.")
        share = mechanism_zcdp(mechanism) / self.rho
        if self.reserved_share + share >= 1:
            raise ConfigError(f"the reserved mechanisms spend the whole budget (share "
                              f"{self.reserved_share + share:.2f}); lower their share.")
        self.reserved[mechanism.name] = share
        self.record(mechanism)

    def record(self, mechanism: Mechanism) -> None:
        curve = mechanism_rdp(mechanism)
        self.mechanisms.append(mechanism)
        self._curves.append(curve)
        self._rdp = self._rdp + curve

    def calibrate(self, name: str, *, sample_rate: float, steps: int,
                  tolerance: float = 1e-3) -> float:
        """Smallest noise multiplier of ``steps`` sampled-Gaussian steps at ``sample_rate`` that
        keeps the composition of everything recorded so far plus these steps within the target
        ε (bisection on the composed ε, relative tolerance ``tolerance``)."""
        def eps(sigma: float) -> float:
            trial = mechanism_rdp(Mechanism(name, sigma, sample_rate, steps))
            return rdp_to_epsilon(self._rdp + trial, self.delta)[0]

        spent = self.epsilon()
        if spent >= self.target_epsilon:
            raise ConfigError(
                f"the auxiliary statistics already spend ε = {spent:.3f} of {self.target_epsilon}; "
                "lower their budget shares."
            )
        lo, hi = 0.0, 1.0
        while eps(hi) > self.target_epsilon:
            lo, hi = hi, 2.0 * hi
            if hi > MAX_NOISE_MULTIPLIER:
                raise ConfigError(
                    f"ε = {self.target_epsilon} cannot pay for {steps} DP-SGD steps at sample rate "
                    f"{sample_rate:.4g}; use fewer epochs or a larger ε."
                )
        while hi - lo > tolerance * hi:
            mid = 0.5 * (lo + hi)
            if eps(mid) > self.target_epsilon:
                lo = mid
            else:
                hi = mid
        return hi

    def epsilon(self) -> float:
        """ε spent by every recorded mechanism together, at the ledger's δ."""
        return rdp_to_epsilon(self._rdp, self.delta)[0] if self.mechanisms else 0.0

    def report(self) -> dict:
        """The composed ``(ε, δ)``, and per mechanism its parameters, budget share and the ε it
        would spend alone (stand-alone ε's do not add up: composition is in RDP)."""
        eps, alpha = (rdp_to_epsilon(self._rdp, self.delta) if self.mechanisms
                      else (0.0, float("nan")))
        split = {}
        for m, curve in zip(self.mechanisms, self._curves):
            split[m.name] = {
                **{k: v for k, v in m.as_dict().items() if k != "name"},
                "zcdp_share": self.reserved.get(m.name, self.shares.get(m.name)),
                "epsilon_alone": rdp_to_epsilon(curve, self.delta)[0],
            }
        return {"epsilon": eps, "delta": self.delta, "rdp_order": alpha, "accountant": "rdp",
                "target_epsilon": self.target_epsilon, "budget_split": split}


# --------------------------------------------------------------------------- the noise


class NoiseSource:
    r"""Where every random draw of the DP mechanisms comes from.

    A DP guarantee holds only against a party that cannot recompute the noise. By default
    (``seed=None``) each source is seeded with 128 fresh bits from the operating system's
    cryptographically secure generator (:mod:`secrets`), so two identical runs add different
    noise and nobody — the server included — can predict it. A fixed ``seed`` makes a private
    run reproducible, and voids its guarantee against anyone who learns the seed: it belongs
    in the client's own node config, never in the run config that the server submits. A seeded
    source is also keyed by its ``purpose`` (``numpy.random.SeedSequence``), so that two
    mechanisms seeded alike (the generator's statistics and the evaluation) never add the same
    draws, which would let their noise cancel.

    ``secure=True`` is the hardened path against floating-point attacks on the Gaussian
    (Mironov 2012 for the Laplace; Jin et al. 2022 for DP-SGD): every uniform bit comes from
    ``os.urandom`` (a CSPRNG) instead of PCG64, and every Gaussian draw is the sum of four
    independent draws halved, as in Holohan & Braghin (2021, § 5.1) and Opacus' ``secure_mode``
    (same distribution: four N(0, σ²) halved is N(0, σ²)). It needs no seed and refuses one.

    Attributes
    ----------
    reproducible : bool
        True when a seed was given.
    secure : bool
    """

    def __init__(self, seed: int | None = None, *, secure: bool = False,
                 purpose: str = "") -> None:
        if secure and seed is not None:
            raise ConfigError("the hardened noise (secure mode) draws from the operating "
                              "system and cannot be seeded; drop the noise seed or secure mode.")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ConfigError(f"a noise seed must be an integer ≥ 0, got {seed!r}.")
        self.secure = bool(secure)
        self.reproducible = seed is not None
        entropy = secrets.randbits(128) if seed is None else int(seed)
        key = tuple(purpose.encode())  # one independent stream per purpose
        self._rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))

    def normal(self, loc: float = 0.0, scale: float = 1.0, size=None) -> np.ndarray:
        """Gaussian noise, as :meth:`numpy.random.Generator.normal`."""
        if not self.secure:
            return self._rng.normal(loc, scale, size=size)
        shape = () if size is None else size
        count = int(np.prod(shape, dtype=np.int64))
        total = sum(self._urandom_normal(count) for _ in range(4)) / 2.0
        return loc + scale * total.reshape(shape)

    def gumbel(self, size=None) -> np.ndarray:
        """Standard Gumbel draws ``−log(−log U)`` (the exponential mechanism's Gumbel-max);
        in secure mode ``U`` is a 53-bit uniform in (0, 1) from os.urandom."""
        if not self.secure:
            return self._rng.gumbel(0.0, 1.0, size=size)
        shape = () if size is None else size
        count = int(np.prod(shape, dtype=np.int64))
        bits = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) >> np.uint64(11)
        u = (bits.astype(np.float64) + 0.5) / 2.0**53
        return (-np.log(-np.log(u))).reshape(shape)

    @staticmethod
    def _urandom_normal(count: int) -> np.ndarray:
        """``count`` standard normal draws by Box–Muller from 53-bit uniforms of os.urandom."""
        if count == 0:
            return np.zeros(0)
        bits = np.frombuffer(os.urandom(16 * count), dtype=np.uint64).reshape(2, count)
        u1 = ((bits[0] >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53  # (0, 1]
        u2 = (bits[1] >> np.uint64(11)).astype(np.float64) / 2.0**53          # [0, 1)
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)

    def torch_seed(self) -> int:
        """A 63-bit seed for the ``torch.Generator`` of DP-SGD (its Poisson batches and
        Opacus' noise), drawn from this source: fresh OS entropy unless the source is seeded."""
        if self.secure or not self.reproducible:
            return secrets.randbits(63)
        return int(self._rng.integers(0, 2**63 - 1))


# --------------------------------------------------------------------------- evaluation


#: The eight disjoint cells ``(s, y, ŷ)`` of a model's test predictions: one row is in one cell.
EVALUATION_CELLS = tuple((s, y, yhat) for s in (0, 1) for y in (0, 1) for yhat in (0, 1))


def noisy_evaluation_cells(s: np.ndarray, y: np.ndarray, yhat: np.ndarray, *, epsilon: float,
                           delta: float, noise: NoiseSource) -> tuple[np.ndarray, dict]:
    r"""The ``(s, y, ŷ)`` histogram of a model's test predictions under the Gaussian mechanism.

    One row is in one of the eight cells: L2 sensitivity 1, so ``N(0, σ²)`` per cell with
    ``σ = 1/\sqrt{2ρ}`` and ``ρ`` the zCDP budget of ``(ε, δ)``; the counts are then rounded and
    clipped at 0 (post-processing). Every count of
    :func:`common.metrics.group_counts` is a sum of these cells. Returns the cells (in the order
    of :data:`EVALUATION_CELLS`) and the mechanism's report (ε composed with Opacus' RDP
    accountant, which is at most ``epsilon``).
    """
    ledger = PrivacyLedger(epsilon=epsilon, delta=delta)
    sigma = gaussian_noise_multiplier(1.0, ledger.rho)
    ledger.record(Mechanism("evaluation cells", sigma))
    s, y, yhat = (np.asarray(a).astype(np.int64) for a in (s, y, yhat))
    exact = np.bincount(4 * s + 2 * y + yhat, minlength=8).astype(np.float64)
    cells = np.maximum(np.rint(exact + noise.normal(0.0, sigma, size=8)), 0.0)
    return cells, {"epsilon": ledger.epsilon(), "delta": delta, "noise_multiplier": sigma,
                   "mechanism": "Gaussian on the 8 (s, y, ŷ) cells, sensitivity 1"}
