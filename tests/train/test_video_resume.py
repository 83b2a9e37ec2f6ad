"""VaViM training resumes exactly: weights and loss curve of an interrupted + resumed run equal an
uninterrupted run of the same seed (fp32, CPU), including a SIGTERM pre-emption and a corrupt newest
checkpoint; per-dataset validation CE; non-finite losses stop (or skip) cleanly."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
import lightning as L

from vavam.data.tokens import TokenStoreWriter
from vavam.train.resume import list_checkpoints
from vavam.train.video import train_video


def _store(root, num_scenes=3, num_frames=8, grid=(2, 3), codes=16, seed=0):
    rng = np.random.default_rng(seed)
    writer = TokenStoreWriter(root, grid, codebook_size=codes, tokenizer={"name": "rand"}, fps=2.0, resume=False)
    for k in range(num_scenes):
        frames = rng.integers(0, codes, size=(num_frames, *grid), dtype=np.uint16)
        writer.write_scene(f"s{k}", frames, np.arange(num_frames, dtype=np.int64) * 500_000)
    return root


def _weights(run):
    from vavam.video import load_video_model

    return {k: v.clone() for k, v in load_video_model(run / "model").state_dict().items()}


def _losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


KW = dict(preset="vavim_tiny", batch_size=3, lr=0.01, num_frames=2, progress=False, seed=3)


class _SignalAt(L.Callback):
    """Sends a signal to this process after the given optimiser step (a cluster pre-emption)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_sigterm_then_resume_is_bit_identical(tmp_path, monkeypatch):
    tok = _store(tmp_path / "tok")
    train_video(tmp_path / "full", tok, steps=7, **KW)

    import vavam.train.video as tl

    real = tl.fit_resumable
    monkeypatch.setattr(tl, "fit_resumable", lambda *a, **k: real(*a, **{**k, "extra_callbacks": [
        *k.get("extra_callbacks", ()), _SignalAt(4, signal.SIGTERM)]}))
    with pytest.raises(SystemExit) as exit_info:
        train_video(tmp_path / "cut", tok, steps=7, ckpt_every=0, **KW)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step-00000004.ckpt"]
    assert not (tmp_path / "cut" / "model").exists()  # no final model from a pre-empted run
    monkeypatch.setattr(tl, "fit_resumable", real)

    summary = train_video(tmp_path / "cut", tok, steps=7, resume=True, **KW)
    assert summary["resumed_from"] == 4
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert _losses(tmp_path / "full") == _losses(tmp_path / "cut")
    assert [s for s, _ in _losses(tmp_path / "cut")] == list(range(1, 8))


def test_resume_falls_back_past_a_corrupt_checkpoint(tmp_path):
    tok = _store(tmp_path / "tok")
    train_video(tmp_path / "full", tok, steps=6, **KW)
    train_video(tmp_path / "cut", tok, steps=6, ckpt_every=2, keep=0, **KW)
    ckpts = list_checkpoints(tmp_path / "cut")
    assert [p.name for p in ckpts] == ["step-00000002.ckpt", "step-00000004.ckpt", "step-00000006.ckpt"]
    # simulate a kill after step 4's checkpoint: drop the later one, truncate step 4's
    ckpts[2].unlink()
    data = ckpts[1].read_bytes()
    ckpts[1].write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="step-00000004.ckpt: truncated"):
        summary = train_video(tmp_path / "cut", tok, steps=6, resume=True, **KW)
    assert summary["resumed_from"] == 2
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert _losses(tmp_path / "full") == _losses(tmp_path / "cut")


def test_validation_ce_per_dataset(tmp_path):
    a, b = _store(tmp_path / "nuplan", seed=1), _store(tmp_path / "nuscenes", seed=2)
    tok = _store(tmp_path / "tok")
    s = train_video(tmp_path / "run", tok, steps=2, val_tokens=[a, b], val_every=2, **KW)
    assert {"val/nuplan/loss", "val/nuscenes/loss"} <= set(s["metrics"])
    assert s["metrics"]["val/nuplan/loss"] != s["metrics"]["val/nuscenes/loss"]


