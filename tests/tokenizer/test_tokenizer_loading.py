"""load_tokenizer / save_tokenizer / LlamaGen conversion / TorchScript wrapper, with vq_tiny weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import vavam
from vavam.tokenizer import (
    TorchScriptTokenizer,
    VQModel,
    convert_llamagen_state_dict,
    infer_vq_config,
    save_tokenizer,
    to_llamagen_state_dict,
    tokenizer_identity,
)


@pytest.fixture
def model() -> VQModel:
    torch.manual_seed(0)
    # 32 base channels: LlamaGen's GroupNorm has 32 groups, which a LlamaGen file's shapes cannot tell
    m = vavam.build_model(replace(vavam.presets.vq_tiny(), base_channels=32)).eval()
    with torch.no_grad():  # non-trivial norms so that a wrong mapping shows
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(2)) * 2 - 1


def test_folder_round_trip(model: VQModel, images: torch.Tensor, tmp_path: Path) -> None:
    folder = save_tokenizer(model, tmp_path / "tok", meta={"note": "test"})
    loaded = vavam.load_tokenizer(folder)
    assert isinstance(loaded, VQModel) and not loaded.training
    assert loaded.config == model.config
    ids = model.encode(images)
    assert torch.equal(loaded.encode(images), ids)
    assert torch.equal(loaded.decode(ids), model.decode(ids))
    assert tokenizer_identity(loaded) == tokenizer_identity(model)


def test_identity_changes_with_weights(model: VQModel) -> None:
    before = tokenizer_identity(model)
    with torch.no_grad():
        model.quant_conv.bias.add_(1e-3)
    assert tokenizer_identity(model)["weights_sha256"] != before["weights_sha256"]
    assert tokenizer_identity(model)["config"] == before["config"]


@pytest.mark.parametrize("layout", ["model", "ema", "state_dict", "bare"])
def test_llamagen_file_round_trip(model: VQModel, images: torch.Tensor, tmp_path: Path, layout: str) -> None:
    state = to_llamagen_state_dict(model)
    assert "quantize.codebook_used" in state
    obj = state if layout == "bare" else {layout: state}
    path = tmp_path / "vq_tiny_llamagen.pt"
    torch.save(obj, path)
    loaded = vavam.load_tokenizer(path)
    # shapes give everything except the GroupNorm group count (LlamaGen's 32 assumed)
    assert loaded.config == replace(model.config, norm_groups=32)
    converted = convert_llamagen_state_dict(obj, norm_groups=8)
    assert converted.config == model.config
    ids = model.encode(images)
    assert torch.equal(converted.encode(images), ids)
    assert torch.equal(converted.decode(ids), model.decode(ids))


def test_llamagen_file_with_too_few_channels_for_32_groups_names_the_file(tmp_path: Path) -> None:
    small = vavam.build_model(vavam.presets.vq_tiny())  # 16 base channels: not divisible into 32 groups
    path = tmp_path / "narrow.pt"
    torch.save({"model": to_llamagen_state_dict(small)}, path)
    with pytest.raises(ValueError, match="narrow.pt.*divisible"):
        vavam.load_tokenizer(path)
    assert convert_llamagen_state_dict(torch.load(path), norm_groups=8).config == small.config


def test_llamagen_state_dict_loads_directly(model: VQModel) -> None:
    other = vavam.build_model(model.config)
    other.load_state_dict(to_llamagen_state_dict(model))  # strict; codebook_used accepted and ignored
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), model.state_dict().values()))


def test_infer_rejects_mismatched_layout(model: VQModel) -> None:
    state = to_llamagen_state_dict(model)
    del state["decoder.conv_blocks.0.res.1.conv1.weight"]
    for k in [k for k in state if k.startswith("decoder.conv_blocks.0.res.1.")]:
        del state[k]
    with pytest.raises(ValueError, match="decoder"):
        infer_vq_config(state)
    with pytest.raises(ValueError, match="not a LlamaGen VQ"):
        convert_llamagen_state_dict({"model": {"foo": torch.zeros(1)}})


def test_missing_and_unsupported_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such tokenizer"):
        vavam.load_tokenizer(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a vavam checkpoint"):
        vavam.load_tokenizer(tmp_path / "empty")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt"):
        vavam.load_tokenizer(junk)
    other = tmp_path / "other.pt"
    torch.save({"model": {"foo": torch.zeros(2)}}, other)
    with pytest.raises(ValueError, match="not a LlamaGen VQ"):
        vavam.load_tokenizer(other)


class _ToyEncoder(nn.Module):
    """Average 16x16 patches of channel 0 and bucket them into 16384 ids: [B,3,H,W] -> [B,H/16,W/16]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.avg_pool2d(x[:, :1], 16)[:, 0]
        return ((pooled + 1) * 8191.5).round().clamp(0, 16383).long()


