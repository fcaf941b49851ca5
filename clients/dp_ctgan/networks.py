"""The networks of DP-CTGAN: CTGAN's residual generator, a PacGAN critic and its DP-SGD step."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence

import torch
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from torch import nn
from torch.nn import functional as F


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
    the untrained generator reproduces its prior (the DP copula,
    :meth:`~clients.dp_ctgan.conditioning.Conditioning.prior`) and adversarial training learns
    corrections to it.
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
    ``σ/2`` (:class:`~clients.dp_ctgan.DPCTGAN` does).
    """

    def __init__(self, module: nn.Module, *, lr: float, noise_multiplier: float,
                 max_grad_norm: float, expected_batch_size: int,
                 generator: torch.Generator | None = None, secure_mode: bool = False):
        self.module = GradSampleModuleFastGradientClipping(
            module, batch_first=True, loss_reduction="mean", max_grad_norm=max_grad_norm,
            use_ghost_clipping=True)
        self.optimizer = DPOptimizerFastGradientClipping(
            torch.optim.Adam(self.module.parameters(), lr=lr, betas=(0.5, 0.9)),
            noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size, loss_reduction="mean", generator=generator,
            secure_mode=secure_mode)
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


