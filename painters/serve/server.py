"""Open a runner for MODEL (+ plan, backend) and serve it with uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from pathlib import Path

from painters.errors import PaintersError

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(model: str, *, plan: str | None = None, backend: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, tokenizer: str | None = None, max_batch: int = 8, name: str | None = None,
          max_model_len: int | None = None, max_body_bytes: int | None = None) -> None:
    """Serve MODEL over the OpenAI API; returns after a clean shutdown (a signal finishes the running batch).

    Every start-up failure (a bad port, a port in use, a missing model, an unreadable tokenizer) is a
    :class:`PaintersError` raised before the model is served, so the CLI prints one line and exits 2.
    """
    from painters.serve.app import require_serve_extra

    require_serve_extra()
    check_listen(host, port)
    if max_model_len is not None and max_model_len < 2:
        raise PaintersError(f"--max-model-len {max_model_len} leaves no room for a prompt and a completion; "
                            "give the model's context length (e.g. 2048)")
    import uvicorn

    from painters.routing import open_runner
    from painters.serve.app import create_app
    from painters.serve.checks import context_length
    from painters.serve.limits import DEFAULT_MAX_BODY_BYTES

    runner = open_runner(model, backend, plan)
    try:
        tok = runner.tokenizer
        if tokenizer is not None:
            tok = _load_tokenizer(Path(tokenizer))
        if tok is None:
            raise PaintersError(f"{model} has no tokenizer beside it; pass --tokenizer DIR (a Hugging Face tokenizer "
                                "directory)")
        context = max_model_len or context_length(runner)
        if context is None:
            log.warning("%s records no context length; prompts are not checked against it (pass --max-model-len)",
                        model)
        app = create_app(runner, tok, model_name=name or Path(model).stem, max_batch=max_batch, context=context,
                         max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES)
        check_listen(host, port)  # again: the port may have been taken while the model loaded
    except BaseException:
        runner.close()
        raise
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="on"))
    server.run()
    if not server.started and not server.should_exit:
        raise PaintersError(f"the server could not start on {host}:{port}; see the log line above")


def check_listen(host: str, port: int) -> None:
    """Refuse a port out of range, a host that does not resolve, or an address already in use, before serving.

    uvicorn logs such a failure and exits 1 or 3 after the model has loaded; binding a probe socket first
    (with uvicorn's SO_REUSEADDR) turns each into one line naming the fix.
    """
    if not 0 < port < 65536:
        raise PaintersError(f"--port {port} is not a TCP port; give one in 1..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise PaintersError(f"--host {host!r} does not resolve ({exc}); give an address such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise PaintersError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; stop the other server or "
                                "pick another --port") from None


def _load_tokenizer(folder: Path):
    """The tokenizer in ``folder``, or a one-line error naming the folder and what is wrong with it."""
    from painters.runtime.ort import load_tokenizer

    if not folder.is_dir():
        raise PaintersError(f"--tokenizer {folder} is not a directory; give a Hugging Face tokenizer directory")
    tok = load_tokenizer(folder)
    if tok is None:
        raise PaintersError(f"{folder} holds no tokenizer (tokenizer.json or tokenizer_config.json)")
    return tok


class _Server:
    """uvicorn's server, but a signal ends it with exit status 0 instead of being re-raised after shutdown."""

    def __new__(cls, config):
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self):
                previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
                try:
                    yield
                finally:
                    for s, handler in previous.items():
                        signal.signal(s, handler)

        return Server(config)
