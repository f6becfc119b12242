"""The reference executor's family adapters against an oracle built from the model's *own* forward, by hooks.

The oracle runs ``model(...)`` once with a pre-hook on every decoder layer that records exactly what the model
hands that layer (input stream, mask, rotary table, and any other keyword). It then runs ``model(...)`` again
with a hook on the last layer that replaces its output by the block plan executed with the model's *whole
layer modules* in plan order, each called with its own recorded mask and rotary; the model's own epilogue
(final norm, head, soft-capping, logit scaling) follows. A layer moved by a plan therefore keeps the mask and
rotary the model itself gives it, which is what the adapters must reproduce. Block plans only: a sublayer drop
has no whole-layer equivalent (the export tests cover those against the adapters).
"""

from __future__ import annotations

import pytest
import torch

from painters.plans import parse_plan
from painters.runtime.base import left_pad, positions_from_mask
from painters.runtime.torch_ref import plan_forward
from tests.families import COMMON, FAMILIES, PROMPTS

BLOCK_PLANS = ["baseline", "swap_0_3", "reverse_0_4", "skip_1_2+dup_3_x2", "parallel_1_3", "parallel_0_4_x2"]


def _model(name: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, overrides = FAMILIES[name]
    kwargs = {k: v for k, v in {**COMMON, **overrides}.items() if v is not None}
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **kwargs)).eval()


def _layers(model):
    return model.gpt_neox.layers if hasattr(model, "gpt_neox") else model.model.layers


@torch.no_grad()
def _oracle_logits(model, plan, ids, mask, pos) -> torch.Tensor:
    layers = _layers(model)
    seen: dict[int, tuple[tuple, dict]] = {}

    def record(i):
        def hook(module, args, kwargs):
            seen[i] = (args, kwargs)
        return hook

    handles = [layer.register_forward_pre_hook(record(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    finally:
        for h in handles:
            h.remove()

    def call(block: int, x: torch.Tensor) -> torch.Tensor:
        args, kwargs = seen[block]
        out = layers[block](x, *args[1:], **kwargs) if args else layers[block](**{**kwargs, "hidden_states": x})
        return out[0] if isinstance(out, tuple) else out

    busy = []  # the plan calls the last layer too: its hook must then pass through

    def run_plan(module, args, output):
        if busy:
            return output
        busy.append(True)
        x = seen[0][0][0] if seen[0][0] else seen[0][1]["hidden_states"]
        for stage in plan.stages():
            outs = [call(b, x) for b in stage.blocks]
            x = outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)
        busy.clear()
        return (x, *output[1:]) if isinstance(output, tuple) else x

    handle = layers[-1].register_forward_hook(run_plan)
    try:
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    finally:
        handle.remove()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_block_plans_match_hooked_model(name):
    model = _model(name)
    ids, mask = left_pad(PROMPTS)
    pos = torch.from_numpy(positions_from_mask(mask, ids.shape[1]))
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    real = mask.bool()
    for plan_name in BLOCK_PLANS:
        plan = parse_plan(plan_name, 4)
        want = _oracle_logits(model, plan, ids, mask, pos)
        got = plan_forward(model, plan, ids, mask, pos).logits
        diff = float((got - want)[real].abs().max() / want[real].abs().max())
        assert diff <= 1e-5, f"{name} {plan_name}: relative max logit diff {diff:.2e}"
