"""Membership-inference audit: AUC against scikit-learn, and the attacks on known cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common.audit import membership_audit, roc_auc
from common.datasets import make_synthetic


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, size=int(rng.integers(1, 60))).astype(float)
    b = rng.integers(0, 5, size=int(rng.integers(1, 60))).astype(float) - 0.5 * seed
    labels = np.r_[np.ones(len(a)), np.zeros(len(b))]
    if labels.min() == labels.max():
        pytest.skip("one class")
    assert roc_auc(a, b) == pytest.approx(roc_auc_score(labels, np.r_[a, b]))


def _population():
    data = make_synthetic(6000, n_features=4, seed=11)
    idx = np.random.default_rng(0).permutation(len(data))
    return data.subset(idx[:1500]), data.subset(idx[1500:3000]), data.subset(idx[3000:4500]), \
        data.subset(idx[4500:])


def test_releasing_the_members_is_caught():
    members, non_members, reference, _ = _population()
    result = membership_audit(members, members, non_members, reference, max_queries=500)
    assert result.dcr_auc > 0.99
    assert result.density_auc > 0.6  # a smooth KDE: weaker than DCR on exact copies


def test_an_independent_sample_reveals_nothing():
    members, non_members, reference, fresh = _population()
    result = membership_audit(fresh, members, non_members, reference, max_queries=1000)
    assert abs(result.dcr_auc - 0.5) < 0.05
    assert abs(result.density_auc - 0.5) < 0.05
