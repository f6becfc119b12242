"""Soak: 200 mixed valid and hostile requests from 20 concurrent clients against one `painters serve` on loopback
(tiny-llama graph). Every valid request gets its correct greedy tokens, every hostile one a 4xx JSON error, the
server stays up, and its resident memory grows by less than RSS_BOUND_MIB from after a warm-up round to the end."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install 'painters[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed: pip install 'painters[serve]'")

from tests.reliability.serve_client import ServeProcess, reference, request, rss_kib  # noqa: E402
from tests.reliability.test_serve_requests import CHAT_RAW, HOSTILE, RAW  # noqa: E402
from tests.serve.conftest import link_with_tokenizer  # noqa: E402

PROMPTS = ["Once upon a time", "The cat", "ab", "Hello, world! How are", "x", "painters serve", "0123", "zz top"]
MAX_TOKENS = 6
REQUESTS, CLIENTS, WARMUP = 200, 20, 40
RSS_BOUND_MIB = 64  # growth allowed after warm-up: allocator noise, not a per-request leak (200 x 1 MiB would fail)
TIME_BOUND_S = 600


def _plan(seed: int) -> list[tuple[str, str, bytes, object]]:
    """(kind, path, body, expectation): valid -> prompt index, hostile -> expected status."""
    rng = random.Random(seed)
    hostile = [(k, "/v1/completions", json.dumps(v[0]).encode(), v[1]) for k, v in HOSTILE.items()]
    hostile += [(k, "/v1/completions", v[0], v[1]) for k, v in RAW.items()]
    hostile += [(k, "/v1/chat/completions", v[0], v[1]) for k, v in CHAT_RAW.items()]
    big = json.dumps({"model": "tiny", "prompt": "y" * (9 << 20)}).encode()
    hostile += [("oversized", "/v1/completions", big, 413)]
    out = []
    for i in range(REQUESTS):
        if i % 2 == 0:
            n = rng.randrange(len(PROMPTS))
            body = {"model": "tiny", "prompt": PROMPTS[n], "max_tokens": MAX_TOKENS, "temperature": 0,
                    "return_token_ids": True, "stream": i % 10 == 0}
            out.append(("valid", "/v1/completions", json.dumps(body).encode(), n))
        else:
            out.append(rng.choice(hostile))
    return out


@pytest.fixture(scope="module")
def served(tiny_onnx, tmp_path_factory) -> Path:
    return link_with_tokenizer(tiny_onnx, tmp_path_factory.mktemp("soak") / "m")


def _check(port: int, item, ref, tok) -> str | None:
    """None when the answer is right, else what went wrong."""
    kind, path, body, expect = item
    try:
        status, text = request(port, "POST", path, body, timeout=180)
    except (BrokenPipeError, ConnectionResetError) as exc:  # the 413 may close before the body is all sent
        return None if expect == 413 else f"{kind}: {exc!r}"
    if kind != "valid":
        if status != expect:
            return f"{kind}: {status} {text[:200]}"
        error = json.loads(text)["error"]
        return None if "\n" not in error["message"] else f"{kind}: multi-line {error}"
    if status != 200:
        return f"valid: {status} {text[:200]}"
    if b'"stream": true' in body:
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        got = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
        want = tok.decode(ref[expect], skip_special_tokens=True)
        return None if events[-1] == "[DONE]" and got == want else f"stream: {got!r} != {want!r}"
    tokens = json.loads(text)["choices"][0]["token_ids"]
    return None if tokens == ref[expect] else f"valid: {tokens} != {ref[expect]}"


def test_soak_200_requests_20_clients(served, tmp_path):
    from painters.runtime.ort import load_tokenizer

    ref = reference(served, PROMPTS, MAX_TOKENS)
    tok = load_tokenizer(served.parent)
    plan = _plan(27)
    server = ServeProcess(served, tmp_path / "serve.log")
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            problems = [p for p in pool.map(lambda it: _check(server.port, it, ref, tok), plan[:WARMUP]) if p]
            warm = rss_kib(server.proc.pid)
            problems += [p for p in pool.map(lambda it: _check(server.port, it, ref, tok), plan[WARMUP:]) if p]
        end = rss_kib(server.proc.pid)
        elapsed = time.monotonic() - start
        assert server.proc.poll() is None, server.log.read_text()[-3000:]
        assert request(server.port, "GET", "/health")[0] == 200
    finally:
        code = server.stop()
    assert not problems, problems[:10]
    assert elapsed < TIME_BOUND_S
    assert (end - warm) / 1024 < RSS_BOUND_MIB, (warm, end)
    assert code == 0
    print(f"soak: {REQUESTS} requests, {CLIENTS} clients, {elapsed:.1f} s, RSS {warm} -> {end} KiB")
