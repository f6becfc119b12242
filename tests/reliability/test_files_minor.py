"""Issue 32, false provenance and the minor list: int4 recompiles record the block their weights really have (or are
refused), and NaN/Inf source weights are a damaged checkpoint named by tensor, not "a painters bug"."""

from __future__ import annotations

import pytest

from tests.reliability.checks import assert_refused, run_cli


@pytest.fixture
def int4_graph(model_dir):
    """tiny-llama's graph with int4 weights in blocks of 32 (the identity plan: still a source graph)."""
    out = model_dir.with_name("int4.onnx")
    code, text = run_cli(["compile", "--plan", "baseline", model_dir, "--weights", "int4", "--block-size", "32",
                          "-o", out])
    assert code == 0, text
    return out


@pytest.mark.parametrize("block", ["32", "128"])
@pytest.mark.parametrize("plan", ["baseline", "skip_1_3", "drop_attn_2"])
def test_int4_recompile_of_an_int4_graph_is_refused(int4_graph, tmp_path, plan, block):
    """Its weights are kept as they are, so any --block-size would be recorded falsely: --weights int4 is refused."""
    assert_refused(["compile", "--plan", plan, int4_graph, "--weights", "int4", "--block-size", block,
                    "-o", tmp_path / "o.onnx"], [int4_graph.parent, tmp_path], "already has quantized weights",
                   "int4/block32", "drop --weights int4")


def test_compiling_an_int4_graph_keeps_and_records_its_block(int4_graph, tmp_path):
    from painters.compiler.compile import describe
    from painters.compiler.passes.quantize import DEFAULT_QUANTIZER

    out = tmp_path / "o.onnx"
    code, text = run_cli(["compile", "--plan", "skip_1_3", int4_graph, "-o", out])
    assert code == 0, text
    assert describe(out)["weights"] == f"int4/block32/{DEFAULT_QUANTIZER}/level4"


# NaN weights ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tensor", ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                                    "model.layers.7.mlp.down_proj.weight", "model.norm.weight",
                                    "model.layers.3.input_layernorm.weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_export_names_a_non_finite_weight(tiny, tmp_path, tensor, value):
    import torch

    from tests.byte_tokenizer import byte_tokenizer

    ckpt = tmp_path / "ckpt"
    tiny.model.save_pretrained(ckpt)
    byte_tokenizer().save_pretrained(ckpt)
    from safetensors.torch import load_file, save_file

    weights = load_file(ckpt / "model.safetensors")
    if tensor not in weights:
        pytest.skip(f"{tensor} is not stored (tied)")
    weights[tensor] = weights[tensor].clone()
    weights[tensor].view(-1)[0] = value
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    assert not torch.isfinite(weights[tensor]).all()
    line = assert_refused(["export", ckpt, "-o", tmp_path / "out" / "model.onnx"], [tmp_path], tensor, "damaged")
    assert "painters bug" not in line
