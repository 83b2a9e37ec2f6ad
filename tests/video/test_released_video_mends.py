"""Audit of the released-VaViM loader (vavam.video.convert): every preset round-trips through the released layout
bit-identically; a file the loader cannot read is refused naming the file; nothing in the file is dropped silently;
muP scales the config has no field for are refused, not ignored."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import pytest
import torch

import vavam
from vavam import presets
from vavam.config import VideoConfig
from vavam.io import safe_torch_load
from vavam.video.convert import (
    released_video_key,
    video_config_from_reference,
    video_network_from_state,
    video_state_from_reference,
    video_state_to_reference,
)


def _network(c: VideoConfig) -> dict:
    """``hyper_parameters["network"]`` of the reference's ``MupGPT2`` for config ``c``."""
    return {
        "_target_": "vam.video_pretraining.mup_gpt2.MupGPT2", "embedding_dim": c.width, "nb_layers": c.num_layers,
        "dim_heads": c.head_dim, "mlp_dim_mult": c.mlp_ratio, "vocabulary_size": c.vocab_size,
        "nb_timesteps": c.num_frames, "nb_tokens_per_timestep": c.tokens_per_frame, "init_std": c.init_std,
        "output_tied": True,
    }


def _noisy_model(config: VideoConfig) -> torch.nn.Module:
    torch.manual_seed(1)
    model = vavam.build_model(config)
    with torch.no_grad():  # no zero or repeated weights, so that a misplaced tensor shows
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


@pytest.mark.parametrize("name", ["vavim_s", "vavim_b", "vavim_l"])
def test_released_key_mapping_is_a_bijection_for_the_released_sizes(name: str) -> None:
    config = getattr(presets, name)()
    with torch.device("meta"):
        state = vavam.build_model(config).state_dict()
    ref = video_state_to_reference(state)
    assert len(ref) == len(state) + 1 and ref["lm_head.weight"] is state["token_emb.weight"]  # + the tied readout
    assert len({released_video_key(k) for k in state}) == len(state)
    back = video_state_from_reference({k: v for k, v in ref.items() if k != "lm_head.weight"})
    assert back.keys() == state.keys() and all(back[k] is state[k] for k in state)
    network = video_network_from_state(ref, head_dim=config.head_dim)  # sizes from shapes alone
    inferred = video_config_from_reference(network, {"transformer.wie.weight": [None, config.base_width]})
    assert dataclasses.replace(inferred, init_std=config.init_std) == config


@pytest.mark.parametrize("name", ["vavim_tiny", "vavim_mini"])
def test_every_small_preset_round_trips_through_a_released_file(name: str, tmp_path: Path) -> None:
    config = getattr(presets, name)()
    model = _noisy_model(config)
    ref = video_state_to_reference(model.state_dict())
    path = tmp_path / f"{name}.pt"
    torch.save({"state_dict": {f"network.{k}": v for k, v in ref.items()},
                "hyper_parameters": {"network": _network(config)},
                "mup_base_shapes": {"transformer.wie.weight": [None, config.base_width]}}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = vavam.load_video_model(path)
    assert loaded.config == config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def _edited(reference_dir: Path, tmp_path: Path, edit, name: str = "vavim_small_release.pt") -> Path:
    ckpt = safe_torch_load(reference_dir / name)
    edit(ckpt)
    path = tmp_path / f"edited_{name}"
    torch.save(ckpt, path)
    return path


def _add_key(ckpt: dict) -> None:  # a parameter of another architecture (affine LayerNorm) in a block
    ckpt["state_dict"]["network.transformer.h.0.ln_1.weight"] = torch.ones(256)


def _untie(ckpt: dict) -> None:
    sd = ckpt["state_dict"]
    sd["network.lm_head.weight"] = sd["network.lm_head.weight"] + 1.0


def _drop_width(ckpt: dict) -> None:
    del ckpt["hyper_parameters"]["network"]["embedding_dim"]


@pytest.mark.parametrize(("edit", "message"), [
    (_add_key, "unexpected VaViM parameter 'transformer.h.0.ln_1.weight'"),
    (_untie, "lm_head.weight differs"),
    (_drop_width, "missing 'embedding_dim' in the hyper-parameters"),
])
def test_a_file_the_loader_cannot_read_is_refused_naming_it(reference_dir, tmp_path, edit, message) -> None:
    """These raised KeyError / ValueError without the file's name (a KeyError('embedding_dim') said only that)."""
    path = _edited(reference_dir, tmp_path, edit)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: .*{message}"):
        vavam.load_video_model(path)


def test_a_vavam_file_given_to_the_video_loader_is_named_with_the_right_loader(reference_dir) -> None:
    path = reference_dir / "vavam_small_release.pt"
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: a VaVAM checkpoint.*load_action_model"):
        vavam.load_video_model(path)


def test_entries_outside_the_network_are_reported_not_dropped_silently(reference_dir, tmp_path) -> None:
    def edit(ckpt: dict) -> None:
        ckpt["state_dict"]["ema_network.transformer.wie.weight"] = torch.zeros(3)

    path = _edited(reference_dir, tmp_path, edit)
    with pytest.warns(UserWarning, match=r"ignoring 1 unexpected state-dict entries: ema_network.transformer.wie"):
        model = vavam.load_video_model(path)
    reference = vavam.load_video_model(reference_dir / "vavim_small_release.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize("name", ["attn_scale", "output_scale"])
def test_mup_scales_other_than_one_are_refused(reference_dir, tmp_path, name) -> None:
    """MupGPT2's attn_scale / output_scale multiply every attention logit / readout; they were ignored silently."""
    path = _edited(reference_dir, tmp_path, lambda ckpt: ckpt["hyper_parameters"]["network"].update({name: 2.0}))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: VaViM {name}=2.0 is not supported"):
        vavam.load_video_model(path)
    path = _edited(reference_dir, tmp_path, lambda ckpt: ckpt["hyper_parameters"]["network"].update({name: 1.0}))
    assert vavam.load_video_model(path).config == vavam.load_video_model(reference_dir / "vavim_small_ckpt.pt").config
