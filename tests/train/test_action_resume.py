"""VaVAM training resumes exactly (weights, loss curve; flow noise is a function of the step), and
the frozen VaViM is bit-identical after training steps."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from test_action_training import _frozen_video, _write_scenes
from test_video_resume import _SignalAt

import vavam
from vavam.train.action import train_action


def _losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_action_sigusr1_resume_is_bit_identical_and_video_frozen(tmp_path, monkeypatch):
    _write_scenes(tmp_path, num_scenes=3, num_frames=12)
    vim_dir = _frozen_video(tmp_path)
    kw = dict(preset="vavam_tiny", steps=6, batch_size=4, lr=0.01, progress=False, seed=5, plot_every=2)
    args = (vim_dir, tmp_path / "records.npz", tmp_path / "tok")
    train_action(tmp_path / "full", *args, **kw)

    import vavam.train.action as ta

    real = ta.fit_resumable
    monkeypatch.setattr(ta, "fit_resumable", lambda *a, **k: real(
        *a, **{**k, "extra_callbacks": [*k.get("extra_callbacks", ()), _SignalAt(3, signal.SIGUSR1)]}))
    with pytest.raises(SystemExit) as info:
        train_action(tmp_path / "cut", *args, **kw)
    assert info.value.code == 128 + signal.SIGUSR1
    monkeypatch.setattr(ta, "fit_resumable", real)
    # the signal lands after step 3's checkpoint hook ran, so the run stops after step 4, saved
    # a resume with other model options or learning rate is refused by name before anything trains
    with pytest.raises(ValueError, match="action_scaling: run started with 70.0, this call asks 10.0") as info:
        train_action(tmp_path / "cut", *args, resume=True, **dict(kw, lr=0.02), action_scaling=10.0)
    assert "module.lr: run started with 0.01, this call asks 0.02" in str(info.value)
    assert train_action(tmp_path / "cut", *args, resume=True, **kw)["resumed_from"] == 4

    pngs = sorted(p.name for p in (tmp_path / "full" / "trajectories").iterdir())
    assert pngs == ["step-00000002.png", "step-00000004.png", "step-00000006.png"]
    from PIL import Image

    assert Image.open(tmp_path / "full" / "trajectories" / pngs[0]).size == (4 * 180, 240)
    full = vavam.load_action_model(tmp_path / "full" / "model").state_dict()
    cut = vavam.load_action_model(tmp_path / "cut" / "model").state_dict()
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert _losses(tmp_path / "full") == _losses(tmp_path / "cut")
    # the expert moved, the frozen VaViM did not
    vim = vavam.load_video_model(vim_dir).state_dict()
    assert all(torch.equal(full[f"video.{k}"], v) for k, v in vim.items())
    init = vavam.build_model(vavam.load_action_model(tmp_path / "full" / "model").config)
    assert not torch.equal(full["expert.encoder.fuse_proj.weight"], init.state_dict()["expert.encoder.fuse_proj.weight"])
