"""Hyperparameters of :class:`~clients.dp_ctgan.DPCTGAN` and their validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from common import privacy
from common.errors import ConfigError

#: The (s, y) cells in condition order; cell index ``2·s + y``.
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))
#: Starting points of the generator (see ``DPCTGANConfig.prior``).
PRIORS = ("copula", "none")


@dataclasses.dataclass(frozen=True)
class DPCTGANConfig:
    """Hyperparameters of :class:`~clients.dp_ctgan.DPCTGAN` (validated; defaults measured on
    Law School).

    Attributes
    ----------
    epsilon, delta : float
        The privacy budget of the whole fit (every statistic plus DP-SGD).
    epochs : float
        Expected passes over the rows: DP-SGD runs ``round(epochs / q)`` steps.
    sample_rate : float
        Poisson sampling rate ``q`` of DP-SGD: each step sees ``q·N`` real rows in expectation,
        so the number of steps does not grow with the data (about 500 rows a step on a Law
        School client).
    pac : int
        Rows per discriminator pack (PacGAN); see :class:`~clients.dp_ctgan.PrivateCritic`
        for its privacy cost.
    max_grad_norm : float
        Per-pack gradient clipping bound ``C``.
    noise_dim : int
        Dimension of the generator's Gaussian input.
    generator_dims, discriminator_dims : tuple of int
        Hidden widths (residual blocks for the generator, LeakyReLU layers for the critic).
    lr_generator, lr_discriminator : float
        Adam step sizes (betas 0.5, 0.9 as in CTGAN). The generator's is small on purpose: at
        ε = 1 the critic's noisy signal, followed with a larger step, moves the generator away
        from its DP prior and worsens every fidelity measure (docs/results.md, stage 2); with this
        step the adversarial phase refines the prior without undoing it. ``lr_generator = 0``
        keeps the prior as it is.
    modes : int
        Modes of a continuous column that does not get one per integer.
    fine_bins : int
        Bins of the DP histogram of such a column (the modes are cut from it).
    budget : dict
        zCDP shares of the statistics: ``"cell counts"``, ``"marginals"``, ``"correlations"``,
        ``"category counts"`` (only with categorical columns), ``"bounds"`` (only for columns
        without public bounds), ``"moments"`` (only with ``calibrate``). DP-SGD gets the rest.
    copula_clip : float
        Normal-score vectors are clipped to L2 norm ``copula_clip·√d`` for the correlation
        release (``d``: continuous columns).
    prior : {"copula", "none"}
        The generator's starting point: the DP copula (default), or ``"none"`` — CTGAN's plain
        generator from a random initialisation, with no correlation release (for comparison).
    calibrate : bool
        Resample the released rows to the DP statistics (module docstring, step 4).
    pool : int
        With ``calibrate``: candidate rows generated per released row.
    round_integers : bool
        Round ``Column.integer`` columns on output. Stage-1 rows are not integers, but the
        calibration matches each cell's means on the rounded rows, so their shifts survive as
        a shift of the mix of integer values (measured: the server model is then closer to the
        one trained on the input rows than without rounding).
    threads : int, optional
        ``torch.set_num_threads`` during fit and sample (restored afterwards); None keeps it.
    progress : bool, optional
        tqdm bar over epochs (None: only on a terminal).
    seed : int
        Seeds what is not a DP mechanism: the networks' initialisation and :meth:`sample`.
    noise_seed : int, optional
        Seeds the DP mechanisms' noise (the statistics, the Poisson batches, DP-SGD) for a
        reproducible run, and voids the guarantee against anyone who knows it. None (default):
        fresh OS entropy on every fit (:class:`common.privacy.NoiseSource`).
    secure_mode : bool
        The hardened noise against floating-point attacks: the statistics' Gaussians from
        ``os.urandom`` summed four times, and Opacus' ``secure_mode`` for DP-SGD. Excludes
        ``noise_seed``.
    """

    epsilon: float = 1.0
    delta: float = 1e-6
    epochs: float = 3.0
    sample_rate: float = 0.06
    pac: int = 1
    max_grad_norm: float = 1.0
    noise_dim: int = 32
    generator_dims: tuple[int, ...] = (64, 64)
    discriminator_dims: tuple[int, ...] = (64,)
    lr_generator: float = 5e-5
    lr_discriminator: float = 2e-3
    modes: int = 10
    fine_bins: int = 64
    budget: dict = dataclasses.field(default_factory=lambda: {
        "cell counts": 0.08, "marginals": 0.18, "correlations": 0.14, "category counts": 0.10,
        "bounds": 0.05, "moments": 0.25})
    copula_clip: float = 1.5
    prior: str = "copula"
    calibrate: bool = True
    pool: int = 4
    round_integers: bool = True
    threads: int | None = 1
    progress: bool | None = None
    seed: int = 0
    noise_seed: int | None = None
    secure_mode: bool = False

    def __post_init__(self) -> None:
        def whole(v, low=1):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low

        checks = [
            (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon)
             and self.epsilon > 0, f"epsilon must be a finite number > 0, got {self.epsilon!r}"),
            (isinstance(self.delta, (int, float)) and 0 < self.delta < 1,
             f"delta must lie in (0, 1), got {self.delta!r}"),
            (math.isfinite(self.epochs) and self.epochs > 0,
             f"epochs must be > 0, got {self.epochs}"),
            (0 < self.sample_rate <= 1,
             f"sample_rate must lie in (0, 1], got {self.sample_rate!r}"),
            (whole(self.pac), f"pac must be an integer ≥ 1, got {self.pac!r}"),
            (self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}"),
            (whole(self.noise_dim), f"noise_dim must be an integer ≥ 1, got {self.noise_dim!r}"),
            (all(whole(d) for d in self.generator_dims),
             f"generator_dims must be positive integers, got {self.generator_dims}"),
            (all(whole(d) for d in self.discriminator_dims),
             f"discriminator_dims must be positive integers, got {self.discriminator_dims}"),
            (self.lr_generator >= 0, f"lr_generator must be ≥ 0, got {self.lr_generator}"),
            (self.lr_discriminator > 0,
             f"lr_discriminator must be > 0, got {self.lr_discriminator}"),
            (whole(self.modes), f"modes must be an integer ≥ 1, got {self.modes!r}"),
            (whole(self.fine_bins) and self.fine_bins >= self.modes,
             f"fine_bins must be an integer ≥ modes ({self.modes}), got {self.fine_bins!r}"),
            (whole(self.pool), f"pool must be an integer ≥ 1, got {self.pool!r}"),
            (self.copula_clip > 0, f"copula_clip must be > 0, got {self.copula_clip}"),
            (self.prior in PRIORS, f"prior must be one of {list(PRIORS)}, got {self.prior!r}"),
            (self.noise_seed is None or whole(self.noise_seed, 0),
             f"noise_seed must be an integer ≥ 0 or None, got {self.noise_seed!r}"),
            (not (self.secure_mode and self.noise_seed is not None),
             "secure_mode draws its noise from the operating system and cannot be seeded; drop "
             "noise_seed or secure_mode"),
            (self.threads is None or whole(self.threads),
             f"threads must be an integer ≥ 1 or None, got {self.threads!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"dp-ctgan: {message}.")
        privacy.BudgetSplit(self.budget)  # validates the shares

    @classmethod
    def from_options(cls, **options) -> DPCTGANConfig:
        """Build from keyword options, naming unknown ones (e.g. a run-config typo)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(
                f"dp-ctgan: unknown option(s) {unknown}; valid options are {sorted(fields)}."
            )
        for key in ("generator_dims", "discriminator_dims"):
            if key in options and not isinstance(options[key], tuple):
                options[key] = tuple(options[key])
        if "budget" in options:
            options["budget"] = {**cls().budget, **options["budget"]}
        return cls(**options)
