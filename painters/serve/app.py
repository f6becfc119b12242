"""An OpenAI-compatible HTTP API over one painters runner (FastAPI + uvicorn).

Why this and not Triton through PyTriton: PyTriton's python-backend stub failed to load a model under
Python 3.11.7 here (an ``RLock._recursion_count`` error) and timed out under 3.12, while the OpenAI API
(`/v1/completions`, `/v1/chat/completions`, SSE streaming) is what vLLM, TGI and llama.cpp's server offer, so
every OpenAI client works unchanged. Triton users get a model repository from ``painters deploy triton``.
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

__all__ = ["create_app"]


def create_app(runner, tokenizer, *, model_name: str, max_batch: int = 8, max_tokens_limit: int = 4096):
    """The FastAPI app; its lifespan starts the batching worker and stops it (and closes the runner)."""
    import contextlib

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, Field

    batcher = Batcher(runner, tokenizer, max_batch=max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        batcher.stop()
        runner.close()

    app = FastAPI(title="painters", lifespan=lifespan)
    app.state.batcher = batcher

    class Sampling(BaseModel):
        model: str | None = None
        max_tokens: int = Field(16, ge=1, le=max_tokens_limit)
        temperature: float = Field(1.0, ge=0.0, le=2.0)
        top_p: float = Field(1.0, gt=0.0, le=1.0)
        seed: int | None = None
        stop: str | list[str] | None = None
        stream: bool = False
        n: int = Field(1, ge=1, le=1)
        return_token_ids: bool = False  # vLLM's extension: choices carry the generated token ids

    class CompletionRequest(Sampling):
        prompt: str | list[str] | list[int] | list[list[int]]

    class Message(BaseModel):
        role: str
        content: str

    class ChatRequest(Sampling):
        messages: list[Message] = Field(min_length=1)

    class ApiError(Exception):
        def __init__(self, status: int, message: str):
            self.status, self.message = status, message

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "code": status}},
                            status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        return error(400, "invalid request: " + "; ".join(parts))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error(exc.status, exc.message)

    def check(body: Sampling) -> None:
        if body.model not in (None, model_name):
            raise ApiError(404, f"model {body.model!r} does not exist; this server serves {model_name!r}")

    def prompts_of(body: CompletionRequest) -> list[list[int]]:
        p = body.prompt
        if isinstance(p, str):
            p = [p]
        if not p:
            raise ApiError(400, "prompt is empty")
        if all(isinstance(x, int) for x in p):
            p = [p]
        out = [tokenizer(x)["input_ids"] if isinstance(x, str) else list(x) for x in p]
        vocab = runner.info.vocab_size
        for ids in out:
            if not ids:
                raise ApiError(400, "a prompt has no tokens; give some text or token ids")
            if not all(0 <= t < vocab for t in ids):
                raise ApiError(400, f"prompt token ids must lie in [0, {vocab})")
        return out

    def chat_prompt(body: ChatRequest) -> list[int]:
        if not getattr(tokenizer, "chat_template", None):
            raise ApiError(400, "this model's tokenizer has no chat template; use /v1/completions")
        messages = [m.model_dump() for m in body.messages]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def submit(body: Sampling, prompt: list[int]) -> tuple[asyncio.Queue, GenRequest]:
        loop, updates = asyncio.get_running_loop(), asyncio.Queue()
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        request = GenRequest(prompt, body.max_tokens, lambda *u: loop.call_soon_threadsafe(updates.put_nowait, u),
                             temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop)
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

    async def answer(body: Sampling, prompts: list[list[int]], chat: bool):
        check(body)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        head = {"id": rid, "created": int(time.time()), "model": model_name}
        if body.stream:
            if len(prompts) > 1:
                raise ApiError(400, "stream: true takes one prompt; send one request per prompt")
            updates, _ = submit(body, prompts[0])
            return StreamingResponse(stream(head, updates, chat), media_type="text/event-stream")
        submitted = [submit(body, prompt) for prompt in prompts]
        results = await asyncio.gather(*(collect(updates) for updates, _ in submitted))
        choices = []
        for i, ((text, finish), (_, request)) in enumerate(zip(results, submitted)):
            choice: dict[str, Any] = {"index": i, "finish_reason": finish, "logprobs": None}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            if body.return_token_ids:
                choice["token_ids"] = list(request.tokens)
            choices.append(choice)
        return {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices,
                "usage": usage(prompts, [r.tokens for _, r in submitted])}

    async def stream(head: dict, updates: asyncio.Queue, chat: bool):
        kind = "chat.completion.chunk" if chat else "text_completion"
        first = True
        while True:
            delta, finish, err = await updates.get()
            if err:
                yield f"data: {json.dumps({'error': {'message': err, 'type': 'server_error'}})}\n\n"
                return
            if chat:
                piece = {"content": delta} | ({"role": "assistant"} if first else {})
                choice = {"index": 0, "delta": piece, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
            first = False
            yield f"data: {json.dumps({**head, 'object': kind, 'choices': [choice]})}\n\n"
            if finish:
                yield "data: [DONE]\n\n"
                return

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "painters", "plan": runner.info.plan}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        return await answer(body, prompts_of(body), chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        return await answer(body, [chat_prompt(body)], chat=True)

    return app


def require_serve_extra() -> None:
    """Fail with the fix when the `serve` extra is not installed."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise PaintersError(f"painters serve needs {' and '.join(missing)}: pip install 'painters[serve]'")
