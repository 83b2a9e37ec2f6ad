"""Regression tests of the scale-out audit (validation shards, step sampler, consolidation, launch checks):
a corrupt or partly written FSDP sharded folder is named by consolidation instead of escaping as torch's
``CheckpointException`` (a ``BaseException``), and a torchrun launch whose processes per machine disagree with
``--devices`` is refused by name."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file

import vavam
from vavam.config import config_to_dict
from vavam.io import UnsafePickleError
from vavam.train.consolidate import consolidate
from vavam.train.distributed import ScaleOut, check_launch
from vavam.train.resume import CheckpointError, write_folder_manifest


def _sharded_folder(tmp_path, manifest: bool):
    """An FSDP sharded checkpoint folder of a tiny VaViM as Lightning writes it (``torch.distributed.checkpoint``
    shards of ``{"model": state_dict}`` + ``meta.pt``), with the file list vavam writes beside it when
    ``manifest``. Returns (folder, the model's state dict)."""
    import torch.distributed.checkpoint as dcp

    config = vavam.presets.vavim_tiny()
    torch.manual_seed(0)
    state = vavam.build_model(config).state_dict()
    folder = tmp_path / "checkpoints" / "step-00000004.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no process group: saving in a single process"
        dcp.save({"model": {f"model.{k}": v for k, v in state.items()}}, checkpoint_id=folder)
    torch.save({"hyper_parameters": {"vavam_config": config_to_dict(config)}, "global_step": 4}, folder / "meta.pt")
    if manifest:
        write_folder_manifest(folder, 4)
    return folder, state


@pytest.mark.parametrize("manifest", [True, False])
@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_sharded_folder_is_named_not_a_base_exception(tmp_path, manifest, damage):
    """A shard truncated or missing (a kill while the folder was rewritten, a copy cut short) escaped as torch's
    CheckpointException, a BaseException that the command line does not catch, with per-rank tracebacks and no
    folder name; the file list beside the folder was not even checked. Now a CheckpointError names the folder
    (and, with the list, the shard)."""
    folder, state = _sharded_folder(tmp_path, manifest)
    consolidate(folder, tmp_path / "good")  # intact: the exact weights
    saved = load_file(tmp_path / "good" / "model.safetensors")
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in state)
    shard = next(folder.glob("*.distcp"))
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    else:
        shard.unlink()
    with pytest.raises(CheckpointError, match=str(folder)) as info:
        consolidate(folder, tmp_path / "bad")
    if manifest:
        assert f"{shard.name} is missing or truncated" in str(info.value)
    else:
        assert "cannot read the FSDP sharded checkpoint folder" in str(info.value)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("per_node, devices, nodes, message", [
    (4, 2, 4, r"4 processes per machine \(--nproc_per_node\) but --devices 2 x --nodes 4.*--devices 4 --nodes 2"),
    (2, 4, 1, r"2 processes per machine \(--nproc_per_node\) but --devices 4 x --nodes 1.*--devices 2 --nodes 2"),
])
def test_devices_must_be_the_launchers_processes_per_machine(monkeypatch, per_node, devices, nodes, message):
    """torchrun --nnodes 2 --nproc_per_node 4 with --devices 2 --nodes 4 has the same world size (8), so it passed;
    Lightning then takes the device of LOCAL_RANK 2 and 3 from a list of 2 devices (IndexError: list index out of
    range), or, the other way round, leaves devices of each machine unused while recording others."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", str(devices * nodes))
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(per_node))
    with pytest.raises(ValueError, match=message):
        check_launch(ScaleOut(devices=devices, nodes=nodes), "vavam train video")
    check_launch(ScaleOut(devices=per_node, nodes=devices * nodes // per_node), "vavam train video")  # agrees
    monkeypatch.delenv("LOCAL_WORLD_SIZE")  # a launcher that does not tell: the world size alone is checked
    check_launch(ScaleOut(devices=devices, nodes=nodes), "vavam train video")


class _Touch:
    """Unpickling this creates the file ``path`` (what a crafted checkpoint could do instead)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').close()",)


