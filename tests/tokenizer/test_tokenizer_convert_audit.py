"""Audit of LlamaGen loading: the training checkpoints LlamaGen's vq_train.py writes."""

from __future__ import annotations

import argparse
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import vavam
from vavam.io import UnsafePickleError
from vavam.tokenizer import to_llamagen_state_dict
from vavam.tokenizer.convert import load_llamagen


def test_llamagen_training_checkpoint_with_argparse_args_loads(tmp_path: Path) -> None:
    config = replace(vavam.presets.vq_tiny(), base_channels=32, norm_groups=32)  # LlamaGen: 32 GroupNorm groups
    model = vavam.build_model(config).eval()
    sd = to_llamagen_state_dict(model)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))])
    args = argparse.Namespace(vq_model="VQ-16", codebook_size=config.codebook_size, ema=True, lr=1e-4)
    # vq_train.py's layout: the weights, optimiser and discriminator states, the step and the argparse args
    ckpt = {"model": sd, "optimizer": opt.state_dict(), "discriminator": {"w": torch.ones(2)},
            "optimizer_disc": opt.state_dict(), "steps": 5000, "args": args, "ema": sd}
    torch.save(ckpt, tmp_path / "0005000.pt")
    loaded = load_llamagen(tmp_path / "0005000.pt")  # was UnsafePickleError: 'argparse.Namespace'
    assert loaded.config == config
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


class _Gadget:
    def __reduce__(self):
        return (argparse.ArgumentParser, ("x",))


def test_other_argparse_globals_stay_refused(tmp_path: Path) -> None:
    torch.save({"model": {}, "args": _Gadget()}, tmp_path / "bad.pt", pickle_protocol=2)
    with pytest.raises(UnsafePickleError, match="argparse.ArgumentParser"):
        load_llamagen(tmp_path / "bad.pt")
    assert pickle.loads(pickle.dumps(argparse.Namespace(a=1))).a == 1  # the real class is untouched
