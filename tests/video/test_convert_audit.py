"""Audit of VaViM loading: our checkpoint folder whose weights do not fit its config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vavam
from vavam.io import save_checkpoint
from vavam.video import load_video_model, save_video_model


def test_folder_whose_weights_do_not_fit_config_json_is_named_with_the_parameter(tmp_path: Path) -> None:
    model = vavam.build_model(vavam.presets.vavim_tiny())  # width 64, vocab 1025
    folder = save_video_model(model, tmp_path / "vim")
    config = json.loads((folder / "config.json").read_text())
    config["width"] = 128  # a hand-edited (or mixed-up) config.json: the weights stay width 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:  # was a bare RuntimeError from load_state_dict, naming no file
        load_video_model(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'model.safetensors'}: ")
    assert "config.json" in message
    assert "token_emb.weight [1025, 64] (expected [1025, 128])" in message


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