def test_consolidating_a_sharded_folder_runs_no_pickled_code(tmp_path):
    """torch reads a sharded folder's .metadata with plain pickle and its non-tensor items with
    torch.load(weights_only=False): consolidating a crafted folder ran its code. Now the metadata goes through
    the restricted unpickler and the items load weights-only; plain non-tensor items (an optimiser's param
    groups) still load."""
    import pickle

    import torch.distributed.checkpoint as dcp

    folder, state = _sharded_folder(tmp_path, manifest=False)
    plain = tmp_path / "plain.ckpt"
    meta = torch.load(folder / "meta.pt", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {f"model.{k}": v for k, v in state.items()},
                  "optimizer_0": {"param_groups": [{"lr": 0.01, "betas": (0.9, 0.95), "params": ["model.x"]}]}},
                 checkpoint_id=plain)
    torch.save(meta, plain / "meta.pt")
    consolidate(plain, tmp_path / "plain_out")  # non-tensor items of the plain kinds load
    saved = load_file(tmp_path / "plain_out" / "model.safetensors")
    assert all(torch.equal(saved[k], state[k]) for k in state)

    marker = tmp_path / "ran"
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    metadata.storage_meta = _Touch(str(marker))  # a crafted .metadata
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(UnsafePickleError, match="refusing to load global 'builtins.exec'"):
        consolidate(folder, tmp_path / "out1")
    assert not marker.exists()

    item = tmp_path / "item.ckpt"  # a crafted non-tensor item
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {f"model.{k}": v for k, v in state.items()}, "evil": _Touch(str(marker))},
                 checkpoint_id=item)
    torch.save(meta, item / "meta.pt")
    with pytest.raises(CheckpointError, match=str(item)):
        consolidate(item, tmp_path / "out2")
    assert not marker.exists()


def test_resuming_a_sharded_folder_runs_no_pickled_code(tmp_path, monkeypatch):
    """Consolidation read sharded folders safely, but a resume under FSDP went through Lightning, whose
    torch.distributed.checkpoint load unpickles the .metadata with plain pickle and non-tensor items with
    torch.load(weights_only=False): resuming from a crafted run folder ran its code. check_sharded_pickles reads
    those pickles (and no tensor) first, and fit_resumable calls it before Lightning touches the folder."""
    import pickle

    import lightning.pytorch as pl
    import torch.distributed.checkpoint as dcp

    import vavam.train.lightning as lt
    from vavam.train.consolidate import check_sharded_pickles

    folder, state = _sharded_folder(tmp_path / "a", manifest=False)
    meta = torch.load(folder / "meta.pt", weights_only=True)
    plain = tmp_path / "plain.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {f"model.{k}": v for k, v in state.items()},
                  "optimizer_0": {"param_groups": [{"lr": 0.01, "betas": (0.9, 0.95), "params": ["model.x"]}]}},
                 checkpoint_id=plain)
    check_sharded_pickles(plain)  # plain data passes

    marker = tmp_path / "ran"
    metadata = pickle.loads((folder / ".metadata").read_bytes())
    metadata.storage_meta = _Touch(str(marker))  # a crafted .metadata
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    with pytest.raises(UnsafePickleError, match="refusing to load global 'builtins.exec'"):
        check_sharded_pickles(folder)
    assert not marker.exists()

    run = tmp_path / "run"
    item = run / "checkpoints" / "step-00000004.ckpt"  # a crafted non-tensor item, in a run folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": {f"model.{k}": v for k, v in state.items()}, "evil": _Touch(str(marker))},
                 checkpoint_id=item)
    torch.save(meta, item / "meta.pt")
    write_folder_manifest(item, 4)
    with pytest.raises(CheckpointError, match=r"item 'evil' of the sharded checkpoint does not load weights-only"):
        check_sharded_pickles(item)
    assert not marker.exists()

    monkeypatch.setattr(lt, "check_resume", lambda *a, **k: None)  # the recorded settings are not the point here
    module = pl.LightningModule()
    with pytest.raises(CheckpointError, match=str(item)):
        lt.fit_resumable(module, [0, 1, 2, 3], out=run, steps=8, batch_size=1, seed=0, resume=True, progress=False,
                         scale=ScaleOut(strategy="fsdp"))
    assert not marker.exists()
