"""What a request must satisfy before it joins a batch.

OpenAI fields the server implements, text that encodes, a prompt that fits the model's context (vLLM's rule and
wording), and the model's context length.

Why here and not in the worker: a request refused inside the batching thread fails every request batched with
it, and a streamed one has already answered 200. Everything a request can get wrong is checked on the event loop,
so it is answered alone with a 4xx; the worker only sees requests that can run.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ApiError", "SAMPLING_EPS", "unsupported_fields", "require_text", "check_length", "context_length"]

SAMPLING_EPS = 1e-5  # vLLM's _SAMPLING_EPS: a lower temperature decodes greedily (1/t would overflow to NaN)

# OpenAI (and vLLM extension) fields painters does not implement, with the values that ask for nothing (a client
# may send those; anything else is refused with a 400 naming the field, as vLLM refuses options it lacks).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False), "top_logprobs": (None, 0), "echo": (None, False), "suffix": (None, ""),
    "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "repetition_penalty": (None, 1),
    "logit_bias": (None, {}), "best_of": (None, 1), "response_format": (None, {"type": "text"}),
    "tools": (None, []), "tool_choice": (None, "none", "auto"), "functions": (None, []),
    "function_call": (None, "none"), "prediction": (None,), "audio": (None,), "modalities": (None, ["text"]),
    "top_k": (None, 0, -1),
    "min_p": (None, 0), "min_tokens": (None, 0), "ignore_eos": (None, False), "guided_json": (None,),
    "guided_regex": (None,), "guided_choice": (None,), "guided_grammar": (None,), "structured_outputs": (None,),
    "prompt_logprobs": (None,), "use_beam_search": (None, False), "length_penalty": (None, 1),
    "stop_token_ids": (None, []), "skip_special_tokens": (None, True), "logits_processors": (None, []),
    "web_search_options": (None,), "reasoning_effort": (None,),
}


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, a one-line ``message``, the offending field ``param``."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, " ".join(message.split()), param


def unsupported_fields(extra: dict[str, Any]) -> list[str]:
    """Names of the fields in ``extra`` this server does not implement, given with a value that asks for them."""
    return sorted(k for k, v in extra.items() if k in _NEUTRAL and not _neutral(v, _NEUTRAL[k]))


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    # == with bool kept apart from numbers: logprobs 0 asks for the sampled token's logprob, false asks nothing
    return any(value == n and isinstance(value, bool) == isinstance(n, bool) for n in neutral)


def require_text(value: str, param: str) -> str:
    r"""``value`` if it encodes as UTF-8; a lone UTF-16 surrogate (``"\ud800"`` in JSON) is refused naming ``param``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{param} is not valid Unicode text (it holds a lone UTF-16 surrogate such as \\ud800); "
                            "send well-formed UTF-8", param) from None
    return value


def check_length(prompt_tokens: int, max_tokens: int, context: int | None, *, chat: bool) -> None:
    """Refuse with vLLM's 400 when prompt + completion exceed the model's context.

    A longer sequence runs on positions the model never learned and answers garbage.
    """
    if context is None or prompt_tokens + max_tokens <= context:
        return
    where = "messages" if chat else "prompt"
    raise ApiError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, {max_tokens} in the "
                        f"completion). Please reduce the length of the {where} or completion.",
                   "messages" if chat else "prompt")


def context_length(runner) -> int | None:
    """The model's context length (``max_position_embeddings``), or None.

    As its graph metadata or its Hugging Face config records it; None when neither says (the server then needs
    ``--max-model-len``).
    """
    record = getattr(getattr(runner, "artifact", None), "record", None)
    try:
        value = json.loads(record.extra.get("config", "{}") if record is not None else "{}").get(
            "max_position_embeddings")
    except (TypeError, ValueError):
        value = None
    if value is None:
        config = getattr(getattr(runner, "model", None), "config", None)
        value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None
