"""Fair4Free: the distance correlation, the row codec, the teacher's penalty, the synthesizer."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from clients.fair4free import Fair4Free, Fair4FreeConfig, distance_correlation_sq
from clients.row_codec import RowCodec
from clients.synthesizers import make_synthesizer
from common.datasets import make_synthetic
from common.errors import ConfigError
from common.run_config import RunConfig
from common.schema import Column, Schema, from_frame


def _dcor_sq_direct(a: np.ndarray, b: np.ndarray) -> float:
    """Székely, Rizzo & Bakirov's V²-statistics written out over every pair (O(n²) loops)."""
    n = len(a)
    dist_a = [[float(np.linalg.norm(a[i] - a[j])) for j in range(n)] for i in range(n)]
    dist_b = [[float(np.linalg.norm(b[i] - b[j])) for j in range(n)] for i in range(n)]

    def centred(d):
        row = [sum(d[i]) / n for i in range(n)]
        col = [sum(d[i][j] for i in range(n)) / n for j in range(n)]
        grand = sum(row) / n
        return [[d[i][j] - row[i] - col[j] + grand for j in range(n)] for i in range(n)]

    A, B = centred(dist_a), centred(dist_b)
    v = {k: sum(x[i][j] * y[i][j] for i, j in itertools.product(range(n), range(n))) / n ** 2
         for k, (x, y) in {"ab": (A, B), "aa": (A, A), "bb": (B, B)}.items()}
    return v["ab"] / (v["aa"] * v["bb"]) ** 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distance_correlation_matches_the_pairwise_formula(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(30, 3))
    b = (rng.random((30, 1)) < 0.4).astype(float) + 0.3 * a[:, :1]
    got = distance_correlation_sq(torch.tensor(a), torch.tensor(b))
    assert float(got) == pytest.approx(_dcor_sq_direct(a, b), rel=1e-10)


def test_distance_correlation_is_one_for_a_linear_map_and_small_for_independence():
    rng = np.random.default_rng(3)
    a = torch.tensor(rng.normal(size=(200, 2)))
    assert float(distance_correlation_sq(a, 2 * a + 3)) == pytest.approx(1.0, abs=1e-12)
    independent = torch.tensor(rng.normal(size=(2000, 1)))
    assert float(distance_correlation_sq(torch.tensor(rng.normal(size=(2000, 2))),
                                         independent)) < 0.01
    assert float(distance_correlation_sq(a, torch.ones(200, 1, dtype=a.dtype))) == 0.0


def _table(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, n)
    x = rng.normal(size=n) + 2.0 * g  # x carries s
    frame = pd.DataFrame({"x": np.clip(x, -5, 7), "c": rng.choice(["a", "b", "c"], n), "g": g,
                          "t": (rng.random(n) < 0.3 + 0.4 * g).astype(int)})
    schema = Schema("t", (Column("x", bounds=(-5.0, 7.0)),
                          Column("c", kind="categorical", categories=("a", "b", "c"))),
                    sensitive="g", privileged="1", label="t", favourable="1")
    return from_frame(frame, schema)


def test_the_codec_decodes_a_confident_output_back_to_the_rows():
    data = _table(50)
    codec = RowCodec.fit(data)
    x = codec.encode(data)
    assert x.shape == (50, 1 + 3 + 1)
    out = x.copy()
    for _, kind, sl in codec.blocks:  # a decoder that is sure: logits ±50
        if kind != "continuous":
            out[:, sl] = np.where(x[:, sl] > 0.5, 50.0, -50.0)
    back = codec.decode(out, data.s, np.random.default_rng(0))
    np.testing.assert_allclose(back.features["x"], data.features["x"], atol=1e-9)
    assert (back.features["c"] == data.features["c"]).all()
    np.testing.assert_array_equal(back.y, data.y)


def test_the_codec_without_a_label_decodes_one_hot_rows_by_their_largest_entry():
    """FADM's use: no label entry (the label is given), categories by argmax of a noisy
    one-hot vector."""
    data = _table(50)
    codec = RowCodec.fit(data, label=False)
    x = codec.encode(data)
    assert x.shape == (50, 1 + 3) and [b[1] for b in codec.blocks] == ["continuous",
                                                                       "categorical"]
    noisy = x + np.random.default_rng(1).uniform(-0.4, 0.4, size=x.shape) * (x.std(0) > 0)
    noisy[:, 0] = x[:, 0]
    back = codec.decode(noisy, data.s, y=data.y)
    assert (back.features["c"] == data.features["c"]).all()
    np.testing.assert_array_equal(back.y, data.y)
    with pytest.raises(ValueError, match="needs y"):
        codec.decode(noisy, data.s)


def test_the_penalty_gradient_matches_finite_differences_and_removes_dependence():
    rng = np.random.default_rng(4)
    s = torch.tensor((rng.random((40, 1)) < 0.5).astype(float))
    z = (s + 0.3 * torch.tensor(rng.normal(size=(40, 2)))).requires_grad_(True)
    value = distance_correlation_sq(z, s)
    (grad,) = torch.autograd.grad(value, z)
    h, numeric = 1e-6, torch.zeros_like(z)
    for i, j in itertools.product(range(40), range(2)):
        for sign in (1, -1):
            zz = z.detach().clone()
            zz[i, j] += sign * h
            numeric[i, j] += sign * float(distance_correlation_sq(zz, s)) / (2 * h)
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)
    # gradient descent on the codes alone drives the dependence out
    opt = torch.optim.Adam([z], lr=0.05)
    start = float(value.detach())
    for _ in range(300):
        opt.zero_grad()
        loss = distance_correlation_sq(z, s)
        loss.backward()
        opt.step()
    assert start > 0.5 and float(distance_correlation_sq(z.detach(), s)) < 0.05


def test_the_student_reproduces_the_teachers_code_distribution():
    data = _table(1024, seed=2)
    model = Fair4Free(Fair4FreeConfig(teacher_epochs=10, student_epochs=40, latent_dim=2),
                      seed=0).fit(data)
    x = torch.tensor(model.codec.encode(data), dtype=torch.float32)
    s = torch.tensor(data.s, dtype=torch.float32)[:, None]
    teacher = model.codes(x, s).numpy()
    with torch.no_grad():
        student = model.student(torch.randn(len(data), 2)).numpy()
    for j in range(2):
        qs = [0.1, 0.5, 0.9]
        np.testing.assert_allclose(np.quantile(student[:, j], qs), np.quantile(teacher[:, j], qs),
                                   atol=0.35)
    rows = model.sample(300, seed=5)
    assert len(rows) == 300 and rows.features["x"].between(-5, 7).all()
    assert rows.features["c"].isin(["a", "b", "c"]).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": -1.0}, "beta"), ({"latent_dim": 0}, "latent_dim"), ({"lr": 0.0}, "lr"),
    ({"teacher_hidden": (0,)}, "hidden"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Fair4FreeConfig(**kwargs)


def test_the_synthesizer_runs_the_orders_with_fair4free_in_stage_ones_place():
    train = make_synthetic(400, seed=3)
    config = RunConfig(synthesizer="fair4free", order="fair-only", fair4free_epochs=2,
                       stage1_fraction=0.5)
    [release] = make_synthesizer(config).release(train, seed=0, fractions=[1.0])
    assert len(release.rows) == 200 and release.privacy.epsilon is None
    assert np.isfinite(release.stage1_gap)
    assert config.release == "fair-only"
