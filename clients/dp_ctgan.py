r"""A fast differentially private CTGAN (stage 2, METHOD.md § Stage 2).

CTGAN's design (Xu et al., NeurIPS 2019), made differentially private as DP-CTGAN (Fang et
al. 2022) does it — the discriminator is trained with DP-SGD and the generator only ever sees
the discriminator, so what it produces is post-processing — with every other access to the
rows made through a budgeted Gaussian mechanism of :mod:`common.privacy`, all composed in one
Rényi-DP ledger:

1. **Statistics.** Noisy ``(s, y)`` cell counts; a noisy histogram of every continuous column
   inside its public bounds (a column without bounds first gets DP bounds), denoised by a
   threshold and a projection onto the noisy row count; the noisy correlation matrix of the
   continuous columns' normal scores (Gaussian copula); noisy ``cell × category`` counts of
   every categorical column; the noisy feature sums of each cell.
2. **Representation** (:class:`TableTransformer`): CTGAN's mode-specific normalisation with
   modes fixed *without reading the rows*: an integer column with few values gets one mode per
   integer, any other continuous column ``modes`` modes cut at the quantiles of its DP
   histogram. A value is its mode ``k`` (one-hot) and its offset
   ``α = (x − μ_k)/h_k ∈ [−1, 1]`` (``μ_k``: the mode's centre, ``h_k``: half its width).
   Categorical columns are one-hot over the schema's public categories.
3. **Conditional generator on a DP prior, PacGAN discriminator.** ``s`` and ``y`` are not
   generated: every row is generated *given* its ``(s, y)`` cell, so released rows keep the
   cells' noisy proportions; as in CTGAN the condition also names one category of one
   categorical column, with a cross-entropy penalty when the generator does not produce it.
   Real rows come from Poisson sampling (what DP-SGD's accounting assumes) with their own
   conditions; fake conditions are drawn from the noisy ``cell × category`` counts, so both
   follow one law. The generator (CTGAN's residual network) refines a prior row drawn from the
   DP Gaussian copula (:meth:`DPCTGAN._prior`): its last layer starts at zero, so it starts as
   the copula and adversarial training learns corrections. The discriminator scores packs of
   ``pac`` rows; :class:`PrivateCritic` is its DP-SGD step (and explains the cost of
   ``pac > 1``). ``prior="none"`` gives CTGAN's plain generator for comparison.
4. **Calibration** (``calibrate=True``; post-processing of DP outputs only):
   :meth:`DPCTGAN.sample` draws ``pool`` candidate rows per released row and resamples them
   with maximum-entropy weights (exponential tilting, :func:`tilt`; calibration estimators,
   Deville & Särndal 1992) so that the released rows match, in expectation, the DP mode
   histogram of every continuous column, the DP category distribution of every cell and the
   DP feature means of every cell. The server's strongly regularised linear model depends on
   the rows mainly through these — the features' spread and the first moments of the four
   cells set its weights on ``s``, on the features that differ between the groups and on
   those that predict ``y`` — and tilting by ``exp(θ_cᵀx)`` within cell ``c`` makes
   ``P(y | x, s)`` logistic-linear in ``x``, the server model's own form.

Speed: small networks, ghost clipping (no per-sample gradients in memory), Poisson batches of
6 % of the rows, three epochs, vectorised conditional sampling and calibration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from scipy import optimize, special
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from common import privacy
from common.errors import ConfigError, DataError
from common.schema import Column, Schema, TabularData

logger = logging.getLogger(__name__)

#: An integer column with at most this many values in its bounds gets one mode per value.
MAX_INTEGER_MODES = 16
#: The (s, y) cells in condition order; cell index ``2·s + y``.
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))
#: Starting points of the generator (see ``DPCTGANConfig.prior``).
PRIORS = ("copula", "none")


@dataclasses.dataclass(frozen=True)
class DPCTGANConfig:
    """Hyperparameters of :class:`DPCTGAN` (validated; defaults measured on Law School).

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
        Rows per discriminator pack (PacGAN); see :class:`PrivateCritic` for its privacy cost.
    max_grad_norm : float
        Per-pack gradient clipping bound ``C``.
    noise_dim : int
        Dimension of the generator's Gaussian input.
    generator_dims, discriminator_dims : tuple of int
        Hidden widths (residual blocks for the generator, LeakyReLU layers for the critic).
    lr_generator, lr_discriminator : float
        Adam step sizes (betas 0.5, 0.9 as in CTGAN). The generator's is small on purpose: at
        ε = 1 the critic's noisy signal, followed with a larger step, moves the generator away
        from its DP prior and worsens every fidelity measure (README, § Stage 2); with this
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


# --------------------------------------------------------------------------- representation


def integer_values(column: Column, bounds: tuple[float, float]) -> np.ndarray | None:
    """The integers inside ``bounds`` when ``column`` is an integer column with few of them."""
    values = np.arange(math.ceil(bounds[0]), math.floor(bounds[1]) + 1, dtype=np.float64)
    return values if column.integer and 2 <= len(values) <= MAX_INTEGER_MODES else None


#: An integer column with at most this many values gets one DP histogram bin per value.
MAX_INTEGER_BINS = 256


def histogram_edges(column: Column, bounds: tuple[float, float], fine_bins: int) -> np.ndarray:
    """Edges of a column's DP histogram: one bin per integer for an integer column with at most
    :data:`MAX_INTEGER_BINS` values (integer data piles up on popular values, e.g. 40 hours a
    week); for one with more, a unit bin at each bound (e.g. a capital gain of 0) and
    ``fine_bins − 1`` equal bins between; else ``fine_bins`` equal bins. (A bin's noise does
    not grow with the number of bins; spurious bins are thresholded away.)"""
    lo, hi = bounds
    values = np.arange(math.ceil(lo), math.floor(hi) + 1, dtype=np.float64)
    if column.integer and 2 <= len(values) <= MAX_INTEGER_BINS:
        return np.concatenate([values - 0.5, [values[-1] + 0.5]])
    if column.integer and hi - lo >= fine_bins:
        lo, hi = math.ceil(lo), math.floor(hi)
        return np.concatenate([[lo - 0.5], np.linspace(lo + 0.5, hi - 0.5, fine_bins - 1),
                               [hi + 0.5]])
    return np.linspace(lo, hi, fine_bins + 1)


