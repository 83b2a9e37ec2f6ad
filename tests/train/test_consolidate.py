"""``vavam checkpoint consolidate``: training checkpoints (one device / DDP / FSDP full files, FSDP sharded
folders, DeepSpeed folders, tokenizer checkpoints) become model folders that load on one CPU with the
exact trained weights; wrong inputs fail with messages that name the problem."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
from safetensors.torch import load_file
from test_action_training import _frozen_video, _write_scenes
from test_video_training import _moving_store

import vavam
from vavam.train.consolidate import consolidate, consolidate_to, read_training_checkpoint
from vavam.train.resume import CheckpointError


def _same(folder_a, folder_b) -> None:
    a, b = load_file(folder_a / "model.safetensors"), load_file(folder_b / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    from vavam.train.video import train_video

    root = tmp_path_factory.mktemp("cons")
    _moving_store(root / "tok", num_scenes=2, num_frames=6, grid=(2, 3), codes=16)
    train_video(root / "run", root / "tok", preset="vavim_tiny", steps=2, batch_size=2, num_frames=2, lr=0.01,
                progress=False, seed=1)
    return root / "run"


def test_video_checkpoint_round_trips(video_run, tmp_path):
    ckpt = video_run / "checkpoints" / "step-00000002.ckpt"
    info = consolidate(ckpt, tmp_path / "model")
    assert (info["kind"], info["source"], info["step"]) == ("video", "lightning", 2)
    _same(video_run / "model", tmp_path / "model")  # exactly the weights training wrote
    model = vavam.load_video_model(tmp_path / "model")  # loads on one CPU with the public loader
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert meta["consolidated_from"] == {"checkpoint": str(ckpt), "source": "lightning", "step": 2, "weights": "raw"}
    with pytest.raises(ValueError, match="holds a video model, not a action model"):
        consolidate(ckpt, tmp_path / "other", kind="action")
    with pytest.raises(ValueError, match="already a vavam model folder"):
        consolidate(tmp_path / "model", tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        consolidate(tmp_path / "missing.ckpt", tmp_path / "other")


def test_corrupt_or_foreign_checkpoints_are_refused(video_run, tmp_path):
    data = bytearray((video_run / "checkpoints" / "step-00000002.ckpt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "step-00000002.ckpt"
    bad.write_bytes(bytes(data))
    (tmp_path / "step-00000002.ckpt.sha256").write_bytes((video_run / "checkpoints" / "step-00000002.ckpt.sha256")
                                                          .read_bytes())
    with pytest.raises(CheckpointError, match="hash mismatch"):
        consolidate(bad, tmp_path / "out")
    torch.save({"state_dict": {"model.w": torch.zeros(2)}, "hyper_parameters": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="stores no model config"):
        consolidate(tmp_path / "foreign.ckpt", tmp_path / "out")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="neither an FSDP sharded checkpoint"):
        consolidate(tmp_path / "folder", tmp_path / "out")


def test_action_checkpoint_round_trips(tmp_path):
    from vavam.train.action import train_action

    _write_scenes(tmp_path, num_scenes=2, num_frames=12)
    vim = _frozen_video(tmp_path)
    train_action(tmp_path / "run", vim, tmp_path / "records.npz", tmp_path / "tok", preset="vavam_tiny", steps=2,
                 batch_size=2, lr=0.01, progress=False, plot_every=0)
    info = consolidate(tmp_path / "run" / "checkpoints" / "step-00000002.ckpt", tmp_path / "model", kind="action")
    assert info["kind"] == "action"
    _same(tmp_path / "run" / "model", tmp_path / "model")
    vam = vavam.load_action_model(tmp_path / "model")
    assert not any(p.requires_grad for p in vam.video.parameters())


def test_an_ema_runs_checkpoint_consolidates_to_its_average(tmp_path):
    """A run trained with --ema saves the weight average as its model; consolidating one of its checkpoints
    (e.g. of a pre-empted run) gave the optimiser's raw weights instead. Now the average by default, the raw
    weights on request."""
    from vavam.train.action import train_action

    _write_scenes(tmp_path, num_scenes=2, num_frames=12)
    vim = _frozen_video(tmp_path)
    train_action(tmp_path / "run", vim, tmp_path / "records.npz", tmp_path / "tok", preset="vavam_tiny", steps=3,
                 batch_size=2, lr=0.05, progress=False, plot_every=0, ema=0.9)
    step = tmp_path / "run" / "checkpoints" / "step-00000003.ckpt"
    info = consolidate(step, tmp_path / "average", kind="action")
    assert info["weights"] == "average"
    _same(tmp_path / "run" / "model", tmp_path / "average")
    assert json.loads((tmp_path / "average" / "meta.json").read_text())["consolidated_from"]["weights"] == "average"
    assert consolidate(step, tmp_path / "raw", weights="raw")["weights"] == "raw"
    average = load_file(tmp_path / "average" / "model.safetensors")
    raw = load_file(tmp_path / "raw" / "model.safetensors")
    expert = [k for k in raw if k.startswith("expert.")]
    assert expert and any(not torch.equal(raw[k], average[k]) for k in expert)  # the expert is averaged
    assert all(torch.equal(raw[k], average[k]) for k in raw if k.startswith("video."))  # frozen VaViM: as is
    with pytest.raises(ValueError, match="--weights must be 'average' or 'raw', got 'ema'"):
        consolidate(step, tmp_path / "x", weights="ema")


def test_tokenizer_checkpoint_round_trips(tmp_path):
    from vavam.train.tokenizer import train_tokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # conv kernels on 2 threads of a shared 2-core machine can stall for seconds
    try:
        train_tokenizer(tmp_path / "run", preset="vq_tiny", steps=2, batch_size=2, image_size=(32, 64), val_frames=2,
                        ckpt_every=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    info = consolidate(tmp_path / "run" / "checkpoints" / "step-00000002.ckpt", tmp_path / "model")
    assert (info["kind"], info["source"], info["step"]) == ("tokenizer", "tokenizer-loop", 2)
    _same(tmp_path / "run" / "tokenizer", tmp_path / "model")
    assert type(vavam.load_tokenizer(tmp_path / "model")).__name__ == "VQModel"


def test_fsdp_sharded_folder_is_gathered_without_a_process_group(video_run, tmp_path):
    """The layout Lightning's FSDP writes with ``state_dict_type="sharded"``: torch.distributed.checkpoint
    files of ``{"model": state_dict}`` plus ``meta.pt`` with the rest of the Lightning checkpoint."""
    import torch.distributed.checkpoint as dcp

    from vavam.train.resume import read_checkpoint

    full = read_checkpoint(video_run / "checkpoints" / "step-00000002.ckpt")
    folder = tmp_path / "step-00000002.ckpt"
    dcp.save({"model": full.pop("state_dict")}, checkpoint_id=folder)
    full.pop("optimizer_states", None)
    torch.save(full, folder / "meta.pt")
    info = consolidate(folder, tmp_path / "model")
    assert (info["kind"], info["source"], info["step"]) == ("video", "fsdp-sharded", 2)
    _same(video_run / "model", tmp_path / "model")


def _deepspeed_folder(video_run, tmp_path):
    """A DeepSpeed checkpoint folder as Lightning's DeepSpeedStrategy writes it (client state in the model
    states file, bf16 module copy; the fp32 master weights live in the ZeRO shards)."""
    from vavam.train.resume import read_checkpoint

    full = read_checkpoint(video_run / "checkpoints" / "step-00000002.ckpt")
    fp32 = {f"_forward_module.{k}": v for k, v in full.pop("state_dict").items()}
    folder = tmp_path / "step-00000002.ckpt"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    full.pop("optimizer_states", None)
    torch.save({**full, "module": {k: v.bfloat16() for k, v in fp32.items()}, "ds_version": "0.16.0",
                "ds_config": {"zero_optimization": {"stage": 2}}}, folder / "checkpoint" / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {}}, folder / "checkpoint" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    return folder, fp32


def test_deepspeed_folder_needs_deepspeed(video_run, tmp_path, monkeypatch):
    import vavam.train.consolidate as cons

    folder, _ = _deepspeed_folder(video_run, tmp_path)
    monkeypatch.setattr(cons, "deepspeed_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"DeepSpeed checkpoint folder.*'deepspeed' package is not installed"):
        consolidate(folder, tmp_path / "model")


def test_deepspeed_folder_goes_through_zero_to_fp32(video_run, tmp_path, monkeypatch):
    """With deepspeed importable, its zero_to_fp32 rebuilds the float32 weights (a stand-in module here:
    deepspeed is not installed in CI); names lose Lightning's ``_forward_module.`` prefix."""
    import vavam.train.consolidate as cons

    folder, fp32 = _deepspeed_folder(video_run, tmp_path)
    calls = []

    def get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=None):
        calls.append((checkpoint_dir, tag))
        return dict(fp32)

    zero = types.ModuleType("deepspeed.utils.zero_to_fp32")
    zero.get_fp32_state_dict_from_zero_checkpoint = get_fp32_state_dict_from_zero_checkpoint
    for name, module in {"deepspeed": types.ModuleType("deepspeed"), "deepspeed.utils": types.ModuleType("x"),
                         "deepspeed.utils.zero_to_fp32": zero}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(cons, "deepspeed_available", lambda: True)
    info = consolidate_to(folder, tmp_path / "model", meta={"note": "ds"})
    assert calls == [(str(folder), "checkpoint")]
    assert (info["kind"], info["source"], info["step"]) == ("video", "deepspeed", 2)
    _same(video_run / "model", tmp_path / "model")  # the float32 weights, not the bf16 module copy
    assert json.loads((tmp_path / "model" / "meta.json").read_text())["note"] == "ds"


