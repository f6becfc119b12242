"""A graph from another exporter: Hugging Face's own forward through the TorchScript exporter.

Node names carry ``/m/model/layers.{i}/...`` scopes (the Optimum / TorchScript style), values have no types,
and the cache goes through transformers' DynamicCache. Run as a script (a subprocess keeps the deprecated
exporter's global state away from the test session): ``python -m tests.compiler.torchscript_export OUT.onnx``.
"""

from __future__ import annotations

import sys

import torch
from transformers import DynamicCache

from painters.export.sources import load_source


class HFDecoder(torch.nn.Module):
    """Flat Optimum-style IO around ``LlamaForCausalLM.forward`` with a DynamicCache."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        cache = DynamicCache(config=self.m.config)
        for i in range(len(past) // 2):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     past_key_values=cache, use_cache=True)
        return (out.logits, *[t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)])


def main(out: str) -> None:
    loaded = load_source("tiny-llama")
    cfg, L = loaded.config, loaded.num_layers
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    past = [torch.zeros(2, cfg.num_key_value_heads, 4, head_dim) for _ in range(2 * L)]
    args = (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 7, dtype=torch.long), torch.arange(4, 7).repeat(2, 1),
            *past)
    names = [f"past_key_values.{i}.{k}" for i in range(L) for k in ("key", "value")]
    outputs = ["logits", *[f"present.{i}.{k}" for i in range(L) for k in ("key", "value")]]
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
               "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"},
               **{n: {0: "batch", 2: "past"} for n in names}, **{n: {0: "batch", 2: "total"} for n in outputs[1:]}}
    torch.onnx.export(HFDecoder(loaded.model).eval(), args, out, dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask", "position_ids", *names], output_names=outputs,
                      dynamic_axes=dynamic)


if __name__ == "__main__":
    main(sys.argv[1])