def mode_edges(column: Column, bounds: tuple[float, float], fine_edges: np.ndarray,
               counts: np.ndarray, modes: int) -> np.ndarray:
    """Mode boundaries from a (noisy) fine histogram: per integer, or ``modes`` bins of about
    equal mass cut at fine-bin edges (equal widths when the histogram holds no mass)."""
    if integer_values(column, bounds) is not None:
        return fine_edges
    mass = np.maximum(counts, 0.0)
    if mass.sum() <= 0:
        return np.linspace(bounds[0], bounds[1], modes + 1)
    cum = np.concatenate([[0.0], np.cumsum(mass)]) / mass.sum()
    cuts = np.searchsorted(cum, np.linspace(0, 1, modes + 1)[1:-1])
    inner = np.unique(np.clip(cuts, 1, len(fine_edges) - 2))
    return np.concatenate([[fine_edges[0]], fine_edges[inner], [fine_edges[-1]]])


@dataclasses.dataclass(frozen=True)
class Marginal:
    """A continuous column's law from its DP histogram (post-processing): a point mass at each
    integer of a per-integer histogram, else uniform inside each fine bin."""

    edges: np.ndarray
    probs: np.ndarray  # > 0, sums to 1
    discrete: bool

    @classmethod
    def from_counts(cls, edges: np.ndarray, counts: np.ndarray, *, discrete: bool) -> Marginal:
        # + 1e-6: every bin keeps a sliver of mass, so the CDF is strictly increasing
        mass = np.maximum(np.asarray(counts, dtype=np.float64), 0.0) + 1e-6
        return cls(np.asarray(edges, dtype=np.float64), mass / mass.sum(), discrete)

    @property
    def cum(self) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(self.probs)])

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Mid-point CDF: ``P(X < x) + P(X = x)/2`` (discrete) or the CDF (continuous)."""
        if self.discrete:
            k = np.clip(np.searchsorted(self.edges, x, side="right") - 1, 0, len(self.probs) - 1)
            return self.cum[k] + 0.5 * self.probs[k]
        return np.interp(x, self.edges, self.cum)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Quantile function (inverse of :meth:`cdf` for the continuous part)."""
        if self.discrete:
            k = np.clip(np.searchsorted(self.cum[1:], u, side="left"), 0, len(self.probs) - 1)
            return 0.5 * (self.edges[k] + self.edges[k + 1])
        return np.interp(u, self.cum, self.edges)

    def normal_scores(self, x: np.ndarray) -> np.ndarray:
        """``Φ⁻¹(F(x))``: the column on the Gaussian-copula scale."""
        return special.ndtri(np.clip(self.cdf(x), 1e-6, 1 - 1e-6))


def nearest_correlation(matrix: np.ndarray, *, floor: float = 1e-2) -> np.ndarray:
    """A valid correlation matrix near a noisy symmetric one (eigenvalues clipped at ``floor``,
    then the diagonal rescaled to 1)."""
    sym = 0.5 * (matrix + matrix.T)
    d = np.sqrt(np.clip(np.diag(sym), 1e-3, None))
    corr = sym / np.outer(d, d)
    vals, vecs = np.linalg.eigh(corr)
    corr = (vecs * np.clip(vals, floor, None)) @ vecs.T
    d = np.sqrt(np.diag(corr))
    return corr / np.outer(d, d)


