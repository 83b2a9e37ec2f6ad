"""Audit of VaVAM loading: our checkpoint folder whose weights do not fit its config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vavam
from vavam.action import load_action_model, save_action_model


def test_action_folder_whose_weights_do_not_fit_config_json_is_named_with_the_parameter(tmp_path: Path) -> None:
    model = vavam.build_model(vavam.presets.vavam_tiny())  # expert width 16, actions of 2 values
    folder = save_action_model(model, tmp_path / "vam")
    config = json.loads((folder / "config.json").read_text())
    config["width"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:  # was a bare RuntimeError from load_state_dict, naming no file
        load_action_model(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'model.safetensors'}: ")
    # our names, not the released file's (vam.action_expert.action_encoder.linear_1.weight)
    assert "expert.encoder.action_proj.weight [16, 2] (expected [32, 2])" in message
    assert "vam.action_expert" not in message
