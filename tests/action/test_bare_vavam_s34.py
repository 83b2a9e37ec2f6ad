"""A bare VaVAM state dict (no ``hyper_parameters``) is refused saying why and what to load instead."""

from __future__ import annotations

import pytest
import torch

from vavam.action import load_action_model


def test_a_bare_state_dict_is_refused_naming_the_file_and_the_missing_sizes(tmp_path):
    path = tmp_path / "vavam_bare.pt"
    torch.save({"state_dict": {"vam.gpt.wte.weight": torch.zeros(3, 2)}}, path)
    with pytest.raises(ValueError, match=r"vavam_bare\.pt: not a VaVAM Lightning checkpoint \(missing 'hyper_parameters'\)"
                       r".*a bare state dict is not read"):
        load_action_model(path)
