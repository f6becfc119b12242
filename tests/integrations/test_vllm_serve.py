"""`painters deploy vllm` then vLLM's own OpenAI server (what `vllm serve DIR` starts) answers with the reference
executor's greedy tokens, at tensor-parallel size 1 and 3 (issue 30's acceptance, run by the test suite)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest

from painters.plans import parse_plan

PLAN = "parallel_13_17_x2"  # the Painters paper's headline kind: a looped parallel group
PROMPT = "The capital of France is"
TOKENS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _complete(port: int, model: str) -> dict:
    body = json.dumps({"model": model, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=900) as answer:  # tp 3 on a loaded 2-core machine: minutes
        return json.loads(answer.read())


def _serve(python, model: str, tp: int, log_path):
    """vLLM's OpenAI server on ``model`` (the module `vllm serve` runs; the CPU wheel's script cannot start)."""
    from painters.runtime.vllm import worker_env

    port = _free_port()
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "256"]
    if tp > 1:
        cmd += ["--tensor-parallel-size", str(tp), "--distributed-executor-backend", "mp"]
    env = worker_env(tp)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server runs its engine as vLLM ships it
    log = open(log_path, "w")  # noqa: SIM115  (closed with the process below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"vLLM's server exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return proc, port, log
        except OSError:
            time.sleep(2)
    proc.kill()
    log.close()
    pytest.fail(f"vLLM's server did not come up in 600 s: {log_path.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, smollm2):
    from painters.runtime.torch_ref import TorchRunner
    from painters.targets.vllm import deploy_vllm

    out = deploy_vllm("smollm2-135m", PLAN, tmp_path_factory.mktemp("serve") / "d")
    tok = smollm2.tokenizer
    ids = tok(PROMPT)["input_ids"]
    runner = TorchRunner(smollm2.model, parse_plan(PLAN, smollm2.num_layers), tokenizer=tok)
    tokens = runner.generate([ids], TOKENS)[0]  # greedy, no stop: the server is asked for exactly TOKENS
    return out, tok.decode(tokens)


@pytest.mark.slow
@pytest.mark.parametrize("tp", [1, 3])
def test_openai_server_answers_reference_tokens(vllm_env, deployed, tp, tmp_path):
    out, reference = deployed
    proc, port, log = _serve(vllm_env, str(out), tp, tmp_path / "server.log")
    try:
        answer = _complete(port, str(out))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert answer["choices"][0]["text"] == reference, (answer, reference)
