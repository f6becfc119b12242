"""TensorRT / TensorRT-RTX backend: a built engine run on torch CUDA tensors; the KV cache stays on the GPU."""

from __future__ import annotations

import logging
from pathlib import Path

from painters.artifact import Engine, Record
from painters.decoder_io import INPUT_IDS, LOGITS, TRT_DTYPES, is_io_input, past_name, past_slots
from painters.errors import BuildError
from painters.graph_metadata import slot_heads
from painters.runtime.base import ModelInfo
from painters.runtime.decode import StaticBuffers
from painters.runtime.device import DeviceRunner
from painters.tensorrt_lib import gpu_name, import_trt, require_cuda, trt_logger

__all__ = ["TrtRunner"]

log = logging.getLogger(__name__)



class TrtRunner(DeviceRunner):
    """An engine from ``painters engine build`` in one execution context.

    The engine has a prefill profile (index 0) and a decode profile (index 1, seq = 1); each call picks
    one by its seq length. Inputs and outputs are torch CUDA tensors whose addresses are handed to
    TensorRT, so the returned cache never leaves the device. Greedy decoding uses the static loop of
    :mod:`painters.runtime.decode`, each (batch, bucket) captured once as a CUDA graph that holds the
    engine's enqueue and the loop's cache update (``cuda_graph=False`` turns capture off).
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, *, backend: str = "tensorrt-rtx", device: int = 0,
                 cuda_graph: bool = True):
        import torch

        from painters.runtime.ort import load_tokenizer

        path = Path(engine_path)
        require_cuda(f"{path}: running a {backend} engine")
        if not path.is_file():
            raise BuildError(f"{path}: no such engine; build one with `painters engine build MODEL.onnx -o {path}`")
        trt = import_trt(backend)
        self.name, self._torch, self.device = backend, torch, torch.device("cuda", device)
        torch.cuda.set_device(self.device)  # TensorRT allocates on the current CUDA device
        logger = trt_logger(trt)
        self._runtime = trt.Runtime(logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BuildError(f"{path}: {backend} {trt.__version__} cannot load this engine on {gpu_name()}; it was "
                             "built for another GPU, compute capability or TensorRT version, or it is corrupt. "
                             "Rebuild it here with `painters engine build` (" + "; ".join(logger.errors[-2:]) + ")")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BuildError(f"{path}: no execution context (device memory exhausted?): " + "; ".join(logger.errors))
        self.stream = torch.cuda.Stream(self.device)  # TensorRT syncs the whole device on the default stream
        self._scratch = torch.empty(256, dtype=torch.uint8, device=self.device)  # address for empty tensors

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: getattr(torch, TRT_DTYPES[self.engine.get_tensor_dtype(n).name]) for n in names}
        unknown = [n for n in self._inputs if not is_io_input(n)]
        if unknown:
            raise BuildError(f"{path}: inputs {unknown} are outside the decoder IO convention; TrtRunner "
                             f"feeds only the token inputs and {past_name('N', 'key/value')}")
        self._slots = past_slots(self._inputs)
        self._decode_profile = 1 if self.engine.num_optimization_profiles > 1 else 0
        self._profile = 0  # a new context starts on profile 0

        first = past_name(self._slots[0], "key") if self._slots else None
        kv = tuple(self.engine.get_tensor_shape(first)) if first else (0, 0, 0, 0)
        self.kv_dtype = self._dtypes[first] if first else torch.float32
        self.logits_dtype = self._dtypes[LOGITS]
        self.cuda_graph = cuda_graph
        self._graphs: dict[int, object] = {}  # id(StaticBuffers) → captured CUDA graph
        # the graph's painters metadata, recorded at build time in the sidecar
        self.artifact = Engine.detect(path) or Engine(path, Record())
        record = self.artifact.record
        # heads per slot as the compiler laid them out: a fused parallel group's slot holds k × kv_heads heads
        io_heads = [int(self.engine.get_tensor_shape(past_name(s, "key"))[1]) for s in self._slots]
        self.slot_heads = slot_heads(record.slot_layout, [h if h >= 0 else None for h in io_heads], str(path))
        self.info = ModelInfo(len(self._slots), min(self.slot_heads, default=0), kv[3],
                              int(self.engine.get_tensor_shape(LOGITS)[-1]), str(self.kv_dtype).removeprefix("torch."),
                              record.plan_name, record.source_hash)
        onnx = self.artifact.onnx
        self.tokenizer = load_tokenizer(onnx.parent) if onnx is not None else None
        if self.tokenizer is not None:
            self.info.eos_token_id = self.tokenizer.eos_token_id
        log.info("loaded %s (%d profiles, %d KV slots)", path, self.engine.num_optimization_profiles, len(self._slots))

    def _address(self, tensor) -> int:
        return tensor.data_ptr() if tensor.numel() else self._scratch.data_ptr()

    def run_bound(self, inputs: dict, outputs: dict) -> None:
        """Set shapes and addresses (switching to the decode profile for seq = 1) and enqueue on the stream."""
        seq = inputs[INPUT_IDS].shape[1]
        profile = self._decode_profile if seq == 1 else 0
        if profile != self._profile:
            if not self.context.set_optimization_profile_async(profile, self.stream.cuda_stream):
                raise BuildError(f"{self.name}: cannot switch to optimization profile {profile}")
            self._profile = profile
        for name in self._inputs:
            tensor = inputs[name]
            if tensor.dtype != self._dtypes[name]:  # an engine may take int32 ids; converted once, kept in `inputs`
                tensor = inputs[name] = tensor.to(self._dtypes[name])
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                lo, _, hi = self.engine.get_tensor_profile_shape(name, profile)
                raise BuildError(f"{name} of shape {tuple(tensor.shape)} is outside the engine's profile {profile} "
                                 f"({tuple(lo)} to {tuple(hi)}); rebuild the engine with a wider --profile")
            self.context.set_tensor_address(name, self._address(tensor))
        for name in self._outputs:
            self.context.set_tensor_address(name, self._address(outputs[name]))
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BuildError(f"{self.name}: execution failed; rerun with -v for TensorRT's messages")

    def run_step(self, buffers: StaticBuffers, advance) -> None:
        """First step of a (batch, bucket): run it, then capture enqueue + advance as one CUDA graph; later: replay.

        TensorRT needs one ordinary enqueue before capture (deferred allocations), which is the first step's
        real work; the capture itself executes nothing.
        """
        torch = self._torch
        with self.stream_context():
            graph = self._graphs.get(id(buffers))
            if graph is not None:
                graph.replay()
                return
            self.run_bound(buffers.inputs, buffers.outputs)
            advance()
            if self.cuda_graph:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self.stream):
                    self.context.execute_async_v3(self.stream.cuda_stream)
                    advance()
                self._graphs[id(buffers)] = graph

    def close(self) -> None:
        # The context must go before its engine, and the engine before the runtime that made it.
        self._graphs.clear()
        self.release_static()
        for attr in ("context", "engine", "_runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)
