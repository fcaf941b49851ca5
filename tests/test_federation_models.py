"""The shared model code: logistic regression and the MLP as arrays on the wire."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common import logistic, mlp
from common.datasets import make_synthetic
from common.encoding import Encoder
from common.errors import ReplyError


@pytest.fixture(scope="module")
def toy_design():
    data = make_synthetic(400, seed=8)
    return Encoder.fit(data).design(data), data.y, data.s


def test_logistic_training_reaches_the_newton_solution(toy_design):
    X, y, _ = toy_design
    w_newton = logistic.fit(X, y, lam=1.0)
    # Full-batch gradient descent on the same strongly convex objective (eq. 16).
    start = mlp.init_params(X.shape[1], (), seed=0)
    trained = mlp.train(start, X, y, epochs=400, lr=0.5, batch_size=len(X), l2=1.0, seed=0)
    np.testing.assert_allclose(trained["layer0.weight"][0], w_newton, atol=1e-8)
    np.testing.assert_allclose(mlp.decision(trained, X), X @ w_newton, atol=1e-7)
    assert start["layer0.weight"].sum() == 0  # training returns new arrays


def test_numpy_forward_pass_equals_torch(toy_design):
    X, _, _ = toy_design
    params = mlp.init_params(X.shape[1], (16, 8), seed=1)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 1)).double()
    with torch.no_grad():
        for i, layer in enumerate(net[::2]):
            layer.weight.copy_(torch.from_numpy(params[f"layer{i}.weight"]))
            layer.bias.copy_(torch.from_numpy(params[f"layer{i}.bias"]))
        expected = net(torch.from_numpy(X)).numpy()[:, 0]
    np.testing.assert_allclose(mlp.decision(params, X), expected, rtol=1e-12, atol=1e-12)


def test_mlp_size_and_training(toy_design):
    X, y, _ = toy_design
    assert mlp.count_params(12, (320, 320)) == 107_201 >= 10**5  # Law School's p = 12
    params = mlp.init_params(X.shape[1], (32,), seed=2)
    assert mlp.n_params(params) == mlp.count_params(6, (32,)) == 6 * 32 + 32 + 32 + 1
    before = np.mean((mlp.decision(params, X) > 0) == y)
    trained = mlp.train(params, X, y, epochs=30, lr=1e-2, batch_size=32, l2=1e-4, seed=0,
                        optimizer="adam")
    assert np.mean((mlp.decision(trained, X) > 0) == y) > max(before, 0.7)


def test_reweighing_makes_group_and_label_independent(toy_design):
    _, y, s = toy_design
    w = mlp.reweighing(s, y)
    rate = [np.sum(w[(s == a) & (y == 1)]) / np.sum(w[s == a]) for a in (0, 1)]
    assert rate[0] == pytest.approx(rate[1]) == pytest.approx(np.mean(y))
    assert w.mean() == pytest.approx(1.0)


def test_malformed_model_arrays_are_rejected():
    with pytest.raises(ReplyError, match="unexpected model array"):
        mlp.layers({"weights": np.zeros((1, 3))})
    with pytest.raises(ReplyError, match="numbered"):
        mlp.layers({"layer1.weight": np.zeros((1, 3))})
    with pytest.raises(ReplyError, match="one output"):
        mlp.layers({"layer0.weight": np.zeros((2, 3))})
    with pytest.raises(ReplyError, match="input columns"):
        mlp.decision({"layer0.weight": np.zeros((1, 3))}, np.zeros((4, 5)))
