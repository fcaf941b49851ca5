r"""FADM: fairness-aware diffusion with meta-learning across domains.

Lin, Li, Zhao & Shao, "Fair Data Generation via Score-based Diffusion Model". Three networks,
trained together:

* a **score model**: a DDPM noise predictor ``ε_θ(x_t, t)`` on a row's features ``x``
  (continuous columns standardised, categories one-hot), trained with eq. 4 at DDPM's weight
  ``λ(t) ∝ 1 − ᾱ_t`` (eq. 5), which makes it the noise-prediction loss ``‖ε_θ − ε‖²``;
* a **label classifier** ``f_y(x_t, t)`` and a **sensitive classifier** ``f_z(x_t, t)``, both
  on noisy rows, with cross-entropy.

**Sampling** (eq. 11) runs DDPM's reverse chain with two guidance terms added to the score:
``λ_y ∇ log p(y | x_t)`` steers each row to the label asked for (labels are drawn from the
client's label shares), and ``λ_z ∇ H(p(z | x_t))`` raises the entropy of the sensitive
classifier, so that the rows carry as little of ``s`` as that classifier can find. A row's
``s`` is then drawn from the group shares, independently of its features and label.

**Meta-learning** (Algorithm 1, MAML-style across domains): each batch is split into one
domain (``B_out``) and the others (``B_in``); each network takes a virtual step on ``B_in``
(``θ̂ = θ − α∇L_in(θ)``), is evaluated on ``B_out`` at ``θ̂``, and is updated with the gradient
of ``L_in(θ) + β L_out(θ̂)``, second-order terms included. The domains are the categories of a
column (``domain``: Adult's race, as the paper); with no domain column, or a batch holding one
domain, the step is the plain gradient of ``L_in``.

FADM is not differentially private: chained with the DP generator (fair-then-private) the
guarantee covers its rows, as for stage 1.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from clients.row_codec import RowCodec
from common.errors import ConfigError, DataError
from common.schema import TabularData


@dataclasses.dataclass(frozen=True)
class FADMConfig:
    """Options of :class:`FADM`.

    steps : diffusion steps T (linear β from 1e-4·1000/T to 0.02·1000/T, DDPM's schedule).
    lambda_y, lambda_z : guidance strengths of the label and the sensitive classifier.
    domain : the categorical column whose categories are the meta-learning domains ("": none).
    iterations, batch_size, hidden : training iterations, batch size, hidden width.
    lr, inner_lr, meta_weight : γ, α and β of Algorithm 1 (shared by the three networks).
    """

    steps: int = 100
    lambda_y: float = 1.0
    lambda_z: float = 1.0
    domain: str = ""
    iterations: int = 2000
    batch_size: int = 256
    hidden: int = 128
    lr: float = 1e-3
    inner_lr: float = 1e-3
    meta_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("steps", "iterations", "batch_size", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"fadm: {name} = {getattr(self, name)} must be ≥ 1.")
        for name in ("lambda_y", "lambda_z", "inner_lr", "meta_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"fadm: {name} = {getattr(self, name)} must be ≥ 0.")
        if not self.lr > 0:
            raise ConfigError(f"fadm: lr = {self.lr} must be > 0.")


class Schedule:
    """DDPM's linear noise schedule: ``β_t``, ``α_t = 1 − β_t``, ``ᾱ_t = Π α``."""

    def __init__(self, steps: int) -> None:
        scale = 1000.0 / steps
        self.beta = torch.linspace(1e-4 * scale, min(0.02 * scale, 0.999), steps,
                                   dtype=torch.float64)
        self.alpha = 1.0 - self.beta
        self.alpha_bar = torch.cumprod(self.alpha, dim=0)

    def noise(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε``: the forward process' marginal at step ``t``."""
        ab = self.alpha_bar[t].to(x0.dtype)[:, None]
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps


class TimeMLP(nn.Module):
    """An MLP on ``(x, t)``: the step enters as sinusoidal features."""

    def __init__(self, d_in: int, d_out: int, hidden: int, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.net = nn.Sequential(nn.Linear(d_in + 16, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        freq = torch.exp(torch.arange(8, dtype=x.dtype) * (-math.log(1000.0) / 8))
        angle = (t.to(x.dtype)[:, None] / self.steps) * 1000.0 * freq[None, :]
        return self.net(torch.cat([x, angle.sin(), angle.cos()], dim=1))


def meta_step(module: nn.Module, loss_fn, batch_in, batch_out, *, inner_lr: float,
              meta_weight: float) -> torch.Tensor:
    """Algorithm 1's objective for one network: ``L_in(θ) + β L_out(θ − α∇L_in(θ))``, the
    virtual step kept in the graph (second order); ``loss_fn(params, batch)`` evaluates the
    loss at a parameter dict. Without ``batch_out`` it is ``L_in(θ)``."""
    params = dict(module.named_parameters())
    inner = loss_fn(params, batch_in)
    if batch_out is None or meta_weight == 0:
        return inner
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    virtual = {k: p - inner_lr * g for (k, p), g in zip(params.items(), grads)}
    return inner + meta_weight * loss_fn(virtual, batch_out)


class FADM:
    """Fit (:meth:`fit`) the score model and the two classifiers; sample rows (:meth:`sample`)."""

    def __init__(self, config: FADMConfig, *, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.schedule = Schedule(config.steps)

    def _domains(self, data: TabularData) -> np.ndarray:
        name = self.config.domain
        if not name:
            return np.zeros(len(data), dtype=np.int64)
        cols = {c.name: c for c in data.schema.features}
        if name not in cols or cols[name].kind != "categorical":
            raise ConfigError(f"fadm: domain = {name!r} must name a categorical feature column "
                              f"(choose among {[c.name for c in data.schema.categorical]}).")
        return pd.Categorical(data.features[name].astype(str),
                              categories=list(cols[name].categories)).codes.astype(np.int64)

    # ------------------------------------------------------------------ fit
    def fit(self, data: TabularData) -> FADM:
        if len(data) < 2:
            raise DataError("fadm: needs at least 2 rows to train on.")
        cfg = self.config
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.codec = RowCodec.fit(data, label=False)
        x = torch.tensor(self.codec.encode(data), dtype=torch.float32)
        y = torch.tensor(data.y, dtype=torch.long)
        s = torch.tensor(data.s, dtype=torch.long)
        domains = self._domains(data)
        self.y_share, self.s_share = float(np.mean(data.y)), float(np.mean(data.s))
        d = x.shape[1]
        self.score = TimeMLP(d, d, cfg.hidden, cfg.steps)
        self.f_y = TimeMLP(d, 2, cfg.hidden // 2, cfg.steps)
        self.f_z = TimeMLP(d, 2, cfg.hidden // 2, cfg.steps)
        nets = {"score": self.score, "y": self.f_y, "z": self.f_z}
        opts = {k: torch.optim.Adam(m.parameters(), lr=cfg.lr) for k, m in nets.items()}
        self.losses: list[dict[str, float]] = []
        for _ in range(cfg.iterations):
            idx = rng.choice(len(x), min(cfg.batch_size, len(x)), replace=False)
            b_in, b_out = self._split(idx, domains, rng)
            pick = lambda rows: None if rows is None else self._noisy(x, y, s, rows)  # noqa: E731
            batch_in, batch_out = pick(b_in), pick(b_out)
            record = {}
            for key, net in nets.items():
                loss = meta_step(net, self._loss(net, key), batch_in, batch_out,
                                 inner_lr=cfg.inner_lr, meta_weight=cfg.meta_weight)
                opts[key].zero_grad()
                loss.backward()
                opts[key].step()
                record[key] = float(loss.detach())
            self.losses.append(record)
        return self

    def _split(self, idx: np.ndarray, domains: np.ndarray, rng: np.random.Generator):
        """``B_in``, ``B_out``: one domain of the batch held out (None if it holds one)."""
        present = np.unique(domains[idx])
        if len(present) < 2:
            return idx, None
        out = rng.choice(present)
        return idx[domains[idx] != out], idx[domains[idx] == out]

    def _noisy(self, x, y, s, rows):
        rows = torch.as_tensor(rows)
        t = torch.randint(0, self.config.steps, (len(rows),))
        eps = torch.randn(len(rows), x.shape[1])
        return {"xt": self.schedule.noise(x[rows], t, eps), "t": t, "eps": eps, "y": y[rows],
                "s": s[rows]}

    @staticmethod
    def _loss(net: nn.Module, key: str):
        def loss(params, batch):
            out = functional_call(net, params, (batch["xt"], batch["t"]))
            if key == "score":
                return F.mse_loss(out, batch["eps"])
            return F.cross_entropy(out, batch["y" if key == "y" else "s"])
        return loss

    # ------------------------------------------------------------------ sample
    def guidance(self, xt: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``λ_y ∇ log p(y | x_t) + λ_z ∇ H(p(z | x_t))`` (eq. 11's guidance terms)."""
        cfg = self.config
        xt = xt.detach().requires_grad_(True)
        log_py = F.log_softmax(self.f_y(xt, t), dim=1).gather(1, y[:, None]).sum()
        log_pz = F.log_softmax(self.f_z(xt, t), dim=1)
        entropy = -(log_pz.exp() * log_pz).sum()
        (g,) = torch.autograd.grad(cfg.lambda_y * log_py + cfg.lambda_z * entropy, xt)
        return g

    def sample(self, n: int, *, seed: int | None = None) -> TabularData:
        """``n`` rows by the guided reverse chain; labels drawn from the label shares, ``s``
        from the group shares (independently)."""
        if not hasattr(self, "score"):
            raise RuntimeError("fadm: sample() before fit().")
        seed = self.seed + 1 if seed is None else seed
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        y = torch.tensor((rng.random(n) < self.y_share).astype(np.int64))
        sch = self.schedule
        x = torch.randn(n, self.score.net[-1].out_features, generator=gen)
        for step in reversed(range(self.config.steps)):
            t = torch.full((n,), step, dtype=torch.long)
            ab, a, b = (float(v[step]) for v in (sch.alpha_bar, sch.alpha, sch.beta))
            with torch.no_grad():
                eps = self.score(x, t)
            # the guided score: −ε̂/√(1−ᾱ) + guidance, i.e. ε̂ − √(1−ᾱ)·guidance
            eps = eps - math.sqrt(1.0 - ab) * self.guidance(x, t, y)
            x = (x - b / math.sqrt(1.0 - ab) * eps) / math.sqrt(a)
            if step > 0:
                x = x + math.sqrt(b) * torch.randn(x.shape, generator=gen)
        s = (rng.random(n) < self.s_share).astype(np.int8)
        return self.codec.decode(x.detach().numpy().astype(np.float64), s, y=y.numpy())