def test_non_finite_loss_stops_or_skips(tmp_path, monkeypatch):
    tok = _store(tmp_path / "tok")
    import vavam.train.video as tv

    real = tv.next_token_loss
    calls = {"n": 0}

    def poisoned(logits, tokens):
        calls["n"] += 1
        loss = real(logits, tokens)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(tv, "next_token_loss", poisoned)
    with pytest.raises(FloatingPointError, match="training loss is nan at step 1"):
        train_video(tmp_path / "stop", tok, steps=4, **KW)
    calls["n"] = 0
    with pytest.warns(UserWarning, match="step skipped"):
        s = train_video(tmp_path / "skip", tok, steps=4, nan_policy="skip", **KW)
    weights = _weights(tmp_path / "skip")
    assert all(torch.isfinite(v).all() for v in weights.values())
    lines = (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(r, parse_constant=_not_json) for r in lines]
    assert sum(r.get("skipped", 0) for r in rows) == 1 and s["steps"] == 4
    assert [r.get("loss") for r in rows if r.get("skipped")] == [None]  # no NaN in the log (not JSON)


def _not_json(constant: str) -> None:
    """json.loads hook: NaN / Infinity are not JSON (jq and browsers refuse them)."""
    raise ValueError(f"not JSON: {constant}")


class _Gadget:
    """Unpickling this would create a file (the side effect a malicious checkpoint would have)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_planted_pickle_checkpoint_is_refused_and_skipped(tmp_path):
    from vavam.train.resume import CheckpointError, read_checkpoint, write_checkpoint

    tok = _store(tmp_path / "tok")
    train_video(tmp_path / "run", tok, steps=3, ckpt_every=1, keep=0, **KW)
    marker = tmp_path / "pwned"
    # a newer checkpoint with a valid hash sidecar whose unpickling would run code
    bad = write_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000009.ckpt",
                           {"global_step": 9, "state_dict": {"x": _Gadget(marker)}})
    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        read_checkpoint(bad)
    with pytest.warns(UserWarning, match="step-00000009.ckpt: not a loadable weights-only"):
        summary = train_video(tmp_path / "run", tok, steps=3, resume=True, **KW)
    assert summary["resumed_from"] == 3 and not marker.exists()


def test_resume_refuses_changed_settings_but_not_a_moved_token_folder(tmp_path):
    import shutil

    tok = _store(tmp_path / "tok")
    train_video(tmp_path / "full", tok, steps=6, **KW)
    train_video(tmp_path / "cut", tok, steps=6, ckpt_every=3, keep=0, **KW)
    (tmp_path / "cut" / "checkpoints" / "step-00000006.ckpt").unlink()  # as if killed after step 3's checkpoint
    saved = json.loads((tmp_path / "cut" / "run_settings.json").read_text())
    assert saved["module"]["lr"] == 0.01 and saved["seed"] == 3 and saved["global_batch"] == 3
    before = _losses(tmp_path / "cut")
    with pytest.raises(ValueError, match=r"module\.weight_decay: run started with 1e-07, this call asks 0\.1") as info:
        train_video(tmp_path / "cut", tok, steps=6, resume=True, weight_decay=0.1, **KW)
    assert "seed" not in str(info.value)  # only what differs is named
    # 20 steps would have warmed up over the first 2 (10 %): the steps taken would have had other rates
    with pytest.raises(ValueError, match=r"module.warmup_iter: run started with 0, this call asks 2; steps: run started with 6, this call asks 20\): "
                       r"step 0 had 1 x lr and would now have 0 x lr"):
        train_video(tmp_path / "cut", tok, steps=20, resume=True, **KW)
    assert _losses(tmp_path / "cut") == before  # nothing trained, the log untouched
    # the same run with its tokens in another folder resumes and ends where the uninterrupted run did
    shutil.copytree(tok, tmp_path / "moved")
    assert train_video(tmp_path / "cut", tmp_path / "moved", steps=6, resume=True, **KW)["resumed_from"] == 3
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    # a longer run whose 6 steps keep their rates (no warmup or drop at 7 steps either) may continue
    assert train_video(tmp_path / "cut", tok, steps=7, resume=True, **KW)["resumed_from"] == 6
    # the same global batch in two accumulation passes would shift the data position: refused
    with pytest.raises(ValueError, match=r"module\.data\.accumulate: run started with 1, this call asks 3"):
        train_video(tmp_path / "cut", tok, steps=7, resume=True, **dict(KW, batch_size=1), accumulate=3)
    # starting afresh over the run's checkpoints is refused (a later --resume would take theirs)
    with pytest.raises(ValueError, match="holds the checkpoints of an earlier run"):
        train_video(tmp_path / "cut", tok, steps=7, **KW)


def test_resume_of_a_sharded_folder_under_a_plain_strategy_is_refused_before_training(tmp_path):
    from vavam.train.resume import write_folder_manifest

    tok = _store(tmp_path / "tok")
    train_video(tmp_path / "run", tok, steps=3, ckpt_every=3, keep=0, **KW)
    # the run's last checkpoint as FSDP's sharded state dict writes it (a folder of shards + meta.pt)
    (tmp_path / "run" / "checkpoints" / "step-00000003.ckpt").unlink()
    folder = tmp_path / "run" / "checkpoints" / "step-00000003.ckpt"
    folder.mkdir()
    (folder / "__0_0.distcp").write_bytes(b"x" * 64)
    (folder / "meta.pt").write_bytes(b"y" * 16)
    write_folder_manifest(folder, 3)
    before = _losses(tmp_path / "run")
    with pytest.raises(ValueError, match=r"step-00000003\.ckpt: an FSDP sharded checkpoint folder, which strategy "
                       r"'auto' cannot resume; resume it with strategy 'fsdp'"):
        train_video(tmp_path / "run", tok, steps=4, resume=True, **KW)
    assert _losses(tmp_path / "run") == before  # nothing trained
    assert (folder / "__0_0.distcp").read_bytes() == b"x" * 64  # the checkpoint untouched


def test_non_finite_gradient_of_a_finite_loss_stops_or_skips(tmp_path, monkeypatch):
    """A finite loss whose backward overflows must not reach the weights: "stop" raises before the optimiser
    step (every checkpoint written stays finite), "skip" drops that step's gradients."""
    tok = _store(tmp_path / "tok")
    import vavam.train.video as tv

    real = tv.next_token_loss
    calls = {"n": 0}

    def overflowing(logits, tokens):
        calls["n"] += 1
        if calls["n"] == 2:
            logits.register_hook(lambda g: g * float("inf"))
        return real(logits, tokens)

    monkeypatch.setattr(tv, "next_token_loss", overflowing)
    with pytest.raises(FloatingPointError, match="gradient norm is nan at step 1"):
        train_video(tmp_path / "stop", tok, steps=4, ckpt_every=1, keep=0, **KW)
    from vavam.train.resume import read_checkpoint

    saved = list_checkpoints(tmp_path / "stop")
    assert [p.name for p in saved] == ["step-00000001.ckpt"]
    assert all(torch.isfinite(v).all() for p in saved for v in read_checkpoint(p)["state_dict"].values())
    calls["n"] = 0
    with pytest.warns(UserWarning, match="gradient norm is nan at step 1.*step skipped"):
        train_video(tmp_path / "skip", tok, steps=4, nan_policy="skip", **KW)
    assert all(torch.isfinite(v).all() for v in _weights(tmp_path / "skip").values())
    lines = (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(r, parse_constant=_not_json) for r in lines]
    assert [r.get("skipped", 0) for r in rows] == [0, 1.0, 0, 0]
    assert rows[1]["grad_norm"] is None  # strict JSON: the non-finite norm is null
    assert all(np.isfinite(r["loss"]) for r in rows)
