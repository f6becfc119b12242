"""ONNX Runtime GenAI builder graphs as compile inputs: every block plan vs the reference, and GenAI opens the output.

The builder's graphs (fp32 and int4 CPU, fp16 CUDA, which runs on the CPU EP) are made once per session from
tiny-llama saved as a plain Hugging Face directory, so the reference executor runs the very weights the builder read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from painters.compiler.compile import compile_model
from painters.errors import CompileError
from tests.compiler.parity import TINY_PLANS

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (extra 'genai')")

PROMPTS = [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6, 77, 120, 9, 31]]  # equal lengths: GQA takes right-padded batches
REL = 1e-4  # max |logit diff| / max |logit|, as for painters' own graphs


def _prefill_diff(tiny, out: Path, plan) -> float:
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner

    ids = np.array(PROMPTS)
    mask = np.ones_like(ids)
    got, _ = OrtRunner(out).prefill(ids, mask)
    want, _ = TorchRunner(tiny.model, plan, device="cpu").prefill(ids, mask)
    return float(np.abs(got - want).max() / np.abs(want).max())


def _genai_generate(folder: Path, prompt: list[int], n: int) -> list[int]:
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + n, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens([prompt])
    while not gen.is_done():
        gen.generate_next_token()
    return [int(t) for t in gen.get_sequence(0)][len(prompt):]


@pytest.mark.parametrize("plan", TINY_PLANS + [p + ":kvmean" for p in TINY_PLANS if "parallel" in p])
def test_genai_fp32_plan_parity(tiny, genai_dirs, tmp_path, plan):
    """Prefill logits of the compiled builder graph equal the reference executor's for every plan kind."""
    result = compile_model(genai_dirs["fp32"] / "model.onnx", plan, tmp_path / "out" / "model.onnx")
    diff = _prefill_diff(tiny, result.output, result.plan)
    assert diff <= REL, f"{plan}: relative max logit diff {diff:.2e} > {REL:.0e}"
    config = json.loads((result.output.parent / "genai_config.json").read_text())["model"]["decoder"]
    assert config["num_hidden_layers"] == result.kv_slots
    assert result.output_bytes <= result.source_bytes


@pytest.mark.parametrize("plan", ["skip_2_5", "parallel_2_6", "dup_4_x3:kvmean"])
def test_genai_opens_and_generates_like_reference(tiny, genai_dirs, plan):
    """The default output folder opens in onnxruntime-genai and greedy-decodes the reference's tokens."""
    from painters.runtime.torch_ref import TorchRunner

    result = compile_model(genai_dirs["fp32"] / "model.onnx", plan)
    folder = result.output.parent
    assert folder == genai_dirs["fp32"].with_name(f"fp32.{plan.replace(':', '-')}")
    assert {"tokenizer.json", "genai_config.json", "model.onnx.data"} <= {p.name for p in folder.iterdir()}
    want = TorchRunner(tiny.model, result.plan, device="cpu").generate([PROMPTS[0]], 12)[0]
    assert _genai_generate(folder, PROMPTS[0], 12) == want
    shutil.rmtree(folder)


@pytest.mark.parametrize("plan, in_place", [("baseline", True), ("skip_2_5", True), ("drop_attn_1,3-4", True),
                                            ("parallel_2_6", True), ("dup_4_x3:kvmean", True),
                                            ("parallel_2_6:kvmean", False)])
def test_genai_decodes_in_place(tiny, genai_dirs, tmp_path, plan, in_place):
    """Slots one GroupQueryAttention writes are decoded in place: each slot's one buffer is bound as its past and
    present, the operator writes the new key/value itself, and the tokens are the growing cache's and the
    reference's — also past a bucket's end. kv=mean slots (presents averaged) keep the concatenating cache."""
    from painters.runtime.decode import ForwardLoop, StaticLoop
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner

    result = compile_model(genai_dirs["fp32"] / "model.onnx", plan, tmp_path / "out" / "model.onnx")
    assert all(s.in_place for s in result.layout.slots) is in_place
    runner = OrtRunner(result.output)
    assert runner.kv_in_place is in_place
    reference = TorchRunner(tiny.model, result.plan, device="cpu")
    for prompt, new in ((PROMPTS[0], 12), (list(range(3, 63)), 10)):  # 60 + 10 positions outgrow bucket 64
        ids = np.array([prompt])
        loop = runner.greedy_loop(ids, np.ones_like(ids), new)
        assert isinstance(loop, StaticLoop if in_place else ForwardLoop)
        got = runner.generate([prompt], new)
        assert got == runner.generate([prompt], new, static=False) == reference.generate([prompt], new)
    if in_place:
        buffers = runner.static_buffers(1, 128)
        assert all(p is q for p, q in zip(buffers.past_groups, buffers.present_groups))  # one buffer, no twin
        padded = runner.greedy_loop(np.array([[0, 5, 6]]), np.array([[0, 1, 1]]), 4)
        assert isinstance(padded, ForwardLoop)  # GQA reads a row's filled positions from the front: no padding


