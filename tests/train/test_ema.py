"""EMA of the expert's weights: the saved model is the hand-computed average of the per-step weights,
checkpoints keep the raw weights, and a pre-empted run resumes to the same average."""

from __future__ import annotations

import signal

import lightning as L
import pytest
import torch
from test_action_training import _frozen_video, _write_scenes
from test_video_resume import _SignalAt

import vavam
from vavam.train.action import train_action
from vavam.train.ema import EMAWeights, ema_decay_at

KW = dict(preset="vavam_tiny", steps=6, batch_size=4, lr=0.01, progress=False, seed=5, plot_every=0)


class _Record(L.Callback):
    """Copies the expert's weights at fit start and after every optimiser step."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def _take(self, module) -> None:
        self.weights.append({k: v.detach().clone() for k, v in module.model.expert.state_dict().items()})

    def on_fit_start(self, trainer, pl_module) -> None:
        self._take(pl_module)

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self._take(pl_module)


def test_decay_warms_up_then_holds():
    assert ema_decay_at(1, 0.99) == pytest.approx(2 / 11)
    assert ema_decay_at(10, 0.99) == pytest.approx(11 / 20)
    assert ema_decay_at(10_000, 0.99) == 0.99
    with pytest.raises(ValueError, match="decay"):
        EMAWeights(1.0)


def test_saved_model_is_the_average_and_resume_matches(tmp_path, monkeypatch):
    _write_scenes(tmp_path, num_scenes=3, num_frames=12)
    vim_dir = _frozen_video(tmp_path)
    args = (vim_dir, tmp_path / "records.npz", tmp_path / "tok")
    import vavam.train.action as ta

    real = ta.fit_resumable
    recorder = _Record()
    monkeypatch.setattr(ta, "fit_resumable", lambda *a, **k: real(
        *a, **{**k, "extra_callbacks": [recorder, *k.get("extra_callbacks", ())]}))
    assert train_action(tmp_path / "full", *args, ema=0.5, **KW)["ema"] == 0.5
    monkeypatch.setattr(ta, "fit_resumable", real)

    assert len(recorder.weights) == 1 + KW["steps"]
    expected = {k: v.clone() for k, v in recorder.weights[0].items()}
    for n, raw in enumerate(recorder.weights[1:], start=1):
        d = min(0.5, (1 + n) / (10 + n))
        expected = {k: d * expected[k] + (1 - d) * raw[k] for k in expected}
    saved = vavam.load_action_model(tmp_path / "full" / "model").expert.state_dict()
    last = recorder.weights[-1]
    moved = [k for k in saved if not torch.equal(recorder.weights[-2][k], last[k])]
    assert moved, "the expert did not train"
    for k in saved:
        torch.testing.assert_close(saved[k], expected[k], rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(saved[k], last[k]) for k in moved)  # the average, not the last weights
    # the final checkpoint keeps the raw weights (a resume continues from them)
    ckpt = sorted((tmp_path / "full" / "checkpoints").glob("step-*.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for k in moved:
        assert torch.equal(state[f"model.expert.{k}"], last[k])

    monkeypatch.setattr(ta, "fit_resumable", lambda *a, **k: real(
        *a, **{**k, "extra_callbacks": [*k.get("extra_callbacks", ()), _SignalAt(3, signal.SIGUSR1)]}))
    with pytest.raises(SystemExit):
        train_action(tmp_path / "cut", *args, ema=0.5, **KW)
    monkeypatch.setattr(ta, "fit_resumable", real)
    assert train_action(tmp_path / "cut", *args, ema=0.5, resume=True, **KW)["resumed_from"] == 4
    cut = vavam.load_action_model(tmp_path / "cut" / "model").expert.state_dict()
    assert all(torch.equal(saved[k], cut[k]) for k in saved)
    # a resume with another decay is refused rather than mixing two averages
    other = {k: v for k, v in KW.items() if k != "steps"}
    with pytest.raises(ValueError, match="ema: run started with 0.5, this call asks 0.9"):
        train_action(tmp_path / "cut", *args, ema=0.9, resume=True, steps=8, **other)
    # a run folder from before run_settings.json: the averager's own check still refuses it
    (tmp_path / "cut" / "run_settings.json").unlink()
    with pytest.raises(ValueError, match="EMA decay"):
        train_action(tmp_path / "cut", *args, ema=0.9, resume=True, steps=8, **other)


def test_a_restored_average_moves_beside_the_weights():
    """Checkpoints are read onto the CPU: a run resumed on an accelerator must average on the weights' device (a
    CPU average and CUDA weights failed at the first update after the resume). Here the weights are on ``meta``."""
    from types import SimpleNamespace

    from torch import nn

    with torch.device("meta"):
        module = nn.Linear(2, 3)
    saved = {"decay": 0.9, "updates": 4, "average": {k: torch.zeros(p.shape) for k, p in module.named_parameters()}}
    ema = EMAWeights(0.9)
    ema.load_state_dict(saved)
    ema.on_train_start(SimpleNamespace(optimizers=[]), module)
    assert {k: v.device for k, v in ema.average.items()} == {k: p.device for k, p in module.named_parameters()}
    ema._update(ema._params(module))
    assert ema.updates == 5
    other = EMAWeights(0.9)
    other.load_state_dict({**saved, "average": {"weight": torch.zeros(3, 2)}})
    with pytest.raises(ValueError, match=r"EMA average and the module disagree on parameters: \['bias'\]"):
        other.on_train_start(SimpleNamespace(optimizers=[]), module)
