"""Export checks itself: the written graph (onnxruntime, CPU) against the source model on a short probe.

Export traces the reference executor, so a family option the executor gets wrong would be traced faithfully
into a wrong graph. The probe therefore compares with the Hugging Face model's *own* forward (not the
executor): one prompt of :data:`PROBE_LEN` tokens, then :data:`PROBE_STEPS` cached decode steps, each fed the
source model's greedy token (teacher-forced, so a near-tie cannot make the two sides diverge). Every step's
logits must agree within ``TOLERANCE[dtype]`` of the step's largest logit; otherwise export refuses and writes
nothing. Cost: one onnxruntime session and PROBE_STEPS + 1 forwards of each side on batch 1.

The oracle is always the source model computed in fp32. An fp16 model is upcast in place for the probe and cast
back after it; both casts are exact, so the oracle computes with the graph's own fp16 weights and only the graph's
fp16 arithmetic is measured. Comparing with PyTorch's fp16 forward instead measures PyTorch-CPU's fp16
arithmetic: on SmolLM2-135M (whose residual stream carries a 2.5e4 activation from block 12 on) that forward is
1.74e-1 of the logit scale from the fp32 model (2.46e-1 with eager attention; its argmax differs at 1 of 12
positions), while the onnxruntime-CPU fp16 graph is 4.5e-3 from it, as close as fp32 arithmetic on the
fp16-rounded weights (4.8e-3). The probe needs the fp32 model's memory (twice the fp16 weights) besides the graph.

Encoder graphs (BERT) have no cache, so their probe is the prefill alone (:func:`check_encoder_export`): the same
prompt as one sentence pair (both token types), its output (``logits`` or ``last_hidden_state``) held to the
same tolerance rule.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from painters.errors import ExportError

__all__ = ["check_finite_weights", "check_export", "check_encoder_export", "TOLERANCE", "PROBE_LEN", "PROBE_STEPS"]

log = logging.getLogger(__name__)

PROBE_LEN = 12
PROBE_STEPS = 3
# max |Δlogit| / max |logit| per step, against the fp32 forward. fp32 graphs match to ~1e-6 on the tiny fixtures
# and 1e-4 is what the parity tests demand. fp16 graphs on onnxruntime-CPU, worst probe step measured against the
# fp32 forward of their own weights: SmolLM2-135M 3.9e-3, stories260K 7.0e-4, tiny-llama 4.9e-4; encoders:
# all-MiniLM-L6-v2 2.1e-4, the tiny test BERT's logits 5.3e-3. 2e-2 leaves a 4x margin over the worst and still
# refuses logits 5 % off (an ignored multiplier). bf16 is not checked (warning):
# onnxruntime-CPU cannot run a bf16 decoder graph (no bf16 Expand kernel); the family guard still applies.
TOLERANCE = {"float32": 1e-3, "float16": 2e-2}


def _probe_ids(vocab: int) -> np.ndarray:
    """A fixed prompt of distinct-ish token ids spread over the vocabulary (no tokenizer needed)."""
    return (np.arange(PROBE_LEN, dtype=np.int64) * 7919 + 3)[None] % vocab


def _dtype_tolerance(model, graph_dtype: str | None = None) -> tuple[str, float | None]:
    """The graph's dtype (``graph_dtype``, else the model's) and its tolerance; None (with a warning) where none is
    established."""
    dtype = graph_dtype or str(next(model.parameters()).dtype).removeprefix("torch.")
    tol = TOLERANCE.get(dtype)
    if tol is None:
        log.warning("export self-check skipped: no tolerance is established for %s graphs (export in fp32 or fp16 to "
                    "have the graph checked against the source model)", dtype)
    return dtype, tol


BLAME = "This is a painters bug for this checkpoint: please report it"


def check_finite_weights(model, source: str) -> None:
    """Refuse a source whose weights hold NaN or infinite values: the checkpoint is damaged, not painters.

    Why before the export: the self-check then blamed painters ("a painters bug") for the source's NaNs.
    """
    import torch

    for name, tensor in model.named_parameters():  # buffers may hold -inf masks by design
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ExportError(f"{source}: weight {name} holds {bad} NaN or infinite values of {tensor.numel()}; the "
                              "checkpoint is damaged; re-download or re-save it (nothing was written)")


@contextmanager
def _in_fp32(model):
    """``model`` computing in fp32 for the block, then in its own dtype again (half -> fp32 -> half is exact).

    ``nn.Module``'s own casts: transformers refuses ``.float()`` on a model its GGUF loader marked quantized,
    although the dequantized weights are plain half tensors.
    """
    import torch

    dtype = next(model.parameters()).dtype
    if dtype == torch.float32:
        yield model
        return
    try:
        yield torch.nn.Module.float(model)
    finally:
        torch.nn.Module.to(model, dtype)


def _agree(got: np.ndarray, want: np.ndarray, what: str, dtype: str, tol: float, blame: str = BLAME) -> float:
    """max |got - want| / max |want|; raise (naming ``what``, then ``blame``) when it exceeds ``tol`` or is NaN."""
    diff = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-6))
    if not diff <= tol:  # NaN fails too
        raise ExportError(f"export self-check failed: the graph's {what} differ from the source "
                          f"model by {diff:.2e} of the logit scale (tolerance {tol:.0e} for {dtype}); "
                          f"nothing was written. {blame}")
    return diff


def check_export(model, path: Path, blame: str = BLAME, graph_dtype: str | None = None) -> float:
    """Run the graph at ``path`` and ``model`` on the probe; return the worst relative difference, or raise.

    ``blame`` ends the refusal: who is at fault and what to do (the genai form names the builder).
    ``graph_dtype`` (numpy name) picks the tolerance where the graph computes in another dtype than the model
    (the builder's fp16 graph of an fp32 source); by default the model's dtype is the graph's.
    """
    import torch
    from transformers import DynamicCache

    from painters.runtime.ort import OrtRunner
    from painters.runtime.torch_ref import cache_kwarg

    dtype, tol = _dtype_tolerance(model, graph_dtype)
    if tol is None:
        return float("nan")
    runner = OrtRunner(path)
    ids = _probe_ids(int(model.config.vocab_size))
    mask = np.ones_like(ids)
    cache = DynamicCache(config=model.config)
    worst = 0.0
    with runner, torch.no_grad(), _in_fp32(model) as model:
        got, past = runner.prefill(ids, mask)
        feed = ids
        for step in range(PROBE_STEPS + 1):
            positions = torch.arange(mask.shape[1] - feed.shape[1], mask.shape[1])[None]
            out = model(input_ids=torch.from_numpy(feed), attention_mask=torch.from_numpy(mask),
                        position_ids=positions, use_cache=True, **{cache_kwarg(model): cache})
            want = out.logits.float().numpy()
            what = "prefill" if step == 0 else f"cached decode step {step}"
            worst = max(worst, _agree(got, want, f"{what} logits", dtype, tol, blame))
            if step == PROBE_STEPS:
                break
            feed = want[:, -1].argmax(-1).reshape(1, 1).astype(np.int64)
            mask = np.ones((1, mask.shape[1] + 1), dtype=np.int64)
            got, past = runner.decode(feed, mask, past)
    log.info("export self-check: worst relative logit difference %.2e (tolerance %.0e)", worst, tol)
    return worst


def check_encoder_export(model, path: Path) -> float:
    """Run the encoder graph at ``path`` and ``model`` (HF forward) on the probe pair; return the difference, or raise.

    The probe is :data:`PROBE_LEN` tokens, the second half token type 1, unpadded; the graph's one output is
    compared with the model's output of the same name (``logits`` with a head, else ``last_hidden_state``).
    """
    import onnxruntime as ort
    import torch

    from painters.decoder_io import LOGITS
    from painters.encoder_io import ENCODER_INPUTS, HIDDEN
    from painters.runtime.encoder_ref import has_head

    dtype, tol = _dtype_tolerance(model)
    if tol is None:
        return float("nan")
    ids = _probe_ids(int(model.config.vocab_size))
    mask = np.ones_like(ids)
    types = (np.arange(PROBE_LEN, dtype=np.int64) >= PROBE_LEN // 2)[None].astype(np.int64)
    if getattr(model.config, "type_vocab_size", 2) < 2:  # RoBERTa: one token type
        types = np.zeros_like(types)
    name = LOGITS if has_head(model) else HIDDEN  # the graph's one output (encoder_export.encoder_output_name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([name], dict(zip(ENCODER_INPUTS, (ids, mask, types), strict=True)))[0]
    with torch.no_grad(), _in_fp32(model) as model:
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    token_type_ids=torch.from_numpy(types))
    diff = _agree(got, getattr(out, name).float().numpy(), f"prefill {name}", dtype, tol)
    log.info("export self-check (encoder): relative %s difference %.2e (tolerance %.0e)", name, diff, tol)
    return diff