@pytest.mark.parametrize("plan", ["baseline", "parallel_2_6:kvmean"])
def test_genai_scores_and_generates_mixed_lengths_like_reference(tiny, genai_dirs, tmp_path, plan):
    """GroupQueryAttention refuses padded batches continuing a cache, so the runner says it takes no padded rows
    and scoring / generation batch only what needs no padding: loglikelihoods of choices of several lengths
    after contexts of several lengths, and prompts of several lengths, equal the reference's."""
    from painters.bench.accuracy import loglikelihood
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner

    result = compile_model(genai_dirs["fp32"] / "model.onnx", plan, tmp_path / "out" / "model.onnx")
    runner, reference = OrtRunner(result.output), TorchRunner(tiny.model, result.plan, device="cpu")
    assert not runner.pads_rows and OrtRunner(genai_dirs["fp32"] / "model.onnx").pads_rows is False
    rng = np.random.default_rng(0)
    requests = [(ctx, rng.integers(3, 200, size=rng.integers(1, 5)).tolist())
                for ctx in (rng.integers(3, 200, size=n).tolist() for n in (4, 9, 11)) for _ in range(3)]
    got = [ll for ll, _ in loglikelihood(runner, requests, batch_size=16)]
    want = [ll for ll, _ in loglikelihood(reference, requests, batch_size=16)]
    np.testing.assert_allclose(got, want, atol=1e-4)
    prompts = [PROMPTS[0], PROMPTS[1][:4], PROMPTS[1]]
    assert runner.generate(prompts, 8) == reference.generate(prompts, 8)


def test_genai_graph_serves_requests_of_several_lengths(tiny, genai_dirs, tmp_path):
    """The server's batcher runs the requests it gathered as one batch per prompt length on a GenAI graph (no
    padded rows), and every request gets the reference's greedy tokens."""
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner
    from painters.serve.batcher import Batcher, GenRequest
    from tests.byte_tokenizer import byte_tokenizer

    result = compile_model(genai_dirs["fp32"] / "model.onnx", "skip_2_5", tmp_path / "out" / "model.onnx")
    batcher = Batcher(OrtRunner(result.output), byte_tokenizer(), pad_id=0)
    prompts = [PROMPTS[0], PROMPTS[1][:4], PROMPTS[1]]
    requests = [GenRequest(p, 6, lambda *_: None) for p in prompts]
    assert [len(g) for g in batcher._groups(requests)] == [2, 1]
    for group in batcher._groups(requests):
        batcher.run(group)
    want = TorchRunner(tiny.model, result.plan, device="cpu").generate(prompts, 6, stop_ids=sorted(batcher.eos))
    assert [r.tokens for r in requests] == [[t for t in w if t not in batcher.eos] for w in want]


@pytest.fixture(scope="module")
def gained(tiny, tmp_path_factory):
    """tiny-llama with random norm gains (its own are ones, which would hide a gain left unfolded), and its
    builder folder (fp32)."""
    import copy

    import torch

    from painters.export.genai_export import export_genai
    from tests.byte_tokenizer import byte_tokenizer

    loaded = copy.deepcopy(tiny)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=generator) * 1.5 + 0.25)
    folder = export_genai(loaded, tmp_path_factory.mktemp("gained") / "fp32" / "model.onnx",
                          tokenizer=byte_tokenizer()).parent
    return loaded.model, folder


@pytest.mark.parametrize("plan, k", [("parallel_2_6", [4]), ("parallel_1_7_x3", [6, 6, 6]),
                                     ("parallel_2_5+drop_attn_6-7+dup_0_x2", [3])])
