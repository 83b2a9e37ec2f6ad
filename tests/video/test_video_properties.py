"""VaViM properties: causality, and loading DeepSpeed-consolidated / DeepSpeed-directory / bare state-dict files."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

import vavam
from vavam import presets
from vavam.video import VideoGPT
from vavam.video.convert import load_video_model, video_state_to_reference


def _noisy(config=None, seed: int = 0) -> VideoGPT:
    """A model with non-zero query rows (the muP init zeroes them, which would make attention uniform)."""
    torch.manual_seed(seed)
    model = VideoGPT(config or presets.vavim_tiny()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


# ------------------------------------------------------------------------------ causality


@pytest.mark.parametrize("i", [0, 5, 23, 24, 50, 95])  # 24 tokens per frame: frame boundaries included
@torch.no_grad()
def test_perturbing_token_i_leaves_earlier_logits_unchanged(i):
    model = _noisy()
    tokens = torch.randint(0, 1024, (2, 4, 4, 6))
    flat = tokens.reshape(2, -1).clone()
    flat[:, i] = (flat[:, i] + 1 + torch.arange(2)) % 1024  # a different token in each sample
    base, pert = model(tokens), model(flat.view_as(tokens))
    diff = (base - pert).abs().amax(dim=(0, 2))  # per position [96]
    if i:
        assert diff[:i].max().item() <= 1e-6
    assert diff[i].item() > 1e-3  # position i reads token i itself
    assert diff[i:].max().item() > 1e-3
    # the residual stream of an intermediate block obeys the same rule
    fb, fp = model.features(tokens, 0).reshape(2, 96, -1), model.features(flat.view_as(tokens), 0).reshape(2, 96, -1)
    if i:
        assert (fb[:, :i] - fp[:, :i]).abs().max().item() <= 1e-6


def test_dependency_pattern_is_exactly_lower_triangular():
    """d logits[j] / d input[i] is zero for every i > j and non-zero for every i <= j (all pairs at once)."""
    model = _noisy(seed=1)
    tokens = torch.randint(0, 1024, (1, 4, 4, 6))
    x = model.embed_frames(tokens).detach().requires_grad_(True)  # [1, 96, d]
    logits = model.readout(model.final_norm(model.run_blocks(x)))  # [1, 96, V]
    n = x.shape[1]
    dep = torch.zeros(n, n, dtype=torch.bool)
    w = torch.randn(logits.shape[-1])  # a fixed random readout direction
    for j in range(n):
        (g,) = torch.autograd.grad((logits[0, j] * w).sum(), x, retain_graph=True)
        dep[j] = g[0].abs().amax(-1) > 0
    assert torch.equal(dep, torch.ones(n, n, dtype=torch.bool).tril())


# ------------------------------------------------------------------------------ DeepSpeed-consolidated files


def _small_config():
    # width 128 = one head of 128 (so a bare state dict needs no head_dim hint), 2 frames of 2 x 3 tokens
    return dataclasses.replace(
        presets.vavim_tiny(), width=128, head_dim=128, num_layers=2, vocab_size=65, num_frames=2, tokens_per_frame=6,
        base_width=64,
    )


def _network_hparams(c) -> dict:
    return {
        "_target_": "vam.video_pretraining.MupGPT2",
        "embedding_dim": c.width, "nb_layers": c.num_layers, "dim_heads": c.head_dim, "mlp_dim_mult": c.mlp_ratio,
        "vocabulary_size": c.vocab_size, "nb_timesteps": c.num_frames, "nb_tokens_per_timestep": c.tokens_per_frame,
        "init_std": c.init_std, "output_tied": True,
    }


def _ref_state(model: VideoGPT, prefix: str) -> collections.OrderedDict:
    ref = video_state_to_reference(model.state_dict())
    state = collections.OrderedDict((prefix + k, v.clone()) for k, v in ref.items() if k != "lm_head.weight")
    # zero_to_fp32 restores shared parameters as the same tensor
    state[prefix + "lm_head.weight"] = state[prefix + "transformer.wie.weight"]
    return state


def _mup_shapes(c) -> dict:
    return {"transformer.wie.weight": [None, c.base_width], "transformer.h.0.attn.c_attn.weight": [3 * c.base_width, c.base_width]}


def _deepspeed_client_state(c, state_dict: dict) -> dict:
    """What Lightning's ``convert_zero_checkpoint_to_fp32_state_dict`` writes: the rank-0 client state (Lightning
    keys + DeepSpeed bookkeeping, minus module/optimizer) with the fp32 ``state_dict``."""
    return {
        "state_dict": state_dict,
        "hyper_parameters": {"network": _network_hparams(c), "mup_base_shapes": "./mup_shapes/x.bsh", "is_finetuning": False},
        "mup_base_shapes": _mup_shapes(c),
        "epoch": 0,
        "global_step": 38823,
        "pytorch-lightning_version": "2.4.0",
        "loops": {"fit_loop": {"state_dict": {}}},
        "callbacks": {},
        "lr_schedulers": [{"num_iter": 38823}],
        "ds_config": {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}},
        "ds_version": "0.14.4",
        "param_shapes": [collections.OrderedDict((k, v.shape) for k, v in state_dict.items())],
        "frozen_param_shapes": None,
        "shared_params": [["_forward_module.network.lm_head.weight", "_forward_module.network.transformer.wie.weight"]],
        "buffer_names": [],
        "git_sha": "0" * 40,
    }


@pytest.fixture(scope="module")
def small_model() -> VideoGPT:
    return _noisy(_small_config(), seed=3)


@pytest.mark.parametrize(
    "layout",
    [
        "lightning_fused",  # Lightning >= 2.1 convert_zero_checkpoint_to_fp32_state_dict: network.*
        "lightning_fused_old",  # Lightning < 2.1 left the wrapper prefix: _forward_module.network.*
        "module_prefix",  # older DeepSpeed wrappers: module.network.*
        "bare_zero_to_fp32",  # DeepSpeed's zero_to_fp32: a plain state dict, no hyper-parameters
        "bare_no_prefix",  # a plain state dict of MupGPT2 (names as in the reference module)
        "deepspeed_dir",  # an unconsolidated ZeRO-2 directory: checkpoint/mp_rank_00_model_states.pt
    ],
)
@torch.no_grad()
def test_deepspeed_files_load_with_identical_logits(small_model, tmp_path, layout):
    c = small_model.config
    tokens = torch.randint(0, 64, (2, 2, 2, 3))
    expected = small_model(tokens)
    path = tmp_path / "vavim_fused.pt"
    if layout == "lightning_fused":
        torch.save(_deepspeed_client_state(c, _ref_state(small_model, "network.")), path)
    elif layout == "lightning_fused_old":
        torch.save(_deepspeed_client_state(c, _ref_state(small_model, "_forward_module.network.")), path)
    elif layout == "module_prefix":
        torch.save(_deepspeed_client_state(c, _ref_state(small_model, "module.network.")), path)
    elif layout == "bare_zero_to_fp32":
        torch.save(_ref_state(small_model, "_forward_module.network."), path)
    elif layout == "bare_no_prefix":
        torch.save(_ref_state(small_model, ""), path)
    else:
        path = tmp_path / "last.ckpt"
        (path / "checkpoint").mkdir(parents=True)
        client = _deepspeed_client_state(c, {})
        del client["state_dict"]
        client["module"] = _ref_state(small_model, "_forward_module.network.")
        torch.save(client, path / "checkpoint" / "mp_rank_00_model_states.pt")
    bare = layout.startswith("bare")
    # a bare state dict stores no muP base shapes: the base width is a hint (default 256, as DESIGN says)
    model = load_video_model(path, base_width=c.base_width) if bare else vavam.load_video_model(path)
    assert not model.training
    assert torch.equal(model(tokens), expected)
    # sizes from hyper_parameters or, for bare state dicts, from the tensor shapes
    fields = ("width", "num_layers", "head_dim", "mlp_ratio", "vocab_size", "num_frames", "tokens_per_frame", "base_width")
    assert all(getattr(model.config, f) == getattr(c, f) for f in fields)
    if bare:
        assert load_video_model(path).config.base_width == 256


@torch.no_grad()
def test_bare_state_dict_needs_the_head_dim_when_not_128(tmp_path):
    model = _noisy(presets.vavim_tiny(), seed=4)  # width 64, head dim 32
    path = tmp_path / "bare.pt"
    torch.save(_ref_state(model, "_forward_module.network."), path)
    with pytest.raises(ValueError, match="head"):
        vavam.load_video_model(path)
    loaded = load_video_model(path, head_dim=32)
    assert loaded.config.head_dim == 32 and loaded.config.num_layers == 2
    assert loaded.config.base_width == model.config.base_width == 256
    tokens = torch.randint(0, 1024, (1, 2, 4, 6))
    assert torch.equal(loaded(tokens), model(tokens))


def test_fused_file_with_untied_readout_is_refused(small_model, tmp_path):
    state = _ref_state(small_model, "network.")
    state["network.lm_head.weight"] = state["network.lm_head.weight"] + 1.0
    torch.save(_deepspeed_client_state(small_model.config, state), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="lm_head"):
        vavam.load_video_model(tmp_path / "bad.pt")
