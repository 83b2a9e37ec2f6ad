"""Configs and presets: JSON round trip, presets by name, CLI help."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from vavam import presets
from vavam.config import config_from_dict, config_to_dict


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_preset_round_trips_through_json(name: str):
    config = presets.get(name)
    assert dataclasses.is_dataclass(config)
    assert config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        presets.vq_tiny().codebook_size = 3  # type: ignore[misc]


def test_bad_config_dict_is_named():
    with pytest.raises(ValueError, match="unknown fields"):
        config_from_dict({"kind": "vq", "bogus": 1})
    with pytest.raises(ValueError, match="kind"):
        config_from_dict({"kind": "nope"})
    with pytest.raises(KeyError, match="unknown preset"):
        presets.get("vavim_xxl")


def test_nested_config_takes_its_declared_kind_or_is_refused():
    # A hand-written config.json may leave out the nested "kind": it used to stay a plain dict (an
    # AttributeError at build time); a nested config of the wrong kind used to be accepted.
    config = config_from_dict({"kind": "action", "width": 16, "video": {"width": 64, "num_layers": 2, "head_dim": 32}})
    assert config.video == dataclasses.replace(presets.vavim_s(), width=64, num_layers=2, head_dim=32)
    with pytest.raises(ValueError, match="'video' must be a video config"):
        config_from_dict({"kind": "action", "video": {"kind": "vq"}})
    with pytest.raises(ValueError, match="'video' must be a video config object"):
        config_from_dict({"kind": "action", "video": 768})


def test_field_values_of_another_type_are_refused_by_name(tmp_path):
    # A hand-edited config.json with "64" for a width used to build a config holding a string, which failed
    # later and far away (or, as True for an int, silently built a width-1 model).
    for data, match in (({"kind": "video", "width": "64"}, r"video config field 'width' must be int, got '64'"),
                        ({"kind": "video", "num_layers": True}, r"'num_layers' must be int, got True"),
                        ({"kind": "video", "width": 1.5}, r"'width' must be int, got 1.5"),
                        ({"kind": "vq", "ch_mult": [1, "2"]}, r"'ch_mult' must be a list of int, got \(1, '2'\)"),
                        ({"kind": "vq", "codebook_l2_norm": 1}, r"'codebook_l2_norm' must be bool, got 1"),
                        ({"kind": "action", "final_action_clip_value": "1"}, r"must be float, got '1'"),
                        ({"kind": "action", "video": {"head_dim": "32"}}, r"video config field 'head_dim' must be int")):
        with pytest.raises(ValueError, match=match):
            config_from_dict(data)
    # an int is a float, None fills an optional field, a list is a tuple
    config = config_from_dict({"kind": "action", "action_scaling": 35, "final_action_clip_value": None})
    assert config.action_scaling == 35 and config.final_action_clip_value is None
    assert config_from_dict({"kind": "vq", "ch_mult": [1, 2]}).ch_mult == (1, 2)
    # a model folder names its config.json
    from vavam.io import load_checkpoint, save_checkpoint

    config = presets.vq_tiny()
    save_checkpoint(tmp_path / "vq", {"w": torch.zeros(1)}, config)
    data = json.loads((tmp_path / "vq" / "config.json").read_text())
    (tmp_path / "vq" / "config.json").write_text(json.dumps({**data, "z_channels": "8"}))
    with pytest.raises(ValueError, match=r"vq/config.json: vq config field 'z_channels' must be int"):
        load_checkpoint(tmp_path / "vq")


def test_downsample_follows_channel_multipliers():
    assert presets.vq16().downsample == 16
    assert presets.vq_tiny().downsample == 8


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "vavam.cli", "--help"], capture_output=True, text=True, check=True)
    assert "quickstart" in out.stdout and "train tokenizer" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "vavam.cli", "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_cli_bad_input_is_one_named_error_line_unless_a_traceback_is_asked_for():
    cmd = [sys.executable, "-m", "vavam.cli", "plan-memory", "nope"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("vavam plan-memory: error: ") and "unknown preset 'nope'" in out.stderr
    assert "Traceback" not in out.stderr
    env = {**os.environ, "VAVAM_TRACEBACK": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "Traceback" in out.stderr and "unknown preset 'nope'" in out.stderr
