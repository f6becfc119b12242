"""ONNX Runtime backend: the CPU EP, or the CUDA EP with the KV cache on the GPU and CUDA-graph decoding.

Every call goes through IO binding onto torch tensors, on the CPU and the GPU alike, so there is one code path
to test here and run there: inputs and outputs are tensors the runner allocated on its device, the cache
returned by :meth:`OrtRunner.forward` never leaves that device, and only logits come back to the host.

On CUDA the session runs on a torch stream of the runner's own (``user_compute_stream``) without a per-run
synchronization, so ORT's kernels and the decode loop's torch ops are ordered on one stream. With
``cuda_graph`` (the default on CUDA) each (batch, bucket) of the static decode loop
(:mod:`painters.runtime.decode`) is captured as one CUDA graph (``gpu_graph_id``) and replayed every step;
every other run sets ``gpu_graph_id = -1``, which runs it without a graph. If ORT refuses graph capture for a
model it is opened without, with one warning line.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from painters.artifact import Graph, Record
from painters.decoder_io import LOGITS, LOGITS_TO_KEEP, ORT_DTYPES, past_name, past_slots
from painters.errors import PaintersError
from painters.graph_metadata import kv_in_place, pads_rows, slot_heads
from painters.runtime.base import ModelInfo
from painters.runtime.decode import StaticBuffers
from painters.runtime.device import DeviceRunner

__all__ = ["OrtRunner", "load_tokenizer"]

log = logging.getLogger(__name__)

# CPU sessions do not busy-wait: after a run, ONNX Runtime's intra-op workers spin on the cores for a while, and
# the next session of the same process (a bench round times plans one after another, a server holds several)
# then shares them with spinning threads. Measured on SmolLM2-135M's int4 graphs, 2 cores, plans interleaved:
# with spinning skip_4_26's 128-token prefill was 0.33-0.41 of baseline's (alone, back to back: 0.28), with
# it off 0.27, and every runner's prefill and decode got faster (baseline prefill 508 → 336 ms).
SPINNING = "session.intra_op.allow_spinning"



def load_tokenizer(model_dir: Path):
    """The tokenizer saved beside an exported model, or None (bench then needs token ids)."""
    if not (model_dir / "tokenizer_config.json").is_file() and not (model_dir / "tokenizer.json").is_file():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as exc:  # transformers and tokenizers raise many types for a corrupt or partial tokenizer
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise PaintersError(f"the tokenizer in {model_dir} cannot be loaded ({reason}); save it again with "
                            "tokenizer.save_pretrained(DIR) or point --tokenizer at a good one") from None


class OrtRunner(DeviceRunner):
    """An exported or compiled graph in an ``onnxruntime.InferenceSession``.

    Args:
        path: the ``.onnx`` file (external data beside it).
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (needs onnxruntime-gpu).
        threads: CPU intra-op threads (None: onnxruntime's default).
        cuda_graph: capture decode steps as CUDA graphs (None: on for CUDA); ignored on the CPU.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, device: str | None = None, threads: int | None = None,
                 cuda_graph: bool | None = None):
        import torch  # noqa: I001  (first: on a GPU machine it loads the CUDA libraries onnxruntime-gpu needs)
        import onnxruntime as ort

        self.path = path = Path(path)
        self.device = torch.device(device or "cpu")
        self._cuda = self.device.type == "cuda"
        if self._cuda and not (torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()):
            raise PaintersError("the onnxruntime CUDA backend needs onnxruntime-gpu and a CUDA device "
                                "(pip install 'painters[gpu]'); use the CPU backend (--backend onnxruntime)")
        self.stream = torch.cuda.Stream(self.device) if self._cuda else None  # ORT and the loop share it
        self.cuda_graph = bool(self._cuda and (True if cuda_graph is None else cuda_graph))
        options = ort.SessionOptions()
        # errors only: every compiled graph's optional logits_to_keep input (an initializer default) draws a warning
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        if not self._cuda:  # see SPINNING
            options.add_session_config_entry(SPINNING, "0")
        self.session = self._open(ort, path, options)
        self._bindings: dict[int, Any] = {}  # id(StaticBuffers) → its IOBinding, bound once
        self._step_options: dict[int, Any] = {}  # id(StaticBuffers) → RunOptions naming its gpu_graph_id
        self._scratch = torch.empty(64, dtype=torch.uint8, device=self.device)  # address for empty tensors
        self._plain = ort.RunOptions()
        if self._cuda:
            self._plain.add_run_config_entry("disable_synchronize_execution_providers", "1")
            if self.cuda_graph:
                self._plain.add_run_config_entry("gpu_graph_id", "-1")

        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = self.session.get_outputs()
        self._input_names = [i.name for i in self.session.get_inputs()]
        # an input with a default (compiled graphs): bound only when a run sets it (a prefill: the last position)
        self.keeps_logits = LOGITS_TO_KEEP in {i.name for i in self.session.get_overridable_initializers()}
        self._output_names = [o.name for o in outputs]
        slots = past_slots(inputs)
        first = inputs.get(past_name(0, "key"))
        logits = next(o for o in outputs if o.name == LOGITS)
        self.kv_dtype = getattr(torch, ORT_DTYPES.get(first.type if first else "tensor(float)", "float32"))
        self.logits_dtype = getattr(torch, ORT_DTYPES.get(logits.type, "float32"))
        record = Record.from_props(self.session.get_modelmeta().custom_metadata_map, str(path))
        self.artifact = Graph(path, record)
        # heads per slot as the compiler laid them out: a fused parallel group's slot holds k × kv_heads heads
        io_heads = [_static(inputs[past_name(s, "key")].shape[1]) for s in slots]
        self.slot_heads = slot_heads(record.slot_layout, io_heads, str(path))
        self.kv_in_place = kv_in_place(record.slot_layout)
        self.pads_rows = pads_rows(record.slot_layout, lambda: _op_types(path))
        kv_heads = min(self.slot_heads, default=0)
        head_dim = _static(first.shape[3]) if first is not None else 0
        self.info = ModelInfo(len(slots), kv_heads, head_dim, int(logits.shape[-1]),
                              str(self.kv_dtype).removeprefix("torch."), record.plan_name, record.source_hash)
        self.tokenizer = load_tokenizer(path.parent)
        if self.tokenizer is not None:
            self.info.eos_token_id = self.tokenizer.eos_token_id

    def _open(self, ort, path: Path, options):
        cpu = "CPUExecutionProvider"
        attempts = [[cpu]]
        if self._cuda:
            cuda = {"device_id": str(self.device.index or 0),
                    "user_compute_stream": str(self.stream.cuda_stream)}
            attempts = [[("CUDAExecutionProvider", {**cuda, "enable_cuda_graph": "1"}), cpu]] if self.cuda_graph else []
            attempts.append([("CUDAExecutionProvider", cuda), cpu])
        for k, providers in enumerate(attempts):
            try:
                return ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:
                if k + 1 < len(attempts):  # CUDA graphs refused (e.g. a compute node on the CPU EP)
                    log.warning("onnxruntime refused CUDA graphs for %s (%s); decoding without them",
                                path.name, str(exc).splitlines()[0][:200])
                    self.cuda_graph = False
                    continue
                raise PaintersError(f"{path}: onnxruntime cannot load the graph ({exc})") from exc

    # ---- one run on bound tensors --------------------------------------------------------------------

    def _binding(self, inputs: dict[str, Any], outputs: dict[str, Any]):
        binding = self.session.io_binding()
        optional = [LOGITS_TO_KEEP] if LOGITS_TO_KEEP in inputs else []
        for names, bind, values in ((self._input_names + optional, binding.bind_input, inputs),
                                    (self._output_names, binding.bind_output, outputs)):
            for name in names:
                t = values[name]
                if not t.is_contiguous():  # a binding is a raw address: it must be dense
                    raise ValueError(f"{name}: IO binding needs a contiguous tensor")
                address = t.data_ptr() if t.numel() else self._scratch.data_ptr()  # past length 0
                bind(name, t.device.type, t.device.index or 0, _numpy_dtype(t.dtype), tuple(t.shape), address)
        return binding

    def run_bound(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        self.session.run_with_iobinding(self._binding(inputs, outputs), self._plain)

    def run_step(self, buffers: StaticBuffers, advance) -> None:
        """Bound once per buffers; on CUDA with graphs, ORT captures the step on its second run, then replays."""
        key = id(buffers)
        if key not in self._bindings:
            self._bindings[key] = self._binding(buffers.inputs, buffers.outputs)
            options = self._plain
            if self.cuda_graph:
                import onnxruntime as ort

                options = ort.RunOptions()
                options.add_run_config_entry("disable_synchronize_execution_providers", "1")
                options.add_run_config_entry("gpu_graph_id", str(len(self._step_options) + 1))  # 0 is reserved
            self._step_options[key] = options
        self.session.run_with_iobinding(self._bindings[key], self._step_options[key])
        advance()

    def close(self) -> None:
        self._bindings.clear()
        self._step_options.clear()
        self.release_static()


def _op_types(path: Path) -> set[str]:
    """The operator types of a graph's top level (its weights are not loaded)."""
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def _static(dim) -> int | None:
    """An IO dim onnxruntime reports: an int when static, a name or None when symbolic."""
    return dim if isinstance(dim, int) else None


def _numpy_dtype(dtype) -> type:
    """The numpy element type onnxruntime's binding expects for a torch dtype (numpy has no bfloat16)."""
    import torch

    table = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.int32: np.int32,
             torch.float64: np.float64, torch.bool: np.bool_}
    if dtype not in table:
        raise PaintersError(f"onnxruntime IO binding of {dtype} tensors is not supported by painters; "
                            "export the model with --dtype fp32 or fp16 for the onnxruntime backend")
    return table[dtype]
