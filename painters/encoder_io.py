"""The encoder IO convention: the one module that spells an encoder graph's input and output names.

An encoder graph (BERT family) has no KV cache: inputs ``input_ids``, ``attention_mask`` and ``token_type_ids``
(all [batch, seq], int64), and one output, ``logits`` [batch, labels] for a model with a task head or
``last_hidden_state`` [batch, seq, hidden] for a bare encoder. The token names are the decoder convention's
(:mod:`painters.decoder_io`), so tokenizers' outputs feed either kind of graph.
"""

from __future__ import annotations

from collections.abc import Iterable

from painters.decoder_io import ATTENTION_MASK, INPUT_IDS, LOGITS, is_past

__all__ = ["TOKEN_TYPE_IDS", "ENCODER_INPUTS", "HIDDEN", "ENCODER_OUTPUTS", "KIND_KEY", "ENCODER_KIND",
           "is_encoder_io"]

TOKEN_TYPE_IDS = "token_type_ids"
ENCODER_INPUTS = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)
HIDDEN = "last_hidden_state"
ENCODER_OUTPUTS = (LOGITS, HIDDEN)
# Model metadata that marks an encoder graph (export writes it; discovery also checks the IO itself).
KIND_KEY = "painters.kind"
ENCODER_KIND = "encoder"


def is_encoder_io(input_names: Iterable[str]) -> bool:
    """Whether a graph's inputs follow the encoder convention: the three token inputs and no KV cache."""
    names = list(input_names)
    return set(ENCODER_INPUTS) <= set(names) and not any(is_past(n) for n in names)
