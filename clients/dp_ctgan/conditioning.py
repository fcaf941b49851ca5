"""What the conditional generator is given: conditions and a DP prior (package docstring, step 3).

Every generated row is generated *given* its ``(s, y)`` cell and, as in CTGAN, one category of
one categorical column; the generator refines a prior row drawn from the DP Gaussian copula.
Everything here is post-processing of the DP statistics.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy import special
from torch.nn import functional as F

from clients.dp_ctgan.config import PRIORS
from clients.dp_ctgan.representation import Marginal, Span, TableTransformer
from clients.dp_ctgan.statistics import Statistics
from common.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Conditioning:
    """Conditional sampling tables and the generator's prior, built from DP statistics.

    Attributes
    ----------
    transformer : TableTransformer
        Layout of a generator row.
    marginals : dict
        Continuous column -> its DP law (the copula's margins).
    cell_probs : torch.Tensor
        The 4 cells' noisy shares.
    cat_spans : tuple of Span
        The one-hot block of every categorical column, in schema order.
    cat_offsets : torch.Tensor
        Where each categorical column's block starts in the condition (after the 4 cells).
    cat_probs, cat_log_probs : tuple of torch.Tensor
        Per categorical column: ``4 × k`` noisy ``P̂(category | cell)`` and its logarithm.
    copula : numpy.ndarray
        Cholesky factor of the DP correlation of the continuous columns.
    cond_dim : int
        Width of a condition vector.
    use_prior : bool
        False for ``prior="none"``: the prior row is all zeros.
    """

    transformer: TableTransformer
    marginals: dict[str, Marginal]
    cell_probs: torch.Tensor
    cat_spans: tuple[Span, ...]
    cat_offsets: torch.Tensor
    cat_probs: tuple[torch.Tensor, ...]
    cat_log_probs: tuple[torch.Tensor, ...]
    copula: np.ndarray
    cond_dim: int
    use_prior: bool

    @classmethod
    def from_statistics(cls, stats: Statistics, transformer: TableTransformer, *,
                        prior: str) -> Conditioning:
        """The tables of a fit from its DP statistics and representation.

        ``prior`` is one of :data:`~clients.dp_ctgan.config.PRIORS`.
        """
        if prior not in PRIORS:
            raise ConfigError(f"dp-ctgan: prior must be one of {list(PRIORS)}, got {prior!r}.")
        tf, st = transformer, stats
        cats = tf.schema.categorical
        cat_offsets = torch.tensor(
            np.cumsum([0] + [len(c.categories) for c in cats])[:-1], dtype=torch.long)
        cat_probs = []
        for table in st.category_tables:
            t = torch.from_numpy(table + 1e-9)
            cat_probs.append(t / t.sum(1, keepdim=True))
        cont = [sp for sp in tf.spans if sp.continuous]
        return cls(
            transformer=tf,
            marginals=st.marginals,
            cell_probs=torch.from_numpy(st.cell_counts / st.cell_counts.sum()),
            cat_spans=tuple(sp for sp in tf.spans if not sp.continuous),
            cat_offsets=cat_offsets,
            cat_probs=tuple(cat_probs),
            cat_log_probs=tuple(torch.log(p + 1e-6) for p in cat_probs),
            copula=np.linalg.cholesky(st.correlation) if cont else np.zeros((0, 0)),
            cond_dim=4 + sum(len(c.categories) for c in cats),
            use_prior=prior != "none",
        )

    def conditions(self, cells: torch.Tensor, cat_codes: torch.Tensor | None,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Condition vectors ``[cell one-hot, one category of one categorical column]``.

        ``cat_codes`` (``B × m``) are the rows' own categories (real rows); None draws them
        from the noisy ``cell × category`` tables (fake rows). Returns the conditions, the
        conditioned column of each row and its category.
        """
        b = len(cells)
        cond = torch.zeros(b, self.cond_dim)
        cond[torch.arange(b), cells] = 1.0
        m = len(self.cat_probs)
        if m == 0:
            empty = torch.zeros(b, dtype=torch.long)
            return cond, empty, empty
        column = torch.randint(0, m, (b,), generator=gen)
        if cat_codes is not None:
            chosen = cat_codes[torch.arange(b), column]
        else:
            chosen = torch.zeros(b, dtype=torch.long)
            for j in range(m):
                rows = (column == j).nonzero().squeeze(1)
                if len(rows):
                    probs = self.cat_probs[j][cells[rows]]
                    chosen[rows] = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        cond[torch.arange(b), 4 + self.cat_offsets[column] + chosen] = 1.0
        return cond, column, chosen

    def prior(self, cells: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Raw prior rows (the generator's starting point), all from DP statistics.

        Continuous columns: a Gaussian copula, ``u = L z`` with ``LLᵀ`` the DP correlation and
        ``x_j = F_j⁻¹(Φ(u_j))`` with ``F_j`` the DP marginal, encoded as ``atanh(0.95 α)`` and
        mode logits ``κ·one-hot`` (``κ = 8``: the Gumbel draw keeps the copula's mode but for
        a 10⁻³ chance). Categorical columns: logits ``log P̂(category | cell)``.
        """
        tf = self.transformer
        n = len(cells)
        prior = torch.zeros(n, tf.width)
        if not self.use_prior:
            return prior
        cont = [sp for sp in tf.spans if sp.continuous]
        if cont:
            z = torch.randn(n, len(cont), generator=gen, dtype=torch.float64).numpy()
            u = special.ndtr(z @ self.copula.T)
            for j, sp in enumerate(cont):
                x = self.marginals[sp.column.name].ppf(u[:, j])
                k = np.clip(np.searchsorted(sp.edges, x, side="right") - 1, 0, len(sp.edges) - 2)
                alpha = np.clip((x - sp.centers[k]) / sp.half[k], -1.0, 1.0)
                prior[:, sp.start] = torch.from_numpy(np.arctanh(0.95 * alpha)).float()
                prior[torch.arange(n), sp.logits.start + torch.from_numpy(k)] = 8.0
        for sp, log_p in zip(self.cat_spans, self.cat_log_probs):
            prior[:, sp.logits] = log_p[cells].float()
        return prior

    def condition_loss(self, raw: torch.Tensor, column: torch.Tensor,
                       chosen: torch.Tensor) -> torch.Tensor:
        """CTGAN's conditional loss: cross-entropy of the conditioned column's logits."""
        loss = raw.new_zeros(())
        for j, sp in enumerate(self.cat_spans):
            rows = (column == j).nonzero().squeeze(1)
            if len(rows):
                loss = loss + F.cross_entropy(raw[rows, sp.logits], chosen[rows], reduction="sum")
        return loss / len(raw)
