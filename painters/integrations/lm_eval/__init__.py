"""painters as an lm-evaluation-harness model: ``--model painters`` scores requests on a painters runner.

lm-eval 0.4.13 discovers models only through its registry, filled by imports: it reads no entry points and has
no ``--plugins`` (both arrived after it, upstream PR #4013; pyproject already declares the ``lm_eval.models``
entry point for that version). Importing this module registers ``painters``. The plain ``lm_eval`` command finds
it when the painters task YAMLs are passed by path (their ``tasks/utils.py`` imports this module, and 0.4.13
loads path-given YAMLs before the model lookup); ``python -m painters.integrations.lm_eval ARGS`` is the
``lm_eval`` command with the import done first, for any task. Scoring and greedy generation reuse ``painters bench
accuracy``'s code (``painters.bench.accuracy``), so the plugin and the bench score the same tokens the same way.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

from painters.errors import BenchError, PaintersError

try:
    import lm_eval.models  # noqa: F401  (lm-eval fills its built-in models only into an empty registry)
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
except ModuleNotFoundError as exc:  # pragma: no cover - exercised only without the extra
    raise BenchError("the lm-eval plugin needs lm-evaluation-harness: pip install 'painters[lmeval]'") from exc

__all__ = ["PaintersLM", "TASKS_DIR"]

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parent / "tasks"  # offline task YAMLs: pass as --include_path
DEFAULT_MAX_LENGTH = 2048  # lm-eval's HFLM default when the config names none
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's HFLM default


def _int_or_none(value: Any, name: str) -> int | None:
    """A positive integer model_arg, or None for absent/"auto"; anything else is refused naming ``name``."""
    if value is None or value == "" or value == "auto":
        return None  # "auto": painters packs continuation rows itself (DEFAULT_BATCH_SIZE)
    try:
        number = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1:
        raise BenchError(f"model_args {name}={value!r} is not a positive integer; give e.g. {name}=4"
                         + (" or auto" if name == "batch_size" else ""))
    return number


@register_model("painters")
class PaintersLM(TemplateLM):
    """A painters runner (ONNX graph, TensorRT engine or source model + plan) as an lm-eval ``LM``.

    Args:
        model: ``M.onnx``, ``E.engine`` or a source (``tiny-llama``, a checkpoint directory, ``smollm2-135m``).
        plan: A plan for a source model on the torch backend; compiled graphs carry theirs.
        backend: ``onnxruntime``, ``onnxruntime-cuda``, ``tensorrt``, ``tensorrt-rtx`` or ``torch``.
        scores: Importance scores for ``drop_*_kN`` plans.
        threads: CPU threads for onnxruntime / torch.
        batch_size: Continuation rows per forward (lm-eval's ``--batch_size``; ``auto`` → painters' default).
        max_length: Longest sequence fed to the model; contexts are left-truncated to it as HFLM does.
        max_batch_size, device: Accepted from lm-eval's CLI and ignored (the backend picks the device).
    """

    def __init__(self, model: str | None = None, plan: str | None = None, backend: str | None = None,
                 scores: str | None = None, threads: int | str | None = None, batch_size: int | str | None = None,
                 max_length: int | str | None = None, max_batch_size: Any = None, device: Any = None) -> None:
        from painters.bench.accuracy import require_tokenizer
        from painters.routing import open_runner

        super().__init__()
        if model is None or str(model).strip() == "":
            raise BenchError("model_args needs model=M: an .onnx graph, an .engine, a checkpoint directory or a "
                             "built-in source such as tiny-llama (e.g. --model_args model=out/model.onnx)")
        n_threads = _int_or_none(threads, "threads")
        self.batch_size = _int_or_none(batch_size, "batch_size")
        self.max_length = _int_or_none(max_length, "max_length") or DEFAULT_MAX_LENGTH
        try:
            self.runner = open_runner(str(model), backend or None, plan or None, scores or None, threads=n_threads)
        except PaintersError as exc:
            raise BenchError(f"model_args model={model}" + "".join(
                f",{k}={v}" for k, v in (("plan", plan), ("backend", backend), ("scores", scores)) if v)
                + f": {exc}") from None
        try:
            self.tokenizer = require_tokenizer(self.runner)
        except BaseException:
            self.runner.close()
            raise
        log.info("painters lm-eval model: %s, plan %s on %s", model, self.runner.info.plan, self.runner.name)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> PaintersLM:
        """Build the model from ``--model_args`` (lm-eval's constructor), with every key checked first.

        Keys are checked first because lm-eval passes them as keyword arguments, so an unknown key was a
        ``TypeError`` traceback from inside lm-eval.
        """
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls.create_from_arg_obj(args, extra)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict | None = None) -> PaintersLM:
        args = {**arg_dict, **{k: v for k, v in (additional_config or {}).items() if v is not None}}
        known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        if unknown := [k for k in arg_dict if k not in known]:
            raise BenchError(f"model_args {unknown[0]!r} is not a painters model argument; use "
                             f"{', '.join(known[:7])}")
        return cls(**{k: v for k, v in args.items() if k in known})

    @property
    def eot_token_id(self) -> int:
        eos = self.runner.info.eos_token_id
        return eos if eos is not None else self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        # HFLM's choice, and painters.bench.accuracy.encode_pair's: BOS, else EOS
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return bos if bos is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "")).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """``--apply_chat_template``: the tokenizer's template, as lm-eval's HF backend applies it.

        Like HFLM, a template that rejects the system role is retried without the system messages.
        """
        import jinja2

        def render(history: list[dict[str, str]]) -> str:
            return self.tokenizer.apply_chat_template(history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      continue_final_message=not add_generation_prompt)

        if not getattr(self.tokenizer, "chat_template", None):
            raise BenchError(f"the tokenizer of {self.runner.info.plan!r} has no chat template; "
                             "drop --apply_chat_template or export from a source whose tokenizer has one")
        try:
            return render(chat_history)
        except jinja2.exceptions.TemplateError:
            log.warning("the chat template rejected the history; retrying without the system role")
            return render([m for m in chat_history if m["role"] != "system"])

    def get_model_info(self) -> dict[str, Any]:
        """Recorded in lm-eval's results ``config``: which plan ran where, on which weights."""
        return {"painters_plan": self.runner.info.plan, "painters_backend": self.runner.name,
                "painters_model_hash": self.runner.info.model_hash}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return list(self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens)))

    def _fit(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        """Left-truncate so that context + continuation feed at most ``max_length`` tokens (HFLM's window)."""
        whole = (list(context) + list(continuation))[-(self.max_length + 1):]
        keep = max(1, len(whole) - len(continuation))
        return whole[:keep], whole[keep:]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        from tqdm import tqdm

        from painters.bench.accuracy import loglikelihood

        pairs = [self._fit(ctx, cont) for _, ctx, cont in requests]
        with tqdm(total=len(pairs), disable=disable_tqdm, desc="painters loglikelihood") as bar:
            results = loglikelihood(self.runner, pairs, self.batch_size, bar.update)
        for (key, _, _), result in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows, owners = [], []
        for n, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owners.append(n)
        totals = [0.0] * len(requests)
        for n, (ll, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[n] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy completions through the runner's decode loop, grouped by generation settings."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

        from painters.bench.accuracy import greedy_until

        eos = self.tokenizer.decode([self.eot_token_id])
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        out = [""] * len(requests)
        for members in groups.values():
            kwargs = normalize_gen_kwargs(dict(requests[members[0]].args[1]), DEFAULT_MAX_GEN_TOKS)
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0.0:
                raise BenchError("the painters model decodes greedily; drop do_sample/temperature from gen_kwargs")
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = int(kwargs.pop("max_gen_toks"))
            if max_gen >= self.max_length:
                raise BenchError(f"max_gen_toks {max_gen} must be below max_length {self.max_length}")
            prompts = [self.tok_encode(requests[i].args[0])[-(self.max_length - max_gen):] for i in members]
            texts = greedy_until(self.runner, prompts, until, max_gen, self.batch_size)
            for i, text in zip(members, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out
