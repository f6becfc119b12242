"""A `painters serve` subprocess on loopback and raw HTTP helpers for the server's reliability tests.

Why raw ``http.client`` and not the ``openai`` client: hostile requests (lone surrogates, ``[true, false]``,
30 MB bodies, unknown fields, dropped connections) are exactly what a well-behaved client refuses to send.
The server's log goes to a file, not a pipe, so a long soak never blocks it on a full pipe buffer.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ServeProcess", "free_port", "request", "reference", "rss_kib"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``painters serve MODEL --name tiny ARGS`` until ``stop``; ``log`` is its combined output file."""

    def __init__(self, model: Path, log: Path, *args: str):
        self.port = free_port()
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "painters", "serve", str(model), "--port",
                                          str(self.port), "--name", "tiny", *args], stdout=out,
                                         stderr=subprocess.STDOUT, env=os.environ.copy())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {log.read_text()}")
            try:
                if request(self.port, "GET", "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.proc.kill()
        raise AssertionError("server did not answer /health within 120 s")

    def stop(self) -> int | None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def request(port: int, method: str, path: str, body: bytes | dict | None = None, *, timeout: float = 60,
            headers: dict | None = None) -> tuple[int, str]:
    """One request on a fresh connection: (status, body text)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def reference(model: Path, prompts: list[str], max_tokens: int) -> list[list[int]]:
    """painters' own greedy tokens for ``prompts`` with the served tokenizer, the final end token dropped."""
    from painters.routing import open_runner

    with open_runner(str(model)) as runner:
        tok = runner.tokenizer
        outs = [runner.generate([tok(p)["input_ids"]], max_tokens, stop_ids=[tok.eos_token_id])[0] for p in prompts]
    return [o[:-1] if o and o[-1] == tok.eos_token_id else o for o in outs]


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")