def test_deepspeed_folder_with_several_tags_and_no_latest_is_not_guessed(video_run, tmp_path):
    """Tag names need not sort by step (global_step10 < global_step9), so with no 'latest' to say which one
    the consolidation stops and names them; a single tag needs no 'latest'."""
    import shutil

    from vavam.train.consolidate import _deepspeed_tag_dir

    folder, _ = _deepspeed_folder(video_run, tmp_path)
    (folder / "latest").unlink()
    assert _deepspeed_tag_dir(folder) == folder / "checkpoint"
    shutil.copytree(folder / "checkpoint", folder / "global_step9")
    with pytest.raises(ValueError, match=r"tags checkpoint, global_step9 and no 'latest' file"):
        consolidate(folder, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    (folder / "latest").write_text("global_step9")
    assert _deepspeed_tag_dir(folder) == folder / "global_step9"
    shutil.rmtree(folder / "global_step9")  # a 'latest' naming a tag that is gone is not replaced by another
    with pytest.raises(ValueError, match=r"tags checkpoint and a 'latest' file naming 'global_step9', not one"):
        consolidate(folder, tmp_path / "model")


def test_read_training_checkpoint_strips_wrapper_prefixes(video_run, tmp_path):
    from vavam.train.resume import read_checkpoint, write_checkpoint

    full = read_checkpoint(video_run / "checkpoints" / "step-00000002.ckpt")
    full["state_dict"] = {k.replace("blocks.0.", "blocks.0._checkpoint_wrapped_module.")
                          .replace("model.", "_forward_module.model.", 1): v for k, v in full["state_dict"].items()}
    write_checkpoint(tmp_path / "wrapped.ckpt", full)
    ckpt = read_training_checkpoint(tmp_path / "wrapped.ckpt")
    assert set(ckpt.state) == set(vavam.load_video_model(video_run / "model").state_dict())


def test_cli_command(video_run, tmp_path):
    from vavam.cli import COMMANDS, main

    assert COMMANDS["checkpoint consolidate"] == "vavam.train.consolidate:consolidate"
    assert main(["checkpoint", "consolidate", "--checkpoint", str(video_run / "checkpoints" / "step-00000002.ckpt"),
                 "--out", str(tmp_path / "m"), "--kind", "video"]) == 0
    _same(video_run / "model", tmp_path / "m")
