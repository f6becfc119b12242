"""pick_tokens: greedy at temperature 0, seeded sampling, and top-p keeping only the nucleus."""

import numpy as np

from painters.runtime.sampling import pick_tokens


def test_greedy_seeded_and_nucleus():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]]))
    assert pick_tokens(logits, [0, 0], [1, 1], [None, None]).tolist() == [0, 3]
    draw = [pick_tokens(logits[:1], [1.0], [0.7], [np.random.default_rng(s)])[0] for s in range(200)]
    assert set(draw) == {0, 1}  # 0.5 + 0.3 reaches 0.7: tokens 2 and 3 are cut
    a = [pick_tokens(logits, [1, 1], [1, 1], [np.random.default_rng(3)] * 2).tolist() for _ in range(1)]
    b = [pick_tokens(logits, [1, 1], [1, 1], [np.random.default_rng(3)] * 2).tolist() for _ in range(1)]
    assert a == b
    counts = np.bincount([pick_tokens(logits[1:], [1.0], [1.0], [np.random.default_rng(s)])[0]
                          for s in range(2000)], minlength=4) / 2000
    assert np.allclose(counts, [0.1, 0.2, 0.3, 0.4], atol=0.04)
