"""muP parameter groups and the Warmup-Stable-Drop schedule, against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vavam.train.optim import build_optimizer, build_wsd_scheduler, mup_param_groups, wsd_factor


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8, bias=False)
        self.out = nn.Linear(8, 32, bias=False)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def mup_width_multipliers(self):
        return {"fc.weight": 3.0, "out.weight": 3.0}


def test_groups_divide_lr_by_width_multiplier():
    groups = mup_param_groups(_Toy(), lr=0.0041, weight_decay=1e-7)
    assert [g["width_mult"] for g in groups] == [1.0, 3.0]
    assert groups[0]["lr"] == pytest.approx(0.0041) and len(groups[0]["params"]) == 1  # embedding only
    assert groups[1]["lr"] == pytest.approx(0.0041 / 3) and len(groups[1]["params"]) == 2
    assert all(g["weight_decay"] == 1e-7 for g in groups)  # decoupled, not rescaled


def test_frozen_parameters_are_left_out():
    opt = build_optimizer(_Toy(), lr=1e-3)
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == 10 * 8 + 8 * 8 + 8 * 32
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8


def test_wsd_factor_by_hand():
    # warmup 10, end 100, drop 20
    assert wsd_factor(0, 10, 100, 20) == 0.0
    assert wsd_factor(5, 10, 100, 20) == 0.5
    assert wsd_factor(10, 10, 100, 20) == 1.0
    assert wsd_factor(80, 10, 100, 20) == 1.0  # step == end - drop is still stable
    assert wsd_factor(90, 10, 100, 20) == pytest.approx(0.1 + 0.9 * 10 / 20)
    assert wsd_factor(100, 10, 100, 20) == pytest.approx(0.1)
    assert wsd_factor(150, 10, 100, 20) == pytest.approx(0.1)
    assert wsd_factor(50, 0, 100, 0) == 1.0  # pretraining: no drop


def test_scheduler_applies_per_group_and_resumes():
    model = _Toy()
    opt = build_optimizer(model, lr=0.01)
    sched = build_wsd_scheduler(opt, warmup_iter=4, end_iter=10, drop_iter=2)
    lrs = []
    for _ in range(10):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0] == [0.0, 0.0]
    assert lrs[2] == pytest.approx([0.005, 0.005 / 3])
    assert lrs[9] == pytest.approx([0.01 * (0.1 + 0.9 * 1 / 2), 0.01 / 3 * (0.1 + 0.9 * 1 / 2)])
    state = sched.state_dict()
    opt2 = build_optimizer(_Toy(), lr=0.01)
    sched2 = build_wsd_scheduler(opt2, warmup_iter=4, end_iter=10, drop_iter=2)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == sched.last_epoch
    with pytest.raises(ValueError):
        build_wsd_scheduler(opt2, warmup_iter=1, end_iter=10, drop_iter=20)


def test_unknown_multiplier_names_rejected():
    class Bad(_Toy):
        def mup_width_multipliers(self):
            return {"nope.weight": 2.0}

    with pytest.raises(ValueError, match="nope.weight"):
        mup_param_groups(Bad(), lr=1.0)
    torch.manual_seed(0)