class _ToyDecoder(nn.Module):
    """Inverse of the toy encoder: [B,h,w] -> [B,3,16h,16w]."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = ids.float() / 8191.5 - 1
        return x[:, None].repeat_interleave(16, 2).repeat_interleave(16, 3).expand(-1, 3, -1, -1)


_JIT_DEPRECATION = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


@pytest.fixture
def jit_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "jit"
    folder.mkdir()
    torch.jit.script(_ToyEncoder()).save(str(folder / "VQ_ds16_16384_llamagen_encoder.jit"))
    torch.jit.script(_ToyDecoder()).save(str(folder / "VQ_ds16_16384_llamagen_decoder.jit"))
    return folder


@_JIT_DEPRECATION
def test_torchscript_needs_trust(jit_folder: Path) -> None:
    for name in ("", "VQ_ds16_16384_llamagen_encoder.jit", "VQ_ds16_16384_llamagen_decoder.jit"):
        path = jit_folder / name if name else jit_folder
        with pytest.raises(PermissionError, match="trust_code"):
            vavam.load_tokenizer(path)


@_JIT_DEPRECATION
@pytest.mark.parametrize("which", ["folder", "encoder", "decoder"])
def test_torchscript_with_trust(jit_folder: Path, which: str) -> None:
    path = {
        "folder": jit_folder,
        "encoder": jit_folder / "VQ_ds16_16384_llamagen_encoder.jit",
        "decoder": jit_folder / "VQ_ds16_16384_llamagen_decoder.jit",
    }[which]
    tok = vavam.load_tokenizer(path, trust_code=True)
    assert isinstance(tok, TorchScriptTokenizer) and tok.downsample == 16
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    ids = tok.encode(x)
    assert ids.dtype == torch.int64 and ids.shape == (1, 2, 3)
    out = tok.decode(ids)
    assert out.shape == (1, 3, 32, 48)
    with pytest.raises(ValueError, match="multiple of the downsampling factor 16"):
        tok.encode(torch.zeros(1, 3, 40, 48))
    ident = tokenizer_identity(tok)
    assert ident["kind"] == "torchscript" and len(ident["weights_sha256"]) == 64


def test_unreadable_file_is_named_once(tmp_path: Path) -> None:
    """A file the reader refuses is named once in the message (it was prefixed twice: 'x.pt: x.pt: cannot ...')."""
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read as a torch checkpoint") as info:
        vavam.load_tokenizer(path)
    assert str(info.value).startswith(f"{path}: ") and str(info.value).count(str(path)) == 1


def test_llamagen_file_with_mismatched_shapes_names_the_file(model: VQModel, tmp_path: Path) -> None:
    """A shape that the inferred architecture does not give raised torch's RuntimeError without the file name."""
    state = to_llamagen_state_dict(model)
    state["quant_conv.weight"] = state["quant_conv.weight"][:4]  # 4-dim codes, but an 8-dim codebook
    state["quant_conv.bias"] = state["quant_conv.bias"][:4]
    path = tmp_path / "mismatch.pt"
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match="(?s)mismatch.pt.*quant_conv.weight"):
        vavam.load_tokenizer(path)


def test_folder_whose_weights_do_not_fit_its_config_names_the_folder(model: VQModel, tmp_path: Path) -> None:
    import json

    folder = save_tokenizer(model, tmp_path / "tok")
    config = json.loads((folder / "config.json").read_text())
    config["codebook_size"] = 512  # the weights hold 1024 codes
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="(?s)tok.*quantize.embedding.weight"):
        vavam.load_tokenizer(folder)
    (tmp_path / "partial").mkdir()
    folder = save_tokenizer(model, tmp_path / "partial" / "tok")
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    del weights["decoder.conv_out.bias"]
    save_file(weights, str(folder / "model.safetensors"))
    meta = json.loads((folder / "meta.json").read_text())
    meta.pop("model_sha256", None)  # not a corrupt file: a partial checkpoint written as such
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="(?s)partial.*decoder.conv_out.bias"):
        vavam.load_tokenizer(folder)


@_JIT_DEPRECATION
def test_torchscript_decode_accepts_uint16_and_encode_refuses_bad_input(jit_folder: Path) -> None:
    """uint16 ids (the token store's dtype) made the range check raise NotImplementedError; integer images
    reached the export unchecked; an export of another downsampling failed in a bare reshape."""
    tok = vavam.load_tokenizer(jit_folder, trust_code=True)
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    ids = tok.encode(x)
    assert torch.equal(tok.decode(ids.to(torch.uint16)), tok.decode(ids))
    with pytest.raises(ValueError, match="out of range"):
        tok.decode(torch.full((1, 2, 2), 16384, dtype=torch.int32))
    with pytest.raises(TypeError, match="float images"):
        tok.encode(((x + 1) * 127.5).to(torch.uint8))
    with pytest.raises(TypeError, match="integer ids"):
        tok.decode(ids.float())
    tok._downsample = 8  # as if the export were not ds16: the encoder's 2x3 grid is not the expected 4x6
    with pytest.raises(ValueError, match="returned ids .* expected 24 ids"):
        tok.encode(x)


@_JIT_DEPRECATION
@pytest.mark.parametrize("content", ["junk", "pickle"])
def test_a_file_torchscript_cannot_read_is_refused_naming_it(jit_folder: Path, content: str) -> None:
    """torch.jit.load's RuntimeError ('PytorchStreamReader failed ...') did not name the file; with a pair, which of
    the two is bad matters."""
    bad = jit_folder / "VQ_ds16_16384_llamagen_decoder.jit"
    if content == "junk":
        bad.write_bytes(b"truncated download")
    else:  # a torch.save file under the export's name
        torch.save({"model": {"w": torch.zeros(1)}}, bad)
    for path in (jit_folder, bad):
        with pytest.raises(ValueError, match=rf"{bad.name}: cannot read as a TorchScript module"):
            vavam.load_tokenizer(path, trust_code=True)


def test_load_llamagen_names_a_relative_path_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'./junk.pt' was named twice ('./junk.pt: junk.pt: cannot read ...')."""
    from vavam.tokenizer import load_llamagen

    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read as a torch checkpoint") as info:
        load_llamagen("./junk.pt")
    assert str(info.value).startswith("junk.pt: ") and str(info.value).count("junk.pt") == 1
