"""FADM: the forward process, the guidance terms, the meta-update, the synthesizer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from clients.fadm import FADM, FADMConfig, Schedule, meta_step
from clients.synthesizers import make_synthesizer
from common.datasets import make_synthetic
from common.errors import ConfigError
from common.run_config import RunConfig
from common.schema import Column, Schema, from_frame


def test_the_forward_chain_has_the_closed_form_marginal():
    """Eq. 1 step by step, 20,000 chains from one x₀: mean √ᾱ_t·x₀ and variance 1 − ᾱ_t."""
    sch = Schedule(50)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.5, -2.0], dtype=torch.float64)
    x = x0.repeat(20_000, 1)
    for t in range(30):
        b = float(sch.beta[t])
        x = (1 - b) ** 0.5 * x + b ** 0.5 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    ab = float(sch.alpha_bar[29])
    torch.testing.assert_close(x.mean(0), ab ** 0.5 * x0, atol=0.03, rtol=0)
    torch.testing.assert_close(x.var(0), torch.full((2,), 1 - ab, dtype=x.dtype), atol=0.03,
                               rtol=0)
    eps = torch.randn(20_000, 2, generator=gen, dtype=x.dtype)
    direct = sch.noise(x0.repeat(20_000, 1), torch.full((20_000,), 29), eps)
    torch.testing.assert_close(direct.var(0), x.var(0), atol=0.04, rtol=0)


class _Linear(nn.Module):
    """A fixed logistic classifier on x: logits (0, w·x)."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.tensor(w, dtype=torch.float32)

    def forward(self, x, t):
        return torch.stack([torch.zeros(len(x)), x @ self.w], dim=1)


def test_the_guidance_terms_have_the_analytic_gradients_and_signs():
    model = FADM(FADMConfig(lambda_y=1.0, lambda_z=0.0))
    w = [1.0, -2.0]
    model.f_y, model.f_z = _Linear(w), _Linear(w)
    x = torch.tensor([[0.3, 0.1], [-1.0, 0.4]])
    t = torch.zeros(2, dtype=torch.long)
    wt = torch.tensor(w)
    p = torch.sigmoid(x @ wt)
    # ∇ log p(y = 1 | x) = (1 − p)·w: towards the label asked for
    g = model.guidance(x, t, torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(g, (1 - p)[:, None] * wt[None, :])
    # ∇ H = −p(1 − p)·log(p / (1 − p))·w: towards p = ½ from either side
    model.config = FADMConfig(lambda_y=0.0, lambda_z=1.0)
    g = model.guidance(x, t, torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(g, (-(p * (1 - p)) * torch.log(p / (1 - p)))[:, None]
                               * wt[None, :])
    moved = torch.sigmoid((x + 0.1 * g) @ wt)
    assert ((moved - 0.5).abs() < (p - 0.5).abs()).all()


class _Scalar(nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(value, dtype=torch.float64))


def test_the_meta_update_matches_a_hand_computed_two_step_example():
    """L(θ; b) = (θ − b)², θ = 1, B_in = 3, B_out = −1, α = 0.1, β = 0.5:
    θ̂ = 1 − 0.1·2(1 − 3) = 1.4; objective (1 − 3)² + 0.5·(1.4 + 1)² = 6.88;
    gradient 2(θ − 3) + 0.5·2(θ̂ + 1)·(1 − 2α) = −4 + 1.92 = −2.08 (first-order: −1.6)."""
    module = _Scalar(1.0)

    def loss(params, b):
        return (params["theta"] - b) ** 2

    value = meta_step(module, loss, 3.0, -1.0, inner_lr=0.1, meta_weight=0.5)
    assert float(value.detach()) == pytest.approx(6.88, abs=1e-12)
    value.backward()
    assert float(module.theta.grad) == pytest.approx(-2.08, abs=1e-12)
    module.theta.grad = None
    plain = meta_step(module, loss, 3.0, None, inner_lr=0.1, meta_weight=0.5)
    assert float(plain.detach()) == pytest.approx(4.0)


def _table(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, n)
    t = (rng.random(n) < 0.3 + 0.4 * g).astype(int)
    frame = pd.DataFrame({"x": np.clip(rng.normal(size=n) + 1.5 * g + t, -5, 7),
                          "d": rng.choice(["p", "q", "r"], n), "g": g, "t": t})
    schema = Schema("t", (Column("x", bounds=(-5.0, 7.0)),
                          Column("d", kind="categorical", categories=("p", "q", "r"))),
                    sensitive="g", privileged="1", label="t", favourable="1")
    return from_frame(frame, schema)


def test_a_batch_holds_one_domain_out_for_the_meta_test():
    data = _table(300)
    model = FADM(FADMConfig(domain="d"))
    domains = model._domains(data)
    b_in, b_out = model._split(np.arange(300), domains, np.random.default_rng(0))
    assert len(np.unique(domains[b_out])) == 1
    assert not set(domains[b_in]) & set(domains[b_out])
    assert len(b_in) + len(b_out) == 300
    with pytest.raises(ConfigError, match="categorical feature column"):
        FADM(FADMConfig(domain="x"))._domains(data)


def test_entropy_guidance_leaves_less_of_s_in_the_rows():
    """x carries s. Rows drawn with λ_z = 5 are harder for a classifier fitted on the real rows
    to place in a group than rows drawn with λ_z = 0."""
    torch.set_num_threads(1)
    data = _table(1500, seed=1)
    model = FADM(FADMConfig(iterations=300, steps=30, domain="d", lambda_y=1.0), seed=0)
    model.fit(data)
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression().fit(data.features[["x"]], data.s)
    certainty = {}
    for lam in (0.0, 5.0):
        model.config = FADMConfig(iterations=300, steps=30, domain="d", lambda_z=lam)
        rows = model.sample(1500, seed=3)
        p = probe.predict_proba(rows.features[["x"]])[:, 1]
        certainty[lam] = float(np.abs(p - 0.5).mean())
    assert certainty[5.0] < certainty[0.0]


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="steps"):
        FADMConfig(steps=0)
    with pytest.raises(ConfigError, match="lambda_z"):
        FADMConfig(lambda_z=-1.0)


def test_the_synthesizer_runs_the_orders_with_fadm_in_stage_ones_place():
    train = make_synthetic(300, seed=3)
    config = RunConfig(synthesizer="fadm", order="fair-only", fadm_iterations=20, fadm_steps=10,
                       stage1_fraction=0.5)
    [release] = make_synthesizer(config).release(train, seed=0, fractions=[1.0])
    assert len(release.rows) == 150 and release.privacy.epsilon is None
    with pytest.raises(ConfigError, match="fadm-domain = 'nope'"):
        make_synthesizer(config.replace(fadm_domain="nope")).check(train)
