"""Tiny checkpoints the deploy targets read (saved once per test session)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.families import COMMON, PROMPTS, tiny_checkpoint


def save_llama(path, **overrides):
    """A seeded random tiny Llama saved with ``save_pretrained`` (intermediate 256 = ffn_mult 6 at hidden 64)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kwargs = {**COMMON, "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4,
              "num_key_value_heads": 2, **overrides}
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**kwargs))
    model.save_pretrained(path)
    return path


def save_mistral(path):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(1)
    MistralForCausalLM(MistralConfig(**{**COMMON, "sliding_window": None})).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """name → checkpoint directory, saved on first use."""
    root = tmp_path_factory.mktemp("ckpt")
    made = {}

    def get(name):
        if name not in made:
            if name == "llama":
                made[name] = save_llama(root / name)
            elif name == "mistral-plain":  # Mistral without a window: a Llama layout Nemotron-NAS carries
                made[name] = save_mistral(root / name)
            else:
                made[name] = tiny_checkpoint(name, root)
        return made[name]

    return get


def reference_logits(src, plan_name):
    """The reference executor's logits [rows, seq, vocab] for ``plan_name`` on the checkpoint ``src``."""
    from painters.export.sources import load_source
    from painters.plans import parse_plan
    from painters.runtime.tokens import left_pad
    from painters.runtime.torch_ref import TorchRunner

    loaded = load_source(src)
    plan = parse_plan(plan_name, loaded.num_layers)
    ids, mask = left_pad(PROMPTS, 0)
    runner = TorchRunner(loaded.model, plan, device="cpu")
    logits, _ = runner.prefill(ids, mask)
    return logits, ids, mask


def engine_logits(model, ids, mask):
    """Logits of a transformers model loaded from a deployed directory, on the same left-padded rows."""
    from painters.runtime.tokens import positions_from_mask

    pos = positions_from_mask(np.asarray(mask), ids.shape[1])
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                    position_ids=torch.as_tensor(pos))
    return out.logits.float().numpy()


BYTE_FALLBACK_VOCAB = 266  # <unk> <s> </s>, 256 byte tokens, 7 pieces


def llama2_style_tokenizer():
    """A Llama-2-style byte-fallback BPE tokenizer (what llama.cpp's converter reads as ``LlamaHfVocab``)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in ("▁", "e", "t", "h", "a", "▁t", "he"):
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "t"), ("h", "e")], byte_fallback=True, unk_token="<unk>",
                               fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="session")
def bf_llama(tmp_path_factory):
    """A tiny Llama (hidden 64, FFN 256 = ffn_mult 6) with a byte-fallback tokenizer, saved once."""
    path = tmp_path_factory.mktemp("bf") / "llama-bf"
    save_llama(path, vocab_size=BYTE_FALLBACK_VOCAB, num_hidden_layers=6)
    llama2_style_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llamacpp_tree():
    """llama.cpp's converter from llama-cpp-python's source package (pip download once into the painters cache)."""
    pytest.importorskip("llama_cpp")
    from painters.targets.llamacpp_convert import llamacpp_tree

    return llamacpp_tree()
