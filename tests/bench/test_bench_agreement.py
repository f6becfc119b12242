"""SmolLM2 (fp32): the exported ONNX baseline on onnxruntime and the torch reference agree item by item."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from painters.bench.accuracy import score_loglikelihood, score_multiple_choice
from painters.bench.metrics import perplexity
from painters.bench.tasks import get_task, load_items

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
# Items per multiple-choice task: 10 keeps this file near 3 minutes on 2 shared cores (export included);
# PAINTERS_AGREEMENT_N=100 for a stronger check.
N = int(os.environ.get("PAINTERS_AGREEMENT_N", "10"))
N_LAMBADA = 20
TIE = 1e-4  # items whose two best scores are closer than this may pick either choice

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not DATA.is_dir(), reason=f"evaluation data {DATA} is absent (../shared/data)")]


@pytest.fixture(scope="module")
def runners(smollm2, smollm2_onnx):
    """(onnxruntime, torch) runners over the same weights; the conftest fixtures export once per session."""
    import torch

    from painters.plans import parse_plan
    from painters.routing import open_runner
    from painters.runtime.torch_ref import TorchRunner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is several times faster than a contended two
    ort = open_runner(str(smollm2_onnx))
    ref = TorchRunner(smollm2.model, parse_plan("baseline", smollm2.num_layers), tokenizer=smollm2.tokenizer,
                      model_hash=smollm2.hash, device="cpu")
    yield ort, ref
    torch.set_num_threads(threads)


def _prediction(scores, lengths=None):
    s = np.asarray(scores, dtype=np.float64) / (np.asarray(lengths, dtype=np.float64) if lengths else 1.0)
    top = np.sort(s)[::-1]
    return int(np.argmax(s)), (len(s) > 1 and top[0] - top[1] < TIE)


@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge", "hellaswag", "winogrande"])
def test_same_predictions(runners, task):
    ort, ref = runners
    items = load_items(get_task(task), DATA, limit=N)
    a = score_multiple_choice(ort, items, batch_size=16)
    b = score_multiple_choice(ref, items, batch_size=16)
    assert np.abs(np.concatenate(a) - np.concatenate(b)).max() < 2e-3
    for n, (item, x, y) in enumerate(zip(items, a, b)):
        for lengths in (None, item.norm_lengths) if item.norm_lengths else (None,):
            (px, tie_x), (py, tie_y) = _prediction(x, lengths), _prediction(y, lengths)
            assert px == py or tie_x or tie_y, f"{task} item {n}: onnxruntime {x} vs torch {y}"


def test_same_lambada(runners):
    ort, ref = runners
    items = load_items(get_task("lambada"), DATA, limit=N_LAMBADA)
    a = score_loglikelihood(ort, items)
    b = score_loglikelihood(ref, items)
    assert [g for _, g in a] == [g for _, g in b]
    assert perplexity([ll for ll, _ in a]) == pytest.approx(perplexity([ll for ll, _ in b]), rel=1e-4)
