"""Hostile requests to `painters serve` (tiny-llama graph, 512 positions): each refused alone with an OpenAI-style
4xx JSON error, its batch-mates answered with their correct greedy tokens, and the server still up."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install 'painters[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed: pip install 'painters[serve]'")

from tests.reliability.serve_client import ServeProcess, reference, request  # noqa: E402
from tests.serve.conftest import link_with_tokenizer  # noqa: E402

GREEDY = ["Once upon a time", "The cat", "ab", "Hello, world! How are", "zz top"]
CONTEXT = 512  # tiny-llama's max_position_embeddings


@pytest.fixture(scope="module")
def served(tiny_onnx, tmp_path_factory) -> Path:
    return link_with_tokenizer(tiny_onnx, tmp_path_factory.mktemp("served") / "baseline")


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    s = ServeProcess(served, tmp_path_factory.mktemp("log") / "serve.log")
    yield s
    if s.proc.poll() is None:
        s.stop()


@pytest.fixture(scope="module")
def greedy_ref(served) -> list[list[int]]:
    return reference(served, GREEDY, 8)


def completion(prompt, **fields) -> dict:
    return {"model": "tiny", "prompt": prompt, "max_tokens": 8, "temperature": 0, "return_token_ids": True,
            **fields}


def assert_error(status: int, text: str, code: int, *needles: str) -> str:
    """An OpenAI-style error: status ``code``, a JSON body {"error": {message, type, param, code}}, one line."""
    assert status == code, (status, text[:500])
    body = json.loads(text)
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}, body
    assert "\n" not in error["message"] and "Traceback" not in error["message"], body
    for needle in needles:
        assert needle in error["message"], body
    return error["message"]


def assert_alive(server, greedy_ref) -> None:
    status, text = request(server.port, "POST", "/v1/completions", completion(GREEDY[0]))
    assert status == 200, text
    assert json.loads(text)["choices"][0]["token_ids"] == greedy_ref[0]


HOSTILE = {
    "seed_too_large": (completion("hi", temperature=1.0, seed=2 ** 70), 400, "seed"),
    "seed_not_int": (completion("hi", temperature=1.0, seed=1.5), 400, "seed"),
    "prompt_past_context": (completion("a" * 600), 400, "512", "600"),
    "prompt_far_past_context": (completion("b" * 8000), 400, "8000"),
    "max_tokens_past_context": (completion("hi", max_tokens=4096), 400, "4096", "512"),
    "prompt_plus_max_tokens_past_context": (completion("c" * 500, max_tokens=20), 400, "520"),
    "ids_past_context": (completion([65] * 700), 400, "700"),
    "bool_token_ids": (completion([True, False]), 400, "prompt"),
    "float_token_ids": (completion([1.5, 2.0]), 400, "prompt"),
    "token_id_past_vocab": (completion([65, 256]), 400, "256"),
    "negative_token_id": (completion([-1]), 400, "prompt"),
    "nested_bool_ids": (completion([[True], [65]]), 400, "prompt"),
    "empty_prompt_list": (completion([]), 400, "prompt"),
    "logprobs": (completion("hi", logprobs=2), 400, "logprobs"),
    "echo": (completion("hi", echo=True), 400, "echo"),
    "presence_penalty": (completion("hi", presence_penalty=0.5), 400, "presence_penalty"),
    "frequency_penalty": (completion("hi", frequency_penalty=1.0), 400, "frequency_penalty"),
    "logit_bias": (completion("hi", logit_bias={"65": 10}), 400, "logit_bias"),
    "best_of": (completion("hi", best_of=3), 400, "best_of"),
    "suffix": (completion("hi", suffix="end"), 400, "suffix"),
    "response_format": (completion("hi", response_format={"type": "json_object"}), 400, "response_format"),
    "tools": (completion("hi", tools=[{"type": "function", "function": {"name": "f"}}]), 400, "tools"),
    "n_two": (completion("hi", n=2), 400, "n"),
    "stream_options_without_stream": (completion("hi", stream_options={"include_usage": True}), 400,
                                      "stream_options"),
    "temperature_negative": (completion("hi", temperature=-0.5), 400, "temperature"),
    "temperature_string": (completion("hi", temperature="hot"), 400, "temperature"),
    "top_p_zero": (completion("hi", top_p=0), 400, "top_p"),
    "max_tokens_zero": (completion("hi", max_tokens=0), 400, "max_tokens"),
    "max_tokens_bool": (completion("hi", max_tokens=True), 400, "max_tokens"),
    "max_completion_tokens_zero": (completion("hi", max_completion_tokens=0), 400, "max_completion_tokens"),
    "unknown_model": (completion("hi", model="gpt-4"), 404, "gpt-4"),
    "stop_not_string": (completion("hi", stop=[1, 2]), 400, "stop"),
}
RAW = {  # bodies no JSON encoder writes
    "lone_surrogate_prompt": (b'{"model": "tiny", "prompt": "\\ud800abc", "max_tokens": 4}', 400, "prompt"),
    "lone_surrogate_stop": (b'{"model": "tiny", "prompt": "hi", "stop": "\\udfff", "max_tokens": 4}', 400, "stop"),
    "temperature_nan": (b'{"model": "tiny", "prompt": "hi", "temperature": NaN}', 400, "temperature"),
    "top_p_infinity": (b'{"model": "tiny", "prompt": "hi", "top_p": Infinity}', 400, "top_p"),
    "not_json": (b"{not json", 400, "JSON"),
    "not_utf8": (b'{"model": "tiny", "prompt": "\xff\xfe"}', 400),
    "array_body": (b"[]", 400),
    "null_body": (b"null", 400),
    "empty_body": (b"", 400),
}
CHAT_RAW = {
    "lone_surrogate_content": (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
                               400, "messages"),
    "lone_surrogate_role": (b'{"model": "tiny", "messages": [{"role": "\\udc00", "content": "hi"}]}', 400,
                            "messages"),
    "no_messages": (b'{"model": "tiny", "messages": []}', 400, "messages"),
    "chat_tools": (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": '
                   b'"function", "function": {"name": "f"}}]}', 400, "tools"),
    "chat_logprobs": (b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}', 400,
                      "logprobs"),
    "chat_image_part": (b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", '
                        b'"image_url": {"url": "x"}}]}]}', 400, "image_url"),
    "chat_past_context": (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "d" * 600}]})
                          .encode(), 400, "512"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_completion_is_refused(server, greedy_ref, case):
    body, code, *needles = HOSTILE[case]
    assert_error(*request(server.port, "POST", "/v1/completions", body), code, *needles)


@pytest.mark.parametrize("case", sorted(RAW))
def test_raw_body_is_refused(server, case):
    body, code, *needles = RAW[case]
    assert_error(*request(server.port, "POST", "/v1/completions", body), code, *needles)


@pytest.mark.parametrize("case", sorted(CHAT_RAW))
def test_hostile_chat_is_refused(server, case):
    body, code, *needles = CHAT_RAW[case]
    assert_error(*request(server.port, "POST", "/v1/chat/completions", body), code, *needles)


def test_oversized_body_is_refused_with_413(server, greedy_ref):
    body = json.dumps(completion("x" * (30 << 20))).encode()
    try:
        status, text = request(server.port, "POST", "/v1/completions", body)
    except (BrokenPipeError, ConnectionResetError):  # the server may answer and close before reading it all
        status, text = 413, json.dumps({"error": {"message": "closed", "type": "", "param": None, "code": 413}})
    assert_error(status, text, 413)
    assert_alive(server, greedy_ref)


def test_unknown_path_and_model_routes(server):
    status, text = request(server.port, "GET", "/v1/models/tiny")
    assert status == 200 and json.loads(text)["id"] == "tiny"
    assert_error(*request(server.port, "GET", "/v1/models/gpt-4"), 404, "gpt-4")
    assert_error(*request(server.port, "GET", "/v1/nowhere"), 404)
    assert_error(*request(server.port, "GET", "/v1/completions"), 405)


@pytest.mark.parametrize("hostile", [
    {"temperature": 1.0, "seed": -1},  # signed 64-bit seeds are valid (vLLM): answered
    {"temperature": 1e-310},  # below vLLM's sampling epsilon: greedy
    {"temperature": 1.0, "seed": 2 ** 64},  # out of range: refused before batching
    {"prompt": "e" * 600},
    {"prompt": "\ud800"},
    {"logprobs": 1},
])
def test_bad_request_does_not_fail_its_batch_mates(server, greedy_ref, hostile):
    bodies = [completion(p) for p in GREEDY]
    bad = completion("hi", **hostile) if "prompt" not in hostile else {**completion("x"), **hostile}
    raw = json.dumps(bad).encode()  # ensure_ascii: a lone surrogate travels as the escape \ud800
    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        bad_future = pool.submit(request, server.port, "POST", "/v1/completions", raw)
        results = list(pool.map(lambda b: request(server.port, "POST", "/v1/completions", b), bodies))
    for (status, text), ref in zip(results, greedy_ref):
        assert status == 200, text
        assert json.loads(text)["choices"][0]["token_ids"] == ref
    status, text = bad_future.result()
    if status == 200:  # answered: a valid sampled or greedy request
        assert json.loads(text)["choices"][0]["finish_reason"] in ("stop", "length")
    else:
        assert_error(status, text, 400)


def test_tiny_temperature_is_greedy(server, greedy_ref):
    status, text = request(server.port, "POST", "/v1/completions", completion(GREEDY[0], temperature=1e-310))
    assert status == 200, text
    assert json.loads(text)["choices"][0]["token_ids"] == greedy_ref[0]


def test_max_completion_tokens_bounds_the_answer(server):
    status, text = request(server.port, "POST", "/v1/completions", completion("zz", max_tokens=None,
                                                                               max_completion_tokens=3))
    assert status == 200, text
    body = json.loads(text)
    assert len(body["choices"][0]["token_ids"]) <= 3 and body["usage"]["completion_tokens"] <= 3
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 2,
            "temperature": 0}
    status, text = request(server.port, "POST", "/v1/chat/completions", chat)
    assert status == 200, text
    assert json.loads(text)["usage"]["completion_tokens"] <= 2


def test_chat_text_parts_equal_plain_content(server):
    plain = {"model": "tiny", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 6,
             "temperature": 0}
    parts = {**plain, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi "},
                                                                 {"type": "text", "text": "there"}]}]}
    a = request(server.port, "POST", "/v1/chat/completions", plain)
    b = request(server.port, "POST", "/v1/chat/completions", parts)
    assert a[0] == b[0] == 200, (a, b)
    assert json.loads(a[1])["choices"][0]["message"] == json.loads(b[1])["choices"][0]["message"]


def _stream_events(port: int, body: dict) -> list[dict]:
    status, text = request(port, "POST", "/v1/completions", {**body, "stream": True})
    assert status == 200, text
    events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_stream_usage_chunk_when_asked(server, greedy_ref):
    events = _stream_events(server.port, completion(GREEDY[0], stream_options={"include_usage": True}))
    last = events[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == len(greedy_ref[0])
    assert last["usage"]["prompt_tokens"] == len(GREEDY[0].encode())
    assert all(e.get("usage") is None for e in events[:-1])
    plain = _stream_events(server.port, completion(GREEDY[0]))
    assert all("usage" not in e or e["usage"] is None for e in plain)


def _long_prompt(served) -> tuple[str, int]:
    """A prompt whose greedy continuation runs 300 tokens without an end token, and those tokens' count."""
    for prompt in ["Once upon a time", "The cat", "zz top", "0123", "ab", "x"]:
        if len(reference(served, [prompt], 300)[0]) == 300:
            return prompt, 300
    pytest.skip("no probe prompt runs 300 tokens without an end token on this model")


def _timed(port: int, body: dict) -> float:
    start = time.monotonic()
    status, text = request(port, "POST", "/v1/completions", body)
    assert status == 200, text
    return time.monotonic() - start


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_cancels_generation(server, served, stream):
    prompt, n = _long_prompt(served)
    long = completion(prompt, max_tokens=n)
    full = _timed(server.port, long)  # the time one uninterrupted generation takes
    sock = socket.create_connection(("127.0.0.1", server.port))
    data = json.dumps({**long, "stream": stream}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    if stream:
        assert sock.recv(64)  # the stream has started
    else:
        time.sleep(0.3)  # the request has joined a batch
    sock.close()
    after = _timed(server.port, completion("hi", max_tokens=2))
    assert after < full / 2, (after, full)
