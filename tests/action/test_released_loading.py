"""Loading the authors' files: errors name the file's own parameters, extras and differing duplicates are
reported, the Euler step count defaults to the checkpoint's, and the released experts sit on their VaViM."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import vavam
from vavam import presets
from vavam.io import safe_torch_load


def _edited(reference_dir: Path, tmp_path: Path, name: str, edit) -> Path:
    ckpt = safe_torch_load(reference_dir / name)  # omegaconf / mup objects become plain values
    edit(ckpt["state_dict"])
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("key", ["transformer.h.1.mlp.c_proj.weight",
                                 "transformer.wie.weight"])  # not blamed on the tied readout (lm_head)
def test_missing_video_parameter_is_named_as_in_the_file(reference_dir, tmp_path, key):
    path = _edited(reference_dir, tmp_path, "vavim_small_release.pt", lambda sd: sd.pop(f"network.{key}"))
    with pytest.raises(ValueError, match=rf"vavim_small_release.pt.*missing: {key}"):
        vavam.load_video_model(path)


def test_extra_layer_is_named_as_in_the_file(reference_dir, tmp_path):
    def edit(sd):
        key = "network.transformer.h.1.mlp.c_proj.weight"
        sd[key.replace(".h.1.", ".h.9.")] = sd[key].clone()

    path = _edited(reference_dir, tmp_path, "vavim_small_release.pt", edit)
    with pytest.raises(ValueError, match=r"unexpected: transformer.h.9.mlp.c_proj.weight"):
        vavam.load_video_model(path)


def test_wrong_shape_in_action_file_is_named_as_in_the_file(reference_dir, tmp_path):
    def edit(sd):
        for key in ("vam.action_expert.action_encoder.linear_1.weight",
                    "vam.joint_model.action_expert.action_encoder.linear_1.weight"):  # the duplicate too
            sd[key] = torch.zeros(sd[key].shape[0] + 1, sd[key].shape[1])

    path = _edited(reference_dir, tmp_path, "vavam_small_release.pt", edit)
    with pytest.raises(ValueError, match=r"wrong shape: vam.action_expert.action_encoder.linear_1.weight"):
        vavam.load_action_model(path)


def test_action_file_extras_and_differing_duplicates_warn(reference_dir, tmp_path):
    def edit(sd):
        sd["vam.extra_head.weight"] = torch.zeros(3)
        key = next(k for k in sd if k.startswith("vam.joint_model.gpt."))
        sd[key] = sd[key] + 1.0

    path = _edited(reference_dir, tmp_path, "vavam_small_release.pt", edit)
    with pytest.warns(UserWarning) as caught:
        vavam.load_action_model(path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "vam.extra_head.weight" in messages and "duplicate entries differ" in messages
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the untouched release file loads silently
        vavam.load_action_model(reference_dir / "vavam_small_release.pt")


def test_sample_trajectory_defaults_to_the_checkpoints_step_count():
    import dataclasses

    torch.manual_seed(0)
    model = vavam.build_model(dataclasses.replace(presets.vavam_tiny(), num_inference_steps=3)).eval()
    tokens = torch.randint(0, model.config.video.vocab_size - 1, (1, 2, model.config.video.tokens_per_frame, 1))
    command = torch.tensor([2])
    noise = torch.randn(1, 1, model.config.horizon, 2)
    _, steps = model.sample_trajectory(tokens, command, noise=noise, return_intermediate=True)
    assert steps.shape[0] == 3
    default = model.sample_trajectory(tokens, command, noise=noise)
    assert torch.equal(default, model.sample_trajectory(tokens, command, noise=noise, num_steps=3))


def test_released_expert_preset_must_match_the_vavim_width():
    from vavam.train.action import _check_released_expert_width

    vavam_s = presets.vavam_s()
    _check_released_expert_width("vavam_s", vavam_s, 768, None)  # its own VaViM
    with pytest.raises(ValueError, match="use --preset vavam_b"):
        _check_released_expert_width("vavam_s", vavam_s, 1024, None)
    with pytest.raises(ValueError, match="--width"):
        _check_released_expert_width("vavam_s", vavam_s, 512, None)
    _check_released_expert_width("vavam_s", vavam_s, 1024, 256)  # an explicit width is the user's choice
    _check_released_expert_width("vavam_mini", presets.vavam_mini(), 1024, None)  # not a released preset


def test_split_archive_part_is_refused_with_how_to_unpack(reference_dir, tmp_path):
    part = tmp_path / "VAM_width_2048_pretrained_139k_chunked.tar.gz.part_ab"
    part.write_bytes(b"middle of a gzip stream")
    with pytest.raises(ValueError, match=r"cat VAM_width_2048_pretrained_139k_chunked.tar.gz.part_\* \| tar xz"):
        vavam.load_action_model(part)
    whole = tmp_path / "VAM_width_2048_pretrained_139k.tar.gz"
    whole.write_bytes(b"\x1f\x8b\x08 gzip data")
    with pytest.raises(ValueError, match=r"gzip archive.*tar xzf VAM_width_2048_pretrained_139k.tar.gz"):
        vavam.load_action_model(whole)
    renamed = tmp_path / "vavim.pth.tar"  # a torch file named the old .pth.tar way still loads
    renamed.write_bytes((reference_dir / "vavim_small_release.pt").read_bytes())
    assert vavam.load_video_model(renamed).config == vavam.load_video_model(reference_dir / "vavim_small_release.pt").config


# ------------------------------------------------------------------------------ audit s31


def _released_vam_file(model, path: Path) -> Path:
    """``model`` (a VideoActionModel) written in the released VaVAM layout: ``vam.gpt.*`` / ``vam.action_expert.*``,
    the tied readout, the ``vam.joint_model.*`` duplicates, the mask buffer, ``vam_conf`` and both base shapes."""
    from vavam.action.convert import released_action_key

    c = model.config
    sd = {released_action_key(k): v for k, v in model.state_dict().items()}
    sd["vam.gpt.lm_head.weight"] = sd["vam.gpt.transformer.wie.weight"]
    sd.update({k.replace("vam.", "vam.joint_model.", 1): v for k, v in list(sd.items())})
    sd["vam.attn_mask"] = torch.ones(4, 4, dtype=torch.bool)
    gpt = {"embedding_dim": c.video.width, "nb_layers": c.video.num_layers, "dim_heads": c.video.head_dim,
           "mlp_dim_mult": c.video.mlp_ratio, "vocabulary_size": c.video.vocab_size, "nb_timesteps": c.video.num_frames,
           "nb_tokens_per_timestep": c.video.tokens_per_frame, "output_tied": True}
    action = {"embedding_dim": c.width, "attention_dim": c.video.width, "action_dim": c.action_dim,
              "action_horizon": c.horizon, "number_high_level_command": c.num_commands, "dim_heads": c.video.head_dim,
              "nb_layers": c.video.num_layers, "init_std": c.init_std}
    vam_conf = {"gpt_config": gpt, "action_config": action, "finetuning_timesteps": c.train_frames,
                "num_inference_steps": c.num_inference_steps, "flow_sig_min": c.flow_sig_min,
                "final_action_clip_value": c.final_action_clip_value, "action_scaling": c.action_scaling}
    torch.save({"state_dict": sd, "hyper_parameters": {"vam_conf": vam_conf},
                "gpt_mup_base_shapes": {"transformer.wie.weight": [None, c.video.base_width]},
                "action_mup_base_shapess": {"action_decoder.weight": [None, c.base_width],
                                            "transformer.h.0.attn.c_proj.weight": [c.base_width,
                                                                                   c.base_attention_width]}}, path)
    return path


@pytest.mark.parametrize("name", ["vavam_tiny", "vavam_mini"])
def test_every_small_preset_round_trips_through_a_released_file(name, tmp_path):
    config = getattr(presets, name)()
    model = vavam.build_model(config)
    with torch.no_grad():  # no zero (readout) or repeated weights, so that a misplaced tensor shows
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = vavam.load_action_model(_released_vam_file(model, tmp_path / f"{name}.pt"))
    assert loaded.config == config
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["state_dict"].update({"vam.action_expert.transformer.h.0.ln_1.weight": torch.ones(64)}),
     "unexpected action-expert parameter 'transformer.h.0.ln_1.weight'"),
    (lambda c: c["hyper_parameters"]["vam_conf"]["action_config"].pop("embedding_dim"),
     "missing 'embedding_dim' in the hyper-parameters"),
    (lambda c: c["hyper_parameters"]["vam_conf"]["gpt_config"].update({"output_tied": False}), "tied readout"),
])
def test_action_file_the_loader_cannot_read_is_refused_naming_it(reference_dir, tmp_path, edit, message):
    """These raised KeyError / ValueError without the file's name."""
    import re

    ckpt = safe_torch_load(reference_dir / "vavam_small_release.pt")
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: .*{message}"):
        vavam.load_action_model(path)


def test_action_file_entries_outside_vam_are_reported(reference_dir, tmp_path):
    """Entries outside the ``vam.`` module (another module of the Lightning wrapper) were dropped silently."""
    path = _edited(reference_dir, tmp_path, "vavam_small_release.pt",
                   lambda sd: sd.update({"ema.vam.gpt.transformer.wie.weight": torch.zeros(3)}))
    with pytest.warns(UserWarning, match=r"ignoring 1 unexpected entries: ema.vam.gpt.transformer.wie.weight"):
        vavam.load_action_model(path)


@pytest.mark.parametrize("name", ["attn_scale", "output_scale"])
def test_expert_mup_scales_other_than_one_are_refused(reference_dir, tmp_path, name):
    """MupActionExpert's attn_scale (the joint attention's scale) / output_scale (the readout's) were ignored."""
    ckpt = safe_torch_load(reference_dir / "vavam_small_release.pt")
    ckpt["hyper_parameters"]["vam_conf"]["action_config"][name] = 0.5
    path = tmp_path / "scaled.pt"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=rf"scaled.pt: action expert {name}=0.5 is not supported"):
        vavam.load_action_model(path)