@dataclasses.dataclass(frozen=True)
class Span:
    """Where one feature sits in a generator row: ``[α, one-hot mode]`` for a continuous
    column (``1 + K`` entries), a one-hot block for a categorical one."""

    column: Column
    start: int
    width: int
    edges: np.ndarray | None = None  # continuous: K + 1 mode boundaries

    @property
    def continuous(self) -> bool:
        return self.edges is not None

    @property
    def centers(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def half(self) -> np.ndarray:
        return 0.5 * np.diff(self.edges)

    @property
    def logits(self) -> slice:
        """The one-hot block (modes or categories)."""
        return slice(self.start + 1 if self.continuous else self.start, self.start + self.width)


class TableTransformer:
    """Mode-specific normalisation with modes fixed from public or DP information.

    Parameters
    ----------
    schema : Schema
    edges : dict
        ``name -> K + 1`` mode boundaries for every continuous column; its first and last
        entries are the range values are clipped to.
    """

    def __init__(self, schema: Schema, edges: dict[str, np.ndarray]):
        self.schema = schema
        spans, start = [], 0
        for col in schema.features:
            if col.kind == "categorical":
                spans.append(Span(col, start, len(col.categories)))
                start += len(col.categories)
            else:
                e = np.asarray(edges[col.name], dtype=np.float64)
                spans.append(Span(col, start, len(e), e))
                start += len(e)
        self.spans = spans
        self.width = start

    def codes(self, features: pd.DataFrame) -> list[np.ndarray]:
        """Mode (continuous) or category (categorical) index of every value, per column."""
        out = []
        for sp in self.spans:
            values = features[sp.column.name]
            if sp.continuous:
                x = values.to_numpy(dtype=np.float64)
                out.append(np.clip(np.searchsorted(sp.edges, x, side="right") - 1, 0,
                                   len(sp.edges) - 2))
            else:
                idx = {c: i for i, c in enumerate(sp.column.categories)}
                out.append(values.map(idx).to_numpy(dtype=np.int64))
        return out

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        """Rows as an ``N × width`` float32 matrix (values clipped to the mode range first)."""
        n = len(features)
        out = np.zeros((n, self.width), dtype=np.float32)
        rows = np.arange(n)
        for sp, k in zip(self.spans, self.codes(features)):
            if sp.continuous:
                x = np.clip(features[sp.column.name].to_numpy(dtype=np.float64),
                            sp.edges[0], sp.edges[-1])
                out[:, sp.start] = np.clip((x - sp.centers[k]) / sp.half[k], -1.0, 1.0)
            out[rows, sp.logits.start + k] = 1.0
        return out

    def inverse(self, matrix: np.ndarray, *, round_integers: bool = False) -> pd.DataFrame:
        """Features in original units from a generated matrix (arg-max of each one-hot block)."""
        data = {}
        for sp in self.spans:
            k = matrix[:, sp.logits].argmax(axis=1)
            if not sp.continuous:
                data[sp.column.name] = np.asarray(sp.column.categories, dtype=object)[k]
                continue
            alpha = np.clip(matrix[:, sp.start], -1.0, 1.0)
            lo, hi = sp.edges[0], sp.edges[-1]
            if integer_values(sp.column, (lo + 0.5, hi - 0.5)) is not None:
                lo, hi = lo + 0.5, hi - 0.5  # per-integer modes: the bounds are the end values
            x = np.clip(sp.centers[k] + alpha * sp.half[k], lo, hi)
            if round_integers and sp.column.integer:
                x = np.clip(np.round(x), math.ceil(lo), math.floor(hi))
            data[sp.column.name] = x
        return pd.DataFrame(data, columns=self.schema.feature_names)

    def activate(self, raw: torch.Tensor, *, tau: float = 0.2, hard: bool = False) -> torch.Tensor:
        """Generator output → row: ``tanh`` on offsets, Gumbel-softmax on one-hot blocks."""
        parts = []
        for sp in self.spans:
            if sp.continuous:
                parts.append(torch.tanh(raw[:, sp.start:sp.start + 1]))
            parts.append(F.gumbel_softmax(raw[:, sp.logits], tau=tau, hard=hard))
        return torch.cat(parts, dim=1)


# --------------------------------------------------------------------------- networks


class _Residual(nn.Module):
    """CTGAN's generator block: ``[ReLU(BN(Wx)), x]``."""

    def __init__(self, i: int, o: int):
        super().__init__()
        self.fc, self.bn = nn.Linear(i, o), nn.BatchNorm1d(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(self.bn(self.fc(x))), x], dim=1)


class Generator(nn.Module):
    """CTGAN's generator (residual blocks, then a linear layer) as a refiner of a prior row.

    ``raw = prior + W·blocks([prior, noise, cond]) + b`` with ``W, b`` initialised at zero, so
    the untrained generator reproduces its prior (the DP copula, :meth:`DPCTGAN._prior`) and
    adversarial training learns corrections to it.
    """

    def __init__(self, input_dim: int, dims: Sequence[int], output_dim: int, *,
                 zero_init: bool = True):
        super().__init__()
        layers, d = [], input_dim
        for h in dims:
            layers.append(_Residual(d, h))
            d += h
        self.blocks = nn.Sequential(*layers)
        self.out = nn.Linear(d, output_dim)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, prior: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return prior + self.out(self.blocks(torch.cat([prior, inputs], 1)))


class Discriminator(nn.Module):
    """PacGAN critic: rows ``(B·pac) × d`` are scored in packs of ``pac`` consecutive rows."""

    def __init__(self, input_dim: int, dims: Sequence[int], pac: int):
        super().__init__()
        self.pac, self.input_dim = pac, input_dim
        layers, d = [], input_dim * pac
        for h in dims:
            layers += [nn.Linear(d, h), nn.LeakyReLU(0.2)]
            d = h
        layers.append(nn.Linear(d, 1))
        self.seq = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x.reshape(-1, self.pac * self.input_dim)).squeeze(1)


