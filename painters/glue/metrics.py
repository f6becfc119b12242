"""GLUE's own metrics, in plain numpy (no scipy or scikit-learn): what ``painters bench glue`` reports.

Each task scores in percent. A task with two metrics (MRPC: F1 and accuracy; STS-B: Pearson and Spearman)
scores the mean of the two, as the GLUE leaderboard does; the *average* is the unweighted mean of the task
scores — the unnormalized GLUE average the Painters paper reports.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "f1_binary", "matthews_corr", "pearson", "spearman", "ranks", "task_score", "glue_average"]


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    """Fraction of predictions equal to the gold label."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean())


def f1_binary(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of the positive class (label 1); 0 when there is no true positive."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp = float(np.sum(pred & gold))
    fp, fn = float(np.sum(pred & ~gold)), float(np.sum(~pred & gold))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corr(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation of binary labels; 0 when a marginal is constant (the sklearn convention)."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, tn = float(np.sum(pred & gold)), float(np.sum(~pred & ~gold))
    fp, fn = float(np.sum(pred & ~gold)), float(np.sum(~pred & gold))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else float((tp * tn - fp * fn) / denom)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 when either input is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return 0.0 if denom == 0 else float(np.sum(dx * dy) / denom)


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (what Spearman's rho ranks by)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=r)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the average ranks."""
    return pearson(ranks(x), ranks(y))


def task_score(metrics: dict[str, float]) -> float:
    """One task's GLUE score in percent: its metric, or the mean of its two."""
    return 100.0 * float(np.mean(list(metrics.values())))


def glue_average(scores: dict[str, float]) -> float:
    """Unweighted mean of task scores (percent)."""
    return float(np.mean(list(scores.values())))
