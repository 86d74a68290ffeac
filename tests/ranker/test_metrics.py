"""AUC and log loss against their definitions."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from idproxy_stream.ranker.metrics import log_loss, roc_auc


def brute_force_auc(labels, scores) -> float:
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(
        1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)
    )
    return wins / (len(positives) * len(negatives))


@given(st.lists(st.tuples(st.integers(0, 1), st.integers(-3, 3)), min_size=2, max_size=40))
def test_auc_equals_the_pairwise_definition_with_ties(pairs):
    labels = [y for y, _ in pairs]
    scores = [float(s) for _, s in pairs]
    if len(set(labels)) < 2:
        assert np.isnan(roc_auc(np.array(labels), np.array(scores)))
        return
    assert (
        abs(roc_auc(np.array(labels), np.array(scores)) - brute_force_auc(labels, scores)) < 1e-12
    )


def test_log_loss_matches_hand_computation():
    labels = np.array([1, 0])
    probabilities = np.array([0.8, 0.4])
    expected = -(np.log(0.8) + np.log(0.6)) / 2
    assert abs(log_loss(labels, probabilities) - expected) < 1e-12
