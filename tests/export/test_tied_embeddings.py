"""Tied embeddings are stored once: the LM head reads ``Transpose(embedding)``, plans and int4 still match.

A tiny random Llama with ``tie_word_embeddings=True`` (SmolLM2's layout) is exported once for the module.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from painters.compiler.compile import compile_model
from painters.compiler.graph_io import initializer_bytes, load_graph
from tests.compiler.parity import assert_plan_parity
from tests.compiler.test_quantize import PROMPTS, REL_DEQUANTIZED, _int4_roundtrip

VOCAB, HIDDEN = 512, 64


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """(LoadedModel, exported .onnx) of a tied tiny Llama (3 layers, GQA 4/2 heads, vocab 512)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from painters.export.onnx_export import export_model
    from painters.export.sources import LoadedModel

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    loaded = LoadedModel(model, None, "tied-llama", "0")
    return loaded, export_model(loaded, tmp_path_factory.mktemp("tied") / "model.onnx")  # self-checked


def test_embedding_is_stored_once(tied):
    loaded, path = tied
    graph = onnx.load(path, load_external_data=False).graph
    vocab_sized = [t for t in graph.initializer if VOCAB in t.dims]
    assert len(vocab_sized) == 1, [t.name for t in vocab_sized]
    params = {id(p): p for p in loaded.model.parameters()}.values()  # the tied matrix counted once
    stored, matrix = initializer_bytes(load_graph(path)), VOCAB * HIDDEN * 4
    # small constants (norm gains) may be inlined as nodes; a second copy of the matrix would add `matrix`
    assert abs(stored - sum(p.numel() * p.element_size() for p in params)) < matrix // 10
    readers = [n.op_type for n in graph.node if vocab_sized[0].name in n.input]
    assert sorted(readers) == ["Gather", "Transpose"]
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight  # the model is restored, tied


@pytest.mark.parametrize("plan", ["skip_1_2", "parallel_0_3"])
def test_plans_on_the_tied_graph(tied, tmp_path, plan):
    loaded, path = tied
    assert_plan_parity(loaded, path, plan, tmp_path, PROMPTS, n_tokens=8)


def test_int4_quantizes_the_tied_head_once(tied, tmp_path):
    """--weights int4: the head's MatMulNBits holds the transposed embedding quantized; the Gather keeps fp32."""
    from painters.runtime.base import left_pad
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner

    loaded, path = tied
    result = compile_model(path, "baseline", tmp_path / "q.onnx", weights="int4")
    graph = load_graph(result.output).graph
    assert [n.op_type for n in graph].count("MatMulNBits") == 7 * 3 + 1
    assert not [n for n in graph if n.op_type == "Transpose" and n.inputs[0].is_initializer()]  # folded into it
    reference = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for module in reference.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.from_numpy(_int4_roundtrip(module.weight.numpy(), 32)))
        head = _int4_roundtrip(reference.lm_head.weight.numpy(), 32)
        reference.lm_head.weight = torch.nn.Parameter(torch.from_numpy(head))  # untied: the Gather stays fp32
    ids, mask = left_pad(PROMPTS)
    got, _ = OrtRunner(result.output).prefill(ids, mask)
    want, _ = TorchRunner(reference, result.plan, device="cpu").prefill(ids, mask)
    real = mask.astype(bool)
    diff = float(np.abs(got[real] - want[real]).max() / np.abs(want[real]).max())
    assert diff <= REL_DEQUANTIZED, f"int4 tied head: {diff:.2e}"
