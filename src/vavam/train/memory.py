"""Training-memory planner (``vavam plan-memory``): bytes per device of parameters, gradients, AdamW
state, communication buffers and activations for a VaViM / VaVAM preset under DDP, FSDP or DeepSpeed.

What each strategy keeps on a device (P parameters, P_t of them trainable, N devices; Lightning's
meaning of ``bf16-mixed`` in each):

================  ==========================  ===========================  ==============================
                  ddp                         fsdp (FULL_SHARD)            deepspeed (ZeRO-2)
================  ==========================  ===========================  ==============================
parameters        fp32, replicated: 4P        fp32 shards: 4P/N            replicated, 2P (bf16) or 4P (fp32)
gradients         fp32, replicated: 4P_t;     fp32 shards: 4P_t/N (VaVAM:  partitions: 2 or 4 · P_t/N
                  N > 1: views of DDP's       4P/N, the frozen part of     (+ fp32 partition at the step
                  buckets (vavam sets         its one unit included)       under bf16: 4P_t/N)
                  gradient_as_bucket_view),
                  live in every phase
AdamW moments     8P_t                        8P_t/N                       8P_t/N
fp32 master       none (weights are fp32)     none (the fp32 shards)       4P_t/N
buffers           none (the buckets are the   gathered units in the        2 reduce buckets of 2e8
                  gradients)                  compute dtype: 2 blocks +    elements (Lightning defaults:
                                              the root's embeddings;       overlap_comm, contiguous
                                              VaVAM: the whole model (one  gradients)
                                              unit, ActionModule targets)
unit gradients    none                        a unit's unsharded gradient  none
                                              (compute dtype, + its fp32
                                              copy for the float32 reduce
                                              under bf16-mixed): a block
                                              in every block's backward;
                                              VaVAM: all P, at the end
autocast copies   bf16 copies of trainable    none (FSDP gathers bf16      none (bf16 weights)
                  matmul weights: 2·P_mm      weights)
================  ==========================  ===========================  ==============================

Activations (per device, ``micro_batch`` B; the same under every strategy) are counted from the tensors
autograd saves, block by block, with b = 4 bytes for fp32 tensors and 2 bytes for tensors that
autocast computes in bf16 (matmul outputs, attention, GELU); LayerNorm and the residual stream stay
fp32 under autocast, so a bf16 LayerNorm output is saved as the bf16 copy its matmul makes. Attention
is SDPA (flash / memory-efficient): it saves q, k, v, its output and the fp32 log-sum-exp, O(T·d), never
the T×T scores. Per token of a VaViM block (width d, H heads, MLP ratio r):

    fp32:        4·(8 + 2r)·d + 16 + 4H  bytes   (x, LN1 out, q k v, attn out, x + attn, LN2 out,
                                                  fc_in out, GELU out; 2 LayerNorm mean/rstd; lse)
    bf16-mixed:  8·d + 2·(6 + 2r)·d + 16 + 4H   (x and x + attn fp32, the rest bf16)

VaViM, sequence T = frames × tokens_per_frame, N = B·T tokens per micro-batch, vocabulary V, L blocks:

    saved     = L·N·block + N·(4d + 8 + b·d + 8)   (+ final LN input and stats, readout input, token ids)
                + 2·P_mm under ddp bf16-mixed        (autocast's cached bf16 weights, saved by the matmuls)
    forward   = saved + 12·N·V   (at the loss: fp32 log-probabilities, their gradient and the gradient of
                                  the logits; with V = 16,385 this is ~20 % of VaViM-S's activations)
    backward  = saved + N·r·d·b  (top of the backward: a block's largest temporary, the MLP hidden gradient)

VaVAM (frozen VaViM, trained expert of width e; Nv = B·T·p visual and Na = B·T·6 action tokens): the
visual stream runs without autograd; each layer's keys and values (2d per visual token, copied out of the
fused q/k/v buffer) stay alive until the expert has used them (peak of the visual pass: L·2d·Nv·b + one
layer's q/k/v buffer 3d·Nv·b + one frozen block's temporaries);
each expert layer saves the concatenated keys and values 2·(Nv + Na)·d·b, the action rows' mask, its q/k/v
and output at the attention width d and its other block tensors at width e; a layer's backward makes the
full key/value gradients 2·(Nv + Na)·d·b (the concatenation's backward drops the visual part).

Activation checkpointing, as vavam's training applies it (``distributed_targets``): VaViM has one checkpoint
per block, which keeps each block's input (fp32, 4d per token) and recomputes one block at a time in the
backward; VaVAM checkpoints the expert's MLPs only (the joint attention calls the blocks' pieces), so each
expert layer drops its MLP hidden tensors (2·4e·b per action token) and keeps everything else, the joint
keys/values included, and the backward recomputes one MLP at a time.

The total per device is the peak over the phases of one step, each = parameters + AdamW state (+ master)
+ buffers + what is live then: ``forward`` (the end of the forward, at the loss), ``backward_top``
(saved activations + the block being back-propagated + the gradients of the non-block parameters,
e.g. the tied embedding's, which come first), ``backward_bottom`` (one block's activations + all
gradients but one block's) and ``optimizer_step`` (all gradients + AdamW temporaries: one fp32 tensor the
size of the local trainable parameters for the foreach AdamW on GPU, two of the largest parameter for
the single-tensor AdamW on CPU). Not counted: the CUDA context and kernels' workspaces (~0.5-1 GiB),
allocator fragmentation, NCCL buffers, data-loader memory; keep ~10-15 % headroom.

Checked against measured CPU peaks of small VaViM / VaVAM models (fp32 and bf16-mixed, with and
without checkpointing): within a few percent (tests/train/test_plan_memory.py, measuring tool in
:mod:`vavam.train.memory_probe`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import tyro

Strategy = Literal["ddp", "fsdp", "deepspeed"]
Precision = Literal["32", "bf16-mixed"]
STRATEGIES: tuple[str, ...] = ("ddp", "fsdp", "deepspeed")
#: Lightning's DeepSpeedStrategy default reduce bucket (elements); ZeRO-2 allocates two of them (overlap_comm)
DEEPSPEED_BUCKET = 200_000_000
GIB = 1 << 30

__all__ = ["Activations", "ParamCounts", "activation_bytes", "count_parameters", "estimate_memory", "plan_memory"]


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model (numbers of elements).

    Attributes:
        total / trainable / frozen: all parameters, those that train, those that do not.
        matmul_trainable: trainable parameters used as matmul weights (autocast caches bf16 copies of them).
        largest_trainable: elements of the largest trainable tensor.
        block: parameters of the largest transformer block (an FSDP unit).
        non_block: parameters outside the blocks (embeddings, encoder, readout: FSDP's root unit).
        layer_trainable: trainable parameters of one layer (a block, or a VaVAM expert block).
    """

    total: int
    trainable: int
    frozen: int
    matmul_trainable: int
    largest_trainable: int
    block: int
    non_block: int
    layer_trainable: int


@dataclass(frozen=True)
class Activations:
    """Activation bytes of one micro-batch at the peaks of a step (see the module docstring for the formulas).

    Attributes:
        forward: live at the end of the forward, loss and its first gradients included.
        backward_top: live while the last block runs its backward (its recomputation included when
            checkpointing), before any block's activations are freed.
        backward_bottom: live while the first block runs its backward.
        tokens: tokens per micro-batch (visual tokens for VaVAM).
        autocast_copies: bytes of autocast's cached bf16 weights included in the above.
    """

    forward: int
    backward_top: int
    backward_bottom: int
    tokens: int
    autocast_copies: int = 0

    def without_autocast_copies(self) -> Activations:
        """The same without autocast's weight copies (FSDP / DeepSpeed compute with bf16 weights)."""
        c = self.autocast_copies
        return Activations(self.forward - c, self.backward_top - c, self.backward_bottom, self.tokens, 0)


def _config_of(preset: Any) -> Any:
    """A VaViM / VaVAM config from a preset name or config; anything else raises ``ValueError``."""
    from vavam import presets
    from vavam.config import ActionConfig, VideoConfig

    known = ", ".join(sorted(n for n in presets.PRESETS if n.startswith(("vavim", "vavam"))))
    config = preset
    if isinstance(preset, str):
        try:
            config = presets.get(preset)
        except KeyError:
            raise ValueError(f"unknown preset {preset!r}; known: {known}") from None
    if not isinstance(config, (VideoConfig, ActionConfig)):
        error = ValueError if isinstance(preset, str) else TypeError
        raise error(f"preset {preset!r} is a {type(config).__name__}: memory plans cover VaViM / VaVAM "
                         f"({known})")
    return config


