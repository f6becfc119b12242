"""Open a runner for MODEL (+ plan, backend) and serve it with uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path

from painters.errors import PaintersError

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(model: str, *, plan: str | None = None, backend: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, tokenizer: str | None = None, max_batch: int = 8, name: str | None = None) -> None:
    """Serve MODEL over the OpenAI API; returns after a clean shutdown (a signal finishes the running batch)."""
    from painters.serve.app import require_serve_extra

    require_serve_extra()
    import uvicorn

    from painters.routing import open_runner
    from painters.serve.app import create_app

    runner = open_runner(model, backend, plan)
    tok = runner.tokenizer
    if tokenizer is not None:
        from painters.runtime.ort import load_tokenizer

        tok = load_tokenizer(Path(tokenizer))
        if tok is None:
            runner.close()
            raise PaintersError(f"{tokenizer} holds no tokenizer (tokenizer.json or tokenizer_config.json)")
    if tok is None:
        runner.close()
        raise PaintersError(f"{model} has no tokenizer beside it; pass --tokenizer DIR (a Hugging Face tokenizer "
                            "directory)")
    app = create_app(runner, tok, model_name=name or Path(model).stem, max_batch=max_batch)
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="on"))
    server.run()


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
