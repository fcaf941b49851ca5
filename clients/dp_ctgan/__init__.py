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
   DP Gaussian copula (:meth:`Conditioning.prior`): its last layer starts at zero, so it starts as
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

Modules, one concern each: :mod:`~clients.dp_ctgan.config` (hyperparameters),
:mod:`~clients.dp_ctgan.representation` (step 2 and the DP marginals),
:mod:`~clients.dp_ctgan.statistics` (step 1), :mod:`~clients.dp_ctgan.networks` (generator,
critic and its DP-SGD step), :mod:`~clients.dp_ctgan.conditioning` (conditions and the DP
prior), :mod:`~clients.dp_ctgan.calibration` (step 4) and :mod:`~clients.dp_ctgan.model`
(:class:`DPCTGAN`: fit, train, sample).
"""

from clients.dp_ctgan.config import CELLS, PRIORS, DPCTGANConfig
from clients.dp_ctgan.model import DPCTGAN

#: The package's interface; the parts live in the submodules named above.
__all__ = ["CELLS", "DPCTGAN", "PRIORS", "DPCTGANConfig"]
