"""Memory planner: parameter counts of the presets, hand-computed rows and activations, what each strategy
shards, and estimates within ±25 % of the peak live tensor memory measured on CPU for small models."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import vavam
from vavam.train.memory import activation_bytes, count_parameters, estimate_memory, plan_memory
from vavam.train.memory_probe import (
    action_loss_fn,
    measure_training_step,
    peak_during,
    storage_bytes,
    video_loss_fn,
)
from vavam.train.optim import build_optimizer

# ------------------------------------------------------------------------------ the measuring tool


pytestmark = pytest.mark.usefixtures("one_thread")




def test_peak_during_follows_allocations():
    def fn():
        a = torch.empty(1000)  # 4,000 bytes
        b = torch.empty(2000)  # + 8,000 -> 12,000 (the peak)
        del a
        c = torch.empty(500)  # 8,000 + 2,000
        del b, c

    assert peak_during(fn) == 12_000


def test_storage_bytes_counts_shared_storage_once():
    t = torch.zeros(10, 10)
    assert storage_bytes([t, t[1:], t.view(100), t.T]) == 400
    assert storage_bytes([t, torch.zeros(5, dtype=torch.bfloat16)]) == 410


def test_measured_baseline_is_weights_moments_and_inputs():
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(16, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    r = measure_training_step(model, lambda: model(x).square().mean(), opt, "32", [x])
    # weight 2048 floats, exp_avg and exp_avg_sq the same, AdamW's step counter (a 0-d fp32 tensor), x
    assert r["baseline"] == 3 * 2048 * 4 + 4 + 16 * 64 * 4
    assert r["step_peak"] >= 2048 * 4  # at least the weight's gradient


# ------------------------------------------------------------------------------ counts and hand-computed rows


def test_parameter_counts_of_the_presets():
    assert count_parameters(vavam.presets.vavim_s()).total == 182_901_504
    assert count_parameters(vavam.presets.vavim_b()).total == 319_366_144
    assert count_parameters(vavam.presets.vavim_l()).total == 1_242_712_064
    for preset, expert in (("vavam_s", 21_346_752), ("vavam_b", 37_948_672), ("vavam_l", 151_788_032)):
        c = count_parameters(getattr(vavam.presets, preset)())
        assert (c.trainable, c.frozen) == (expert, count_parameters(getattr(vavam.presets, preset)().video).total)
    tiny = count_parameters(vavam.presets.vavim_tiny())
    # token 1025x64 + spatial 24x64 + temporal 4x64 + 2 blocks x (QKV 3x64² + out 64² + MLP 2x4x64²)
    assert tiny.total == 1025 * 64 + 24 * 64 + 4 * 64 + 2 * (3 + 1 + 8) * 64 * 64 == 165_696
    assert tiny.block == 12 * 64 * 64 and tiny.largest_trainable == 1025 * 64


def test_hand_computed_vavim_tiny_fp32():
    est = estimate_memory("vavim_tiny", micro_batch=1, precision="32", device_type="cpu")
    p = 165_696
    assert est["bytes"]["parameters"] == 4 * p and est["bytes"]["gradients"] == 4 * p
    assert est["bytes"]["moments"] == 8 * p and est["bytes"]["master"] == 0 and est["bytes"]["buffers"] == 0
    # N = 4 frames x 24 tokens = 96; block: 4 (8 + 2·4)·64 + 16 + 4·2 heads = 4120 bytes per token;
    # head: 4·64 + 8 + 4·64 + 8 = 528 per token; loss: 12 · 96 · 1025
    act = activation_bytes(vavam.presets.vavim_tiny(), 1, "32")
    assert act.forward == 2 * 96 * 4120 + 96 * 528 + 12 * 96 * 1025 == 2_022_528
    assert est["phases"]["forward"] == 16 * p - 4 * p + act.forward
    assert est["phases"]["optimizer_step"] == 16 * p + 2 * 4 * 1025 * 64  # CPU AdamW: 2 temporaries of token_emb


def test_bf16_block_formula():
    cfg = vavam.presets.vavim_tiny()
    a32, a16 = activation_bytes(cfg, 4, "32"), activation_bytes(cfg, 4, "bf16-mixed")
    n = 4 * 96
    # bf16: x and x+attn fp32 (8d), LN copies, qkv, attn out, MLP in/out bf16 (2·14d), stats 16, lse 4·2
    block16, block32 = 36 * 64 + 16 + 8, 64 * 64 + 16 + 8
    head16, head32 = 4 * 64 + 8 + 2 * 64 + 8, 528
    copies = 2 * (2 * 12 * 64 * 64 + 1025 * 64)  # autocast's bf16 weights: block matrices + tied readout
    assert a16.forward - a32.forward == 2 * n * (block16 - block32) + n * (head16 - head32) + copies


def test_strategies_shard_what_they_should():
    kw = {"devices": 8, "micro_batch": 2, "precision": "bf16-mixed"}
    ddp, fsdp, ds = (estimate_memory("vavim_l", strategy=s, **kw) for s in ("ddp", "fsdp", "deepspeed"))
    p = 1_242_712_064
    assert ddp["bytes"]["parameters"] == 4 * p and ddp["bytes"]["moments"] == 8 * p and ddp["bytes"]["master"] == 0
    assert fsdp["bytes"]["parameters"] == 4 * p // 8 and fsdp["bytes"]["gradients"] == 4 * p // 8
    assert fsdp["bytes"]["moments"] == 8 * p // 8
    assert ds["bytes"]["parameters"] == 2 * p  # bf16 weights, replicated
    assert ds["bytes"]["master"] == 4 * p // 8 and ds["bytes"]["moments"] == 8 * p // 8
    assert ds["bytes"]["gradients"] == 2 * p // 8 and ds["bytes"]["buffers"] == 2 * 200_000_000 * 2  # 2 reduce buckets
    assert fsdp["total"] < ds["total"] < ddp["total"]
    # activations do not depend on the strategy (but for autocast's weight copies under ddp)
    assert fsdp["activation_phases"] == ds["activation_phases"]
    one = estimate_memory("vavim_l", strategy="fsdp", devices=1, micro_batch=2)
    assert one["bytes"]["parameters"] == 4 * p


def test_activations_scale_and_checkpointing_saves():
    cfg = vavam.presets.vavim_s()
    a = [activation_bytes(cfg, b, "bf16-mixed").forward for b in (1, 2, 3)]
    assert a[2] - a[1] == a[1] - a[0] > 0  # linear in the micro-batch
    plain = estimate_memory("vavim_s", micro_batch=4)
    ckpt = estimate_memory("vavim_s", micro_batch=4, activation_checkpointing=True)
    assert ckpt["bytes"]["activations"] < plain["bytes"]["activations"] / 2
    long = estimate_memory("vavim_s", micro_batch=4, frames=16)
    assert long["tokens_per_micro_batch"] == 2 * plain["tokens_per_micro_batch"]
    vam = estimate_memory("vavam_s", micro_batch=4)
    assert vam["bytes"]["moments"] == 8 * 21_346_752  # only the expert trains


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        estimate_memory("nope")
    with pytest.raises(ValueError, match="'vq_tiny' is a VQConfig"):
        estimate_memory("vq_tiny")
    with pytest.raises(ValueError, match="devices"):
        estimate_memory("vavim_tiny", devices=0)
    with pytest.raises(ValueError, match="strategy"):
        estimate_memory("vavim_tiny", strategy="zero3")
    with pytest.raises(ValueError, match="micro_batch"):
        estimate_memory("vavim_tiny", micro_batch=0)
    with pytest.raises(ValueError, match="precision"):
        estimate_memory("vavim_tiny", precision="16")
    with pytest.raises(ValueError, match="frames"):
        estimate_memory("vavim_tiny", frames=0)


def test_cli_prints_the_table(capsys):
    from vavam import cli

    assert cli.main(["plan-memory", "vavim_tiny", "--devices", "2", "--strategy", "fsdp", "--micro-batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "fsdp (full shard) *" in out and "deepspeed (ZeRO-2)" in out and "total per device" in out
    r = plan_memory("vavam_tiny", devices=2, strategy="deepspeed")
    assert r["strategy"] == "deepspeed" and set(r["compare"]) == {"ddp", "fsdp", "deepspeed"}
    assert r["compare"]["deepspeed"] == r["total"]
    # counts are refused by the flag the user typed (they said micro_batch / devices / frames)
    for flags, message in ((["--devices", "0"], "--devices must be a positive integer, got 0"),
                           (["--micro-batch", "-1"], "--micro-batch must be a positive integer, got -1"),
                           (["--frames", "0"], "--frames must be a positive integer, got 0")):
        assert cli.main(["plan-memory", "vavim_tiny", *flags]) == 2
        assert f"vavam plan-memory: error: {message}" in capsys.readouterr().err


# ------------------------------------------------------------------------------ estimate vs measured peak (CPU)


def _video(width=64, layers=2, vocab=1025, frames=2, tokens=24):
    return dataclasses.replace(vavam.presets.vavim_tiny(), width=width, num_layers=layers, vocab_size=vocab,
                               num_frames=frames, tokens_per_frame=tokens)


def _action(layers=2, frames=4):
    video = dataclasses.replace(vavam.presets.vavim_tiny(), num_layers=layers)
    return dataclasses.replace(vavam.presets.vavam_tiny(), video=video, train_frames=frames)


CASES = {  # name: (config, micro-batch, activation checkpointing)
    "vavim-weights-bound": (_video(), 1, False),
    "vavim-logits-bound": (_video(), 8, False),
    "vavim-activations-bound": (_video(layers=4, vocab=64), 8, False),
    "vavim-checkpointing": (_video(vocab=64), 8, True),
    "vavam-4-layers": (_action(layers=4), 8, False),
    "vavam-checkpointing": (_action(layers=8), 8, True),  # the expert's MLPs, as VaVAM training checkpoints
}


def measured_peak(config, micro_batch: int, precision: str, checkpointing: bool) -> int:
    torch.manual_seed(0)
    model = vavam.build_model(config)
    if hasattr(config, "video"):
        tokens = torch.randint(0, config.video.vocab_size - 1,
                               (micro_batch, config.train_frames, 1, config.video.tokens_per_frame))
        opt = build_optimizer(model.expert, 1e-3)
        loss = action_loss_fn(model, tokens, activation_checkpointing=checkpointing)
    else:
        tokens = torch.randint(0, config.vocab_size, (micro_batch, config.num_frames, 1, config.tokens_per_frame))
        opt = build_optimizer(model, 1e-3)
        loss = video_loss_fn(model, tokens, checkpointing)
    return measure_training_step(model, loss, opt, precision, [tokens])["peak"]


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
@pytest.mark.parametrize("name", list(CASES))
def test_estimate_within_25_percent_of_measured_peak(name, precision):
    config, micro_batch, checkpointing = CASES[name]
    est = estimate_memory(config, micro_batch=micro_batch, precision=precision,
                          activation_checkpointing=checkpointing, device_type="cpu")
    measured = measured_peak(config, micro_batch, precision, checkpointing)
    ratio = est["total"] / measured
    print(f"{name} {precision}: estimate {est['total']:,} B ({est['peak_phase']}), measured {measured:,} B, "
          f"ratio {ratio:.3f}")
    assert 0.75 <= ratio <= 1.25
