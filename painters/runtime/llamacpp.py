"""llama.cpp as a backend (``--backend llama.cpp``): a GGUF run by the engine that serves it, through llama-cpp-python.

llama.cpp keeps its KV cache inside its context, one sequence at a time. The runner interface passes the cache
explicitly, so here the "cache" of a row is the token history it stands for: a step whose history is what the
context already holds continues it (the usual decode step); any other history rewinds the context to the common
prefix (``kv_cache_seq_rm`` inside ``Llama.eval``) and evaluates the rest. Rows of a batch run one after another.
``logits_all=True`` keeps every position's logits, so loglikelihood scoring (``bench accuracy``) reads them
exactly as from the other runners; greedy decoding at batch 1 (:class:`LlamaCppLoop`, what ``bench latency`` times)
asks for the last position's only, as llama.cpp's own tools do.

The plan a GGUF runs is the one painters recorded in its metadata (``painters.plan``, :mod:`painters.targets`);
a GGUF without it runs as the full model (``baseline``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from painters.errors import BenchError
from painters.fileio import file_hash
from painters.plans import Plan
from painters.runtime.base import KV, ModelInfo, Runner
from painters.runtime.decode import ForwardLoop, GreedyLoop
from painters.targets.gguf_io import field_value, read_painters_metadata

__all__ = ["LlamaCppRunner", "LlamaCppTokenizer", "LlamaCppLoop", "gguf_plan"]

NAME = "llama.cpp"


def gguf_plan(path: str | Path):
    """The :class:`~painters.plans.Plan` a painters-deployed GGUF records, or None (a plain GGUF: baseline)."""
    record = read_painters_metadata(path)
    return Plan.from_json(record["plan"]) if record else None


class LlamaCppTokenizer:
    """llama.cpp's own tokenizer behind the few methods bench uses (the engine tokenizes what it serves)."""

    def __init__(self, llama: Any):
        self.llama = llama
        self.bos_token_id = int(llama.token_bos()) if llama.token_bos() >= 0 else None
        self.eos_token_id = int(llama.token_eos()) if llama.token_eos() >= 0 else None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` by llama.cpp's tokenizer (BOS when ``add_special_tokens``)."""
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=False))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` by llama.cpp's detokenizer (invalid UTF-8 replaced)."""
        return self.llama.detokenize([int(i) for i in ids]).decode("utf-8", errors="replace")

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        """``{"input_ids": ...}`` of ``text``, as a Hugging Face tokenizer answers."""
        return {"input_ids": self.encode(text, add_special_tokens)}


