"""Transport limits of the server: a request body size cap and the wait for a client to hang up.

Why an ASGI middleware and not a check in the handler: FastAPI reads and parses the whole body before a handler
runs, so a 30 MB body was read, parsed and answered. The middleware refuses a declared ``Content-Length`` over the
cap before reading anything, and stops reading a chunked body as soon as it passes the cap.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["BodyLimit", "wait_disconnect", "DEFAULT_MAX_BODY_BYTES"]

DEFAULT_MAX_BODY_BYTES = 8 << 20  # 8 MiB: ~2M tokens of text or token ids, far past any context painters serves

Receive = Callable[[], Awaitable[dict[str, Any]]]


class BodyLimit:
    """Answer 413 (OpenAI-style JSON) to an HTTP request whose body exceeds ``max_bytes``; else replay the body."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive: Receive, send) -> None:
        """Pass non-HTTP scopes through; refuse an oversized body with 413, else replay the body to the app."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect (wait_disconnect)

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        message = (f"the request body exceeds {self.max_bytes} bytes; send a shorter prompt or raise the server's "
                   "--max-body-bytes")
        payload = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                        "code": 413}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


async def wait_disconnect(receive: Receive) -> None:
    """Return when the client has hung up (the body is already read, so the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass
