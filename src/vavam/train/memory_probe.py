"""Measure the peak of live tensor memory of one training step on CPU (to check :mod:`vavam.train.memory`).

RSS is useless for this (allocator caching, arenas, other threads); instead every allocation and free
of the step is read from the PyTorch profiler's memory events (``profile_memory=True``: the CPU
allocator reports each ``malloc`` / ``free`` with its size), their running sum gives the peak of the
bytes allocated during the step, and the tensors that live across steps (parameters, optimiser state,
inputs) are added as a baseline counted by unique storage.

One "step" is what a trainer does per micro-batch: forward + loss (under ``torch.autocast`` for
``bf16-mixed``), backward, ``optimizer.step()``, ``zero_grad(set_to_none=True)``. The step is run
once before measuring so that the AdamW moments exist (steady state).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["action_loss_fn", "measure_training_step", "peak_during", "storage_bytes", "video_loss_fn"]


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared tensors counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def peak_during(fn: Callable[[], None]) -> int:
    """Peak, over the run of ``fn()``, of the CPU bytes allocated since it started (frees subtracted).

    Read from the profiler's ``[memory]`` events in time order; tensors alive before the call are
    not counted (add them yourself).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
              and e.device_type() == torch._C._autograd.DeviceType.CPU]
    running = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        running += int(e.nbytes())
        peak = max(peak, running)
    return peak


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def measure_training_step(
    model: nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    precision: str = "32",
    inputs: Iterable[torch.Tensor] = (),
) -> dict[str, int]:
    """Peak live tensor bytes of one steady-state training step on CPU.

    Args:
        model: the module (its parameters and buffers are the baseline).
        loss_fn: runs the forward and returns the scalar loss (keep big outputs such as logits local to
            it, as a LightningModule's ``training_step`` does, so that they are freed before backward).
        optimizer: over the trainable parameters.
        precision: ``"32"`` or ``"bf16-mixed"`` (forward + loss under ``torch.autocast("cpu", bfloat16)``).
        inputs: tensors of the batch (part of the baseline).

    Returns:
        ``{"baseline": bytes alive before the step (parameters, buffers, optimiser state, inputs),
        "step_peak": peak of bytes allocated during the step, "peak": their sum}``.
    """
    if precision not in ("32", "bf16-mixed"):
        raise ValueError(f"precision must be '32' or 'bf16-mixed', got {precision!r}")

    def step() -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
        with ctx:
            loss = loss_fn()
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates the AdamW moments
    inputs = list(inputs)
    baseline = storage_bytes([*model.parameters(), *model.buffers(), *_optimizer_tensors(optimizer), *inputs])
    extra = peak_during(step)
    return {"baseline": baseline, "step_peak": extra, "peak": baseline + extra}


def video_loss_fn(model: nn.Module, tokens: torch.Tensor, activation_checkpointing: bool = False
                  ) -> Callable[[], torch.Tensor]:
    """Loss closure of VaViM training: next-token cross-entropy over ``tokens`` long ``[B, T, h, w]``.

    With ``activation_checkpointing`` each block runs under ``torch.utils.checkpoint`` (non-reentrant).
    """
    from torch.utils.checkpoint import checkpoint

    from vavam.train.video import next_token_loss

    def loss() -> torch.Tensor:
        if not activation_checkpointing:
            logits = model(tokens)
        else:
            x = model.embed_frames(tokens)
            for block in model.blocks:
                x = checkpoint(block, x, None, True, use_reentrant=False)  # (x, mask, is_causal)
            logits = model.readout(model.final_norm(x))
        return next_token_loss(logits, tokens)

    return loss


def action_loss_fn(model: nn.Module, tokens: torch.Tensor, seed: int = 0, activation_checkpointing: bool = False
                   ) -> Callable[[], torch.Tensor]:
    """Loss closure of VaVAM training (flow matching, seeded flow times / noise / commands / actions).

    Args:
        model: a :class:`vavam.action.VideoActionModel` (VaViM frozen).
        tokens: long ``[B, T, h, w]``.
        seed: seed of the commands, actions, flow times and noise.
        activation_checkpointing: wrap the expert's MLPs in non-reentrant checkpoints, in place, as VaVAM
            training does (``ActionModule.distributed_targets``: the joint attention calls the blocks' pieces,
            so only the MLPs can be checkpointed).
    """
    if activation_checkpointing:
        from vavam.train.distributed import apply_activation_checkpointing

        apply_activation_checkpointing(model, [b.mlp for b in model.expert.blocks])
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    b, t = tokens.shape[:2]
    command = torch.randint(0, c.num_commands, (b, t), generator=gen)
    actions = torch.randn(b, t, c.horizon, c.action_dim, generator=gen) * 10
    times = torch.rand(b, t, generator=gen)
    noise = torch.randn(b, t, c.horizon, c.action_dim, generator=gen)

    def loss() -> torch.Tensor:
        return model.flow_loss(tokens, command, actions, t=times, noise=noise)

    return loss
