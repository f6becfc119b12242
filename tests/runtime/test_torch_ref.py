"""The reference executor: baseline is the unmodified model; each plan kind equals a hand-written loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from painters.plans import parse_plan
from painters.runtime.base import left_pad
from painters.runtime.torch_ref import TorchRunner, plan_forward
from tests.compiler.parity import TINY_PLANS


def _inputs(prompts=([1, 17, 99, 3, 45, 8, 200], [1, 5, 6])):
    ids, mask = left_pad(prompts)
    pos = np.maximum(mask.cumsum(1) - 1, 0)
    return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(pos)


def test_baseline_is_the_unmodified_model(tiny):
    ids, mask, pos = _inputs()
    want = tiny.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    got = plan_forward(tiny.model, parse_plan("baseline", 8), ids, mask, pos).logits
    real = mask.bool()
    assert torch.equal(got[real], want[real])


def _hand_loop(model, ids, mask, pos, order):
    """Independent loop: ``order`` lists (blocks, attn, mlp) groups; groups average their members' outputs."""
    inner = model.model
    x = inner.embed_tokens(ids)
    cos, sin = inner.rotary_emb(x, pos)
    q = torch.arange(ids.shape[1])
    allowed = (q[None, :] <= q[:, None])[None, None] & mask[:, None, None, :].bool()
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    for blocks, attn, mlp in order:
        outs = []
        for b in blocks:
            layer = inner.layers[b]
            h = x
            if attn:
                a, _ = layer.self_attn(layer.input_layernorm(x), position_embeddings=(cos, sin), attention_mask=bias)
                h = x + a
            outs.append(h + layer.mlp(layer.post_attention_layernorm(h)) if mlp else h)
        x = sum(outs) / len(outs)
    return model.lm_head(inner.norm(x))


SEQ = [((i,), True, True) for i in range(8)]
HAND = {
    "skip_2_5": SEQ[:2] + SEQ[5:],
    "repeat_2_6": SEQ[:2] + [((4,), True, True)] * 4 + SEQ[6:],
    "reverse_2_6": SEQ[:2] + SEQ[2:6][::-1] + SEQ[6:],
    "parallel_2_6": SEQ[:2] + [((2, 3, 4, 5), True, True)] + SEQ[6:],
    "parallel_1_7_x3": SEQ[:1] + [((1, 2, 3, 4, 5, 6), True, True)] * 3 + SEQ[7:],
    "dup_4_x3": SEQ[:4] + [SEQ[4]] * 3 + SEQ[5:],
    "swap_1_6": [SEQ[0], SEQ[6], *SEQ[2:6], SEQ[1], SEQ[7]],
    "drop_attn_1,3-4": [((i,), i not in (1, 3, 4), True) for i in range(8)],
    "drop_mlp_0,7": [((i,), True, i not in (0, 7)) for i in range(8)],
    "drop_block_2-3": SEQ[:2] + SEQ[4:],
}


@pytest.mark.parametrize("plan", sorted(HAND))
def test_plan_equals_hand_written_loop(tiny, plan):
    ids, mask, pos = _inputs()
    with torch.no_grad():
        want = _hand_loop(tiny.model, ids, mask, pos, HAND[plan])
        got = plan_forward(tiny.model, parse_plan(plan, 8), ids, mask, pos).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("plan", TINY_PLANS)
def test_cached_decoding_equals_recomputation(tiny, plan):
    """kv=exact: greedy decoding through the cache gives the same logits as recomputing the sequence."""
    runner = TorchRunner(tiny.model, parse_plan(plan, 8), device="cpu")
    prompt = [1, 17, 99, 3, 45]
    tokens = runner.generate([prompt], 8)[0]
    seq = np.array([prompt + tokens])
    full, _ = runner.prefill(seq, np.ones_like(seq))
    assert full[0, len(prompt) - 1:-1].argmax(-1).tolist() == tokens
    logits, kv = runner.prefill(seq[:, :len(prompt)], np.ones((1, len(prompt)), np.int64))
    for t in range(len(prompt), seq.shape[1]):
        logits, kv = runner.decode(seq[:, t], np.ones((1, t + 1), np.int64), kv)
        np.testing.assert_allclose(logits[0, -1], full[0, t], rtol=1e-4, atol=1e-4)


def test_kv_mean_shares_one_slot_and_differs_from_exact(tiny):
    exact, mean = parse_plan("parallel_2_6", 8), parse_plan("parallel_2_6:kvmean", 8)
    assert (exact.kv_slots, mean.kv_slots) == (8, 5)
    prompt = [1, 17, 99, 3, 45]
    a = TorchRunner(tiny.model, exact, device="cpu")
    b = TorchRunner(tiny.model, mean, device="cpu")
    ids = np.array([prompt])
    la, kva = a.prefill(ids, np.ones_like(ids))
    lb, kvb = b.prefill(ids, np.ones_like(ids))
    np.testing.assert_allclose(la, lb, rtol=1e-6)  # prefill never reads the cache
    step = np.ones((1, 6), np.int64)
    da, _ = a.decode(np.array([7]), step, kva)
    db, _ = b.decode(np.array([7]), step, kvb)
    assert not np.allclose(da, db)  # decoding attends over the averaged cache: an approximation


SEQ30 = [((i,), True, True) for i in range(30)]
HAND_SMOLLM2 = {
    "skip_13_17": SEQ30[:13] + SEQ30[17:],
    "parallel_11_19_x2": SEQ30[:11] + [(tuple(range(11, 19)), True, True)] * 2 + SEQ30[19:],
    "drop_attn_20-27": [((i,), not 20 <= i <= 27, True) for i in range(30)],
}


@pytest.mark.slow
def test_smollm2_baseline_and_plans(smollm2):
    """On the real model: baseline is the unmodified model, plans equal the hand loop, the cache is exact."""
    tok = smollm2.tokenizer
    prompts = [tok.encode("The capital of France is"), tok.encode("Q: What is 2 + 3?\nA:")]
    ids, mask, pos = _inputs(prompts)
    real = mask.bool()
    with torch.no_grad():
        want = smollm2.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        got = plan_forward(smollm2.model, parse_plan("baseline", 30), ids, mask, pos).logits
        assert torch.equal(got[real], want[real])
        for plan, order in HAND_SMOLLM2.items():
            want = _hand_loop(smollm2.model, ids, mask, pos, order)
            got = plan_forward(smollm2.model, parse_plan(plan, 30), ids, mask, pos).logits
            torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-4)
    for plan in HAND_SMOLLM2:
        runner = TorchRunner(smollm2.model, parse_plan(plan, 30), device="cpu")
        tokens = runner.generate([prompts[0]], 6)[0]
        seq = np.array([prompts[0] + tokens])
        full, _ = runner.prefill(seq, np.ones_like(seq))
        assert full[0, len(prompts[0]) - 1:-1].argmax(-1).tolist() == tokens, plan
