"""The outer loop's small parts (:class:`clients.stage1.FairDistiller`): Adam on the learned
block, the projection onto the columns' declared bounds, and the step a target run returns."""

from __future__ import annotations

import math

import numpy as np


class Box:
    """The learned block's declared bounds (``z`` units): :meth:`project` clips ``u`` in place
    and remembers which entries sit on a bound; :meth:`hold` zeroes the gradient entries that
    would push those further out (projected gradient: they stay on the bound until the
    gradient turns back)."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray):
        self.lo, self.hi = lo, hi
        self.active = bool(np.isfinite(lo).any() or np.isfinite(hi).any())
        self.at_lo = self.at_hi = None

    def project(self, u: np.ndarray) -> None:
        if not self.active:
            return
        self.at_lo, self.at_hi = u <= self.lo, u >= self.hi
        np.clip(u, self.lo, self.hi, out=u)

    def hold(self, grad: np.ndarray) -> None:
        if self.active:  # a descent step moves against grad: > 0 at lo, < 0 at hi is outward
            grad[(self.at_lo & (grad > 0)) | (self.at_hi & (grad < 0))] = 0.0


class BestStep:
    """The outer step a target run returns (copies of ``u`` and ``w``).

    If the starting rows (the real rows) already meet the target, they are returned unchanged:
    a target is a constraint, and moving rows that meet it only fits the inner model closer to
    the training rows. Otherwise, with ``keep="loss"``, the step with the lowest real-data loss
    among those whose measured gap met the target; with ``keep="first"``, the first of them;
    if none met it, the smallest excess."""

    def __init__(self, target: float | None, keep: str = "loss"):
        self.target, self.keep, self.key = target, keep, (math.inf, math.inf)
        self.u = self.w = None
        self.gap = self.excess = math.nan
        self.step, self.locked = -1, False

    def offer(self, last: dict, u: np.ndarray, w: np.ndarray) -> None:
        if self.target is None or self.locked:
            return
        self.step += 1
        excess = max(0.0, abs(last["gap"]) - self.target)
        key = (excess, last["loss"] if self.keep == "loss" else self.step)
        if key < self.key:
            self.key, self.gap, self.excess = key, last["gap"], excess
            self.u, self.w = u.copy(), w.copy()
        self.locked = self.step == 0 and excess == 0


class Adam:
    """Adam (Kingma & Ba) updating ``param`` in place, with preallocated buffers: the update
    runs on ``Ñ × L`` arrays every outer step, where temporaries would dominate the cost.

    The moments are kept unscaled, ``m' = m/(1−β₁)`` and ``v' = v/(1−β₂)`` (``m' ← β₁m' + g``,
    ``v' ← β₂v' + g²``), which saves three passes over the arrays a step; the update
    ``lr·m̂/(√v̂ + ε)`` is the same, with the constants folded into two scalars.
    """

    def __init__(self, param: np.ndarray, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.eps = param, lr, eps
        self.b1, self.b2 = betas
        self.m, self.v, self.tmp = (np.zeros_like(param) for _ in range(3))
        self.t = 0

    def step(self, grad: np.ndarray) -> None:
        self.t += 1
        m, v, tmp = self.m, self.v, self.tmp
        m *= self.b1
        m += grad  # m' ← β₁m' + g
        np.multiply(grad, grad, out=tmp)
        v *= self.b2
        v += tmp  # v' ← β₂v' + g²
        # m̂ = m'(1−β₁)/(1−β₁ᵗ), v̂ = v'·c with c = (1−β₂)/(1−β₂ᵗ):
        # lr·m̂/(√v̂ + ε) = k·m'/(√v' + ε/√c) with k = lr(1−β₁)/((1−β₁ᵗ)√c).
        root_c = np.sqrt((1 - self.b2) / (1 - self.b2**self.t))
        k = self.lr * (1 - self.b1) / ((1 - self.b1**self.t) * root_c)
        np.sqrt(v, out=tmp)
        tmp += self.eps / root_c
        np.divide(m, tmp, out=tmp)
        tmp *= k
        self.param -= tmp
