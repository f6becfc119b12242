"""The batches of one fine-tuning epoch: a seeded permutation, optionally grouped by length."""

from __future__ import annotations

import numpy as np

from painters.glue.finetune import epoch_batches


def test_plain_batches_are_the_seeded_permutation_cut_in_order():
    """Without lengths the batches are exactly what the fine-tuning loop always drew (same weights as before)."""
    order = np.random.default_rng(7).permutation(103)
    batches = epoch_batches(np.random.default_rng(7), None, 103, 10)
    assert [b.tolist() for b in batches] == [order[k:k + 10].tolist() for k in range(0, 103, 10)]


def test_grouped_batches_visit_every_example_once_with_less_padding():
    lengths = np.random.default_rng(0).integers(5, 128, size=1000)
    rng = np.random.default_rng(3)
    grouped = epoch_batches(rng, lengths, 1000, 32, mega=10)
    assert sorted(np.concatenate(grouped).tolist()) == list(range(1000))
    assert [len(b) for b in grouped].count(32) == 1000 // 32  # one short batch, like the plain cut
    plain = epoch_batches(np.random.default_rng(3), None, 1000, 32)

    def padded(batches):  # tokens a step pays for: batch size × its longest example
        return sum(len(b) * lengths[b].max() for b in batches)

    assert padded(grouped) < 0.7 * padded(plain)
    again = epoch_batches(np.random.default_rng(3), lengths, 1000, 32, mega=10)
    assert all((a == b).all() for a, b in zip(grouped, again))  # seeded: the same batches again
    longest = [int(lengths[b].max()) for b in grouped]
    assert longest != sorted(longest, reverse=True)  # the batch order is shuffled, not longest first