class PrivateCritic:
    r"""The discriminator and its DP-SGD optimizer, built from Opacus' parts.

    One :meth:`step` is one DP-SGD step on the per-pack losses ``ℓ_i = BCE(D(pack_i), t_i)``:

    .. math::

        g = \frac{1}{B_e}\Bigl(\sum_i \min\bigl(1, C/\lVert\nabla\ell_i\rVert\bigr)\,
            \nabla\ell_i + \mathcal N(0, \sigma^2 C^2 I)\Bigr)

    (``B_e``: expected number of packs). The norms ``‖∇ℓ_i‖`` come from ghost clipping (Li et
    al. 2022; Opacus' ``GradSampleModuleFastGradientClipping``: a linear layer's per-sample
    gradient is ``b_i a_iᵀ`` with norm ``‖b_i‖‖a_i‖``, so none is stored); a second backward
    pass of ``Σ_i c_i ℓ_i`` gives the clipped sum, and ``DPOptimizerFastGradientClipping`` adds
    the noise. Fake packs are clipped too; they carry no private information.

    Privacy unit. A real row belongs to one pack of a shuffled Poisson batch. With ``pac = 1``
    adding or removing a row adds or removes one clipped term: sensitivity ``C``. With
    ``pac > 1`` it can instead replace one member of one pack (the packs are re-formed), which
    moves one clipped term by up to ``2C``; the caller must then charge the accountant with
    ``σ/2`` (:class:`DPCTGAN` does).
    """

    def __init__(self, module: nn.Module, *, lr: float, noise_multiplier: float,
                 max_grad_norm: float, expected_batch_size: int,
                 generator: torch.Generator | None = None):
        self.module = GradSampleModuleFastGradientClipping(
            module, batch_first=True, loss_reduction="mean", max_grad_norm=max_grad_norm,
            use_ghost_clipping=True)
        self.optimizer = DPOptimizerFastGradientClipping(
            torch.optim.Adam(self.module.parameters(), lr=lr, betas=(0.5, 0.9)),
            noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size, loss_reduction="mean", generator=generator)
        self.criterion = DPLossFastGradientClipping(
            self.module, self.optimizer, nn.BCEWithLogitsLoss(reduction="mean"),
            loss_reduction="mean")

    def privatised_gradient(self, x: torch.Tensor, target: torch.Tensor) -> float:
        """Compute the noisy clipped gradient into ``p.grad`` without stepping; returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # The inputs need no gradient; Opacus' full backward hooks fire on outputs anyway.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss = self.criterion(self.module(x), target)
            loss.backward()
        self.optimizer.pre_step()
        return float(loss.item())

    def step(self, x: torch.Tensor, target: torch.Tensor) -> float:
        """One DP-SGD (Adam) step; returns the batch loss."""
        loss = self.privatised_gradient(x, target)
        self.optimizer.original_optimizer.step()
        return loss

    @contextlib.contextmanager
    def frozen(self):
        """Score rows for the generator's step: no per-sample hooks, no parameter gradients.
        Run the backward pass inside the block."""
        self.module.disable_hooks()
        params = list(self.module.parameters())
        for p in params:
            p.requires_grad_(False)
        try:
            yield self.module
        finally:
            for p in params:
                p.requires_grad_(True)
            self.module.enable_hooks()


# --------------------------------------------------------------------------- the generator


@contextlib.contextmanager
def _torch_state(threads: int | None, seed: int):
    """Own RNG stream and thread count for a fit or a sample, restored afterwards."""
    before = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


@dataclasses.dataclass
class Statistics:
    """Everything :class:`DPCTGAN` knows about its input besides the discriminator: DP
    releases (post-processed) and public metadata."""

    bounds: dict[str, tuple[float, float]]
    cell_counts: np.ndarray  # 4 noisy counts, clipped at 0
    mode_probs: dict[str, np.ndarray]  # continuous column -> DP mode probabilities
    category_tables: list[np.ndarray]  # per categorical column: 4 × k noisy counts (≥ 0)
    cell_means: np.ndarray | None  # 4 × n_continuous DP means of the scaled features
    edges: dict[str, np.ndarray]  # continuous column -> mode boundaries
    marginals: dict[str, Marginal]  # continuous column -> DP law
    correlation: np.ndarray  # Gaussian-copula correlation of the continuous columns (DP)
    ranges: dict[str, tuple[float, float]]  # continuous column -> DP 0.5 %–99.5 % quantiles


def scaled(features: pd.DataFrame, ranges: dict[str, tuple[float, float]]) -> np.ndarray:
    """Continuous columns clipped to ``ranges`` and mapped to [−1, 1] (``N × len(ranges)``)."""
    cols = []
    for name, (lo, hi) in ranges.items():
        x = np.clip(features[name].to_numpy(dtype=np.float64), lo, hi)
        cols.append((2.0 * x - (lo + hi)) / (hi - lo))
    return np.column_stack(cols) if cols else np.zeros((len(features), 0))


def quantile_range(marginal: Marginal, *, tail: float = 0.005) -> tuple[float, float]:
    """The ``[tail, 1 − tail]`` quantiles of a DP marginal (a non-empty interval)."""
    lo, hi = (float(v) for v in marginal.ppf(np.array([tail, 1.0 - tail])))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


class DPCTGAN:
    """DP-CTGAN: :meth:`fit` spends ``(ε, δ)`` on its rows; :meth:`sample` is post-processing."""

    def __init__(self, config: DPCTGANConfig):
        self.config = config
        self.ledger: privacy.PrivacyLedger | None = None
        self.stats: Statistics | None = None
        self._sgd: dict = {}
        self._fitted = False

    # -- statistics ------------------------------------------------------------------------

    def _spend(self, name: str) -> float:
        return self.ledger.noise_for(name, privacy.BudgetSplit(self.config.budget).share(name))

    def _statistics(self, data: TabularData, cell: np.ndarray,
                    rng: np.random.Generator) -> Statistics:
        """Every DP release except DP-SGD, recorded in the ledger."""
        cfg = self.config
        schema = data.schema
        cont = schema.continuous
        bounds = {c.name: c.bounds for c in cont if c.bounds is not None}
        missing = [c for c in cont if c.bounds is None]
        if missing:
            sigma = self._spend("bounds")
            m = len(missing)  # m histograms of sensitivity 1 each: one mechanism, noise σ√m
            for col in missing:
                values = data.features[col.name].to_numpy(dtype=np.float64)
                bounds[col.name] = privacy.dp_bounds(
                    values, noise_multiplier=sigma * math.sqrt(m), rng=rng)
                logger.info("dp-ctgan: column %r has no public bounds; DP range %s",
                            col.name, bounds[col.name])
            self.ledger.record(privacy.Mechanism("bounds", sigma))

        sigma = self._spend("cell counts")
        counts = np.maximum(privacy.noisy_counts(cell, 4, noise_multiplier=sigma, rng=rng), 0.0)
        self.ledger.record(privacy.Mechanism("cell counts", sigma))
        if counts.sum() < 1:
            raise DataError("the noisy row count is below 1: too few rows for this ε.")

        edges, mode_probs, marginals = {}, {}, {}
        if cont:
            sigma = self._spend("marginals")
            fine = [histogram_edges(c, bounds[c.name], cfg.fine_bins) for c in cont]
            hists = privacy.noisy_histograms(
                [data.features[c.name].to_numpy(dtype=np.float64) for c in cont], fine,
                noise_multiplier=sigma, rng=rng)
            self.ledger.record(privacy.Mechanism("marginals", sigma))
            noise = sigma * math.sqrt(len(cont))  # each bin's noise std (see noisy_histograms)
            for col, e, h in zip(cont, fine, hists):
                h = privacy.project_counts(h, counts.sum(), threshold=3.0 * noise)
                edges[col.name] = mode_edges(col, bounds[col.name], e, h, cfg.modes)
                marginals[col.name] = Marginal.from_counts(
                    e, h, discrete=integer_values(col, bounds[col.name]) is not None)
                per_mode = np.add.reduceat(marginals[col.name].probs,
                                           np.searchsorted(e, edges[col.name][:-1]))
                mode_probs[col.name] = per_mode / per_mode.sum()
        correlation = np.eye(len(cont))
        if len(cont) >= 2 and cfg.prior == "copula":
            # Σ_i u_i u_iᵀ of the normal scores, rows clipped to ‖u‖ ≤ C: the upper triangle
            # has L2 sensitivity ‖u uᵀ‖_F = ‖u‖² ≤ C².
            sigma = self._spend("correlations")
            u = np.column_stack([marginals[c.name].normal_scores(
                data.features[c.name].to_numpy(dtype=np.float64)) for c in cont])
            second = privacy.noisy_second_moments(
                u, clip_norm=cfg.copula_clip * math.sqrt(len(cont)), noise_multiplier=sigma,
                rng=rng)
            self.ledger.record(privacy.Mechanism("correlations", sigma))
            correlation = nearest_correlation(second / counts.sum())

        tables = []
        cats = schema.categorical
        if cats:
            sigma = self._spend("category counts")
            m = len(cats)  # one table per column, sensitivity 1 each: noise σ√m
            for col in cats:
                idx = {c: i for i, c in enumerate(col.categories)}
                codes = data.features[col.name].map(idx).to_numpy(dtype=np.int64)
                k = len(col.categories)
                noisy = privacy.noisy_counts(cell * k + codes, 4 * k,
                                             noise_multiplier=sigma * math.sqrt(m), rng=rng)
                floor = 3 * sigma * math.sqrt(m)
                table = np.stack([privacy.project_counts(row, total, threshold=floor)
                                  for row, total in zip(noisy.reshape(4, k), counts)])
                tables.append(table)
            self.ledger.record(privacy.Mechanism("category counts", sigma))

        self.transformer = TableTransformer(schema, edges)
        # Moments are taken on the DP 0.5 %–99.5 % range of each column (post-processing of
        # the marginals), much tighter than wide public bounds: less noise for the same budget.
        ranges = {c.name: quantile_range(marginals[c.name]) for c in cont}
        means = None
        if cfg.calibrate and cont:
            sigma = self._spend("moments")
            x = scaled(data.features, ranges)
            clip = math.sqrt(x.shape[1])  # every entry is in [−1, 1]: no row is ever clipped
            sums = privacy.noisy_sums(x, cell, 4, clip_norm=clip, noise_multiplier=sigma, rng=rng)
            self.ledger.record(privacy.Mechanism("moments", sigma))
            means = np.clip(sums / np.maximum(counts, 1.0)[:, None], -1.0, 1.0)
        return Statistics(bounds, counts, mode_probs, tables, means, edges, marginals,
                          correlation, ranges)

    # -- fit ------------------------------------------------------------------------------

    def fit(self, data: TabularData) -> DPCTGAN:
        """Spend the budget on ``data``: DP statistics, then DP-SGD on the discriminator."""
        cfg = self.config
        privacy.check_budget(epsilon=cfg.epsilon, delta=cfg.delta, n=len(data))
        start = time.perf_counter()
        rng = np.random.default_rng(cfg.seed)
        self.schema = data.schema
        self.ledger = privacy.PrivacyLedger(epsilon=cfg.epsilon, delta=cfg.delta)
        cell = 2 * data.s.astype(np.int64) + data.y.astype(np.int64)
        self.stats = self._statistics(data, cell, rng)

        sample_rate = cfg.sample_rate
        steps = max(1, int(round(cfg.epochs / sample_rate)))
        sigma_acc = self.ledger.calibrate("discriminator DP-SGD", sample_rate=sample_rate,
                                          steps=steps)
        sensitivity_factor = 1.0 if cfg.pac == 1 else 2.0  # see PrivateCritic
        self.noise_multiplier = sigma_acc * sensitivity_factor
        self.ledger.record(privacy.Mechanism("discriminator DP-SGD", sigma_acc, sample_rate, steps))
        self._sgd = {"noise_multiplier": self.noise_multiplier, "sample_rate": sample_rate,
                     "steps": steps, "epochs": steps * sample_rate,
                     "max_grad_norm": cfg.max_grad_norm, "pac": cfg.pac,
                     "sensitivity": sensitivity_factor * cfg.max_grad_norm}
        with _torch_state(cfg.threads, cfg.seed):
            self._train(data, cell, sample_rate, steps)
        self.seconds = time.perf_counter() - start
        self._fitted = True
        logger.info("dp-ctgan: %d rows, ε = %.3f (target %.3f), δ = %.2e, σ = %.3f, q = %.4f, "
                    "%d steps in %.2fs", len(data), self.ledger.epsilon(), cfg.epsilon,
                    cfg.delta, self.noise_multiplier, sample_rate, steps, self.seconds)
        return self

    def _build_networks(self) -> None:
        cfg, tf, st = self.config, self.transformer, self.stats
        cats = self.schema.categorical
        self._cat_spans = [sp for sp in tf.spans if not sp.continuous]
        self._cat_offsets = torch.tensor(
            np.cumsum([0] + [len(c.categories) for c in cats])[:-1], dtype=torch.long)
        self._cat_probs = []
        for table in st.category_tables:
            t = torch.from_numpy(table + 1e-9)
            self._cat_probs.append(t / t.sum(1, keepdim=True))
        self.cond_dim = 4 + sum(len(c.categories) for c in cats)
        self._cell_probs = torch.from_numpy(st.cell_counts / st.cell_counts.sum())
        self.generator = Generator(tf.width + cfg.noise_dim + self.cond_dim, cfg.generator_dims,
                                   tf.width, zero_init=cfg.prior != "none")
        cont = [sp for sp in tf.spans if sp.continuous]
        self._copula = np.linalg.cholesky(st.correlation) if cont else np.zeros((0, 0))
        self._cat_log_probs = [torch.log(p + 1e-6) for p in self._cat_probs]

    def _train(self, data: TabularData, cell: np.ndarray, sample_rate: float, steps: int) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        self._build_networks()
        real = torch.from_numpy(self.transformer.transform(data.features))
        real_cells = torch.from_numpy(cell)
        cats = self.schema.categorical
        real_codes = None
        if cats:
            real_codes = torch.from_numpy(np.column_stack([
                data.features[c.name].map({v: i for i, v in enumerate(c.categories)}).to_numpy()
                for c in cats]).astype(np.int64))
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_generator,
                                 betas=(0.5, 0.9))
        n_hat = float(self.stats.cell_counts.sum())
        expected_packs = max(1, int(round(sample_rate * n_hat / cfg.pac)))
        critic = PrivateCritic(
            Discriminator(self.transformer.width + self.cond_dim, cfg.discriminator_dims, cfg.pac),
            lr=cfg.lr_discriminator, noise_multiplier=self.noise_multiplier,
            max_grad_norm=cfg.max_grad_norm, expected_batch_size=2 * expected_packs,
            generator=gen)
        self.critic = critic
        n_fake = expected_packs * cfg.pac
        fake_target = torch.zeros(expected_packs)
        n = len(real)
        steps_per_epoch = max(1, int(round(1.0 / sample_rate)))
        bar = tqdm(total=math.ceil(steps / steps_per_epoch), desc="dp-ctgan epochs",
                   disable=None if cfg.progress is None else not cfg.progress, leave=False)
        for step in range(steps):
            # Critic: one DP-SGD step on a Poisson batch of real rows, shuffled into packs (a
            # remainder of fewer than pac rows is dropped), and as many fake packs as expected.
            idx = (torch.rand(n, generator=gen) < sample_rate).nonzero().squeeze(1)
            idx = idx[torch.randperm(len(idx), generator=gen)]
            n_real_packs = len(idx) // cfg.pac
            idx = idx[: n_real_packs * cfg.pac]
            cond_r, _, _ = self._conditions(real_cells[idx],
                                            None if real_codes is None else real_codes[idx], gen)
            with torch.no_grad():
                fake, cond_f, _, _ = self._generate(n_fake, gen, hard=False)
            x = torch.cat([torch.cat([real[idx], cond_r], 1), torch.cat([fake, cond_f], 1)])
            loss_d = critic.step(x, torch.cat([torch.ones(n_real_packs), fake_target]))
            # Generator: sees only the critic (post-processing).
            (rows, raw), cond_f, column, chosen = self._generate(n_fake, gen, hard=False, raw=True)
            with critic.frozen() as disc:
                loss_g = F.softplus(-disc(torch.cat([rows, cond_f], 1))).mean()
                loss_g = loss_g + self._condition_loss(raw, column, chosen)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
            opt_g.step()
            if (step + 1) % steps_per_epoch == 0 or step + 1 == steps:
                bar.update(1)
                bar.set_postfix(loss_d=f"{loss_d:.3f}", loss_g=f"{loss_g.item():.3f}")
        bar.close()
        self.generator.eval()

    # -- conditional sampling --------------------------------------------------------------

    def _conditions(self, cells: torch.Tensor, cat_codes: torch.Tensor | None,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Condition vectors ``[cell one-hot, one category of one categorical column]``.

        ``cat_codes`` (``B × m``) are the rows' own categories (real rows); None draws them
        from the noisy ``cell × category`` tables (fake rows). Returns the conditions, the
        conditioned column of each row and its category.
        """
        b = len(cells)
        cond = torch.zeros(b, self.cond_dim)
        cond[torch.arange(b), cells] = 1.0
        m = len(self._cat_probs)
        if m == 0:
            empty = torch.zeros(b, dtype=torch.long)
            return cond, empty, empty
        column = torch.randint(0, m, (b,), generator=gen)
        if cat_codes is not None:
            chosen = cat_codes[torch.arange(b), column]
        else:
            chosen = torch.zeros(b, dtype=torch.long)
            for j in range(m):
                rows = (column == j).nonzero().squeeze(1)
                if len(rows):
                    probs = self._cat_probs[j][cells[rows]]
                    chosen[rows] = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        cond[torch.arange(b), 4 + self._cat_offsets[column] + chosen] = 1.0
        return cond, column, chosen

    def _prior(self, cells: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Raw prior rows (the generator's starting point), all from DP statistics.

        Continuous columns: a Gaussian copula, ``u = L z`` with ``LLᵀ`` the DP correlation and
        ``x_j = F_j⁻¹(Φ(u_j))`` with ``F_j`` the DP marginal, encoded as ``atanh(0.95 α)`` and
        mode logits ``κ·one-hot`` (``κ = 8``: the Gumbel draw keeps the copula's mode but for
        a 10⁻³ chance). Categorical columns: logits ``log P̂(category | cell)``.
        """
        tf, st = self.transformer, self.stats
        n = len(cells)
        prior = torch.zeros(n, tf.width)
        if self.config.prior == "none":
            return prior
        cont = [sp for sp in tf.spans if sp.continuous]
        if cont:
            z = torch.randn(n, len(cont), generator=gen, dtype=torch.float64).numpy()
            u = special.ndtr(z @ self._copula.T)
            for j, sp in enumerate(cont):
                x = st.marginals[sp.column.name].ppf(u[:, j])
                k = np.clip(np.searchsorted(sp.edges, x, side="right") - 1, 0, len(sp.edges) - 2)
                alpha = np.clip((x - sp.centers[k]) / sp.half[k], -1.0, 1.0)
                prior[:, sp.start] = torch.from_numpy(np.arctanh(0.95 * alpha)).float()
                prior[torch.arange(n), sp.logits.start + torch.from_numpy(k)] = 8.0
        for sp, log_p in zip(self._cat_spans, self._cat_log_probs):
            prior[:, sp.logits] = log_p[cells].float()
        return prior

    def _generate(self, n: int, gen: torch.Generator, *, hard: bool, raw: bool = False,
                  cells: torch.Tensor | None = None):
        if cells is None:
            cells = torch.multinomial(self._cell_probs, n, replacement=True, generator=gen)
        cond, column, chosen = self._conditions(cells, None, gen)
        noise = torch.randn(n, self.config.noise_dim, generator=gen)
        out = self.generator(self._prior(cells, gen), torch.cat([noise, cond], 1))
        rows = self.transformer.activate(out, hard=hard)
        return ((rows, out) if raw else rows), cond, column, chosen

    def _condition_loss(self, raw: torch.Tensor, column: torch.Tensor,
                        chosen: torch.Tensor) -> torch.Tensor:
        """CTGAN's conditional loss: cross-entropy of the conditioned column's logits."""
        loss = raw.new_zeros(())
        for j, sp in enumerate(self._cat_spans):
            rows = (column == j).nonzero().squeeze(1)
            if len(rows):
                loss = loss + F.cross_entropy(raw[rows, sp.logits], chosen[rows], reduction="sum")
        return loss / len(raw)

    # -- sample ---------------------------------------------------------------------------

    def sample(self, n: int, *, seed: int | None = None) -> TabularData:
        """``n`` rows whose ``(s, y)`` cells follow the noisy counts (largest remainder)."""
        if not self._fitted:
            raise ConfigError("dp-ctgan: call fit() before sample().")
        if not (isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1):
            raise ConfigError(f"dp-ctgan: the number of rows to sample must be ≥ 1, got {n!r}.")
        cfg = self.config
        seed = cfg.seed + 1 if seed is None else seed
        alloc = allocate(self.stats.cell_counts, int(n))
        factor = cfg.pool if cfg.calibrate else 1
        with _torch_state(cfg.threads, seed), torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            cells = torch.cat([torch.full((int(k) * factor,), c, dtype=torch.long)
                               for c, k in enumerate(alloc)])
            rows, _, _, _ = self._generate(len(cells), gen, hard=True, cells=cells)
            matrix = rows.numpy()
        features = self.transformer.inverse(matrix, round_integers=cfg.round_integers)
        cells_np = cells.numpy()
        if cfg.calibrate:
            weights = self.calibration_weights(features, cells_np)
            keep = systematic_sample(weights, cells_np, alloc, np.random.default_rng(seed))
            features = features.iloc[keep].reset_index(drop=True)
            cells_np = cells_np[keep]
        return TabularData(schema=self.schema, features=features,
                           s=(cells_np // 2).astype(np.int8), y=(cells_np % 2).astype(np.int8))

    def calibration_weights(self, features: pd.DataFrame, cells: np.ndarray) -> np.ndarray:
        """Maximum-entropy weights of candidate rows (each cell's weights sum to 1) matching the
        DP targets: per cell, the feature means and category distributions; over all rows
        (cells weighted by their noisy shares), the mode distribution of every column."""
        st, tf = self.stats, self.transformer
        codes = tf.codes(features)
        A = scaled(features, st.ranges) if st.cell_means is not None else np.zeros((len(cells), 0))
        T = st.cell_means if st.cell_means is not None else np.zeros((4, 0))
        local, local_targets, glob, glob_targets = [], [], [], []
        offset_l = offset_g = 0
        j = 0
        for sp, k in zip(tf.spans, codes):
            if sp.continuous:
                glob.append(offset_g + k)
                glob_targets.append(st.mode_probs[sp.column.name])
                offset_g += len(st.mode_probs[sp.column.name])
            else:
                table = st.category_tables[j]
                j += 1
                rows = table.sum(1, keepdims=True)
                local.append(offset_l + k)
                local_targets.append(np.where(rows > 0, table / np.maximum(rows, 1e-12),
                                              1.0 / table.shape[1]))
                offset_l += table.shape[1]
        share = st.cell_counts / st.cell_counts.sum()
        return tilt(A, T, cells, share,
                    local_codes=np.column_stack(local) if local else None,
                    local_targets=np.column_stack(local_targets) if local_targets else None,
                    codes=np.column_stack(glob) if glob else None,
                    t=np.concatenate(glob_targets) if glob_targets else None)

    def noisy_rows(self) -> int:
        """The DP estimate of the input's row count: the sum of the noisy cell counts (at least
        1). Post-processing of a DP statistic, so sizing a release by it spends no budget and,
        unlike the true count, does not disclose whether one more row was in the input."""
        if not self._fitted:
            raise ConfigError("dp-ctgan: call fit() before noisy_rows().")
        return max(1, int(round(float(self.stats.cell_counts.sum()))))

    def privacy_spent(self) -> dict:
        """The composed ``(ε, δ)`` of the fit and how it was spent.

        Keys: ``epsilon``, ``delta`` (what the ledger composed), ``accountant`` ("rdp"),
        ``rdp_order``, ``target_epsilon``; DP-SGD's ``noise_multiplier`` (as the optimizer
        uses it), ``sample_rate``, ``steps``, ``epochs``, ``max_grad_norm``, ``pac``,
        ``sensitivity``; ``budget_split``: per mechanism its noise multiplier, sample rate,
        steps, zCDP share and stand-alone ε.
        """
        if self.ledger is None or not self._fitted:
            raise ConfigError("dp-ctgan: nothing spent yet; call fit() first.")
        return {**self.ledger.report(), **self._sgd, "generator": "dp-ctgan"}


def tilt(A: np.ndarray, T: np.ndarray, cells: np.ndarray, share: np.ndarray, *,
         local_codes: np.ndarray | None = None, local_targets: np.ndarray | None = None,
         codes: np.ndarray | None = None, t: np.ndarray | None = None,
         ridge: float = 1e-3, max_iter: int = 300) -> np.ndarray:
    r"""Exponential tilting of candidate rows toward per-cell and pooled moment targets.

    Row ``j`` of cell ``c(j)`` has dense features ``a_j`` (rows of ``A``) with per-cell
    targets ``T_c``; one-hot indicators ``h_j`` given by ``local_codes`` (``n × m`` indices: a 1
    at each) with per-cell targets ``local_targets[c]``; and one-hot indicators ``b_j`` given by
    ``codes`` with pooled targets ``t``. Weights
    ``w_j ∝ exp(θ_{c(j)}ᵀ a_j + φ_{c(j)}ᵀ h_j + λᵀ b_j)``, normalised within each cell, with
    ``θ, φ, λ`` minimising the convex dual

    .. math::

        L = \sum_c π_c \Bigl[\log \sum_{j \in c} e^{θ_cᵀ a_j + φ_cᵀ h_j + λᵀ b_j}
            − θ_cᵀ T_c − φ_cᵀ H_c\Bigr] − λᵀ t
            + \frac{r}{2}(\lVert θ\rVert^2 + \lVert φ\rVert^2 + \lVert λ\rVert^2),

    whose stationarity conditions are ``E_w[a | c] = T_c``, ``E_w[h | c] = H_c`` and
    ``Σ_c π_c E_w[b | c] = t``: the weighted candidates match the targets, and among all such
    weights these are the closest to uniform in Kullback–Leibler divergence. The ridge ``r``
    keeps the dual bounded when the (noisy) targets are not attainable; the match is then as
    close as it allows. One-hot constraints are index gathers and weighted bincounts.
    """
    n, p = len(cells), A.shape[1]
    lc = np.zeros((n, 0), dtype=np.int64) if local_codes is None else np.asarray(local_codes)
    gc = np.zeros((n, 0), dtype=np.int64) if codes is None else np.asarray(codes)
    H = np.zeros((4, 0)) if local_targets is None else np.asarray(local_targets)
    t = np.zeros(0) if t is None else np.asarray(t)
    ql, qg = H.shape[1], len(t)
    ml, mg = lc.shape[1], gc.shape[1]
    blocks = []
    for c in range(4):
        rows = np.flatnonzero(cells == c)
        if len(rows) and share[c] > 0:
            blocks.append((c, rows, np.ascontiguousarray(A[rows]), lc[rows], gc[rows]))
    size = 4 * p + 4 * ql + qg

    def unpack(z):
        return (z[:4 * p].reshape(4, p), z[4 * p:4 * (p + ql)].reshape(4, ql), z[4 * (p + ql):])

    def logits(theta, phi, lam, c, a_c, lc_c, gc_c):
        f = a_c @ theta[c] if p else np.zeros(len(a_c))
        if ql:
            f = f + phi[c][lc_c].sum(axis=1)
        if qg:
            f = f + lam[gc_c].sum(axis=1)
        return f

    def value_grad(z):
        theta, phi, lam = unpack(z)
        value = 0.5 * ridge * float(z @ z) - float(lam @ t)
        g_theta, g_phi, g_lam = ridge * theta, ridge * phi, ridge * lam - t
        for c, _, a_c, lc_c, gc_c in blocks:
            f = logits(theta, phi, lam, c, a_c, lc_c, gc_c)
            top = f.max()
            e = np.exp(f - top)
            total = e.sum()
            w = e / total
            value += share[c] * (top + math.log(total) - float(theta[c] @ T[c])
                                 - float(phi[c] @ H[c]))
            if p:
                g_theta[c] += share[c] * (w @ a_c - T[c])
            if ql:
                g_phi[c] += share[c] * (np.bincount(lc_c.ravel(), weights=np.repeat(w, ml),
                                                    minlength=ql) - H[c])
            if qg:
                g_lam += share[c] * np.bincount(gc_c.ravel(), weights=np.repeat(w, mg),
                                                minlength=qg)
        return value, np.concatenate([g_theta.ravel(), g_phi.ravel(), g_lam])

    z = np.zeros(size)
    if size:
        z = optimize.minimize(value_grad, z, jac=True, method="L-BFGS-B",
                              options={"maxiter": max_iter, "gtol": 1e-7}).x
    theta, phi, lam = unpack(z)
    weights = np.zeros(n)
    for c, rows, a_c, lc_c, gc_c in blocks:
        f = logits(theta, phi, lam, c, a_c, lc_c, gc_c)
        e = np.exp(f - f.max())
        weights[rows] = e / e.sum()
    return weights


def systematic_sample(weights: np.ndarray, cells: np.ndarray, alloc: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Per cell, ``alloc[c]`` candidates by systematic PPS sampling: candidate ``j`` is drawn
    ``⌊k w_j⌋`` or ``⌈k w_j⌉`` times, ``k w_j`` in expectation (``w`` sums to 1 per cell)."""
    keep = []
    for c, k in enumerate(alloc):
        if k == 0:
            continue
        rows = rng.permutation(np.flatnonzero(cells == c))
        cum = np.cumsum(weights[rows]) * k / weights[rows].sum()
        points = rng.random() + np.arange(k)
        keep.append(rows[np.minimum(np.searchsorted(cum, points, side="right"), len(rows) - 1)])
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` rows over cells in proportion to (noisy, non-negative) ``counts``: largest
    remainder, and at least one row for every cell with a count ≥ 1 when ``n`` allows."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    if counts.sum() <= 0:
        raise DataError("cannot allocate rows: every noisy cell count is 0.")
    quota = n * counts / counts.sum()
    alloc = np.floor(quota).astype(np.int64)
    positive = counts >= 1
    if n >= positive.sum():
        alloc[positive & (alloc == 0)] = 1
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while alloc.sum() < n:
        alloc[order[i % len(order)]] += 1
        i += 1
    while alloc.sum() > n:
        j = int(np.argmax(np.where(alloc > 1, alloc - quota, -np.inf)))
        alloc[j] -= 1
    return alloc
