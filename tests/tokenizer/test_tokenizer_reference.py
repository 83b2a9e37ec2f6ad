"""VQ-16 against LlamaGen's own outputs (fixture §5): random weights regenerated from their recipe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import vavam
from vavam.tokenizer import VQModel, infer_vq_config, tokenizer_identity


def _load_recipe_module(reference_dir: Path):
    spec = importlib.util.spec_from_file_location("vq_weights", reference_dir / "vq_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def vq16_io(reference_dir: Path) -> dict:
    path = reference_dir / "llamagen_vq16_io.pt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def vq16_llamagen_file(reference_dir: Path, vq16_io: dict, tmp_path_factory) -> Path:
    """LlamaGen-layout checkpoint {"model": state_dict} (288 MB), written once per session."""
    recipe = _load_recipe_module(reference_dir)
    state_dict = recipe.make_state_dict(vq16_io["weights"]["manifest"], vq16_io["weights"]["seed"])
    assert recipe.sha256s(state_dict) == vq16_io["weights"]["sha256"]
    path = tmp_path_factory.mktemp("llamagen") / "vq_ds16_random.pt"
    torch.save({"model": state_dict}, path)
    return path


@pytest.fixture(scope="session")
def vq16(vq16_llamagen_file: Path) -> VQModel:
    return vavam.load_tokenizer(vq16_llamagen_file)


def test_loads_as_vq16_in_eval_mode(vq16: VQModel) -> None:
    assert isinstance(vq16, VQModel)
    assert not vq16.training
    assert vq16.config == vavam.presets.vq16()
    assert vq16.downsample == 16
    assert "quantize.codebook_used" not in vq16.state_dict()


def test_encode_matches_llamagen(vq16: VQModel, vq16_io: dict) -> None:
    images = vq16_io["images"]
    pre_quant = vq16.encode_latents(images).detach()
    assert (pre_quant - vq16_io["pre_quant"]).abs().max() < 1e-3
    ids = vq16.encode(images)
    assert ids.dtype == torch.int64 and ids.shape == (2, 2, 4)
    assert torch.equal(ids, vq16_io["indices"])


def test_decode_matches_llamagen(vq16: VQModel, vq16_io: dict) -> None:
    decoded = vq16.decode(vq16_io["indices"])
    assert decoded.shape == vq16_io["decoded"].shape
    assert (decoded - vq16_io["decoded"]).abs().max() < 1e-3


def test_quantize_matches_llamagen(vq16: VQModel, vq16_io: dict) -> None:
    out = vq16.quantize(vq16_io["pre_quant"])
    assert torch.equal(out.indices, vq16_io["indices"])
    assert (out.z_q - vq16_io["quant"]).abs().max() < 1e-5


def test_identity_is_stable(vq16: VQModel) -> None:
    ident = tokenizer_identity(vq16)
    assert ident == tokenizer_identity(vq16)
    assert ident["config"]["kind"] == "vq" and ident["downsample"] == 16 and ident["codebook_size"] == 16384
    state = {k: v for k, v in vq16.state_dict().items()}
    assert infer_vq_config(state) == vavam.presets.vq16()