class LlamaCppRunner(Runner):
    """A GGUF on llama.cpp (CPU). ``plan`` is the plan the file records (None: read it; baseline if none).

    Args:
        path: the ``.gguf``.
        threads: CPU threads [llama.cpp's default].
        n_ctx: context length allocated (prompt + generated tokens of one row).
        kv_f32: keep the KV cache in f32 instead of llama.cpp's default f16 (parity tests against f32 references).
    """

    name = NAME
    pads_rows = True

    def __init__(self, path: str | Path, *, threads: int | None = None, n_ctx: int = 1024, model_hash: str = "",
                 kv_f32: bool = False):
        try:
            from llama_cpp import Llama
        except ModuleNotFoundError as exc:
            raise BenchError(f"the llama.cpp backend needs llama-cpp-python ({exc}); install painters[llamacpp]") \
                from None
        self.path = Path(path)
        if not self.path.is_file():
            raise BenchError(f"GGUF {self.path} not found")
        plan = gguf_plan(self.path)
        self.plan = plan
        if not model_hash:  # a deployed GGUF names its source (scores and results match it); a plain one is itself

            model_hash = (read_painters_metadata(self.path) or {}).get("source_hash") or file_hash(self.path)
        # prompt batches default to every core; on a busy machine llama.cpp's spinning threads then wait on each other
        kwargs: dict[str, Any] = {"n_threads": threads, "n_threads_batch": threads} if threads else {}
        if kv_f32:
            kwargs.update(type_k=0, type_v=0)  # GGML_TYPE_F32
        try:
            self.llama = Llama(model_path=str(self.path), n_ctx=n_ctx, logits_all=True, verbose=False, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise BenchError(f"llama.cpp could not load {self.path} ({exc})") from None
        self.scored = 0  # leading context positions whose ``scores`` rows hold their logits (see LlamaCppLoop)
        self.tokenizer = LlamaCppTokenizer(self.llama)
        self._kv_per_token = _kv_bytes_per_token(self.path)
        self.info = ModelInfo(num_slots=0, kv_heads=0, head_dim=0, vocab_size=int(self.llama.n_vocab()),
                              dtype="float32", plan=plan.name if plan is not None else "baseline",
                              model_hash=model_hash, eos_token_id=self.tokenizer.eos_token_id)

    def close(self) -> None:
        """Free the llama.cpp context and model (safe to call twice)."""
        llama, self.llama = getattr(self, "llama", None), None
        if llama is not None:
            llama.close()

    # ---- the cache is each row's token history -----------------------------------------------------------------
    def empty_kv(self, batch: int) -> KV:
        """An empty token history per row."""
        return [([() for _ in range(batch)], None)]

    def repeat_kv(self, kv: KV, n: int) -> KV:
        """The one row's token history, ``n`` times."""
        return [([kv[0][0][0]] * n, None)]

    def _run(self, history: tuple[int, ...], new: list[int]) -> np.ndarray:
        """Logits [len(new), vocab] of ``new`` after ``history``, reusing what the context already holds."""
        llama = self.llama
        tokens = list(history) + new
        if len(tokens) > llama.n_ctx():
            raise BenchError(f"{len(tokens)} tokens exceed llama.cpp's context of {llama.n_ctx()}; use shorter inputs")
        held = llama.input_ids[:min(llama.n_tokens, self.scored)].tolist()  # reusable: positions with logits
        common = 0
        while common < min(len(held), len(tokens) - 1) and held[common] == tokens[common]:
            common += 1  # keep at least one new token to evaluate: its logits are what we return
        llama.n_tokens = common
        llama.eval(tokens[common:])
        self.scored = len(tokens)
        return np.array(llama.scores[len(history):len(tokens)], dtype=np.float32)

    def forward(self, input_ids, attention_mask, position_ids, past: KV | None = None):
        """Run each row's unmasked tokens after its history on the one context, row by row; the cache grows by them."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        mask = np.asarray(attention_mask)[:, -input_ids.shape[1]:]
        histories = past[0][0] if past else [()] * len(input_ids)
        logits = np.zeros((*input_ids.shape, self.info.vocab_size), dtype=np.float32)
        grown = []
        for row, history in enumerate(histories):
            where = np.nonzero(mask[row])[0]
            new = [int(t) for t in input_ids[row, where]]
            if new:
                logits[row, where] = self._run(tuple(history), new)
            grown.append(tuple(history) + tuple(new))
        return logits, [(grown, None)]

    def generate(self, prompts, max_new_tokens: int, stop_ids=(), pad_id: int = 0, static: bool | None = None):
        """Greedy generation one prompt at a time.

        llama.cpp's context holds one sequence, and a batch that takes turns on it would re-evaluate every row's
        history at every step.
        """
        stops, out = set(stop_ids), []
        for prompt in prompts:
            loop = LlamaCppLoop(self, np.asarray([prompt]), np.ones((1, len(prompt)), np.int64))
            loop.prefill()
            tokens = [loop.next]
            while tokens[-1] not in stops and len(tokens) < max_new_tokens:
                loop.step()
                tokens.append(loop.next)
            out.append(tokens)
        return out

    def greedy_loop(self, input_ids, attention_mask, max_new_tokens: int, static: bool | None = None) -> GreedyLoop:
        """Batch 1 decodes straight on the context (:class:`LlamaCppLoop`); several rows take turns via ``forward``."""
        if len(input_ids) != 1:
            return _RowsLoop(self, input_ids, attention_mask)
        return LlamaCppLoop(self, input_ids, attention_mask)

    def kv_bytes(self, tokens: int) -> int:
        """Bytes of llama.cpp's f16 cache holding ``tokens`` positions (layers without attention hold none)."""
        return tokens * self._kv_per_token


class LlamaCppLoop(GreedyLoop):
    """Batch-1 greedy decoding straight on the context: one ``eval`` per token, argmax of the last logits.

    The context keeps every position's logits (``logits_all``, for scoring), which would make a timed prefill run
    the head over the whole prompt and copy its ``[prompt, vocab]`` logits; greedy decoding needs the last
    position's only, so the loop's evals ask llama.cpp for that one, as ``llama-cli`` does. llama-cpp-python
    (0.3.36, pinned) reads ``_logits_all`` at every ``eval``. The ``scores`` rows of these evals stay unwritten, so
    the runner's ``scored`` mark drops to the prompt's start and a later ``forward`` re-evaluates these positions.
    """

    def __init__(self, runner: LlamaCppRunner, input_ids: np.ndarray, attention_mask: np.ndarray):
        self.runner = runner
        mask = np.asarray(attention_mask)[0].astype(bool)
        self.prompt = [int(t) for t in np.asarray(input_ids)[0][mask]]
        self.next = 0

    def _eval(self, tokens: list[int]) -> None:
        """Evaluate ``tokens`` with the last position's logits only, and pick their argmax."""
        from llama_cpp import llama_get_logits_ith

        llama = self.runner.llama
        self.runner.scored = min(self.runner.scored, llama.n_tokens)
        llama._logits_all = False
        try:
            llama.eval(tokens)
        finally:
            llama._logits_all = True
        last = np.ctypeslib.as_array(llama_get_logits_ith(llama.ctx, -1), shape=(self.runner.info.vocab_size,))
        self.next = int(np.argmax(last))

    def prefill(self) -> None:
        """Evaluate the prompt from an empty context and pick the first token."""
        self.runner.llama.reset()
        self._eval(self.prompt)

    def step(self) -> None:
        """Evaluate the last picked token and pick the next."""
        self._eval([self.next])

    def tokens(self) -> np.ndarray:
        """The token picked last (one row)."""
        return np.array([self.next])

    def kv_bytes(self) -> int:
        """Bytes of the cache for the positions the context holds now."""
        return self.runner.kv_bytes(self.runner.llama.n_tokens)

    def synchronize(self) -> None:
        """llama.cpp's CPU ``eval`` returns when the work is done."""


class _RowsLoop(ForwardLoop):
    """Several rows: the portable loop over ``forward`` (rows run one after another on the one context)."""

    def kv_bytes(self) -> int:
        return self.runner.kv_bytes(sum(len(h) for h in self.kv[0][0]))


def _kv_bytes_per_token(path: Path) -> int:
    """K and V of every attention layer in f16 (llama.cpp's default cache type), from the GGUF's head counts."""
    import gguf


    reader = gguf.GGUFReader(str(path))
    values = {k: field_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    arch = values["general.architecture"]
    n = int(values[f"{arch}.block_count"])
    heads = values[f"{arch}.attention.head_count"]
    kv = values.get(f"{arch}.attention.head_count_kv", heads)
    heads = heads if isinstance(heads, list) else [heads] * n
    kv = kv if isinstance(kv, list) else [kv] * n
    first = next(h for h in heads if h)
    head_dim = int(values.get(f"{arch}.attention.key_length", int(values[f"{arch}.embedding_length"]) // first))
    return sum(2 * int(k) * head_dim * 2 for k in kv)
