"""Options of :class:`~clients.aim.AIM` and their validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from clients.aim.discretise import BINNINGS
from common.errors import ConfigError

#: Workloads AIM can target (see :class:`AIMConfig`).
WORKLOADS = ("fair", "all-3way")
#: What AIM measures before its first round (see :class:`AIMConfig`).
INITS = ("one-way", "group-label")


@dataclasses.dataclass(frozen=True)
class AIMConfig:
    """Options of :class:`~clients.aim.AIM` (validated).

    Attributes
    ----------
    epsilon, delta : float
        The budget of the whole fit; AIM spends the zCDP budget ``ρ`` it allows
        (:func:`common.privacy.zcdp_rho`).
    workload : {"fair", "all-3way"}
        The marginals the synthetic rows should preserve, each with weight 1. ``"fair"``: every
        2- and 3-way marginal that includes the sensitive attribute or the label (what the
        server's model and its fairness depend on); ``"all-3way"``: every 3-way marginal, the
        paper's workload.
    init : {"one-way", "group-label"}
        What is measured before the first round (:func:`clients.aim.mechanism.initial_marginals`):
        ``"one-way"``, every 1-way marginal (the paper); ``"group-label"``, the ``(s, y)``
        marginal and every ``(s, y, feature)`` marginal.
    max_workload : int
        At most this many workload marginals; a larger workload is cut to a random subset drawn
        with ``seed`` (public: it depends on the schema only), as the reference's
        ``num_marginals``.
    max_cells : int
        Workload marginals with more cells are left out (the reference's ``max_cells``).
    bins : int
        Bins of a continuous column over its public bounds (an integer column with at most
        ``bins`` integers gets one bin per integer). 16 keeps the noise of a 1-way marginal
        low at ε = 1 (it grows with the cells) while resolving the shape of every column of
        Law School and Adult; 32 doubles the cells of every marginal.
    binning : {"auto", "linear"}
        ``"auto"``: a wide non-negative column (bounds spanning three orders of magnitude, as
        money and counts) is binned on a log scale, every other column in equal widths;
        ``"linear"``: equal widths everywhere (:mod:`clients.aim.discretise`).
    rounds : int, optional
        The paper's ``T``, which sets the first per-round budget ``ρ/T``; None: ``16·d`` for
        ``d`` attributes (features, ``s``, ``y``), as the paper.
    max_model_size : float
        Largest graphical model, in megabytes (8 bytes per junction-tree cell); round ``t``
        may grow it to ``max_model_size · ρ_used/ρ`` (paper: 80).
    iters : int
        Mirror-descent steps after each measurement (warm-started), as the reference: 1000.
        Fewer make the annealing test misfire — an unconverged model moves less than the
        measurement's noise, so σ halves too early and AIM stops after fewer rounds
        (measured on an Adult client at ε = 1: 10–12 rounds with 50 steps, 24–29 with 1000).
    final_iters : int
        Mirror-descent steps of the final model, from which rows are sampled.
    seed : int
        Seeds what is not a DP mechanism: the workload subset and :meth:`AIM.sample`.
    noise_seed : int, optional
        Seeds the DP noise (Gaussian measurements, exponential-mechanism draws) for a
        reproducible run, voiding the guarantee against anyone who knows it. None (default):
        fresh OS entropy on every fit (:class:`common.privacy.NoiseSource`).
    secure_mode : bool
        The hardened noise: every draw from ``os.urandom``. Excludes ``noise_seed``.
    """

    epsilon: float = 1.0
    delta: float = 1e-6
    workload: str = "fair"
    init: str = "one-way"
    max_workload: int = 512
    max_cells: int = 10000
    bins: int = 16
    binning: str = "auto"
    rounds: int | None = None
    max_model_size: float = 80.0
    iters: int = 1000
    final_iters: int = 1000
    seed: int = 0
    noise_seed: int | None = None
    secure_mode: bool = False

    def __post_init__(self) -> None:
        def whole(v, low=1):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low

        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        checks = [
            (number(self.epsilon) and self.epsilon > 0,
             f"epsilon must be a finite number > 0, got {self.epsilon!r}"),
            (number(self.delta) and 0 < self.delta < 1,
             f"delta must lie in (0, 1), got {self.delta!r}"),
            (self.workload in WORKLOADS,
             f"workload must be one of {list(WORKLOADS)}, got {self.workload!r}"),
            (self.init in INITS, f"init must be one of {list(INITS)}, got {self.init!r}"),
            (whole(self.max_workload),
             f"max_workload must be an integer ≥ 1, got {self.max_workload!r}"),
            (whole(self.max_cells, 4),
             f"max_cells must be an integer ≥ 4 (the (s, y) marginal), got {self.max_cells!r}"),
            (whole(self.bins, 2), f"bins must be an integer ≥ 2, got {self.bins!r}"),
            (self.binning in BINNINGS,
             f"binning must be one of {list(BINNINGS)}, got {self.binning!r}"),
            (self.rounds is None or whole(self.rounds),
             f"rounds must be an integer ≥ 1 or None (16 per attribute), got {self.rounds!r}"),
            (number(self.max_model_size) and self.max_model_size > 0,
             f"max_model_size must be a number of megabytes > 0, got {self.max_model_size!r}"),
            (whole(self.iters), f"iters must be an integer ≥ 1, got {self.iters!r}"),
            (whole(self.final_iters),
             f"final_iters must be an integer ≥ 1, got {self.final_iters!r}"),
            (whole(self.seed, 0), f"seed must be an integer ≥ 0, got {self.seed!r}"),
            (self.noise_seed is None or whole(self.noise_seed, 0),
             f"noise_seed must be an integer ≥ 0 or None, got {self.noise_seed!r}"),
            (isinstance(self.secure_mode, bool),
             f"secure_mode must be true or false, got {self.secure_mode!r}"),
            (not (self.secure_mode and self.noise_seed is not None),
             "secure_mode draws its noise from the operating system and cannot be seeded; drop "
             "noise_seed or secure_mode"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"aim: {message}.")

    @classmethod
    def from_options(cls, **options) -> AIMConfig:
        """Build from keyword options, naming unknown ones (e.g. a run-config typo)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(
                f"aim: unknown option(s) {unknown}; valid options are {sorted(fields)}."
            )
        return cls(**options)
