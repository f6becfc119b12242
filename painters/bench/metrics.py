"""Metric computations as lm-evaluation-harness does them: per-item scores, then aggregation and stderr."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["multiple_choice_scores", "mean", "mean_stderr", "perplexity", "regex_extract", "exact_match",
           "gsm8k_scores", "STRICT_MATCH", "FLEXIBLE_EXTRACT", "GSM8K_IGNORE"]

# gsm8k.yaml (v3) filters and exact_match settings.
STRICT_MATCH = r"#### (\-?[0-9\.\,]+)"
FLEXIBLE_EXTRACT = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM8K_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")
_INVALID = "[invalid]"


def multiple_choice_scores(lls: Sequence[float], gold: int, norm_lengths: Sequence[int] | None = None
                           ) -> dict[str, float]:
    """acc (argmax of loglikelihoods) and, given lengths, acc_norm (argmax of loglikelihood / length)."""
    lls = np.asarray(lls, dtype=np.float64)
    out = {"acc": float(int(np.argmax(lls)) == gold)}
    if norm_lengths is not None:
        lengths = np.maximum(np.asarray(norm_lengths, dtype=np.float64), 1.0)  # guard an empty choice
        out["acc_norm"] = float(int(np.argmax(lls / lengths)) == gold)
    return out


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean (NaN for no values)."""
    return float(np.mean(values)) if len(values) else float("nan")


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean with the sample standard deviation (n-1), as lm-eval's ``mean_stderr``."""
    n = len(values)
    if n < 2:
        return float("nan")
    return float(np.std(np.asarray(values, dtype=np.float64), ddof=1) / math.sqrt(n))


def perplexity(loglikelihoods: Sequence[float]) -> float:
    """lm-eval's ``perplexity`` aggregation: exp(-mean of the per-document loglikelihoods)."""
    return math.exp(-mean(loglikelihoods)) if len(loglikelihoods) else float("nan")


def regex_extract(text: str, pattern: str, group_select: int = 0, fallback: str = _INVALID) -> str:
    """lm-eval's ``RegexFilter`` + ``take_first``: the ``group_select``-th match (first non-empty group)."""
    matches = re.findall(pattern, text)
    if not matches:
        return fallback
    match = matches[group_select]
    if isinstance(match, tuple):
        found = [m for m in match if m]
        match = found[0] if found else fallback
    return match.strip()


def exact_match(prediction: str, reference: str, regexes_to_ignore: Sequence[str] = GSM8K_IGNORE,
                ignore_case: bool = True) -> float:
    """HF ``exact_match`` as lm-eval calls it: strip each ignore-regex from both sides, then compare."""
    for pattern in regexes_to_ignore:
        prediction = re.sub(pattern, "", prediction)
        reference = re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    return float(prediction == reference)


def gsm8k_scores(completion: str, reference: str) -> dict[str, float]:
    """exact_match under the strict-match ("#### N") and flexible-extract (last number) filters."""
    return {
        "exact_match,strict-match": exact_match(regex_extract(completion, STRICT_MATCH, 0), reference),
        "exact_match,flexible-extract": exact_match(regex_extract(completion, FLEXIBLE_EXTRACT, -1), reference),
    }
