"""`painters deploy gguf` from the built-in Q4_1 SmolLM2: kept tensors keep their type and bytes; llama.cpp runs it."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from painters.cli import main
from painters.targets.common import DeployError
from painters.targets.gguf import ATTN_TENSORS, FFN_TENSORS, deploy_gguf

SCORES = "docs/results/smollm2-135m/analysis/importance.json"


@pytest.fixture(scope="module")
def smollm2():
    from painters.export.sources import smollm2_path

    return smollm2_path()


def _tensors(path):
    import gguf

    reader = gguf.GGUFReader(str(path))
    return reader, {t.name: t for t in reader.tensors}


@pytest.mark.parametrize("plan", ["skip_4_26", "drop_attn_k8", "reverse_20_24+drop_mlp_12"])
def test_kept_tensors_keep_type_and_bytes(smollm2, tmp_path, plan):
    from painters.plans import Plan

    out = deploy_gguf("smollm2-135m", plan, tmp_path / "out.gguf", scores=SCORES)
    reader, got = _tensors(out)
    _, src = _tensors(smollm2)
    record = Plan.from_json(reader.fields["painters.plan"].contents())
    stages = record.stages()
    arch = reader.fields["general.architecture"].contents()
    assert arch == ("llama" if plan == "skip_4_26" else "deci")
    assert reader.fields[f"{arch}.block_count"].contents() == len(stages)
    assert "output.weight" not in got and "token_embd.weight" in got  # the tied embedding stays one tensor
    compared = 0
    for name, t in got.items():
        if name.startswith("blk."):
            _, index, rest = name.split(".", 2)
            stage = stages[int(index)]
            kind = rest.split(".")[0]
            assert stage.attn or kind not in ATTN_TENSORS
            if not stage.mlp and kind in FFN_TENSORS:  # llama.cpp's FFN-free-layer bug: a zero FFN stub
                assert not np.any(t.data[:] if kind != "ffn_norm" else t.data[:] - 1)
                continue
            source = src[f"blk.{stage.blocks[0]}.{rest}"]
        else:
            source = src[name]
        assert t.tensor_type == source.tensor_type and t.shape.tolist() == source.shape.tolist()
        assert t.data.tobytes() == source.data.tobytes(), name
        compared += 1
    assert compared >= 8 * 9 + 2  # skip_4_26: 8 layers of 9 tensors, the embedding and the final norm


def test_refusals_exit_2_in_one_line(tmp_path):
    cases = [("parallel_4_8", "out.gguf", "painters deploy vllm"), ("skip_4_26", "out.bin", "must end in .gguf"),
             ("drop_attn_0", "out.gguf", "layer 0 without attention")]
    for plan, name, says in cases:
        args = ["deploy", "gguf", "smollm2-135m", "--plan", plan, "-o", str(tmp_path / name)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2 and says in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
    with pytest.raises(DeployError, match="overwrite the input"):
        from painters.export.sources import smollm2_path

        deploy_gguf(smollm2_path(), "skip_4_26", smollm2_path())


@pytest.mark.slow
def test_smollm2_plan_runs_in_llamacpp_with_reference_tokens(tmp_path):
    """drop_attn_k8 on the Q4_1 GGUF in llama.cpp against the reference executor on the same weights dequantized
    (transformers' GGUF loader): greedy tokens equal for 8 steps. llama.cpp multiplies Q4_1 weights with
    activations quantized to Q8_1, the reference in f32, so logits differ by up to ~1.5 (of ~27) and longer greedy
    runs may part at a near-tie."""
    pytest.importorskip("llama_cpp")
    from painters.export.sources import load_source
    from painters.plans import load_scores, parse_plan
    from painters.runtime.llamacpp import LlamaCppRunner
    from painters.runtime.torch_ref import TorchRunner

    out = deploy_gguf("smollm2-135m", "drop_attn_k8", tmp_path / "d.gguf", scores=SCORES)
    loaded = load_source("smollm2-135m")
    prompts = [loaded.tokenizer.encode(p) for p in ("The capital of France is", "def fibonacci(n):",
                                                     "Once upon a time, there was a")]
    plan = parse_plan("drop_attn_k8", 30, scores=load_scores(SCORES, model_hash=loaded.hash))
    want = TorchRunner(loaded.model, plan, device="cpu").generate(prompts, 8)
    with LlamaCppRunner(out, threads=1) as runner:
        assert runner.info.plan == "drop_attn_k8"
        assert runner.generate(prompts, 8) == want
