"""Token batches as every runner takes them: left padding and the position ids it implies.

Below both :mod:`painters.runtime.base` (runners) and :mod:`painters.runtime.decode` (decoding loops), so the
loops need nothing from the runner module and the two import in one direction only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["positions_from_mask", "left_pad", "rows_by_length"]


def positions_from_mask(attention_mask: np.ndarray, seq: int) -> np.ndarray:
    """Position ids of the last ``seq`` tokens: the count of real tokens before each (left padding → 0s)."""
    pos = np.cumsum(attention_mask, axis=1) - 1
    pos = np.maximum(pos, 0)
    return pos[:, -seq:].astype(np.int64)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists into (input_ids, attention_mask)."""
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq):] = seq
            mask[row, width - len(seq):] = 1
    return ids, mask


def rows_by_length(sequences: Sequence[Sequence[int]]) -> list[list[int]]:
    """Indices of ``sequences`` grouped by length, in order of first appearance: batches that need no padding
    (for runners that take no padded rows, ``Runner.pads_rows``)."""
    groups: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        groups.setdefault(len(seq), []).append(i)
    return list(groups.values())
