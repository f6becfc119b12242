"""Export parity: the ONNX graph (onnxruntime, CPU) against the Hugging Face model itself."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from painters.runtime.base import left_pad, positions_from_mask
from painters.runtime.ort import OrtRunner

PROMPTS = [[1, 17, 99, 3, 45, 8, 200], [1, 5, 6]]


def _hf_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    position_ids=torch.from_numpy(positions_from_mask(mask, ids.shape[1])))
    return out.logits.float().numpy()


def _hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                         min_new_tokens=n, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def check_parity(loaded, path, prompts, n_tokens=20):
    """Prefill logits (left-padded batch, real tokens) within 1e-4 of the logit scale, then greedy tokens."""
    runner = OrtRunner(path)
    ids, mask = left_pad(prompts)
    logits, _ = runner.prefill(ids, mask)
    ref = _hf_logits(loaded.model, ids, mask)
    real = mask.astype(bool)
    scale = np.abs(ref[real]).max()
    assert np.abs(logits[real] - ref[real]).max() <= 1e-4 * scale
    generated = runner.generate(prompts, n_tokens)
    for prompt, tokens in zip(prompts, generated):
        assert tokens == _hf_greedy(loaded.model, prompt, n_tokens)


def test_tiny_llama_export_matches_pytorch(tiny, tiny_onnx):
    check_parity(tiny, tiny_onnx, PROMPTS)


def test_export_interface_and_metadata(tiny, tiny_onnx):
    model = onnx.load(tiny_onnx, load_external_data=False)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    L = tiny.num_layers
    assert inputs == ["input_ids", "attention_mask", "position_ids",
                      *[f"past_key_values.{i}.{k}" for i in range(L) for k in ("key", "value")]]
    assert outputs == ["logits", *[f"present.{i}.{k}" for i in range(L) for k in ("key", "value")]]
    meta = {p.key: p.value for p in model.metadata_props}
    blocks = json.loads(meta["painters.blocks"])
    assert [b["index"] for b in blocks] == list(range(L))
    assert meta["painters.source_hash"] == tiny.hash
    tagged = {p.value for n in model.graph.node for p in n.metadata_props if p.key == "painters.block"}
    assert tagged == {str(i) for i in range(L)}
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer if len(t.dims) == 2)


def test_past_zero_and_cached_steps_agree(tiny_onnx):
    """Prefill of the whole sequence equals prefill of a prefix followed by cached steps."""
    runner = OrtRunner(tiny_onnx)
    ids = np.array([[3, 9, 27, 81, 243 % 256, 5]])
    full, _ = runner.prefill(ids, np.ones_like(ids))
    logits, kv = runner.prefill(ids[:, :3], np.ones((1, 3), np.int64))
    mask = np.ones((1, 3), np.int64)
    steps = [logits[:, -1]]
    for t in range(3, 6):
        mask = np.ones((1, t + 1), np.int64)
        logits, kv = runner.decode(ids[:, t], mask, kv)
        steps.append(logits[:, -1])
    np.testing.assert_allclose(np.stack(steps, 1), full[:, 2:], atol=1e-5)


@pytest.mark.slow
def test_smollm2_export_matches_pytorch(smollm2, smollm2_onnx):
    tok = smollm2.tokenizer
    prompts = [tok.encode("The capital of France is"), tok.encode("Once upon a time, in a small village,")]
    check_parity(smollm2, smollm2_onnx, prompts)
    runner = OrtRunner(smollm2_onnx)
    assert runner.tokenizer is not None and runner.tokenizer.encode("hello") == tok.encode("hello")
