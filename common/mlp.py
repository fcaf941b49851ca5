r"""Feed-forward models on the design matrix ``x = [z, s, 1]``, trained with torch.

A model travels and is averaged as an ordered dict of float64 arrays,
``layer{i}.weight`` (``out × in``) and ``layer{i}.bias`` (``out``), the form an ``ArrayRecord``
holds and FedAvg averages. ReLU between layers; the output is the decision value ``d(x)``
and the prediction ``ŷ = 1[d(x) > 0]``.

* ``hidden = ()`` is logistic regression (METHOD.md eq. 16): a single weight row and no bias,
  since ``x`` already carries the intercept column; ``d = p`` parameters.
* ``hidden = (h₁, …)`` is an MLP with biases; ``(320, 320)`` on Law School's ``p = 12`` inputs
  has ``12·320 + 320 + 320·320 + 320 + 320 + 1 = 107,201`` parameters.

Training minimises the (sample-weighted) logistic loss plus an L2 penalty on every parameter,

.. math::

    \frac{\sum_i \omega_i \log(1 + e^{-\bar y_i d_\theta(x_i)})}{\sum_i \omega_i}
    + \frac{\lambda}{2}\lVert\theta\rVert^2,

by minibatch SGD (FedAvg's local step) or Adam (the one-shot server's MLP), in float64 so
that the arrays on the wire are exactly the trained ones.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import numpy as np

from common.errors import ConfigError, ReplyError

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")
_KEY = re.compile(r"^layer(\d+)\.(weight|bias)$")


def init_params(n_inputs: int, hidden: Sequence[int], *, seed: int) -> dict[str, np.ndarray]:
    """Initial parameters: zeros for logistic regression, torch's default init for an MLP."""
    if n_inputs < 1:
        raise ConfigError(f"a model needs at least one input column, got {n_inputs}.")
    if not hidden:
        return {"layer0.weight": np.zeros((1, n_inputs))}
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    sizes = [n_inputs, *hidden, 1]
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / np.sqrt(fan_in)  # torch.nn.Linear's default (Kaiming-uniform, a = √5)
        w = (torch.rand(fan_out, fan_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        b = (torch.rand(fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        params[f"layer{i}.weight"] = w.numpy()
        params[f"layer{i}.bias"] = b.numpy()
    return params


def layers(params: Mapping[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``[(weight, bias or None), …]`` in layer order; raises if the arrays are no model."""
    found: dict[int, dict[str, np.ndarray]] = {}
    for key, value in params.items():
        match = _KEY.match(key)
        if not match:
            raise ReplyError(f"unexpected model array {key!r}; expected layer<i>.weight/bias.")
        found.setdefault(int(match.group(1)), {})[match.group(2)] = np.asarray(value)
    if not found or sorted(found) != list(range(len(found))):
        raise ReplyError(f"model layers must be numbered 0..L-1, got {sorted(found)}.")
    out = []
    width = None
    for i in range(len(found)):
        w, b = found[i].get("weight"), found[i].get("bias")
        if w is None or w.ndim != 2 or (width is not None and w.shape[1] != width):
            raise ReplyError(f"layer {i} has no weight matrix that fits the previous layer.")
        if b is not None and b.shape != (w.shape[0],):
            raise ReplyError(f"layer {i}: bias shape {b.shape} does not match {w.shape}.")
        width = w.shape[0]
        out.append((w, b))
    if width != 1:
        raise ReplyError(f"the last layer must have one output, got {width}.")
    return out


def n_params(params: Mapping[str, np.ndarray]) -> int:
    """Number of parameters ``d``."""
    return int(sum(np.asarray(v).size for v in params.values()))


def count_params(n_inputs: int, hidden: Sequence[int]) -> int:
    """``d`` of a model with ``n_inputs`` inputs and the given hidden widths."""
    if not hidden:
        return n_inputs
    sizes = [n_inputs, *hidden, 1]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def decision(params: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """``d(x)`` for every row of ``X`` (NumPy forward pass)."""
    h = np.asarray(X, dtype=np.float64)
    net = layers(params)
    if h.shape[1] != net[0][0].shape[1]:
        raise ReplyError(
            f"the model expects {net[0][0].shape[1]} input columns, the data has {h.shape[1]}."
        )
    for i, (w, b) in enumerate(net):
        h = h @ w.T
        if b is not None:
            h += b
        if i < len(net) - 1:
            np.maximum(h, 0.0, out=h)
    return h[:, 0]


def train(
    params: Mapping[str, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    l2: float,
    seed: int,
    optimizer: str = "sgd",
    sample_weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Train from ``params`` for ``epochs`` passes of shuffled minibatches; returns new arrays.

    Parameters
    ----------
    params : the starting arrays (not modified).
    X, y : design matrix and 0/1 labels.
    epochs, lr, batch_size : passes over the data, step size, rows per step.
    l2 : L2 strength ``λ`` on every parameter.
    seed : seeds the shuffling.
    optimizer : {"sgd", "adam"}
    sample_weight : per-row weights ``ω`` (e.g. reweighing); ``None`` is all ones.
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}.")
    if len(X) == 0:
        raise ConfigError("cannot train a model on zero rows.")
    import torch

    net = layers(params)
    tensors = []
    for w, b in net:
        tensors.append(torch.tensor(w, dtype=torch.float64, requires_grad=True))
        tensors.append(None if b is None else torch.tensor(b, dtype=torch.float64,
                                                            requires_grad=True))
    trainable = [t for t in tensors if t is not None]
    opt = (torch.optim.SGD(trainable, lr=lr) if optimizer == "sgd"
           else torch.optim.Adam(trainable, lr=lr))
    Xt = torch.as_tensor(np.asarray(X, dtype=np.float64))
    ybar = torch.as_tensor(2.0 * np.asarray(y, dtype=np.float64) - 1.0)
    if sample_weight is None:
        weight = torch.ones(len(X), dtype=torch.float64)
    else:
        sw = np.asarray(sample_weight, dtype=np.float64)
        weight = torch.as_tensor(sw * (len(sw) / sw.sum()))  # mean 1: λ keeps its meaning
    gen = torch.Generator().manual_seed(int(seed))
    n_layers = len(net)
    threads = torch.get_num_threads()
    # The minibatches are small (at most a few hundred rows by a few hundred units): one
    # thread is faster than several, whose synchronisation dominates (20-50x on a busy
    # 2-core machine). Restored below.
    torch.set_num_threads(1)
    try:
        _run_epochs(tensors, trainable, opt, Xt, ybar, weight, gen, epochs=epochs,
                    batch_size=batch_size, l2=l2)
    finally:
        torch.set_num_threads(threads)
    out = {}
    for i in range(n_layers):
        out[f"layer{i}.weight"] = tensors[2 * i].detach().numpy().copy()
        if tensors[2 * i + 1] is not None:
            out[f"layer{i}.bias"] = tensors[2 * i + 1].detach().numpy().copy()
    return out


def _run_epochs(tensors, trainable, opt, Xt, ybar, weight, gen, *, epochs, batch_size, l2):
    import torch

    n_layers = len(tensors) // 2
    n = len(Xt)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                h = Xt[idx]
                for i in range(n_layers):
                    w, b = tensors[2 * i], tensors[2 * i + 1]
                    h = h @ w.T if b is None else torch.addmm(b, h, w.T)
                    if i < n_layers - 1:
                        h = torch.relu(h)
                margin = ybar[idx] * h[:, 0]
                loss = torch.mean(weight[idx] * torch.nn.functional.softplus(-margin))
                if l2:
                    loss = loss + 0.5 * l2 * sum(torch.sum(t * t) for t in trainable)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


def reweighing(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""Kamiran & Calders (2012) weights ``ω_i = P(s_i)·P(y_i) / P(s_i, y_i)``.

    After reweighing, ``s`` and ``y`` are independent in the weighted rows; the weights have
    mean 1 over the rows when every ``(s, y)`` cell is non-empty (``Σ_cells P(s)P(y) = 1``).
    """
    s = np.asarray(s).astype(np.int64)
    y = np.asarray(y).astype(np.int64)
    w = np.ones(len(s))
    for a in (0, 1):
        for b in (0, 1):
            cell = (s == a) & (y == b)
            if cell.any():
                w[cell] = np.mean(s == a) * np.mean(y == b) / np.mean(cell)
    return w
