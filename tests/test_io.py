"""Safe file handling: restricted unpickler, atomic writes, checkpoint folders."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vavam import io
from vavam.presets import vq_tiny


class _CreatesFile:
    """A planted gadget: unpickling it opens (creates) a file."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


class _RunsShell:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Evals:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (eval, (f"open({self.target!r}, 'w')",))


@pytest.mark.parametrize("gadget", [_CreatesFile, _RunsShell, _Evals])
@pytest.mark.parametrize("via", ["torch", "pickle"])
def test_planted_pickle_is_refused_and_has_no_effect(tmp_path: Path, gadget, via: str):
    target = tmp_path / "pwned"
    payload = {"state_dict": {"w": torch.ones(2)}, "nested": [1, {"deep": (gadget(str(target)),)}]}
    path = tmp_path / "evil.pt"
    if via == "torch":
        torch.save(payload, path)
        with pytest.raises(io.UnsafePickleError, match="evil.pt"):
            io.safe_torch_load(path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(io.UnsafePickleError, match="evil.pt"):
            io.safe_pickle_load(path)
    assert not target.exists()


def test_allowed_file_loads(tmp_path: Path):
    payload = {"state_dict": {"a.weight": torch.arange(6.0).reshape(2, 3)}, "hyper_parameters": {"x": [1, 2.5, None, "s"]}}
    path = tmp_path / "ok.pt"
    torch.save(payload, path)
    loaded = io.safe_torch_load(path)
    assert torch.equal(loaded["state_dict"]["a.weight"], payload["state_dict"]["a.weight"])
    assert loaded["hyper_parameters"] == payload["hyper_parameters"]


def test_release_layout_maps_omegaconf_and_mup_to_plain(reference_dir: Path):
    for name in ("vavim_small", "vavam_small"):
        plain = torch.load(reference_dir / f"{name}_ckpt.pt", weights_only=True)
        release = io.safe_torch_load(reference_dir / f"{name}_release.pt")
        assert release["hyper_parameters"] == plain["hyper_parameters"]
        for key in ("mup_base_shapes", "gpt_mup_base_shapes", "action_mup_base_shapess"):
            if key in plain:
                assert release[key] == plain[key]
        assert set(release["state_dict"]) == set(plain["state_dict"])
        for key, value in plain["state_dict"].items():
            assert torch.equal(release["state_dict"][key], value)


def test_truncated_torch_file_gives_clear_error(tmp_path: Path):
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.randn(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="ckpt.pt"):
        io.safe_torch_load(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        io.safe_torch_load(tmp_path / "missing.pt")


@pytest.mark.parametrize("crafted", [b"\x80\x02ccollections\ndefaultdict\nK\x01\x85R.",  # defaultdict(1)
                                     b"\x80\x02ctorch\nSize\nK\x05\x85R."],  # torch.Size(5)
                         ids=["defaultdict", "torch.Size"])
def test_allowed_global_called_badly_is_a_value_error(tmp_path: Path, crafted: bytes):
    """A pickle that calls an allowed global with bad arguments raises TypeError inside the unpickler; both
    loaders report it as a ValueError naming the input (the server then answers 400, not 500)."""
    path = tmp_path / "crafted.pt"
    path.write_bytes(crafted)
    with pytest.raises(ValueError, match="crafted.pt: cannot read"):
        io.safe_torch_load(path)
    with pytest.raises(ValueError, match="payload-name: cannot read"):
        io.safe_torch_loads(crafted, source="payload-name")


def test_atomic_write_exception_keeps_old_file(tmp_path: Path):
    path = tmp_path / "data.json"
    io.atomic_write_json(path, {"version": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_write(path, "w") as f:
            f.write('{"version": 2, "half')
            raise RuntimeError("crash while writing")
    assert io.read_json(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]  # temporary file removed


def test_atomic_write_killed_process_keeps_old_file(tmp_path: Path):
    path = tmp_path / "data.bin"
    io.atomic_write_bytes(path, b"old content")
    script = textwrap.dedent(
        f"""
        import os, signal
        from vavam.io import atomic_write
        with atomic_write({str(path)!r}) as f:
            f.write(b"new content, half written")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == b"old content"
    io.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"


def test_checkpoint_folder_round_trip_and_corruption(tmp_path: Path):
    state = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    folder = io.save_checkpoint(tmp_path / "ckpt", state, vq_tiny(), {"step": 7})
    loaded, config, meta = io.load_checkpoint(folder)
    assert config == vq_tiny()
    assert meta["step"] == 7 and len(meta["model_sha256"]) == 64
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    data = bytearray((folder / io.MODEL_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / io.MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="content hash"):
        io.load_checkpoint(folder)
    (folder / io.META_FILE).unlink()
    with pytest.raises(ValueError, match="meta.json is missing"):
        io.load_checkpoint(folder)


def test_torchscript_needs_trust(tmp_path: Path):
    path = tmp_path / "m.jit"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(PermissionError, match="trust_code"):
        io.load_torchscript(path)
    assert isinstance(io.load_torchscript(path, trust_code=True), torch.jit.ScriptModule)


def test_checkpoint_of_another_kind_is_named(tmp_path):
    from vavam.config import VideoConfig

    folder = io.save_checkpoint(tmp_path / "ckpt", {"w": torch.zeros(1)}, vq_tiny())
    with pytest.raises(ValueError, match="holds a VQConfig, not a VideoConfig"):
        io.load_checkpoint(folder, expected=VideoConfig)


@pytest.mark.parametrize("data", [pickle.dumps({"scenes": list(range(50))}, protocol=2)[:20],  # truncated
                                  b"\x80\x02ccollections\ndefaultdict\nK\x01\x85R.",  # an allowed global called badly
                                  b"not a pickle at all"], ids=["truncated", "crafted", "garbage"])
def test_unreadable_pickle_is_a_value_error_naming_the_file(tmp_path: Path, data: bytes):
    path = tmp_path / "index.pkl"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="index.pkl: cannot read as a pickle"):
        io.safe_pickle_load(path)
