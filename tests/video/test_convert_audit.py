"""Audit of VaViM / VaVAM loading: our checkpoint folder whose weights do not fit its config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vavam
from vavam.io import save_checkpoint
from vavam.video import load_video_model, save_video_model


@pytest.mark.parametrize("kind, width, expected", [
    ("video", 128, "token_emb.weight [1025, 64] (expected [1025, 128])"),  # vavim_tiny: width 64, vocab 1025
    # vavam_tiny: expert width 16, actions of 2 values; our names, not the released file's (vam.action_expert...)
    ("action", 32, "expert.encoder.action_proj.weight [16, 2] (expected [32, 2])"),
])
def test_folder_whose_weights_do_not_fit_config_json_is_named_with_the_parameter(tmp_path: Path, kind, width,
                                                                                  expected) -> None:
    from vavam.action import load_action_model, save_action_model

    preset, save, load = {"video": (vavam.presets.vavim_tiny, save_video_model, load_video_model),
                          "action": (vavam.presets.vavam_tiny, save_action_model, load_action_model)}[kind]
    folder = save(vavam.build_model(preset()), tmp_path / kind)
    config = json.loads((folder / "config.json").read_text())
    config["width"] = width  # a hand-edited (or mixed-up) config.json: the weights keep their width
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:  # was a bare RuntimeError from load_state_dict, naming no file
        load(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'model.safetensors'}: ") and "config.json" in message
    assert expected in message and "vam.action_expert" not in message


def test_folder_missing_a_tensor_names_it(tmp_path: Path) -> None:
    model = vavam.build_model(vavam.presets.vavim_tiny())  # 2 blocks
    state = {k: v for k, v in model.state_dict().items() if k != "blocks.1.mlp.fc_out.weight"}
    folder = save_checkpoint(tmp_path / "vim", state, model.config)
    with pytest.raises(ValueError, match=r"model\.safetensors: .*missing: blocks\.1\.mlp\.fc_out\.weight$"):
        load_video_model(folder)


def test_folder_that_fits_still_round_trips(tmp_path: Path) -> None:
    model = vavam.build_model(vavam.presets.vavim_tiny()).eval()
    loaded = load_video_model(save_video_model(model, tmp_path / "vim"))
    tokens = torch.randint(0, 1024, (1, 2, 4, 6), generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(tokens), model(tokens))
