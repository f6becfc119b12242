"""The papers' path (--backend hf): Hugging Face's own forward decodes what generate() does; plans go eager."""

from __future__ import annotations

import torch

from painters.plans import parse_plan
from painters.runtime.hf import HfLoop, HfRunner
from painters.runtime.torch_ref import TorchRunner

PROMPTS = [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6]]


def test_baseline_loop_is_generate(tiny):
    runner = HfRunner(tiny.model, parse_plan("baseline", 8), device="cpu")
    assert isinstance(runner.greedy_loop(torch.ones(1, 2, dtype=torch.long).numpy(),
                                         torch.ones(1, 2, dtype=torch.long).numpy(), 4), HfLoop)
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        want = tiny.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10,
                                   min_new_tokens=10, pad_token_id=0)[0, len(prompt):].tolist()
        assert runner.generate([prompt], 10) == [want]
    # a left-padded batch decodes like its rows alone
    assert runner.generate(PROMPTS, 10) == [runner.generate([p], 10)[0] for p in PROMPTS]


def test_plans_run_eagerly_in_plan_order(tiny):
    plan = parse_plan("parallel_2_6_x2", 8)
    runner = HfRunner(tiny.model, plan, device="cpu")
    assert runner.generate(PROMPTS, 8) == TorchRunner(tiny.model, plan, device="cpu").generate(PROMPTS, 8)
