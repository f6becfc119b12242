"""A tiny random BERT checkpoint (with a WordPiece tokenizer) for the encoder tests.

Default initialization (std 0.02, zero biases, unit norms) makes every post-LN block nearly the identity
update, so plans would barely change the logits; the weights are redrawn larger (and biases and norm gains
random) so each plan kind visibly moves them.
"""

from __future__ import annotations

import string
from pathlib import Path

TINY_BERT = dict(vocab_size=96, hidden_size=32, num_hidden_layers=6, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=64, type_vocab_size=2, num_labels=2)
_WORDS = ["the", "a", "is", "of", "and", "to", "in", "it", "not", "was", "he", "she", "they", "man", "woman",
          "said", "has", "be", "that", "on"]


def _save_scaled(cls, config, directory: Path, seed: int) -> Path:
    """``cls(config)`` with weights redrawn large (see the module docstring), saved to ``directory``."""
    import torch

    torch.manual_seed(seed)
    model = cls(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            p.copy_(gain + torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.1))
    model.save_pretrained(directory)
    return directory


def save_tiny_bert(directory: Path, *, head: bool = True, layers: int = 6, seed: int = 0) -> Path:
    """Write config, scaled random weights and a WordPiece tokenizer to ``directory``; return it."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(string.ascii_lowercase)
             + ["##" + c for c in string.ascii_lowercase] + list(".,'\"!?-0123456789") + _WORDS)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(str(directory / "vocab.txt")).save_pretrained(directory)
    config = BertConfig(**{**TINY_BERT, "num_hidden_layers": layers, "vocab_size": len(vocab)})
    return _save_scaled((BertForSequenceClassification if head else BertModel), config, directory, seed)


def save_tiny_roberta(directory: Path, *, head: bool = True, layers: int = 6, seed: int = 0) -> Path:
    """A tiny random RoBERTa (no tokenizer): one token type, pad id 1, so position ids start at 2."""
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaModel

    config = RobertaConfig(**{**TINY_BERT, "num_hidden_layers": layers, "max_position_embeddings": 66,
                              "type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2})
    return _save_scaled((RobertaForSequenceClassification if head else RobertaModel), config, directory, seed)