def _with_frames(config: Any, frames: int | None) -> Any:
    """Config whose training window has ``frames`` frames (the positional table grows when needed)."""
    from vavam.config import ActionConfig, VideoConfig

    if frames is None:
        return config
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if isinstance(config, VideoConfig):
        return dataclasses.replace(config, num_frames=max(frames, config.num_frames))
    if isinstance(config, ActionConfig):
        video = dataclasses.replace(config.video, num_frames=max(frames, config.video.num_frames))
        return dataclasses.replace(config, video=video, train_frames=frames)
    raise TypeError(f"no memory model for config {type(config).__name__} (VaViM / VaVAM only)")


def count_parameters(config: Any) -> ParamCounts:
    """Parameter counts of the model of ``config`` (a VideoConfig or ActionConfig), built on the meta device."""
    import vavam
    from vavam.nn import Block

    with torch.device("meta"):
        model = vavam.build_model(config)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    matmul = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    if hasattr(model, "token_emb"):  # the tied readout is a matmul with the token embedding
        matmul.add(id(model.token_emb.weight))
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    block_sizes = [sum(p.numel() for p in b.parameters()) for b in blocks]
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    trainable_blocks = [sum(p.numel() for p in b.parameters() if p.requires_grad) for b in blocks]
    return ParamCounts(
        total=sum(p.numel() for p in params),
        trainable=sum(p.numel() for p in trainable),
        frozen=sum(p.numel() for p in params if not p.requires_grad),
        matmul_trainable=sum(p.numel() for p in trainable if id(p) in matmul),
        largest_trainable=max((p.numel() for p in trainable), default=0),
        block=max(block_sizes, default=0),
        non_block=sum(p.numel() for p in params if id(p) not in in_blocks),
        layer_trainable=max(trainable_blocks, default=0),
    )


def _block_bytes(d: int, heads: int, ratio: int, mixed: bool) -> int:
    """Saved bytes per token of one pre-LN block (width d; see the module docstring)."""
    if mixed:
        return 8 * d + 2 * (6 + 2 * ratio) * d + 16 + 4 * heads
    return 4 * (8 + 2 * ratio) * d + 16 + 4 * heads


