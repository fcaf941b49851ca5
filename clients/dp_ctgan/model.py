"""The DP-CTGAN generator: :meth:`DPCTGAN.fit` spends the budget, the rest is post-processing.

The method is described in the package docstring (:mod:`clients.dp_ctgan`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from clients.dp_ctgan.calibration import (
    allocate,
    calibration_weights,
    systematic_sample,
)
from clients.dp_ctgan.conditioning import Conditioning
from clients.dp_ctgan.config import DPCTGANConfig
from clients.dp_ctgan.networks import Discriminator, Generator, PrivateCritic
from clients.dp_ctgan.representation import TableTransformer
from clients.dp_ctgan.statistics import Statistics, dp_statistics
from common import privacy
from common.errors import ConfigError
from common.schema import Schema, TabularData

logger = logging.getLogger(__name__)


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


class DPCTGAN:
    """DP-CTGAN: :meth:`fit` spends ``(ε, δ)`` on its rows; :meth:`sample` is post-processing.

    Attributes
    ----------
    config : DPCTGANConfig
    schema : Schema or None
        The input's schema (None until :meth:`fit`, as every attribute below).
    ledger : common.privacy.PrivacyLedger or None
        Every mechanism of the fit, composed.
    stats : Statistics or None
        The DP statistics.
    transformer : TableTransformer or None
        The generator's row layout (modes cut from the DP histograms).
    noise_multiplier : float or None
        DP-SGD's noise multiplier as the critic's optimizer uses it.
    generator : Generator or None
    critic : PrivateCritic or None
        The discriminator and its DP-SGD optimizer.
    seconds : float or None
        Wall time of the fit.
    """

    def __init__(self, config: DPCTGANConfig):
        self.config = config
        self.schema: Schema | None = None
        self.ledger: privacy.PrivacyLedger | None = None
        self.stats: Statistics | None = None
        self.transformer: TableTransformer | None = None
        self.noise_multiplier: float | None = None
        self.generator: Generator | None = None
        self.critic: PrivateCritic | None = None
        self.seconds: float | None = None
        self._conditioning: Conditioning | None = None
        self._sgd: dict = {}
        self._fitted = False

    # -- fit ------------------------------------------------------------------------------

    def fit(self, data: TabularData, *,
            reserve: Sequence[privacy.Mechanism] = ()) -> DPCTGAN:
        """Spend the budget on ``data``: DP statistics, then DP-SGD on the discriminator.
        ``reserve``: mechanisms that another step runs on the same rows; they are composed into
        the ledger first, so DP-SGD gets what they leave and the reported (ε, δ) covers them."""
        cfg = self.config
        privacy.check_budget(epsilon=cfg.epsilon, delta=cfg.delta, n=len(data))
        start = time.perf_counter()
        # The noise of every DP mechanism: fresh OS entropy unless the client seeded it.
        noise = privacy.NoiseSource(cfg.noise_seed, secure=cfg.secure_mode,
                                    purpose="dp-ctgan fit")
        self.schema = data.schema
        self.ledger = privacy.PrivacyLedger(epsilon=cfg.epsilon, delta=cfg.delta)
        for mechanism in reserve:
            self.ledger.reserve(mechanism)
        cell = 2 * data.s.astype(np.int64) + data.y.astype(np.int64)
        self.stats = dp_statistics(data, cell, config=cfg, ledger=self.ledger, rng=noise)
        self.transformer = TableTransformer(data.schema, self.stats.edges)

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
            self._train(data, cell, sample_rate, steps, noise_seed=noise.torch_seed())
        self.seconds = time.perf_counter() - start
        self._fitted = True
        logger.info("dp-ctgan: %d rows, ε = %.3f (target %.3f), δ = %.2e, σ = %.3f, q = %.4f, "
                    "%d steps in %.2fs", len(data), self.ledger.epsilon(), cfg.epsilon,
                    cfg.delta, self.noise_multiplier, sample_rate, steps, self.seconds)
        return self

    def _build_networks(self) -> None:
        """The conditioning tables and the generator (from the DP statistics only)."""
        cfg, tf = self.config, self.transformer
        self._conditioning = Conditioning.from_statistics(self.stats, tf, prior=cfg.prior)
        self.generator = Generator(tf.width + cfg.noise_dim + self._conditioning.cond_dim,
                                   cfg.generator_dims, tf.width, zero_init=cfg.prior != "none")

    def _train(self, data: TabularData, cell: np.ndarray, sample_rate: float, steps: int, *,
               noise_seed: int) -> None:
        """``steps`` DP-SGD steps of the critic, each followed by one step of the generator;
        ``noise_seed`` seeds the Poisson batches and DP-SGD's noise."""
        cfg = self.config
        gen = torch.Generator().manual_seed(noise_seed)
        self._build_networks()
        conditioning = self._conditioning
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
        # The generator's batch norm needs two rows at least: a small client (a few dozen
        # rows) would otherwise generate one. Fake packs carry no private data.
        fake_packs = max(expected_packs, 2)
        critic = PrivateCritic(
            Discriminator(self.transformer.width + conditioning.cond_dim, cfg.discriminator_dims,
                          cfg.pac),
            lr=cfg.lr_discriminator, noise_multiplier=self.noise_multiplier,
            max_grad_norm=cfg.max_grad_norm, expected_batch_size=expected_packs + fake_packs,
            generator=gen, secure_mode=cfg.secure_mode)
        self.critic = critic
        n_fake = fake_packs * cfg.pac
        fake_target = torch.zeros(fake_packs)
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
            cond_r, _, _ = conditioning.conditions(
                real_cells[idx], None if real_codes is None else real_codes[idx], gen)
            with torch.no_grad():
                fake, cond_f, _, _ = self._generate(n_fake, gen, hard=False)
            x = torch.cat([torch.cat([real[idx], cond_r], 1), torch.cat([fake, cond_f], 1)])
            loss_d = critic.step(x, torch.cat([torch.ones(n_real_packs), fake_target]))
            # Generator: sees only the critic (post-processing).
            (rows, raw), cond_f, column, chosen = self._generate(n_fake, gen, hard=False, raw=True)
            with critic.frozen() as disc:
                loss_g = F.softplus(-disc(torch.cat([rows, cond_f], 1))).mean()
                loss_g = loss_g + conditioning.condition_loss(raw, column, chosen)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
            opt_g.step()
            if (step + 1) % steps_per_epoch == 0 or step + 1 == steps:
                bar.update(1)
                bar.set_postfix(loss_d=f"{loss_d:.3f}", loss_g=f"{loss_g.item():.3f}")
        bar.close()
        self.generator.eval()

    # -- conditional generation ------------------------------------------------------------

    def _generate(self, n: int, gen: torch.Generator, *, hard: bool, raw: bool = False,
                  cells: torch.Tensor | None = None):
        """``n`` generated rows (activated; with ``raw`` also the generator's output), their
        conditions, conditioned columns and categories. ``cells`` None draws the rows' cells
        from the noisy cell shares."""
        conditioning = self._conditioning
        if cells is None:
            cells = torch.multinomial(conditioning.cell_probs, n, replacement=True, generator=gen)
        cond, column, chosen = conditioning.conditions(cells, None, gen)
        noise = torch.randn(n, self.config.noise_dim, generator=gen)
        out = self.generator(conditioning.prior(cells, gen), torch.cat([noise, cond], 1))
        rows = self.transformer.activate(out, hard=hard)
        return ((rows, out) if raw else rows), cond, column, chosen

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
        """Maximum-entropy weights of candidate rows matching the fit's DP targets (see
        :func:`~clients.dp_ctgan.calibration.calibration_weights`)."""
        return calibration_weights(features, cells, stats=self.stats,
                                   transformer=self.transformer)

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
