"""The OpenAI-compatible server on tiny-llama, through the real `openai` client, in a subprocess on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed: pip install 'painters[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed: pip install 'painters[serve]'")
openai = pytest.importorskip("openai", reason="the openai client is not installed: pip install 'painters[serve]'")

PROMPTS = ["Once upon a time", "The cat", "ab", "Hello, world! How are", "x", "painters serve", "0123", "zz top"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model, *args):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "painters", "serve", str(model), "--port", str(self.port),
                                      "--name", "tiny", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=os.environ.copy(), text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            self.proc.kill()
            raise AssertionError("server did not answer /health within 120 s")
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=120)

    def stop(self) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        return code, time.monotonic() - start


@pytest.fixture(scope="module")
def server(served_tiny):
    s = Server(served_tiny)
    yield s
    if s.proc.poll() is None:
        s.stop()


def _reference(model_path, prompts, max_tokens):
    """painters' own greedy generation, with the served model's tokenizer; the final end token dropped."""
    from painters.routing import open_runner

    with open_runner(str(model_path)) as runner:
        tok = runner.tokenizer
        outs = [runner.generate([tok(p)["input_ids"]], max_tokens, stop_ids=[tok.eos_token_id])[0] for p in prompts]
    return [o[:-1] if o and o[-1] == tok.eos_token_id else o for o in outs], tok


def test_greedy_completions_equal_painters_generation(server, served_tiny):
    ref, tok = _reference(served_tiny, PROMPTS[:3], 12)
    for prompt, tokens in zip(PROMPTS[:3], ref):
        out = server.client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0,
                                               extra_body={"return_token_ids": True})
        choice = out.choices[0]
        assert choice.model_extra["token_ids"] == tokens
        assert choice.text == tok.decode(tokens, skip_special_tokens=True)
        assert out.usage.completion_tokens == len(tokens)
        assert choice.finish_reason == ("length" if len(tokens) == 12 else "stop")


def test_concurrent_requests_all_answer_correctly(server, served_tiny):
    ref, tok = _reference(served_tiny, PROMPTS, 10)

    def ask(prompt):
        out = server.client.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0,
                                               extra_body={"return_token_ids": True})
        return out.choices[0].model_extra["token_ids"]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, PROMPTS))
    assert got == ref


def test_streaming_yields_the_same_text(server):
    whole = server.client.completions.create(model="tiny", prompt="Once upon", max_tokens=16, temperature=0)
    chunks = list(server.client.completions.create(model="tiny", prompt="Once upon", max_tokens=16, temperature=0,
                                                   stream=True))
    assert len(chunks) >= 2
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_chat_uses_the_chat_template(server, served_tiny):
    ref, tok = _reference(served_tiny, [], 0)
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                  tokenize=True)["input_ids"]
    from painters.routing import open_runner

    with open_runner(str(served_tiny)) as runner:
        expect = runner.generate([ids], 8, stop_ids=[tok.eos_token_id])[0]
    expect = [t for t in expect if t != tok.eos_token_id]
    out = server.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=8, temperature=0)
    assert out.choices[0].message.content == tok.decode(expect, skip_special_tokens=True)
    chunks = list(server.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                        max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == out.choices[0].message.content


def test_sampling_is_seeded_and_stop_strings_cut(server):
    def sample(seed):
        return server.client.completions.create(model="tiny", prompt="The cat", max_tokens=12, temperature=1.5,
                                                top_p=0.95, seed=seed).choices[0].text
    assert sample(7) == sample(7)
    texts = {sample(s) for s in range(4)}
    assert len(texts) > 1  # a random 256-token model at temperature 1.5: four seeds do not all agree
    full = server.client.completions.create(model="tiny", prompt="ab", max_tokens=12, temperature=0).choices[0].text
    stop = full[3:5]
    cut = server.client.completions.create(model="tiny", prompt="ab", max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[:full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_models_and_malformed_requests(server):
    assert [m.id for m in server.client.models.list().data] == ["tiny"]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        server.client.completions.create(model="tiny", prompt="x", max_tokens=-3)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        server.client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    request = urllib.request.Request(server.url + "/v1/completions", data=b"{not json", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 400 and "invalid request" in json.loads(info.value.read())["error"]["message"]
    ok = server.client.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=0)
    assert ok.choices[0].finish_reason in ("length", "stop")


def test_plan_graph_serves_its_own_generation_and_shuts_down_cleanly(served_tiny_plan, served_tiny):
    ref, _ = _reference(served_tiny_plan, PROMPTS[:2], 10)
    base, _ = _reference(served_tiny, PROMPTS[:2], 10)
    assert ref != base  # the plan really changes the model
    s = Server(served_tiny_plan)
    try:
        got = [s.client.completions.create(model="tiny", prompt=p, max_tokens=10, temperature=0,
                                           extra_body={"return_token_ids": True}).choices[0].model_extra["token_ids"]
               for p in PROMPTS[:2]]
        assert got == ref
    finally:
        code, seconds = s.stop()
    assert code == 0 and seconds < 10, (code, seconds, s.proc.stdout.read())
