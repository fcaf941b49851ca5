r"""Fair4Free: a fair VAE teacher, a data-free student, and rows from the teacher's decoder.

Sikder, de Leng & Heintz, "Fair4Free: Generating High-fidelity Fair Synthetic Samples using
Data Free Distillation" (2024). Three steps (the paper's Algorithms 1 and 2):

1. **Teacher** (:meth:`Fair4Free._fit_teacher`): a VAE with encoder ``E_φ(x, s) → q(z | x, s)``
   and decoder ``D_θ(z, s) → x'`` on the client's rows, ``x`` holding every feature and the
   label. Its loss is the negative ELBO plus ``β·V²(z, s)``: the squared distance correlation
   (Székely, Rizzo & Bakirov, 2007) between a batch's latent codes and the sensitive attribute,
   the FairDisco penalty that makes the representation independent of ``s``.
2. **Student** (:meth:`Fair4Free._fit_student`): a smaller network ``E'_ψ(n)``, ``n ~ N(0, I)``,
   that never sees a row: it is trained to match the teacher's fair codes ``z = E_φ(x, s)`` with
   the paper's loss, an L1 distillation term plus the KL divergence of its output to the prior.
3. **Rows** (:meth:`Fair4Free.sample`): ``x̂ = D_θ(E'_ψ(n), s)`` with ``s`` drawn from the
   client's group shares; continuous columns are the decoder's means, categories and labels are
   drawn from its probabilities.

*Departure.* The student's codes and the teacher's are independent draws, so the L1 term of
eq. 2 is taken between the two batches sorted per latent dimension (the 1-D Wasserstein-1
distance per dimension): paired at random, its minimiser is every code at the teacher's median.

Fair4Free is not differentially private: its rows are a function of the real rows. Chained
with the DP generator (``fair-then-private``) the guarantee covers its output only.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from torch import nn

from clients.row_codec import RowCodec
from common.errors import ConfigError, DataError
from common.schema import TabularData

logger = logging.getLogger(__name__)


def distance_correlation_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The squared sample distance correlation ``dCor²(a, b)`` of two batches of rows
    (``(n, p)`` and ``(n, q)``): ``dCov²(a, b) / sqrt(dVar²(a)·dVar²(b))`` from the
    double-centred Euclidean distance matrices; 0 when either batch is constant."""
    def centred(x: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")  # exact zeros
        return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()

    A, B = centred(a), centred(b)
    dcov = (A * B).mean()
    dvar = (A * A).mean() * (B * B).mean()
    if dvar <= 0:
        return dcov * 0.0
    return dcov / dvar.sqrt()


@dataclasses.dataclass(frozen=True)
class Fair4FreeConfig:
    """Options of :class:`Fair4Free`.

    beta : the distance-correlation weight β (the paper: 0 … 9).
    latent_dim : size of the fair representation ``z``.
    teacher_hidden, student_hidden : hidden widths (the student's smaller).
    teacher_epochs, student_epochs : passes over the rows (the student's: over the teacher's
        codes, which it never reads row by row).
    batch_size, lr : minibatch size and Adam step size of both.
    keep_s : a row keeps the ``s`` it was decoded with; by default (False) the decoder's ``s``
        and the row's are independent draws from the group shares, so that, as in the paper's
        ``x̂ = D_θ(E'_ψ(n))``, nothing of a row's features and label comes from its own ``s``.
    """

    beta: float = 1.0
    latent_dim: int = 8
    teacher_hidden: tuple[int, ...] = (128, 128)
    student_hidden: tuple[int, ...] = (32, 32)
    teacher_epochs: int = 60
    student_epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    keep_s: bool = False

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ConfigError(f"fair4free: beta = {self.beta} must be ≥ 0.")
        for name in ("latent_dim", "teacher_epochs", "student_epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"fair4free: {name} = {getattr(self, name)} must be ≥ 1.")
        if not self.lr > 0:
            raise ConfigError(f"fair4free: lr = {self.lr} must be > 0.")
        if any(w < 1 for w in (*self.teacher_hidden, *self.student_hidden)):
            raise ConfigError("fair4free: hidden widths must be ≥ 1.")


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class Fair4Free:
    """Fit (:meth:`fit`: teacher, then student) and sample rows (:meth:`sample`)."""

    def __init__(self, config: Fair4FreeConfig, *, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.history: dict[str, list[float]] = {"teacher": [], "dcor": [], "student": []}

    def fit(self, data: TabularData) -> Fair4Free:
        if len(data) < 2:
            raise DataError("fair4free: needs at least 2 rows to train on.")
        torch.manual_seed(self.seed)
        self.codec = RowCodec.fit(data)
        self.s_share = float(np.mean(data.s))
        x = torch.tensor(self.codec.encode(data), dtype=torch.float32)
        s = torch.tensor(data.s, dtype=torch.float32)[:, None]
        self._fit_teacher(x, s)
        self._fit_student(x, s)
        return self

    def _batches(self, n: int):
        order = torch.randperm(n)
        size = min(self.config.batch_size, n)
        for i in range(0, n - size + 1, size):  # whole batches: dCor needs a few rows
            yield order[i:i + size]

    def _fit_teacher(self, x: torch.Tensor, s: torch.Tensor) -> None:
        cfg, k = self.config, self.config.latent_dim
        self.encoder = _mlp([x.shape[1] + 1, *cfg.teacher_hidden, 2 * k])
        self.decoder = _mlp([k + 1, *reversed(cfg.teacher_hidden), x.shape[1]])
        opt = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()],
                               lr=cfg.lr)
        for _ in range(cfg.teacher_epochs):
            total = dc = 0.0
            for idx in self._batches(len(x)):
                xb, sb = x[idx], s[idx]
                mu, logvar = self.encoder(torch.cat([xb, sb], 1)).chunk(2, dim=1)
                z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
                recon = self.codec.loss(self.decoder(torch.cat([z, sb], 1)), xb).mean()
                kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(dim=1).mean()
                dcor = distance_correlation_sq(z, sb)
                loss = recon + kl + cfg.beta * dcor
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, dc = total + float(loss.detach()), dc + float(dcor.detach())
            self.history["teacher"].append(total)
            self.history["dcor"].append(dc)

    @torch.no_grad()
    def codes(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The teacher's fair codes ``z ~ q(z | x, s)``."""
        mu, logvar = self.encoder(torch.cat([x, s], 1)).chunk(2, dim=1)
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    def _fit_student(self, x: torch.Tensor, s: torch.Tensor) -> None:
        cfg, k = self.config, self.config.latent_dim
        self.student = _mlp([k, *cfg.student_hidden, k])
        opt = torch.optim.Adam(self.student.parameters(), lr=cfg.lr)
        for _ in range(cfg.student_epochs):
            total = 0.0
            for idx in self._batches(len(x)):
                z = self.codes(x[idx], s[idx])  # the teacher's output: the student sees no row
                z_student = self.student(torch.randn(len(idx), k))
                l1 = (torch.sort(z_student, dim=0).values
                      - torch.sort(z, dim=0).values).abs().sum(dim=1).mean()
                mu, var = z_student.mean(dim=0), z_student.var(dim=0) + 1e-6
                kl = 0.5 * (mu ** 2 + var - 1 - var.log()).sum()
                loss = l1 + kl
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
            self.history["student"].append(total)

    @torch.no_grad()
    def sample(self, n: int, *, seed: int | None = None) -> TabularData:
        """``n`` rows ``D_θ(E'_ψ(noise), s)``, ``s`` drawn from the group shares."""
        if not hasattr(self, "student"):
            raise RuntimeError("fair4free: sample() before fit().")
        gen = torch.Generator().manual_seed(self.seed + 1 if seed is None else seed)
        rng = np.random.default_rng(self.seed + 1 if seed is None else seed)
        z = self.student(torch.randn(n, self.config.latent_dim, generator=gen))
        s_in = (rng.random(n) < self.s_share).astype(np.int8)
        out = self.decoder(torch.cat([z, torch.tensor(s_in, dtype=torch.float32)[:, None]], 1))
        s = s_in if self.config.keep_s else (rng.random(n) < self.s_share).astype(np.int8)
        return self.codec.decode(out.numpy().astype(np.float64), s, rng)
