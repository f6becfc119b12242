"""An OpenAI-compatible HTTP API over one painters runner (FastAPI + uvicorn).

Why this and not Triton through PyTriton: PyTriton's python-backend stub failed to load a model under
Python 3.11.7 here (an ``RLock._recursion_count`` error) and timed out under 3.12, while the OpenAI API
(`/v1/completions`, `/v1/chat/completions`, SSE streaming) is what vLLM, TGI and llama.cpp's server offer, so
every OpenAI client works unchanged. Triton users get a model repository from ``painters deploy triton``.

Every request is checked completely here, on the event loop, before it joins a batch
(:mod:`painters.serve.checks`); errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with a 4xx
status, and a client that hangs up cancels its generation.
"""

# No `from __future__ import annotations`: FastAPI reads the request models from the handlers' annotations,
# and the models are local to create_app (fastapi and pydantic are imported only when serving).
import asyncio
import json
import time
import uuid
from typing import Any

from painters.errors import PaintersError
from painters.serve.batcher import Batcher, GenRequest
from painters.serve.checks import SAMPLING_EPS, ApiError, check_length, require_text, unsupported_fields
from painters.serve.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit, wait_disconnect

__all__ = ["create_app"]

DEFAULT_MAX_TOKENS = 16  # OpenAI's completions default
INT64 = 2 ** 63


