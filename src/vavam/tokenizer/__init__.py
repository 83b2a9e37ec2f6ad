"""LlamaGen-compatible VQ image tokenizer: images [B,3,H,W] in [-1,1] <-> code ids [B,H/ds,W/ds].

Modules: :mod:`.vq` (encoder/decoder blocks), :mod:`.quantizer` (L2-normalised codebook),
:mod:`.model` (:class:`VQModel`), :mod:`.convert` (LlamaGen checkpoints), :mod:`.loading`
(:func:`load_tokenizer`, :func:`save_tokenizer`, :func:`tokenizer_identity`, TorchScript wrapper).
"""

from __future__ import annotations

from vavam.tokenizer.convert import convert_llamagen_state_dict, infer_vq_config, load_llamagen, to_llamagen_state_dict
from vavam.tokenizer.loading import (
    TorchScriptTokenizer,
    load_tokenizer,
    load_torchscript_tokenizer,
    save_tokenizer,
    tokenizer_identity,
    weights_sha256,
)
from vavam.tokenizer.model import VQModel, VQOutput
from vavam.tokenizer.quantizer import QuantizeOutput, VectorQuantizer

__all__ = [
    "VQModel",
    "VQOutput",
    "QuantizeOutput",
    "VectorQuantizer",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_identity",
    "weights_sha256",
    "TorchScriptTokenizer",
    "load_torchscript_tokenizer",
    "convert_llamagen_state_dict",
    "infer_vq_config",
    "load_llamagen",
    "to_llamagen_state_dict",
]