def test_genai_parallel_groups_fuse_into_one_attention(gained, tmp_path, plan, k):
    """A parallel group of builder blocks is one GroupQueryAttention with k × the heads over its one KV slot (k ×
    kv heads, decoded in place), matching the reference; the fused weights replace the members' (no growth)."""
    from painters.compiler.graph_io import load_graph
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner

    model, folder = gained
    result = compile_model(folder / "model.onnx", plan, tmp_path / "out" / "model.onnx")
    fused = [s for s in result.layout.stages if s.fused]
    assert [len(s.stage.blocks) for s in fused] == k
    heads = [n.attributes["num_heads"].value for n in load_graph(result.output).graph
             if n.op_type == "GroupQueryAttention" and n.metadata_props.get("painters.stage") in
             {str(s.index) for s in fused}]
    assert heads == [4 * m for m in k]  # tiny-llama: 4 query heads per block
    assert all(result.layout.slots[s.member_slots[0]].in_place for s in fused)
    assert result.output_bytes <= result.source_bytes
    runner, reference = OrtRunner(result.output), TorchRunner(model, result.plan, device="cpu")
    ids = np.array(PROMPTS)
    got, want = runner.prefill(ids, np.ones_like(ids))[0], reference.prefill(ids, np.ones_like(ids))[0]
    assert np.abs(got - want).max() <= REL * np.abs(want).max()
    assert runner.kv_in_place and runner.generate([PROMPTS[1]], 10) == reference.generate([PROMPTS[1]], 10)


def test_genai_groups_left_unfused_say_why(genai_dirs, tmp_path, caplog):
    """Quantized members (norm gains cannot be folded into MatMulNBits weights) and kv=mean groups stay unfused,
    each with its reason on one line."""
    int4 = compile_model(genai_dirs["int4"] / "model.onnx", "parallel_2_6", tmp_path / "q" / "model.onnx")
    mean = compile_model(genai_dirs["fp32"] / "model.onnx", "parallel_2_6:kvmean", tmp_path / "m" / "model.onnx")
    assert int4.layout.fused_stages == [] and mean.layout.fused_stages == []
    assert "weights are quantized (MatMulNBits)" in caplog.text
    assert "kv=mean groups of GroupQueryAttention blocks have no wide form" in caplog.text


def test_genai_skip_keeps_builder_form(genai_dirs, tmp_path):
    """Skipping blocks removes exactly their nodes: the residual add is folded back into the next norm; the
    baseline is the builder's graph plus the ``logits_to_keep`` slice of the final norm (5 nodes)."""
    from painters.compiler.graph_io import load_graph

    base = compile_model(genai_dirs["fp32"] / "model.onnx", "baseline", tmp_path / "b" / "model.onnx")
    skip = compile_model(genai_dirs["fp32"] / "model.onnx", "skip_2_5", tmp_path / "s" / "model.onnx")
    per_block = (base.nodes - skip.nodes) / 3
    assert per_block == 11 and base.nodes == len(load_graph(genai_dirs["fp32"] / "model.onnx").graph) + 5
    ops = [n.op_type for n in load_graph(skip.output).graph]
    assert ops.count("SkipSimplifiedLayerNormalization") == 2 * 5 and ops.count("Add") == 0


def _dequantized_reference(tiny, int4_dir: Path):
    """tiny-llama with the int4 graph's MatMulNBits weights de-quantized into it (the builder's own names)."""
    import copy

    import onnx_ir as ir
    import torch

    from painters.compiler.forms.llama_match import const

    graph = ir.load(int4_dir / "model.onnx").graph
    nodes = {n.inputs[1].name.removesuffix(".weight_Q4"): n for n in graph if n.op_type == "MatMulNBits"}

    def weight(prefix: str) -> torch.Tensor:  # [N, K]: torch Linear layout
        node = nodes[prefix]
        k, n, block = (node.attributes[a].as_int() for a in ("K", "N", "block_size"))
        packed = const(node.inputs[1])  # [N, blocks, block/2] uint8, low nibble first, zero point 8
        assert len(node.inputs) < 4 or node.inputs[3] is None, "zero points not expected from the builder"
        q = np.stack([packed & 0x0F, packed >> 4], -1).reshape(n, packed.shape[1], block).astype(np.float32)
        scales = const(node.inputs[2]).reshape(n, -1, 1)
        return torch.from_numpy(((q - 8.0) * scales).reshape(n, -1)[:, :k].copy())

    ref = copy.deepcopy(tiny.model)
    cfg = ref.config
    head = cfg.hidden_size // cfg.num_attention_heads
    with torch.no_grad():
        for i, layer in enumerate(ref.model.layers):
            q, k, v = torch.split(weight(f"model.layers.{i}.attn.qkv_proj.MatMul"),
                                  [cfg.num_attention_heads * head, cfg.num_key_value_heads * head,
                                   cfg.num_key_value_heads * head])
            attn = layer.self_attn
            for proj, w in ((attn.q_proj, q), (attn.k_proj, k), (attn.v_proj, v),
                            (attn.o_proj, weight(f"model.layers.{i}.attn.o_proj.MatMul"))):
                proj.weight.copy_(w)
            for name in ("gate_proj", "up_proj", "down_proj"):
                getattr(layer.mlp, name).weight.copy_(weight(f"model.layers.{i}.mlp.{name}.MatMul"))
        ref.lm_head.weight.copy_(weight("lm_head.MatMul"))
    return ref


