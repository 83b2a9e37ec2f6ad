"""Fault injection: training processes killed with SIGKILL at a random step and resumed with
``--resume`` end bit-identical (weights and loss curve, fp32 CPU) to an uninterrupted run of the
same seed — tokenizer, VaViM and VaVAM at tiny sizes, each through the real ``vavam`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vavam
from vavam.train.resume import list_checkpoints

from test_action_training import _frozen_video, _write_scenes  # noqa: E402  (tests/train is on sys.path)

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vavam.cli", *args]


def _newest_step(run: Path) -> int:
    ckpts = list_checkpoints(run)
    return int(ckpts[-1].name[5:13]) if ckpts else 0


def _kill_at_random_step(cmd: list[str], run: Path, low: int, high: int, seed: int) -> int:
    """Start ``cmd``, SIGKILL it once its newest checkpoint reaches a random step in [low, high)."""
    target = int(np.random.default_rng(seed).integers(low, high))
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while _newest_step(run) < target:
        assert proc.poll() is None, f"run ended before the kill: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "run too slow"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    return target


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]


def _state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tokenizer_survives_sigkill(tmp_path):
    args = ["train", "tokenizer", "--preset", "vq_tiny", "--steps", "40", "--batch-size", "2",
            "--image-size", "16", "32", "--val-frames", "4", "--log-every", "1", "--ckpt-every", "1",
            "--eval-every", "10", "--dead-code-window", "3", "--no-progress"]
    _run(_cli(*args, "--out", str(tmp_path / "full")))
    killed_at = _kill_at_random_step(_cli(*args, "--out", str(tmp_path / "cut")), tmp_path / "cut", 5, 30, seed=1)
    _run(_cli(*args, "--out", str(tmp_path / "cut"), "--resume"))
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["resumed_from"] >= killed_at
    assert _same(_state(tmp_path / "full" / "tokenizer"), _state(tmp_path / "cut" / "tokenizer"))
    assert (tmp_path / "full" / "metrics.csv").read_text() == (tmp_path / "cut" / "metrics.csv").read_text()


def _store(root: Path) -> Path:
    from vavam.data.tokens import TokenStoreWriter

    rng = np.random.default_rng(0)
    writer = TokenStoreWriter(root, (2, 3), codebook_size=16, tokenizer={"name": "rand"}, fps=2.0, resume=False)
    for k in range(3):
        writer.write_scene(f"s{k}", rng.integers(0, 16, size=(8, 2, 3), dtype=np.uint16),
                           np.arange(8, dtype=np.int64) * 500_000)
    return root


def _losses(run: Path) -> list:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_video_training_survives_sigkill(tmp_path):
    tok = _store(tmp_path / "tok")
    args = ["train", "video", "--tokens", str(tok), "--preset", "vavim_tiny", "--steps", "60", "--batch-size", "3",
            "--num-frames", "2", "--lr", "0.01", "--ckpt-every", "1", "--keep", "2", "--seed", "7", "--no-progress"]
    _run(_cli(*args, "--out", str(tmp_path / "full")))
    killed_at = _kill_at_random_step(_cli(*args, "--out", str(tmp_path / "cut")), tmp_path / "cut", 5, 40, seed=2)
    _run(_cli(*args, "--out", str(tmp_path / "cut"), "--resume"))
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["resumed_from"] >= killed_at
    assert _same(_state(tmp_path / "full" / "model"), _state(tmp_path / "cut" / "model"))
    assert _losses(tmp_path / "full") == _losses(tmp_path / "cut")


def test_action_training_survives_sigkill(tmp_path):
    _write_scenes(tmp_path, num_scenes=3, num_frames=12)
    vim = _frozen_video(tmp_path)
    args = ["train", "action", "--video", str(vim), "--records", str(tmp_path / "records.npz"),
            "--tokens", str(tmp_path / "tok"), "--preset", "vavam_tiny", "--steps", "60", "--batch-size", "4",
            "--lr", "0.01", "--ckpt-every", "1", "--keep", "2", "--seed", "9", "--no-progress"]
    _run(_cli(*args, "--out", str(tmp_path / "full")))
    killed_at = _kill_at_random_step(_cli(*args, "--out", str(tmp_path / "cut")), tmp_path / "cut", 5, 40, seed=3)
    _run(_cli(*args, "--out", str(tmp_path / "cut"), "--resume"))
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["resumed_from"] >= killed_at
    full, cut = _state(tmp_path / "full" / "model"), _state(tmp_path / "cut" / "model")
    assert _same(full, cut)
    assert _losses(tmp_path / "full") == _losses(tmp_path / "cut")
    frozen = vavam.load_video_model(vim).state_dict()
    assert all(torch.equal(cut[f"video.{k}"], v) for k, v in frozen.items())


def _write_shards(path: Path, step: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.pt").write_bytes(str(step).encode())
    (path / "__0_0.distcp").write_bytes(b"shard" * step)


class _Trainer:
    """What ResumeCallback.save / on_exception / on_train_end use of the trainer of a sharded (FSDP) run: each
    checkpoint is a folder of shards (unless ``saves`` is False: a save is then a test failure)."""

    def __init__(self, step: int, saves: bool = True) -> None:
        self.global_step, self.is_global_zero, self.saves = step, True, saves

    def save_checkpoint(self, path, weights_only=False) -> None:
        assert self.saves, f"{path} rewritten"
        _write_shards(Path(path), self.global_step)


def test_a_checkpoint_a_kill_left_unusable_never_pushes_out_the_new_ones(tmp_path):
    """A SIGKILL while a pre-emption checkpoint folder (step 13) was written leaves it without its file list; the
    resume skips it and restarts from step 11. The checkpoints written next must not be pruned in favour of the
    unusable one (keep 1 deleted step 11, then step 12 just written: nothing left to resume from)."""
    from vavam.train.resume import ResumeCallback, find_resume_checkpoint, write_folder_manifest

    saver = ResumeCallback(tmp_path, every_n_steps=1, keep=1, resumed_step=11)
    for step in (10, 11):
        _write_shards(saver.checkpoint_path(step), step)
        write_folder_manifest(saver.checkpoint_path(step), step)
    cut = saver.checkpoint_path(13)
    _write_shards(cut, 13)  # killed before its file list was written
    with pytest.warns(UserWarning, match="step-00000013.ckpt"):
        assert find_resume_checkpoint(tmp_path) == saver.checkpoint_path(11)
    saver.save(_Trainer(12), 12)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000012.ckpt", "step-00000013.ckpt"]
    with pytest.warns(UserWarning, match="step-00000013.ckpt"):
        assert find_resume_checkpoint(tmp_path) == saver.checkpoint_path(12)
    saver.save(_Trainer(13), 13)  # the run overwrites the unusable one when it gets there
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000013.ckpt"]
    assert find_resume_checkpoint(tmp_path) == cut


def test_a_stop_right_after_a_resume_rewrites_nothing(tmp_path):
    """SIGTERM after the restart, before the first step completes: the state is the checkpoint resumed from, which
    stays as it is (rewriting a folder in place leaves no intact copy while it runs) and counts as the last one."""
    from vavam.train.resume import ResumeCallback, verify_checkpoint, write_folder_manifest

    saver = ResumeCallback(tmp_path, every_n_steps=5, keep=1, resumed_step=10)
    _write_shards(saver.checkpoint_path(10), 10)
    write_folder_manifest(saver.checkpoint_path(10), 10)
    saver._signals.received = signal.SIGTERM
    saver.on_exception(_Trainer(10, saves=False), None, RuntimeError("SIGTERM"))
    assert saver.last_saved == saver.checkpoint_path(10)
    saver.on_train_end(_Trainer(10, saves=False), None)
    verify_checkpoint(saver.checkpoint_path(10))


def test_resuming_a_finished_run_reports_its_final_checkpoint(tmp_path, monkeypatch):
    """A kill after the final checkpoint, before the model folder was written: ``--resume`` has no step left to
    take, and the checkpoint it resumed from is the run's last one (FSDP / DeepSpeed runs consolidate it into the
    model folder; None made that a TypeError)."""
    import vavam.train.video as tv

    tok = _store(tmp_path / "tok")
    kw = dict(preset="vavim_tiny", steps=3, batch_size=3, num_frames=2, lr=0.01, seed=7, progress=False)
    tv.train_video(tmp_path / "run", tok, **kw)
    real, fits = tv.fit_resumable, []
    monkeypatch.setattr(tv, "fit_resumable", lambda *a, **k: fits.append(real(*a, **k)) or fits[-1])
    assert tv.train_video(tmp_path / "run", tok, resume=True, **kw)["resumed_from"] == 3
    assert fits[0].last_checkpoint == list_checkpoints(tmp_path / "run")[-1]