def activation_bytes(config: Any, micro_batch: int = 1, precision: Precision = "bf16-mixed",
                     activation_checkpointing: bool = False, frames: int | None = None,
                     counts: ParamCounts | None = None) -> Activations:
    """Activation bytes of one training micro-batch of a VaViM or VaVAM config.

    Args:
        config: ``VideoConfig`` (next-token training over ``frames`` frames, default ``num_frames``) or
            ``ActionConfig`` (flow matching over ``frames`` frames, default ``train_frames``).
        micro_batch: samples per device.
        precision: ``"32"`` or ``"bf16-mixed"`` (autocast).
        activation_checkpointing: one checkpoint per block.
        frames: frames per sample.
        counts: parameter counts (for autocast's weight copies; computed when omitted).

    Returns:
        :class:`Activations` (bytes).
    """
    from vavam.config import ActionConfig, VideoConfig

    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    if precision not in ("32", "bf16-mixed"):
        raise ValueError(f"precision must be '32' or 'bf16-mixed', got {precision!r}")
    config = _with_frames(config, frames)
    counts = counts or count_parameters(config)
    mixed = precision == "bf16-mixed"
    b = 2 if mixed else 4  # bytes of a matmul / attention output
    copies = 2 * counts.matmul_trainable if mixed else 0  # autocast's cached bf16 weights (saved by the matmuls)
    if isinstance(config, VideoConfig):
        c = config
        d, heads, r, layers = c.width, c.num_heads, c.mlp_ratio, c.num_layers
        n = micro_batch * (frames or c.num_frames) * c.tokens_per_frame
        block = n * _block_bytes(d, heads, r, mixed)
        head = n * (4 * d + 8 + b * d + 8)  # final LN input + stats, readout input, token ids
        transient = n * r * d * b  # MLP hidden gradient
        if activation_checkpointing:  # block inputs kept; one block recomputed at a time
            kept, recompute = layers * n * 4 * d, block
        else:
            kept, recompute = layers * block, 0
        return Activations(forward=kept + head + copies + 12 * n * c.vocab_size,
                           backward_top=kept + head + copies + recompute + transient,
                           backward_bottom=block + transient, tokens=n, autocast_copies=copies)
    if isinstance(config, ActionConfig):
        c, v = config, config.video
        t = frames or c.train_frames
        nv, na = micro_batch * t * v.tokens_per_frame, micro_batch * t * c.horizon
        d, e, heads, layers = v.width, c.width, v.num_heads, v.num_layers
        visual_kv = nv * 2 * d * b  # a layer's visual keys and values (copied out of its fused q/k/v buffer)
        visual_qkv = nv * 3 * d * b  # the fused q/k/v buffer of the layer being computed
        joint_kv = 2 * (nv + na) * d * b  # concatenated keys and values, saved by the expert's attention
        mask = t * c.horizon * t * (v.tokens_per_frame + c.horizon) * b  # action rows' mask as an additive bias
        expert = na * (_block_bytes(e, heads, 4, mixed) + (3 * d + d - 3 * e - e) * b)  # q/k/v and output at width d
        block = joint_kv + mask + expert
        encoder = na * 12 * e * 4  # action encoder, final LN, readout input (upper bound)
        transient = joint_kv + na * 4 * e * b  # full key/value gradients of a layer
        # the frozen visual stream (no autograd): all layers' q/k/v buffers + one block's temporaries
        # (x, LN1 and LN2 outputs, the bf16 copy of one, fc_in / GELU outputs) + a frozen weight's bf16 cast
        visual_block = nv * (3 * 4 * d + (2 * d if mixed else 0) + 2 * v.mlp_ratio * d * b)
        visual_peak = layers * visual_kv + visual_qkv + visual_block + (v.mlp_ratio * d * d * 2 if mixed else 0)
        if activation_checkpointing:  # vavam's recipe checkpoints the expert's MLPs only (ActionModule targets):
            # each layer drops its fc_in / GELU outputs and keeps the MLP input (the LN2 output, in fp32 under
            # autocast instead of its bf16 copy); the joint keys/values, mask and attention tensors stay saved
            mlp_hidden = na * 2 * 4 * e * b
            block_ckpt = block - mlp_hidden + (na * 2 * e if mixed else 0)
            return Activations(forward=max(layers * (visual_kv + block_ckpt) + encoder + copies, visual_peak),
                               backward_top=layers * block_ckpt + encoder + copies + mlp_hidden + transient,
                               backward_bottom=block + transient, tokens=nv, autocast_copies=copies)
        return Activations(forward=max(layers * (visual_kv + block) + encoder + copies, visual_peak),
                           backward_top=layers * block + encoder + copies + transient,  # visual buffers freed
                           backward_bottom=block + transient, tokens=nv, autocast_copies=copies)
    raise TypeError(f"no memory model for config {type(config).__name__} (VaViM / VaVAM only)")