def create_app(runner, tokenizer, *, model_name: str, max_batch: int = 8, max_tokens_limit: int = 4096,
               context: int | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """The FastAPI app; its lifespan starts the batching worker and stops it (and closes the runner).

    ``context``: the model's context length (prompt + completion tokens); None skips the length check.
    """
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
    from starlette.exceptions import HTTPException

    batcher = Batcher(runner, tokenizer, max_batch=max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()
        runner.close()

    app = FastAPI(title="painters", lifespan=lifespan)
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    class Sampling(BaseModel):
        model_config = ConfigDict(extra="allow")  # unknown fields: checked by unsupported_fields, else ignored

        model: str | None = None
        max_tokens: StrictInt | None = Field(None, ge=1, le=max_tokens_limit)
        max_completion_tokens: StrictInt | None = Field(None, ge=1, le=max_tokens_limit)  # OpenAI's current name
        temperature: float = Field(1.0, ge=0.0, le=2.0)
        top_p: float = Field(1.0, gt=0.0, le=1.0)
        seed: StrictInt | None = Field(None, ge=-INT64, lt=INT64)  # vLLM's range: a signed 64-bit integer
        stop: str | list[str] | None = None
        stream: StrictBool = False
        stream_options: dict[str, Any] | None = None
        n: StrictInt = Field(1, ge=1, le=1)
        return_token_ids: StrictBool = False  # vLLM's extension: choices carry the generated token ids

    class CompletionRequest(Sampling):
        prompt: Any  # str | list[str] | list[int] | list[list[int]], checked by prompts_of with precise errors

    class ChatRequest(Sampling):
        messages: list[dict[str, Any]] = Field(min_length=1)

    def error(status: int, message: str, param: str | None = None) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": " ".join(str(message).split()), "type": kind, "param": param,
                                       "code": status}}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors]
        param = ".".join(str(p) for p in errors[0]["loc"][1:]) or None if errors else None
        return error(400, "invalid request: " + "; ".join(parts), param)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error(exc.status, exc.message, exc.param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):  # a bug: still one JSON line, never an HTML page
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    def check(body: Sampling, chat: bool) -> int:
        """Everything but the prompt; returns the completion budget."""
        if body.model not in (None, model_name):
            raise ApiError(404, f"model {body.model!r} does not exist; this server serves {model_name!r}", "model")
        if unsupported := unsupported_fields(body.model_extra or {}):
            raise ApiError(400, f"this server does not implement {', '.join(unsupported)}; drop "
                                f"{'it' if len(unsupported) == 1 else 'them'} from the request (painters serve "
                                "decodes greedily or samples with temperature, top_p and seed)", unsupported[0])
        if body.stream_options is not None:
            if not body.stream:
                raise ApiError(400, "stream_options is only allowed when stream is true", "stream_options")
            if other := sorted(set(body.stream_options) - {"include_usage"}):
                raise ApiError(400, f"stream_options {', '.join(other)} is not implemented; send include_usage only",
                               "stream_options")
        for i, stop in enumerate([body.stop] if isinstance(body.stop, str) else body.stop or []):
            require_text(stop, f"stop[{i}]" if not isinstance(body.stop, str) else "stop")
        return body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS

    def prompts_of(body: CompletionRequest, budget: int) -> list[list[int]]:
        p = body.prompt
        if isinstance(p, str):
            p = [p]
        if not isinstance(p, list) or not p:
            raise ApiError(400, "prompt must be a non-empty string, list of strings, list of token ids or list of "
                                "token id lists", "prompt")
        if all(_is_id(x) for x in p):
            p = [p]
        out = []
        for i, x in enumerate(p):
            if isinstance(x, str):
                out.append(list(tokenizer(require_text(x, f"prompt[{i}]"))["input_ids"]))
            elif isinstance(x, list) and all(_is_id(t) for t in x):
                out.append(list(x))
            else:
                raise ApiError(400, f"prompt[{i}] is neither text nor a list of integer token ids (true/false and "
                                    "1.5 are not token ids)", "prompt")
        vocab = runner.info.vocab_size
        for ids in out:
            if not ids:
                raise ApiError(400, "a prompt has no tokens; give some text or token ids", "prompt")
            if bad := [t for t in ids if not 0 <= t < vocab]:
                raise ApiError(400, f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})", "prompt")
            check_length(len(ids), budget, context, chat=False)
        return out

    def chat_prompt(body: ChatRequest, budget: int) -> list[int]:
        import jinja2

        if not getattr(tokenizer, "chat_template", None):
            raise ApiError(400, "this model's tokenizer has no chat template; use /v1/completions")
        messages = [_message(m, i) for i, m in enumerate(body.messages)]
        try:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except (jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
            raise ApiError(400, f"the chat template rejected the messages: {type(exc).__name__}: {exc}",
                           "messages") from None
        ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        check_length(len(ids), budget, context, chat=True)
        return ids

    def submit(body: Sampling, prompt: list[int], budget: int) -> tuple[asyncio.Queue, GenRequest]:
        loop, updates = asyncio.get_running_loop(), asyncio.Queue()
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        temperature = body.temperature if body.temperature >= SAMPLING_EPS else 0.0
        seed = body.seed % 2 ** 64 if body.seed is not None else None  # numpy takes non-negative seeds
        request = GenRequest(prompt, budget, lambda *u: loop.call_soon_threadsafe(updates.put_nowait, u),
                             temperature=temperature, top_p=body.top_p, seed=seed, stop=stop)
        batcher.submit(request)
        return updates, request

    async def collect(updates: asyncio.Queue) -> tuple[str, str]:
        text = ""
        while True:
            delta, finish, err = await updates.get()
            if err:
                raise ApiError(503 if "shutting down" in err else 500, err)
            text += delta
            if finish:
                return text, finish

    def usage(prompts: list[list[int]], outputs: list[list[int]]) -> dict[str, int]:
        p, c = sum(map(len, prompts)), sum(map(len, outputs))
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    async def answer(request: Request, body: Sampling, prompts: list[list[int]], budget: int, chat: bool):
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        head = {"id": rid, "created": int(time.time()), "model": model_name}
        if body.stream:
            if len(prompts) > 1:
                raise ApiError(400, "stream: true takes one prompt; send one request per prompt", "stream")
            updates, gen = submit(body, prompts[0], budget)
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(stream(head, updates, gen, chat, include_usage),
                                     media_type="text/event-stream")
        submitted = [submit(body, prompt, budget) for prompt in prompts]
        results = asyncio.ensure_future(asyncio.gather(*(collect(updates) for updates, _ in submitted)))
        gone = asyncio.ensure_future(wait_disconnect(request.receive))
        await asyncio.wait({results, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not results.done():  # the client hung up: stop its generations, answer no one
            for _, gen in submitted:
                gen.cancel()
            results.cancel()
            return Response(status_code=499)
        gone.cancel()
        if results.exception() is not None:  # one prompt failed: the request's other prompts stop too
            for _, gen in submitted:
                gen.cancel()
        choices = []
        for i, ((text, finish), (_, gen)) in enumerate(zip(results.result(), submitted)):
            choice: dict[str, Any] = {"index": i, "finish_reason": finish, "logprobs": None}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            if body.return_token_ids:
                choice["token_ids"] = list(gen.tokens)
            choices.append(choice)
        return {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices,
                "usage": usage(prompts, [g.tokens for _, g in submitted])}

    async def stream(head: dict, updates: asyncio.Queue, gen: GenRequest, chat: bool, include_usage: bool):
        kind = "chat.completion.chunk" if chat else "text_completion"
        first = True
        try:
            while True:
                delta, finish, err = await updates.get()
                if err:
                    failure = {"message": err, "type": "server_error", "param": None, "code": 500}
                    yield f"data: {json.dumps({'error': failure})}\n\n"
                    return
                if chat:
                    piece = {"content": delta} | ({"role": "assistant"} if first else {})
                    choice = {"index": 0, "delta": piece, "finish_reason": finish, "logprobs": None}
                else:
                    choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
                first = False
                yield f"data: {json.dumps({**head, 'object': kind, 'choices': [choice]})}\n\n"
                if finish:
                    if include_usage:  # OpenAI's shape: one more chunk, no choices, the request's usage
                        chunk = {**head, "object": kind, "choices": [], "usage": usage([gen.prompt], [gen.tokens])}
                        yield f"data: {json.dumps(chunk)}\n\n"
                    yield "data: [DONE]\n\n"
                    return
        finally:  # also on the client hanging up (Starlette cancels the stream): free the batch slot
            gen.cancel()

    def model_card() -> dict[str, Any]:
        return {"id": model_name, "object": "model", "created": 0, "owned_by": "painters", "plan": runner.info.plan,
                "max_model_len": context}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != model_name:
            raise ApiError(404, f"model {model_id!r} does not exist; this server serves {model_name!r}", "model")
        return model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        budget = check(body, chat=False)
        return await answer(request, body, prompts_of(body, budget), budget, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        budget = check(body, chat=True)
        return await answer(request, body, [chat_prompt(body, budget)], budget, chat=True)

    return app


def _is_id(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _message(m: dict[str, Any], i: int) -> dict[str, str]:
    """One chat message as the template takes it: text role and content (OpenAI text parts joined)."""
    role, content = m.get("role"), m.get("content")
    if not isinstance(role, str):
        raise ApiError(400, f"messages[{i}].role must be a string such as \"user\"", "messages")
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{i}].content part of type {kind!r} is not supported; this model reads "
                                    "text parts only", "messages")
            texts.append(part["text"])
        content = "".join(texts)
    elif content is None:
        content = ""
    elif not isinstance(content, str):
        raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", "messages")
    return {"role": require_text(role, f"messages[{i}].role"),
            "content": require_text(content, f"messages[{i}].content")}


def require_serve_extra() -> None:
    """Fail with the fix when the `serve` extra is not installed."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise PaintersError(f"painters serve needs {' and '.join(missing)}: pip install 'painters[serve]'")
