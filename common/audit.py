r"""Membership-inference audit of released rows.

Given the rows a client released, an attacker tries to tell the client's training rows
(*members*) from rows of the same population that were not used (*non-members*). Two attacks:

* **DCR** (distance to closest record): ``score(x) = −min_{r ∈ R} ‖e(x) − e(r)‖₂`` in a
  standardised encoding ``e`` (continuous columns scaled by the released rows' own statistics,
  one-hot categories, ``s`` and ``y`` as 0/1 columns). A released copy or near-copy of a member
  gives it a high score.
* **Density ratio** (a likelihood-ratio attack in the style of DOMIAS, van Breugel et al.,
  AISTATS 2023): ``score(x) = log p̂_R(x) − log p̂_ref(x)`` with Gaussian kernel density
  estimates on the released rows ``R`` and on a reference sample of the population the
  attacker holds. Overfitting of the generator to its training rows shows as excess density
  at the members.

The audit reports each attack's ROC AUC (0.5 = chance; 1 = every member found).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import logsumexp

from common.encoding import Encoder
from common.errors import DataError
from common.schema import TabularData


def roc_auc(scores_members: np.ndarray, scores_non_members: np.ndarray) -> float:
    """ROC AUC of ``members > non-members`` (Mann–Whitney U with mid-ranks for ties)."""
    a = np.asarray(scores_members, dtype=np.float64)
    b = np.asarray(scores_non_members, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        raise DataError("the audit needs at least one member and one non-member row.")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    sorted_scores = both[order]
    # mid-ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2.0
    return float(u / (len(a) * len(b)))


def _embed(encoder: Encoder, data: TabularData) -> np.ndarray:
    return np.column_stack([encoder.encode_z(data), data.s, data.y]).astype(np.float64)


def dcr_scores(released: TabularData, queries: TabularData, *, encoder: Encoder) -> np.ndarray:
    """Negative distance from each query row to its closest released row."""
    tree = cKDTree(_embed(encoder, released))
    dist, _ = tree.query(_embed(encoder, queries), k=1)
    return -dist


def density_ratio_scores(released: TabularData, reference: TabularData, queries: TabularData, *,
                         encoder: Encoder, max_rows: int = 4000, seed: int = 0) -> np.ndarray:
    """``log p̂_R(x) − log p̂_ref(x)`` with Gaussian KDEs (Scott's bandwidth, shared scale)."""
    rng = np.random.default_rng(seed)
    R, ref, Q = (_embed(encoder, d) for d in (released, reference, queries))

    def thin(a):
        return a[rng.choice(len(a), max_rows, replace=False)] if len(a) > max_rows else a

    R, ref = thin(R), thin(ref)
    return _log_kde(R, Q) - _log_kde(ref, Q)


def _log_kde(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    n, d = points.shape
    h = n ** (-1.0 / (d + 4))  # Scott's factor on unit-scaled columns
    out = np.empty(len(queries))
    sq_p = np.einsum("ij,ij->i", points, points)
    for start in range(0, len(queries), 512):
        q = queries[start:start + 512]
        sq = np.einsum("ij,ij->i", q, q)[:, None] + sq_p[None, :] - 2.0 * q @ points.T
        out[start:start + 512] = logsumexp(-0.5 * np.maximum(sq, 0.0) / h**2, axis=1)
    return out - np.log(n)


@dataclasses.dataclass(frozen=True)
class AuditResult:
    dcr_auc: float
    density_auc: float
    members: int
    non_members: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def membership_audit(released: TabularData, members: TabularData, non_members: TabularData,
                     reference: TabularData, *, max_queries: int = 1000, seed: int = 0
                     ) -> AuditResult:
    """Run both attacks against ``released``.

    Parameters
    ----------
    released : the rows that left the client.
    members : the client's training rows (what the released rows were computed from).
    non_members : rows of the same population not used by the client (e.g. its test split).
    reference : the attacker's own population sample (disjoint from both), for the density ratio.
    max_queries : members and non-members are subsampled to at most this many each (equal sizes).
    """
    rng = np.random.default_rng(seed)
    k = min(max_queries, len(members), len(non_members))
    if k == 0:
        raise DataError("the audit needs at least one member and one non-member row.")
    mem = members.subset(rng.choice(len(members), k, replace=False))
    non = non_members.subset(rng.choice(len(non_members), k, replace=False))
    encoder = Encoder.fit(reference)  # the attacker's scaling: public to the attacker
    dcr = roc_auc(dcr_scores(released, mem, encoder=encoder),
                  dcr_scores(released, non, encoder=encoder))
    dens_m = density_ratio_scores(released, reference, mem, encoder=encoder, seed=seed)
    dens_n = density_ratio_scores(released, reference, non, encoder=encoder, seed=seed)
    return AuditResult(dcr_auc=dcr, density_auc=roc_auc(dens_m, dens_n), members=k, non_members=k)