def _state_bytes(counts: ParamCounts, devices: int, strategy: str, mixed: bool, device_type: str,
                 whole_unit: bool = False) -> dict[str, int]:
    """Parameters, gradients, AdamW moments, master weights, buffers and step temporaries per device
    (``whole_unit``: FSDP wraps the whole model as one unit, as for VaVAM)."""
    n, p, pt = devices, counts.total, counts.trainable
    compute = 2 if mixed else 4
    if strategy == "ddp":  # N > 1: the gradients are views of DDP's buckets (gradient_as_bucket_view=True)
        rows = {"parameters": 4 * p, "gradients": 4 * pt, "moments": 8 * pt, "master": 0, "buffers": 0}
        local_trainable = pt
    elif strategy == "fsdp":
        # gathered units in the compute dtype, and the unsharded gradient of one unit (+ its fp32 copy for the
        # float32 reduce-scatter under bf16-mixed: vavam's MixedPrecision(reduce_dtype=float32)). VaViM: a unit
        # per block + the root (embeddings); VaVAM: one unit for the whole model (ActionModule targets), whose
        # unsharded gradient spans its frozen parameters too (FSDP use_orig_params with mixed freezing)
        unit_grad = compute + (4 if mixed else 0)
        if whole_unit:
            gathered, unit_grads = p * compute, p * unit_grad
        else:
            gathered = (2 * counts.block + counts.non_block) * compute
            unit_grads = counts.layer_trainable * unit_grad
        rows = {"parameters": -(-4 * p // n), "gradients": -(-4 * (p if whole_unit else pt) // n),
                "moments": -(-8 * pt // n), "master": 0, "buffers": gathered, "unit_gradients": unit_grads}
        local_trainable = -(-pt // n)
    elif strategy == "deepspeed":
        rows = {"parameters": compute * p, "gradients": -(-compute * pt // n), "moments": -(-8 * pt // n),
                "master": -(-4 * pt // n), "buffers": 2 * DEEPSPEED_BUCKET * compute}
        local_trainable = -(-pt // n)
    else:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    rows.setdefault("unit_gradients", 0)
    if device_type == "cpu":  # single-tensor AdamW: sqrt and division temporaries of one parameter
        rows["step_temporaries"] = 2 * 4 * counts.largest_trainable
    else:  # foreach AdamW (ZeRO: over the flat fp32 partition): one fp32 tensor per local trainable element
        rows["step_temporaries"] = 4 * local_trainable
    if strategy == "deepspeed" and mixed:  # the fp32 gradient partition made for the optimiser step
        rows["step_temporaries"] += -(-4 * pt // n)
    return rows


def estimate_memory(
    config: Any,
    devices: int = 1,
    strategy: Strategy = "ddp",
    micro_batch: int = 1,
    precision: Precision = "bf16-mixed",
    activation_checkpointing: bool = False,
    frames: int | None = None,
    device_type: Literal["cuda", "cpu"] = "cuda",
) -> dict[str, Any]:
    """Per-device memory of training ``config`` (a VaViM or VaVAM config or preset name).

    Args:
        config: ``VideoConfig``, ``ActionConfig`` or a preset name.
        devices: data-parallel devices N (the micro-batch is per device).
        strategy: ``ddp``, ``fsdp`` (full shard) or ``deepspeed`` (ZeRO-2).
        micro_batch: samples per device and step.
        precision: ``"32"`` or ``"bf16-mixed"``.
        activation_checkpointing: one checkpoint per transformer block.
        frames: frames per sample (default: the config's training window).
        device_type: ``cuda`` (foreach AdamW) or ``cpu`` (single-tensor AdamW: how the CPU check runs).

    Returns:
        dict with ``parameters`` (counts), ``bytes`` (rows: parameters, gradients, moments, master,
        buffers, unit_gradients, activations, step_temporaries), ``phases`` (bytes live at the loss, top and
        bottom of the backward, and the optimiser step), ``peak_phase``, ``total`` (the peak, bytes per device),
        ``sum_of_rows`` (an upper bound) and the settings.
    """
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    config = _with_frames(_config_of(config), frames)
    counts = count_parameters(config)
    act = activation_bytes(config, micro_batch, precision, activation_checkpointing, frames, counts)
    mixed = precision == "bf16-mixed"
    from vavam.config import ActionConfig

    whole_unit = isinstance(config, ActionConfig)
    rows = _state_bytes(counts, devices, strategy, mixed, device_type, whole_unit=whole_unit)
    if strategy != "ddp":  # FSDP / DeepSpeed run the matmuls on bf16 weights: no autocast copies
        act = act.without_autocast_copies()
    static = rows["parameters"] + rows["moments"] + rows["master"] + rows["buffers"]
    grads = rows["gradients"]
    if strategy == "ddp" and devices > 1:  # the gradients live in DDP's buckets, allocated when it wraps the model
        live = dict.fromkeys(("forward", "backward_top", "backward_bottom"), grads)
    else:  # gradients appear during the backward (the non-block ones first) and are freed by zero_grad
        layer_grads = grads * counts.layer_trainable // max(counts.trainable, 1)
        first = grads * (counts.trainable - counts.layer_trainable * _num_layers(config)) // max(counts.trainable, 1)
        live = {"forward": 0, "backward_top": first, "backward_bottom": grads - layer_grads}
    # FSDP's unsharded gradient of a unit: every block's backward, or once at the end for a whole-model unit
    live["backward_top"] += 0 if whole_unit else rows["unit_gradients"]
    live["backward_bottom"] += rows["unit_gradients"]
    phases = {
        "forward": static + act.forward + live["forward"],
        "backward_top": static + act.backward_top + live["backward_top"],
        "backward_bottom": static + act.backward_bottom + live["backward_bottom"],
        "optimizer_step": static + grads + rows["step_temporaries"],
    }
    peak_phase = max(phases, key=phases.get)
    activations = max(act.forward, act.backward_top, act.backward_bottom)
    return {
        "config": type(config).__name__,
        "devices": devices,
        "strategy": strategy,
        "precision": precision,
        "micro_batch": micro_batch,
        "frames": frames if frames is not None else getattr(config, "train_frames", getattr(config, "num_frames", None)),
        "activation_checkpointing": activation_checkpointing,
        "tokens_per_micro_batch": act.tokens,
        "parameters": {"total": counts.total, "trainable": counts.trainable, "frozen": counts.frozen},
        "bytes": {**rows, "activations": activations},
        "phases": phases,
        "peak_phase": peak_phase,
        "total": phases[peak_phase],
        "sum_of_rows": static + grads + activations + rows["step_temporaries"] + rows["unit_gradients"],
        "activation_phases": dataclasses.asdict(act),
    }


def _num_layers(config: Any) -> int:
    video = getattr(config, "video", config)
    return int(video.num_layers)


def _unit(largest: int) -> tuple[str, int]:
    """GiB, or MiB for plans under 1 GiB (tiny presets)."""
    return ("GiB", GIB) if largest >= GIB else ("MiB", 1 << 20)


def plan_memory(
    preset: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="PRESET")],
    devices: int = 1,
    strategy: Strategy = "ddp",
    micro_batch: int = 1,
    precision: Precision = "bf16-mixed",
    activation_checkpointing: bool = False,
    frames: int | None = None,
) -> dict:
    """Estimate training memory per device (parameters, gradients, AdamW state, activations) for a preset.

    Prints a table comparing ddp, fsdp (full shard) and deepspeed (ZeRO-2) for these settings and
    returns the estimate of ``strategy`` (bytes; see :func:`estimate_memory`, formulas in the module
    docstring), with the other strategies' totals under ``compare``.

    Args:
        preset: a VaViM / VaVAM preset (vavim_tiny, vavim_s, vavim_b, vavim_l, vavam_s, ...).
        devices: data-parallel devices.
        strategy: ddp | fsdp | deepspeed.
        micro_batch: samples per device per step.
        precision: 32 | bf16-mixed.
        activation_checkpointing: checkpoint every transformer block.
        frames: frames per sample (default: the preset's training window).
    """
    from vavam.checks import check_positive_int

    for value, flag in ((devices, "--devices"), (micro_batch, "--micro-batch")):  # named as typed
        check_positive_int(value, flag)
    if frames is not None:
        check_positive_int(frames, "--frames")
    config = _config_of(preset)
    results = {s: estimate_memory(config, devices, s, micro_batch, precision, activation_checkpointing, frames)
               for s in STRATEGIES}
    chosen = dict(results[strategy])
    chosen["preset"] = preset
    chosen["compare"] = {s: r["total"] for s, r in results.items()}
    _print_table(preset, results, strategy)
    return chosen


def _print_table(preset: str, results: dict[str, dict], chosen: str) -> None:
    from rich.console import Console
    from rich.table import Table

    any_r = results[chosen]
    unit, scale = _unit(max(r["total"] for r in results.values()))
    p = any_r["parameters"]
    precision = "fp32" if any_r["precision"] == "32" else any_r["precision"]
    title = (f"{preset}: {p['total']:,} parameters ({p['trainable']:,} trainable), {any_r['devices']} device(s), "
             f"micro-batch {any_r['micro_batch']} x {any_r['frames']} frames, {precision}"
             f"{', activation checkpointing' if any_r['activation_checkpointing'] else ''} — {unit} per device")
    table = Table(title=title)
    table.add_column("")
    for s in STRATEGIES:
        label = {"ddp": "ddp", "fsdp": "fsdp (full shard)", "deepspeed": "deepspeed (ZeRO-2)"}[s]
        table.add_column(f"{label}{' *' if s == chosen else ''}", justify="right")
    rows = [("parameters", "parameters"), ("gradients", "gradients"), ("AdamW moments", "moments"),
            ("fp32 master weights", "master"), ("comm. / gather buffers", "buffers"),
            ("fsdp unit gradients", "unit_gradients"),
            ("activations (peak)", "activations"), ("AdamW step temporaries", "step_temporaries")]
    for label, key in rows:
        table.add_row(label, *[f"{results[s]['bytes'][key] / scale:.2f}" for s in STRATEGIES])
    table.add_row("total per device (peak)", *[f"[bold]{results[s]['total'] / scale:.2f}[/bold]" for s in STRATEGIES])
    table.add_row("peak phase", *[results[s]["peak_phase"] for s in STRATEGIES])
    Console().print(table)
