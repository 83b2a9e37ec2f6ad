"""Dead-code restarts replace exactly the unused codes, from recent encoder outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vavam.train.codebook import CodebookMonitor, restart_dead_codes


def test_restart_replaces_exactly_the_unused_codes():
    torch.manual_seed(0)
    weight = F.normalize(torch.randn(6, 4), dim=-1)
    before = weight.clone()
    counts = torch.tensor([3, 0, 1, 0, 0, 2])
    latents = torch.randn(10, 4)
    dead = restart_dead_codes(weight, counts, latents, torch.Generator().manual_seed(0))
    assert dead.tolist() == [1, 3, 4]
    assert torch.equal(weight[[0, 2, 5]], before[[0, 2, 5]])  # used codes untouched
    candidates = F.normalize(latents, dim=-1)
    for row in weight[dead]:  # each restarted code is a (normalised) latent, all distinct
        assert torch.isclose(candidates, row).all(dim=1).any()
    assert len({tuple(r.tolist()) for r in weight[dead]}) == 3


def test_restart_without_dead_codes_or_latents_is_a_no_op():
    weight = torch.randn(3, 2)
    before = weight.clone()
    assert restart_dead_codes(weight, torch.tensor([1, 1, 1]), torch.randn(4, 2)).numel() == 0
    assert restart_dead_codes(weight, torch.tensor([0, 1, 1]), torch.randn(0, 2)).numel() == 0
    assert torch.equal(weight, before)


def test_restart_with_fewer_latents_than_dead_codes_and_without_l2():
    weight = torch.zeros(5, 2)
    latents = torch.tensor([[3.0, 4.0]])
    dead = restart_dead_codes(weight, torch.zeros(5, dtype=torch.long), latents, l2_norm=False)
    assert dead.tolist() == [0, 1, 2, 3, 4] and torch.equal(weight, latents.expand(5, 2))


def test_monitor_restarts_after_window_and_resets_optimizer_rows():
    emb = torch.nn.Embedding(8, 4)
    opt = torch.optim.Adam(emb.parameters(), lr=1e-3)
    emb.weight.sum().backward()
    opt.step()  # create Adam moments
    before = emb.weight.detach().clone()
    mon = CodebookMonitor(codebook_size=8, dim=4, window=2, buffer_size=16)
    lat = torch.randn(1, 4, 2, 2)
    mon.observe(torch.tensor([[0, 1], [2, 2]]), lat)
    assert mon.maybe_restart(emb.weight, opt) == 0  # window not complete
    mon.observe(torch.tensor([[5, 1], [0, 0]]), lat)
    assert mon.maybe_restart(emb.weight, opt) == 4  # codes 3, 4, 6, 7 unused over the window
    changed = (emb.weight.detach() != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [3, 4, 6, 7]
    state = opt.state[emb.weight]
    assert (state["exp_avg"][[3, 4, 6, 7]] == 0).all() and (state["exp_avg"][[0, 1, 2, 5]] != 0).all()
    assert mon.restarts == 4 and mon.counts.sum() == 0 and mon.filled == 8


def test_monitor_ring_buffer_and_state_roundtrip():
    mon = CodebookMonitor(codebook_size=4, dim=2, window=0, buffer_size=5, per_step=100)
    for i in range(3):
        mon.observe(torch.zeros(1, 1, 2, dtype=torch.long), torch.full((1, 2, 1, 2), float(i)))
    assert mon.filled == 5 and mon.cursor == 1
    assert mon.buffer[0].tolist() == [2.0, 2.0]  # oldest overwritten
    assert mon.maybe_restart(torch.zeros(4, 2)) == 0  # window 0: never restarts
    other = CodebookMonitor(4, 2, 0, buffer_size=5)
    other.load_state_dict(mon.state_dict())
    assert torch.equal(other.buffer, mon.buffer) and other.cursor == 1 and torch.equal(other.counts, mon.counts)
