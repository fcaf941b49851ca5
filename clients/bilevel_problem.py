r"""The bilevel problem of stage 1 (:mod:`clients.stage1`): the inner logistic fit on the
synthetic rows, the outer objective on the real rows, and the exact hypergradient by implicit
differentiation (the formulas are in :mod:`clients.stage1`'s docstring).
"""

from __future__ import annotations

import numpy as np

from common import logistic


class BilevelProblem:
    """The bilevel problem of one client, in encoded space (float64 throughout).

    The synthetic design matrix is ``[u, z_fixed, s̃, 1]``: the learned block ``u`` (``Ñ × L``)
    comes first, then the frozen columns. ``X_real`` must use the same column order.

    Parameters
    ----------
    X_real, y_real : real design matrix and 0/1 labels (outer problem).
    z_fixed : ``Ñ × (n_z − L)`` frozen synthetic columns (may have 0 columns).
    s_syn, y_syn : fixed sensitive values and labels of the synthetic rows.
    relaxation : the fairness term's relaxation on the real rows
        (:mod:`clients.fairness_terms`: the covariance or the smooth gap).
    rho, tolerance : the penalty form ``ρ·φ(g)``, ``φ(g) = g²`` or ``max(0, |g| − τ)²``.
    target : the constrained form instead: the measured gap of ``w*`` on the real rows must be
        at most ``target``. The outer loss becomes the Lagrangian ``loss + μ·σ·g(w)``, with
        ``σ`` the sign of the measured gap and the multiplier ``μ ≥ 0`` raised by
        ``multiplier_lr·(|gap| − target)`` after every outer step (:meth:`update_multiplier`):
        the relaxation only gives the direction, the measured gap decides how hard to push
        (a proxy Lagrangian, Cotter et al. 2019), so the zero the loop seeks is the gap's.
    anchor : centre of the outer regulariser on ``u`` (``None``: zero, METHOD.md's form).
    weights : per-row weights of the outer loss on the real rows (``None``: all 1).
    """

    def __init__(self, X_real, y_real, z_fixed, s_syn, y_syn, relaxation, *, rho, lam_in,
                 lam_out, tolerance=None, solver: logistic.Solver = "newton", anchor=None,
                 weights=None, target: float | None = None, multiplier_lr: float = 1.0):
        self.X_real = X_real
        self.ybar_real = 2.0 * np.asarray(y_real, dtype=np.float64) - 1.0
        # Per-row weights of the outer loss (None: the plain mean, the accuracy utility).
        self.weights = (np.ones(len(self.ybar_real)) if weights is None
                        else np.asarray(weights, dtype=np.float64))
        self._row_scale = -self.weights * self.ybar_real / len(self.ybar_real)  # of ∇ loss
        self.y_syn = np.asarray(y_syn, dtype=np.float64)
        self.ybar_syn = 2.0 * self.y_syn - 1.0
        self.relaxation = relaxation
        self.rho, self.lam_in, self.lam_out, self.tol = rho, lam_in, lam_out, tolerance
        self.target, self.multiplier_lr = target, multiplier_lr
        self.multiplier, self.direction = 0.0, 0.0  # μ and σ of the constrained form
        self.last: dict[str, float] = {}  # loss, relaxation and measured gap of the last f(w)
        self.solver = solver
        self.anchor = 0.0 if anchor is None else anchor  # the outer regulariser's centre
        n_syn, p = len(s_syn), X_real.shape[1]
        self.n_learn = p - 2 - z_fixed.shape[1]
        # Reused buffer [u, z_fixed, s̃, 1], column-major: every per-column operation of the
        # outer loop (Ñ ≫ p) then runs over contiguous memory.
        self._Xs = np.empty((n_syn, p), order="F")
        self._Xs[:, self.n_learn:p - 2] = z_fixed
        self._Xs[:, -2] = s_syn
        self._Xs[:, -1] = 1.0
        self._u = self._Xs[:, : self.n_learn]  # the learned block, in place
        self._work = np.empty((n_syn, p), order="F")  # scaled rows of Hessian products
        self._grad = np.empty((n_syn, self.n_learn), order="F")  # ∇_r F (reused)
        self._eye = lam_in * np.eye(p)
        self._state: tuple | None = None  # (w, σ(−ȳ X̃w)) of the last inner solve

    def design(self, u: np.ndarray) -> np.ndarray:
        """The synthetic design matrix for the learned block ``u`` (a shared buffer)."""
        if u is not self._u:
            self._Xs[:, : self.n_learn] = u
            self._state = None
        return self._Xs

    def standardise_into(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``standardise(r)`` written straight into the design matrix's learned block; returns
        that block (``u``, a view to pass to :meth:`inner` and the hypergradients) and the
        column standard deviations."""
        n = len(r)
        mean = r.mean(axis=0)
        np.subtract(r, mean, out=self._u)
        std = np.sqrt(np.einsum("ij,ij->j", self._u, self._u) / n)
        self._u *= 1.0 / std
        self._state = None
        return self._u, std

    def inner(self, u: np.ndarray, w0: np.ndarray | None = None, tol: float = 1e-10) -> np.ndarray:
        """``w*(u)`` (warm-started from ``w0``)."""
        X = self.design(u)
        if self.solver != "newton":
            self._state = None
            return logistic.fit(X, self.y_syn, lam=self.lam_in, w0=w0, solver=self.solver,
                                tol=tol)
        w0 = np.zeros(X.shape[1]) if w0 is None else np.asarray(w0, dtype=np.float64)
        w, _, sig_neg = logistic.newton_state(X, self.y_syn, lam=self.lam_in, w0=w0, tol=tol,
                                              work=self._work)
        self._state = (w, sig_neg)
        return w

    def phi(self, cov: float) -> tuple[float, float]:
        """Penalty ``φ`` and its derivative at ``cov``."""
        if self.tol is None:
            return cov * cov, 2.0 * cov
        excess = abs(cov) - self.tol
        if excess <= 0:
            return 0.0, 0.0
        return excess * excess, 2.0 * excess * float(np.sign(cov))

    def outer_value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        """``f(w)`` and ``∇f(w)`` (real-data loss plus the fairness term); records the loss,
        the relaxation and the measured gap in :attr:`last`."""
        scores = self.X_real @ w
        neg_margin = -self.ybar_real * scores
        loss = float(self.weights @ logistic.log1pexp(neg_margin)) / len(scores)
        rows = logistic.sigmoid(neg_margin)
        rows *= self._row_scale
        g, g_rows = self.relaxation.value_rows(scores)
        if self.target is None:
            p, dp = self.phi(g)
            weight, value = self.rho * dp, loss + self.rho * p
        else:
            weight = self.multiplier * self.direction
            value = loss + weight * g
        self.last = {"loss": loss, "relaxation": g,
                     "gap": self.relaxation.groups.gap(scores)}
        return value, self.X_real.T @ (rows + weight * g_rows)

    def update_multiplier(self) -> None:
        """One ascent step of the constrained form's multiplier on the measured gap of the last
        :meth:`outer_value_grad`: ``μ ← max(0, μ + η(|gap| − target))``, ``σ ← sign(gap)``."""
        if self.target is None:
            return
        gap = self.last["gap"]
        self.multiplier = max(0.0, self.multiplier + self.multiplier_lr * (abs(gap) - self.target))
        if gap:
            self.direction = float(np.sign(gap))

    def objective(self, u: np.ndarray, w: np.ndarray | None = None) -> float:
        """``F(u)`` (solves the inner problem to 1e-13 unless ``w`` is given)."""
        if w is None:
            w = self.inner(u, tol=1e-13)
        f, _ = self.outer_value_grad(w)
        diff = u - self.anchor
        return f + 0.5 * self.lam_out * float(np.sum(diff * diff)) / len(u)

    def _factors(self, u: np.ndarray, w: np.ndarray):
        """``a``, ``b = (x̃ᵀv)σ'``, ``v = H⁻¹∇f`` and ``f(w)``: ``∇_x̃ F = −(a vᵀ + b wᵀ)/Ñ``."""
        Xs = self.design(u)
        if self._state is not None and self._state[0] is w:  # the inner solve's last test
            sig_neg = self._state[1]
        else:
            sig_neg = logistic.sigmoid(-self.ybar_syn * (Xs @ w))
        a = -self.ybar_syn * sig_neg
        dsig = sig_neg * (1.0 - sig_neg)
        np.multiply(Xs, dsig[:, None], out=self._work)
        H = self._work.T @ Xs / len(Xs) + self._eye
        f, grad_f = self.outer_value_grad(w)
        v = np.linalg.solve(H, grad_f)
        return a, (Xs @ v) * dsig, v, f

    def hypergradient(self, u: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
        """``∇_u F`` at ``w = w*(u)``, and ``f(w)``."""
        a, b, v, f = self._factors(u, w)
        n, L = len(u), self.n_learn
        grad = (np.stack((v[:L], w[:L]), axis=1) @ np.stack((a, b))).T  # Ñ × L, column-major
        grad *= -1.0 / n
        grad += (self.lam_out / n) * (u - self.anchor)
        return grad, f

    def hypergradient_standardised(self, u: np.ndarray, w: np.ndarray, std: np.ndarray
                                   ) -> tuple[np.ndarray, float]:
        r"""``∇_r F`` where ``u = standardise(r)`` (zero mean, unit variance per column).

        The chain rule through the standardisation, ``(g − ḡ − u·mean(g⊙u)) / std``, applied
        to the rank-2 gradient ``g = −(a vᵀ + b wᵀ)/Ñ`` in closed form. The ``λ_out`` term
        part ``u`` drops out (``‖u‖²_F = Ñ·L`` is constant); an anchor ``u⁰`` (standardised)
        leaves ``(λ_out/Ñ)(u·mean(u⁰⊙u) − u⁰) / std``.
        """
        a, b, v, f = self._factors(u, w)
        n, L = len(u), self.n_learn
        alpha, beta = -v[:L] / (n * std), -w[:L] / (n * std)
        ab = np.stack((a, b))
        au, bu = ab @ u  # aᵀu and bᵀu, one pass over u
        ab -= ab.mean(axis=1, keepdims=True)
        grad = self._grad if u.shape == self._grad.shape else np.empty(u.shape, order="F")
        np.matmul(np.stack((alpha, beta), axis=1), ab, out=grad.T)  # Ñ × L, column-major
        coef_u = -(alpha * au + beta * bu) / n
        anchored = self.lam_out and not np.isscalar(self.anchor)
        if anchored:
            k = self.lam_out / n
            coef_u += k * np.einsum("ij,ij->j", self.anchor, u) / (n * std)
        grad += u * coef_u
        if anchored:
            grad -= self.anchor * (k / std)
        return grad, f
