"""``io.load_checkpoint`` reads the weights from the file it hashed (through a memory map: about the weights once in
memory, where reading the bytes held them twice; ``benchmarks/bench_checkpoint.py`` measures it)."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from vavam import io, presets


def _folder(tmp_path, value: float = 1.0):
    state = {"w": torch.full((3, 4), value), "n": torch.arange(5), "h": torch.ones(2, dtype=torch.bfloat16)}
    return io.save_checkpoint(tmp_path / "ckpt", state, presets.vavim_tiny(), {"step": 7}), state


def test_the_weights_round_trip_tensor_for_tensor(tmp_path):
    folder, state = _folder(tmp_path)
    loaded, config, meta = io.load_checkpoint(folder)
    assert set(loaded) == set(state) and meta["step"] == 7 and config == presets.vavim_tiny()
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)


def test_a_file_replaced_between_the_hash_and_the_read_is_refused(tmp_path, monkeypatch):
    folder, _ = _folder(tmp_path)
    real = safetensors.torch.load_file

    def replaced_first(path, *args, **kwargs):  # another writer renames new weights over the file meanwhile
        io.atomic_write_bytes(path, safetensors.torch.save({"w": torch.zeros(3, 4)}))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load_file", replaced_first)
    with pytest.raises(ValueError, match="model.safetensors: was replaced or changed while it was read"):
        io.load_checkpoint(folder)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"not safetensors at all"])
def test_unreadable_weights_are_named_with_or_without_the_hash_check(tmp_path, content):
    folder, _ = _folder(tmp_path)
    (folder / io.MODEL_FILE).write_bytes(content)
    with pytest.raises(ValueError, match="model.safetensors: content hash does not match"):
        io.load_checkpoint(folder)
    with pytest.raises(ValueError, match="model.safetensors: cannot read safetensors"):
        io.load_checkpoint(folder, verify=False)
