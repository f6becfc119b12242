"""GLUE metrics against reference formulas written out element by element (no scipy / scikit-learn)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from painters.glue.metrics import (
    accuracy,
    f1_binary,
    glue_average,
    matthews_corr,
    pearson,
    ranks,
    spearman,
    task_score,
)

PRED = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
GOLD = [1, 0, 0, 1, 0, 1, 1, 0, 0, 1]


def _counts(pred, gold):
    tp = sum(p == 1 and g == 1 for p, g in zip(pred, gold))
    tn = sum(p == 0 and g == 0 for p, g in zip(pred, gold))
    fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold))
    fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold))
    return tp, tn, fp, fn


def _pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def _avg_ranks(x):
    """Rank i+1 by sorted position; tied values share the mean of their positions."""
    s = sorted(x)
    return [sum(k + 1 for k, v in enumerate(s) if v == a) / s.count(a) for a in x]


def test_accuracy_f1_matthews_match_the_formulas():
    tp, tn, fp, fn = _counts(PRED, GOLD)  # 4, 3, 2, 1
    assert accuracy(np.array(PRED), np.array(GOLD)) == pytest.approx((tp + tn) / 10)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert f1_binary(np.array(PRED), np.array(GOLD)) == pytest.approx(2 * precision * recall / (precision + recall))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corr(np.array(PRED), np.array(GOLD)) == pytest.approx(mcc)
    assert matthews_corr(np.array(GOLD), np.array(GOLD)) == pytest.approx(1.0)
    assert matthews_corr(1 - np.array(GOLD), np.array(GOLD)) == pytest.approx(-1.0)


def test_degenerate_cases_follow_glue_conventions():
    ones = np.ones(6, dtype=int)
    assert matthews_corr(ones, np.array([1, 0, 1, 0, 1, 0])) == 0.0  # constant prediction: 0, not NaN
    assert f1_binary(np.zeros(4, dtype=int), np.array([1, 0, 1, 0])) == 0.0
    assert pearson(np.ones(4), np.arange(4.0)) == 0.0


def test_pearson_and_spearman_with_ties():
    x = [0.5, 2.0, 2.0, 3.5, 1.0, 4.0, 2.0]
    y = [1.0, 1.5, 3.0, 3.0, 0.2, 5.0, 2.5]
    assert pearson(np.array(x), np.array(y)) == pytest.approx(_pearson(x, y))
    assert list(ranks(np.array(x))) == pytest.approx(_avg_ranks(x))
    assert spearman(np.array(x), np.array(y)) == pytest.approx(_pearson(_avg_ranks(x), _avg_ranks(y)))
    assert spearman(np.array(x), np.exp(np.array(x))) == pytest.approx(1.0)  # any monotone map


def test_task_score_and_average():
    assert task_score({"f1": 0.8, "accuracy": 0.7}) == pytest.approx(75.0)
    assert glue_average({"mrpc": 75.0, "rte": 60.0, "cola": 30.0}) == pytest.approx(55.0)
