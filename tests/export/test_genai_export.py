"""``painters export --form genai``: the builder's folder, stamped, self-checked, compiled with plans; bad input.

The fp32/int4/fp16 folders are the session fixture ``genai_dirs`` (tiny-llama through
:func:`painters.export.genai_export.export_genai`), shared with tests/compiler/test_genai_graphs.py, which runs
every plan kind on them.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from painters.cli import main
from painters.compiler.compile import compile_model
from painters.errors import ExportError
from tests.export.test_export_errors import assert_refused

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (extra 'genai')")

PROMPTS = [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6, 77, 120, 9, 31]]
REL = 1e-4  # max |logit diff| / max |logit|, as for painters' own graphs


def _meta(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}


def _prefill_diff(model, path, plan) -> float:
    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import TorchRunner

    ids = np.array(PROMPTS)
    got, _ = OrtRunner(path).prefill(ids, np.ones_like(ids))
    want, _ = TorchRunner(model, plan, device="cpu").prefill(ids, np.ones_like(ids))
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_fp32_export_is_stamped_and_plans_match_reference(tiny, genai_dirs, tmp_path):
    """The builder's graph carries painters' provenance; a skip and a parallel plan on it match the reference."""
    folder = genai_dirs["fp32"]
    meta = _meta(folder / "model.onnx")
    assert meta["painters.source_hash"] == tiny.hash and meta["painters.source"] == "tiny-llama"
    assert (meta["painters.form"], meta["painters.precision"], meta["painters.plan"]) == ("genai", "fp32", "baseline")
    ops = [n.op_type for n in onnx.load(folder / "model.onnx", load_external_data=False).graph.node]
    assert ops.count("GroupQueryAttention") == 8
    assert {"genai_config.json", "tokenizer.json", "model.onnx.data"} <= {p.name for p in folder.iterdir()}
    for plan in ("skip_2_5", "parallel_2_6"):
        result = compile_model(folder / "model.onnx", plan, tmp_path / plan / "model.onnx")
        diff = _prefill_diff(tiny.model, result.output, result.plan)
        assert diff <= REL, f"{plan}: relative max logit diff {diff:.2e} > {REL:.0e}"
        compiled = _meta(result.output)  # provenance survives the compile
        assert compiled["painters.source_hash"] == tiny.hash and compiled["painters.plan"] == plan


def test_cli_int4_from_a_checkpoint_directory(tiny, tmp_path, caplog):
    """The CLI path: a checkpoint directory → an int4 GenAI folder that ONNX Runtime GenAI opens; the self-check
    is skipped with a warning (no int4 tolerance is established)."""
    from painters.export.genai_export import save_hf_dir
    from painters.export.sources import load_source
    from tests.byte_tokenizer import byte_tokenizer

    ckpt = save_hf_dir(tiny, tmp_path / "ckpt", byte_tokenizer())
    out = tmp_path / "out" / "model.onnx"
    result = CliRunner().invoke(main, ["export", str(ckpt), "--form", "genai", "--precision", "int4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "self-check skipped: no tolerance is established for int4" in caplog.text
    meta = _meta(out)
    assert meta["painters.precision"] == "int4" and meta["painters.source_hash"] == load_source(ckpt).hash
    assert "MatMulNBits" in {n.op_type for n in onnx.load(out, load_external_data=False).graph.node}
    assert not list(tmp_path.glob("out/.*")), "temp directories left behind"
    og.Model(str(out.parent))
    assert "re-quantizes its 4-bit weights" not in caplog.text  # a float checkpoint: nothing to keep


def test_int4_from_a_gguf_says_the_builder_requantizes(tmp_path, monkeypatch, caplog):
    """A GGUF source at --precision int4: a warning that the builder re-quantizes the file's 4-bit blocks, naming
    the route that keeps them (fp32 export + ``--weights int4``); said before the source is loaded."""
    from painters.export import onnx_export

    class Loaded(Exception):
        pass

    def load(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr(onnx_export, "load_source", load)
    with pytest.raises(Loaded):
        onnx_export.export_onnx("smollm2-135m", tmp_path / "out" / "model.onnx", form="genai", precision="int4")
    assert "smollm2-135m is a GGUF: --precision int4 re-quantizes its 4-bit weights" in caplog.text
    assert "painters-compile --weights int4" in caplog.text


@pytest.mark.parametrize("precision, target, scale", [("fp32", "cpu", 1.01), ("fp16", "cuda", 1.05)])
def test_a_graph_that_differs_is_refused_and_nothing_written(tiny, tmp_path, monkeypatch, precision, target, scale):
    """The builder fed weights other than the source's (LM head × 1.01; × 1.05 for fp16, whose tolerance is 2e-2):
    the self-check refuses the folder."""
    from painters.export import genai_export
    from tests.byte_tokenizer import byte_tokenizer

    real = genai_export.save_hf_dir

    def shifted(loaded, out, tokenizer=None):
        other = copy.deepcopy(loaded)
        with torch.no_grad():
            other.model.lm_head.weight.mul_(scale)
        return real(other, out, tokenizer)

    monkeypatch.setattr(genai_export, "save_hf_dir", shifted)
    out = tmp_path / "out" / "model.onnx"
    with pytest.raises(ExportError, match=rf"self-check failed: .*tolerance .* for {precision.replace('fp', 'float')}"
                                          r".* builder does not reproduce this checkpoint"):
        genai_export.export_genai(tiny, out, precision=precision, target=target, tokenizer=byte_tokenizer())
    assert list(tmp_path.iterdir()) == []


def test_fp16_cpu_graph_is_refused_with_the_fix(tiny, tmp_path):
    """The builder's fp16 CPU graph cannot decode on ONNX Runtime's CPU EP: the self-check refuses it and names the
    fp16 form that runs (--target cuda) and the CPU precisions."""
    from painters.export.genai_export import export_genai
    from tests.byte_tokenizer import byte_tokenizer

    out = tmp_path / "out" / "model.onnx"
    with pytest.raises(ExportError, match=r"could not run the builder's graph .*use --target cuda for fp16"):
        export_genai(tiny, out, precision="fp16", tokenizer=byte_tokenizer())
    assert list(tmp_path.iterdir()) == []


def test_cuda_target_export(tiny, tmp_path, caplog):
    """--target cuda writes the builder's CUDA folder without a GPU (CUDA provider options in its config), the
    self-check runs it on the CPU EP, and painters compiles plans on it that decode in place."""
    from painters.export.genai_export import save_hf_dir
    from tests.byte_tokenizer import byte_tokenizer

    ckpt = save_hf_dir(tiny, tmp_path / "ckpt", byte_tokenizer())
    out = tmp_path / "cuda" / "model.onnx"
    result = CliRunner().invoke(main, ["export", str(ckpt), "--form", "genai", "--precision", "fp16",
                                       "--target", "cuda", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "genai fp16 cuda" in result.output and "self-check skipped" not in caplog.text  # checked on the CPU EP
    assert _meta(out)["painters.target"] == "cuda"
    config = (out.parent / "genai_config.json").read_text()
    assert '"cuda"' in config
    compiled = compile_model(out, "skip_2_5", tmp_path / "skip" / "model.onnx")
    assert _prefill_diff(tiny.model, compiled.output, compiled.plan) <= 5e-3
    assert all(s.in_place for s in compiled.layout.slots)


def _checkpoint(tmp_path, model_type: str, **fields):
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.byte_tokenizer import byte_tokenizer

    base = dict(vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2)
    fields = {k: v for k, v in {**base, **fields}.items() if v is not None}
    config = AutoConfig.for_model(model_type, **fields)
    path = tmp_path / model_type
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("model_type, fields, needles", [
    ("gpt_neox", dict(num_key_value_heads=None), ["model_type 'gpt_neox' has no --form genai", "llama, mistral"]),
    ("mistral", dict(sliding_window=4), ["sliding-window attention (sliding_window=4)"]),
    ("llama", dict(head_dim=8), ["head size 8 is not a multiple of 16"]),
])
def test_unsupported_checkpoints_are_named(tmp_path, model_type, fields, needles):
    """Refused in one line before anything is written: a family the builder (or painters' compile of its graph)
    does not handle, a sliding window, a head size ONNX Runtime's CPU GroupQueryAttention refuses."""
    ckpt = _checkpoint(tmp_path / "src", model_type, **fields)
    out = tmp_path / "out"
    out.mkdir()
    assert_refused(out, [ckpt, "--form", "genai", "-o", out / "g" / "model.onnx"], *needles)


@pytest.mark.parametrize("args, needle", [
    (["--form", "genai", "--dtype", "fp16"], "--form genai takes --precision"),
    (["--form", "genai", "--opset", "20"], "--form genai takes --precision"),
    (["--precision", "int4"], "--precision and --target apply to --form genai"),
    (["--target", "cuda"], "--precision and --target apply to --form genai"),
    (["--form", "genai", "-o", "OUT/other.onnx"], "graph is model.onnx; give -o"),
    (["--form", "genai"], "tiny-llama has no tokenizer"),
])
def test_bad_options_are_refused(tmp_path, args, needle):
    args = [a.replace("OUT", str(tmp_path / "g")) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "g" / "model.onnx")]
    assert_refused(tmp_path, ["tiny-llama", *args], needle)


def test_missing_builder_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime_genai.models.builder", None)
    assert_refused(tmp_path, ["tiny-llama", "--form", "genai", "-o", tmp_path / "g" / "model.onnx"],
                   "needs onnxruntime-genai", "pip install 'painters[genai]'")
