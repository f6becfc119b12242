"""A JSON-lines worker that drives vLLM in its own environment (``python -m painters.integrations.vllm.worker``).

painters and vLLM pin different torch and transformers releases, so painters talks to vLLM through this process
(:class:`painters.runtime.vllm.VllmRunner`, the tests): one request per stdin line, one answer per stdout line.
vLLM's own logging goes to stderr. Requests (``op``):

* ``generate``: ``prompts`` (token ids), ``max_tokens`` → per prompt the greedy ``tokens``, each decode step's
  ``logprobs`` (of the chosen token) and ``prompt_logprobs`` (of each prompt token after the first);
* ``score``: ``prompts`` → per prompt ``[logprob, is_top1]`` of each token after the first (``bench accuracy``);
* ``start``: ``prompts``, ``max_tokens`` → queues greedy requests that never stop early (EOS ignored);
* ``step``: one engine step (the first after ``start`` is the prefill) → ``done``;
* ``load``: ``model``, ``tp`` (and optionally ``trust_remote_code``: a checkpoint whose configuration class travels
  with it through ``auto_map``, such as ``painters deploy nemotron-nas``) → (re)loads the engine on another
  checkpoint;
* ``quit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main"]


def _sampling(max_tokens: int, **extra):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **extra)


def _generate(llm, request: dict) -> dict:
    from vllm.inputs import TokensPrompt

    params = _sampling(int(request["max_tokens"]), logprobs=0, prompt_logprobs=0, ignore_eos=True)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in request["prompts"]], params,
                           use_tqdm=False)
    rows = []
    for prompt, out in zip(request["prompts"], outputs):
        done = out.outputs[0]
        steps = [entry[tok].logprob for tok, entry in zip(done.token_ids, done.logprobs)]
        prompt_lp = [entry[tok].logprob for tok, entry in zip(prompt[1:], out.prompt_logprobs[1:])]
        rows.append({"tokens": list(done.token_ids), "logprobs": steps, "prompt_logprobs": prompt_lp})
    return {"rows": rows}


def _score(llm, request: dict) -> dict:
    """Per prompt, [logprob, rank == 1] of each token after the first (vLLM's prompt logprobs carry the rank)."""
    from vllm.inputs import TokensPrompt

    outputs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in request["prompts"]],
                           _sampling(1, prompt_logprobs=0), use_tqdm=False)
    return {"rows": [[[entry[tok].logprob, entry[tok].rank == 1] for tok, entry in zip(prompt[1:],
                                                                                      out.prompt_logprobs[1:])]
                     for prompt, out in zip(request["prompts"], outputs)]}


class _Stepper:
    """Requests added to the engine and stepped one engine step at a time (latency: prefill, then decode)."""

    def __init__(self, llm):
        self.engine = llm.llm_engine
        self.count = 0

    def start(self, request: dict) -> dict:
        from vllm.inputs import TokensPrompt

        n = int(request["max_tokens"])
        params = _sampling(n, min_tokens=n, ignore_eos=True)
        for prompt in request["prompts"]:
            self.count += 1
            self.engine.add_request(f"r{self.count}", TokensPrompt(prompt_token_ids=list(prompt)), params)
        return {}

    def step(self, request: dict) -> dict:
        self.engine.step()
        return {"done": not self.engine.has_unfinished_requests()}

    def drain(self) -> None:
        while self.engine.has_unfinished_requests():
            self.engine.step()


def _load(model: str, tp: int, dtype: str, max_model_len: int | None, trust_remote_code: bool = False):
    from vllm import LLM

    kwargs = {"distributed_executor_backend": "mp"} if tp > 1 else {}
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    # prefix caching off: every request computes its whole prompt (prompt logprobs, honest prefill timing)
    return LLM(model=model, dtype=dtype, enforce_eager=True, tensor_parallel_size=tp, skip_tokenizer_init=True,
               enable_prefix_caching=False, seed=0, trust_remote_code=trust_remote_code, **kwargs)


def _close(llm) -> None:
    if llm is not None:
        llm.llm_engine.engine_core.shutdown()


def main(argv: list[str] | None = None) -> None:
    """Serve JSON-line requests from stdin, one answer per stdout line, until ``quit`` or end of input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="checkpoint to load now (else: the `load` op)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=None, help="[the model's own]")
    args = parser.parse_args(argv)
    # answers go to the original stdout; vLLM's loggers (which write to stdout) and prints go to stderr
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    llm = _load(args.model, args.tensor_parallel_size, args.dtype, args.max_model_len) if args.model else None
    stepper = _Stepper(llm) if llm is not None else None
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "quit":
            break
        try:
            if op == "load":
                _close(llm)
                llm = stepper = None
                llm = _load(request["model"], int(request.get("tp", 1)), request.get("dtype", args.dtype),
                            request.get("max_model_len"), bool(request.get("trust_remote_code", False)))
                stepper = _Stepper(llm)
                answer = {}
            elif stepper is None:
                answer = {"error": "no model loaded; send a load request first"}
            elif op == "generate":
                stepper.drain()
                answer = _generate(llm, request)
            elif op == "score":
                stepper.drain()
                answer = _score(llm, request)
            elif op == "start":
                stepper.drain()
                answer = stepper.start(request)
            elif op == "step":
                answer = stepper.step(request)
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # the caller gets the message; the worker stays up
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    _close(llm)

if __name__ == "__main__":
    main()