# int4: MatMulNBits at the builder's accuracy_level 4 quantizes activations to int8 per block, so even the
# builder's own baseline graph is ~1.5e-2 (relative) from its de-quantized weights run in fp32; fp16: rounding.
QUANTIZED_REL = {"int4": 3e-2, "fp16": 5e-3}


@pytest.mark.parametrize("precision", ["int4", "fp16"])
@pytest.mark.parametrize("plan", ["skip_2_5", "parallel_1_7_x3+drop_mlp_0,7"])
def test_genai_quantized_plan_parity(tiny, genai_dirs, tmp_path, precision, plan):
    """int4 / fp16 builder graphs: plans vs the reference executor on the weights the graph holds.

    int4 against tiny-llama with the graph's de-quantized weights; fp16 against the fp32 model.
    """
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner

    result = compile_model(genai_dirs[precision] / "model.onnx", plan, tmp_path / "out" / "model.onnx")
    assert result.output_bytes <= result.source_bytes
    ref = _dequantized_reference(tiny, genai_dirs["int4"]) if precision == "int4" else tiny.model
    ids = np.array(PROMPTS)
    got, _ = OrtRunner(result.output).prefill(ids, np.ones_like(ids))
    want, _ = TorchRunner(ref, result.plan, device="cpu").prefill(ids, np.ones_like(ids))
    diff = float(np.abs(got - want).max() / np.abs(want).max())
    assert diff <= QUANTIZED_REL[precision], f"{precision} {plan}: {diff:.2e}"
    if precision == "int4":  # the fp16 folder is configured for CUDA: onnxruntime-genai here has the CPU EP only
        assert len(_genai_generate(result.output.parent, PROMPTS[0], 4)) == 4


def test_genai_config_missing_or_disagreeing(genai_dirs, tmp_path):
    src = genai_dirs["fp32"]
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        (bad / name).hardlink_to(src / name)
    with pytest.raises(CompileError, match="genai_config.json beside it"):
        compile_model(bad / "model.onnx", "skip_2_5")
    config = json.loads((src / "genai_config.json").read_text())
    for field, value in (("num_hidden_layers", 7), ("head_size", 8), ("num_attention_heads", 8),
                         ("num_key_value_heads", 4)):
        edited = json.loads(json.dumps(config))
        edited["model"]["decoder"][field] = value
        (bad / "genai_config.json").write_text(json.dumps(edited))
        with pytest.raises(CompileError, match=f"field model.decoder.{field} is {value}"):
            compile_model(bad / "model.onnx", "skip_2_5", tmp_path / "o" / "model.onnx")
    assert not (tmp_path / "o" / "model.onnx").exists()


def test_genai_output_never_overwrites_the_source_config(genai_dirs):
    src = genai_dirs["fp32"] / "model.onnx"
    with pytest.raises(Exception, match="overwrite"):
        compile_model(src, "skip_2_5", src.with_name("model.skip.onnx"))
    assert json.loads(src.with_name("genai_config.json").read_text())["model"]["decoder"]["num_hidden_layers"] == 8


def test_unknown_fused_op_is_named_with_its_block(genai_dirs, tmp_path):
    import onnx_ir as ir

    model = ir.load(genai_dirs["fp32"] / "model.onnx")
    node = next(n for n in model.graph if n.op_type == "Sigmoid" and "layers.3" in n.name)
    node.domain, node.op_type = "com.microsoft", "FastSigmoid"
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(genai_dirs["fp32"] / "genai_config.json", bad)
    (bad / "model.onnx.data").hardlink_to(genai_dirs["fp32"] / "model.onnx.data")
    ir.save(model, bad / "model.onnx")
    with pytest.raises(CompileError, match=r"com\.microsoft\.FastSigmoid .* in block 3 is unknown"):
        compile_model(bad / "model.onnx", "skip_2_5", tmp_path / "o" / "model.onnx")
