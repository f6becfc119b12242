"""Logits → next token: greedy, or sampled with temperature and nucleus (top-p) filtering, per row.

One function the decode loop calls after each step, so sampled generation is the greedy loop with another
token picker, not a second loop. Each row has its own numpy generator, so a seeded request gives the same
tokens whatever it is batched with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pick_tokens"]


def pick_tokens(logits: np.ndarray, temperature: Sequence[float], top_p: Sequence[float],
                rngs: Sequence[np.random.Generator | None]) -> np.ndarray:
    """The next token of every row of ``logits`` [batch, vocab] (float, on the host).

    A row with temperature 0 (or no generator) takes the argmax; otherwise it samples from
    softmax(logits / temperature) restricted to the smallest set of most likely tokens whose probability
    reaches ``top_p`` (the top token is always kept).
    """
    logits = np.asarray(logits, dtype=np.float64)
    out = logits.argmax(-1).astype(np.int64)
    for row, (t, p, rng) in enumerate(zip(temperature, top_p, rngs)):
        if t <= 0 or rng is None:
            continue
        z = logits[row] / t
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, p)) + 1]
        kept = probs[keep] / probs[keep].sum()
        out[row] = keep[rng.choice(len(keep), p=kept)]
    return out
