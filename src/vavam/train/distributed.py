"""Scale-out training: the global batch, Lightning strategy objects, activation checkpointing, compile.

One optimiser step consumes a **global batch** of ``G = micro_batch x world_size x accumulate``
samples: every rank runs ``accumulate`` forward/backward passes of ``micro_batch`` samples, the
gradients are averaged over ranks (DDP all-reduce, FSDP reduce-scatter, DeepSpeed ZeRO) and summed
over the accumulation passes (each loss scaled by ``1 / accumulate``). With mean losses this is the
gradient of the mean loss over the ``G`` samples, so a run on ``N`` devices equals (to float
tolerance) a run on one device with the same global batch: :class:`vavam.train.resume.StepBatchSampler`
gives step ``k`` the stream positions ``[k*G, (k+1)*G)`` however they are split.

Strategies (:func:`make_strategy`):

- ``auto``: one device -> Lightning's single-device strategy; several -> ``ddp``;
- ``ddp``: :class:`~lightning.pytorch.strategies.DDPStrategy` (gloo on CPU, nccl on GPUs; no unused-parameter
  search, gradients as bucket views);
- ``fsdp``: :class:`ShardedStrategy`, Lightning's FSDP (``FULL_SHARD``, ``use_orig_params`` so that the muP
  parameter groups keep their names) with one FSDP unit per module type the LightningModule names
  (VaViM: its transformer blocks), norm-based gradient clipping through the root FSDP module, bf16
  compute with float32 gradient reduction for ``bf16-mixed``, and CPU devices allowed (gloo);
- ``deepspeed``: Lightning's ``DeepSpeedStrategy(stage=2)`` (the released models' ZeRO-2), built only when
  the ``deepspeed`` package is importable (it needs CUDA); otherwise a clear error.

Activation checkpointing and ``torch.compile`` act on modules that the LightningModule names
(:class:`ModuleTargets`) and are applied from outside the model: the models stay plain ``nn.Module`` s,
and their ``state_dict`` keys do not change (the checkpoint wrapper strips its prefix; ``Module.compile``
compiles in place).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

StrategyName = Literal["auto", "ddp", "fsdp", "deepspeed"]
CheckpointFormat = Literal["full", "sharded"]
STRATEGIES: tuple[str, ...] = ("auto", "ddp", "fsdp", "deepspeed")

#: name prefixes that wrappers add to parameter names (``named_parameters``), not to state dicts.
WRAPPER_PREFIXES: tuple[str, ...] = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.",
                                     "_forward_module.")

__all__ = [
    "STRATEGIES",
    "StrategyUnavailable",
    "BatchPlan",
    "ModuleTargets",
    "ScaleOut",
    "apply_activation_checkpointing",
    "clean_name",
    "compile_modules",
    "deepspeed_available",
    "make_strategy",
    "plan_batch",
]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


# --------------------------------------------------------------------------- batch arithmetic

@dataclass(frozen=True)
class BatchPlan:
    """How a global batch is split: ``micro_batch`` samples per device and pass, ``world_size`` ranks,
    ``accumulate`` passes per optimiser step."""

    micro_batch: int
    world_size: int
    accumulate: int

    @property
    def global_batch(self) -> int:
        """Samples per optimiser step: ``micro_batch x world_size x accumulate``."""
        return self.micro_batch * self.world_size * self.accumulate

    @property
    def stream_batch(self) -> int:
        """Samples per pass over all ranks (one sampler step): ``micro_batch x world_size``."""
        return self.micro_batch * self.world_size


def plan_batch(batch_size: int, devices: int = 1, nodes: int = 1, global_batch: int | None = None,
               accumulate: int = 1) -> BatchPlan:
    """Split a global batch into ``batch_size`` per device x ``devices x nodes`` ranks x accumulation.

    Args:
        batch_size: samples per device and forward pass (the micro batch).
        devices: devices (processes) per node; nodes: machines.
        global_batch: samples per optimiser step; when given, ``accumulate`` is derived from it
            (``global_batch / (batch_size x devices x nodes)``, which must be a whole number).
        accumulate: forward/backward passes per optimiser step when ``global_batch`` is not given.

    Raises:
        ValueError: a non-positive argument, a global batch that the micro batches do not divide, or an
            ``accumulate`` that contradicts ``global_batch``.
    """
    _positive_int(batch_size, "--batch-size")
    _positive_int(devices, "--devices")
    _positive_int(nodes, "--nodes")
    _positive_int(accumulate, "--accumulate")
    world = devices * nodes
    if global_batch is None:
        return BatchPlan(batch_size, world, accumulate)
    _positive_int(global_batch, "--global-batch")
    per_pass = batch_size * world
    if global_batch % per_pass:
        divisors = [b for b in range(1, global_batch // world + 1) if (global_batch // world) % b == 0] \
            if global_batch % world == 0 else []
        hint = (f"; batch sizes that divide it on {world} device(s): {divisors}" if divisors
                else f"; {global_batch} is not even a multiple of the {world} device(s)")
        raise ValueError(f"--global-batch {global_batch} is not a multiple of --batch-size {batch_size} x --devices "
                         f"{devices} x --nodes {nodes} = {per_pass}{hint}")
    derived = global_batch // per_pass
    if accumulate not in (1, derived):
        raise ValueError(f"--accumulate {accumulate} contradicts --global-batch {global_batch} = --batch-size "
                         f"{batch_size} x {world} device(s) x {derived}; give one of them")
    return BatchPlan(batch_size, world, derived)


# --------------------------------------------------------------------------- what to wrap

@dataclass(frozen=True)
class ModuleTargets:
    """Modules of a LightningModule that scale-out wraps (declared by the LightningModule).

    Attributes:
        fsdp_units: module types that become one FSDP unit each (their ``forward`` must be called; empty:
            one unit for the whole model).
        checkpoint: module instances whose activations are recomputed in backward (activation checkpointing).
        compile: module instances compiled with ``torch.compile`` (regional compilation).
    """

    fsdp_units: tuple[type[nn.Module], ...] = ()
    checkpoint: tuple[nn.Module, ...] = ()
    compile: tuple[nn.Module, ...] = ()


@dataclass(frozen=True)
class ScaleOut:
    """Scale-out settings of one training run (the ``vavam train ...`` options of the same names)."""

    devices: int = 1
    nodes: int = 1
    strategy: StrategyName = "auto"
    accumulate: int = 1
    activation_checkpointing: bool = False
    compile: bool = False
    checkpoint_format: CheckpointFormat = "full"

    def __post_init__(self) -> None:
        _positive_int(self.devices, "devices")
        _positive_int(self.nodes, "nodes")
        _positive_int(self.accumulate, "accumulate")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.checkpoint_format not in ("full", "sharded"):
            raise ValueError(f"checkpoint_format must be 'full' or 'sharded', got {self.checkpoint_format!r}")
        if self.checkpoint_format == "sharded" and self.strategy != "fsdp":
            raise ValueError("checkpoint_format 'sharded' is an FSDP option (strategy 'fsdp'); DeepSpeed always "
                             "writes sharded folders and DDP full files")

    @property
    def world_size(self) -> int:
        """Ranks: ``devices x nodes``."""
        return self.devices * self.nodes

    @property
    def resolved_strategy(self) -> str:
        """The strategy actually used: ``auto`` becomes ``single`` (one rank) or ``ddp``."""
        if self.strategy == "auto":
            return "single" if self.world_size == 1 else "ddp"
        return self.strategy


def clean_name(name: str) -> str:
    """A parameter name without wrapper prefixes (FSDP, activation checkpointing, compile, Lightning)."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


# --------------------------------------------------------------------------- activation checkpointing / compile

def apply_activation_checkpointing(root: nn.Module, modules: Iterable[nn.Module]) -> int:
    """Wrap every module of ``modules`` found inside ``root`` in a non-reentrant checkpoint wrapper.

    Its activations are then recomputed during backward instead of being kept. ``state_dict`` keys
    are unchanged (the wrapper removes its ``_checkpoint_wrapped_module.`` prefix). Modules already
    wrapped are left alone.

    Returns:
        the number of modules wrapped.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        CheckpointWrapper,
        checkpoint_wrapper,
    )
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing as _apply,
    )

    wrapped_inside = {id(m._checkpoint_wrapped_module) for m in root.modules() if isinstance(m, CheckpointWrapper)}
    ids = {id(m) for m in modules if not isinstance(m, CheckpointWrapper)} - wrapped_inside
    if not ids:
        return 0
    count = sum(1 for m in root.modules() if id(m) in ids)
    _apply(root, checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
           check_fn=lambda m: id(m) in ids)
    return count


def compile_modules(modules: Iterable[nn.Module], **options: Any) -> int:
    """``torch.compile`` each module in place (``Module.compile``: parameters and state-dict keys unchanged).

    ``options`` go to ``torch.compile`` (e.g. ``backend="eager"`` in tests). Returns the number compiled.
    """
    count = 0
    for module in modules:
        module.compile(**options)
        count += 1
    return count


# --------------------------------------------------------------------------- strategies

def deepspeed_available() -> bool:
    """True when the ``deepspeed`` package can be imported (it is an optional, CUDA-only dependency)."""
    return importlib.util.find_spec("deepspeed") is not None


class StrategyUnavailable(ValueError):
    """The ``--strategy`` asked for cannot run on this machine (e.g. ``deepspeed`` without its package); the
    command line reports it in one line, like other bad input."""


def _require_deepspeed(what: str) -> None:
    if not deepspeed_available():
        raise StrategyUnavailable(
            f"{what} needs the 'deepspeed' package, which is not installed. Install it on a machine with CUDA "
            "(pip install deepspeed) or use --strategy ddp / fsdp, which need nothing beyond torch.")


def _lightning_precision(precision: str) -> str:
    return {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}.get(str(precision), str(precision))


def _fsdp_classes() -> tuple[type, type]:
    """(ShardedStrategy, ClippingFSDPPrecision), defined lazily so that importing this module stays cheap."""
    global _FSDP_CLASSES
    if _FSDP_CLASSES is not None:
        return _FSDP_CLASSES
    from lightning.pytorch.plugins.precision import FSDPPrecision
    from lightning.pytorch.strategies import FSDPStrategy

    class ClippingFSDPPrecision(FSDPPrecision):
        """FSDP precision whose norm clipping goes through the root FSDP module (the global norm over shards)."""

        root: nn.Module | None = None

        def clip_grad_by_norm(self, optimizer: Any, clip_val: float) -> None:
            if self.root is None:
                raise RuntimeError("ClippingFSDPPrecision: the FSDP root module is not set (strategy not set up)")
            self.root.clip_grad_norm_(clip_val)

    class _ShardedStrategy(FSDPStrategy):
        """Lightning's FSDP with vavam's settings (see :func:`make_strategy`): CPU devices allowed (gloo),
        activation checkpointing of named module instances after wrapping, hash-checked full checkpoints."""

        def __init__(self, *args: Any, checkpoint_modules: Sequence[nn.Module] = (), **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.checkpoint_modules = tuple(checkpoint_modules)

        def _setup_model(self, model: nn.Module) -> nn.Module:
            from torch.distributed.fsdp import FullyShardedDataParallel

            device = self.root_device
            # torch's FSDP refuses CPU unless the device is given explicitly; Lightning passes only the CUDA index
            wrapped = FullyShardedDataParallel(
                module=model, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=device if device.type == "cpu" else device.index, **self.kwargs)
            if self.checkpoint_modules:
                apply_activation_checkpointing(wrapped, self.checkpoint_modules)
            if isinstance(self.precision_plugin, ClippingFSDPPrecision):
                self.precision_plugin.root = wrapped
            return wrapped

        # Full state dicts on CPU devices: Lightning asks FSDP to offload the gathered tensors to the CPU,
        # which on a CPU device frees memory that the copy still reads (a segfault with torch 2.13). On CPU
        # every rank gathers without offloading instead (CPU FSDP is for tests; GPUs keep Lightning's path).
        def _cpu_full(self) -> bool:
            return self._state_dict_type == "full" and self.root_device.type == "cpu"

        def _cpu_full_context(self) -> Any:
            from torch.distributed.fsdp import FullStateDictConfig, StateDictType
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
            from torch.distributed.fsdp.api import FullOptimStateDictConfig

            return FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                        FullStateDictConfig(offload_to_cpu=False, rank0_only=False),
                                        FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=False))

        def lightning_module_state_dict(self) -> dict[str, Any]:
            if not self._cpu_full():
                return super().lightning_module_state_dict()
            with self._cpu_full_context():
                return self.model.state_dict()

        def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
            if not self._cpu_full():
                return super().optimizer_state(optimizer)
            from lightning.pytorch.core.optimizer import LightningOptimizer
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
            from torch.distributed.fsdp import OptimStateKeyType

            if isinstance(optimizer, LightningOptimizer):
                optimizer = optimizer._optimizer
            with self._cpu_full_context():
                state = FSDP.optim_state_dict(self.model, optimizer)
                return FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)

        def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
            from pathlib import Path

            from vavam.train.resume import read_checkpoint

            path = Path(self.broadcast(checkpoint_path))
            if path.is_file():  # full checkpoint: check its hash and that it unpickles weights-only first
                read_checkpoint(path)
            return super().load_checkpoint(path, weights_only=weights_only)

    _FSDP_CLASSES = (_ShardedStrategy, ClippingFSDPPrecision)
    return _FSDP_CLASSES


_FSDP_CLASSES: tuple[type, type] | None = None


def __getattr__(name: str) -> Any:  # ShardedStrategy is built on first use (imports Lightning's FSDP)
    if name == "ShardedStrategy":
        return _fsdp_classes()[0]
    raise AttributeError(name)


def make_strategy(scale: ScaleOut, targets: ModuleTargets = ModuleTargets(), precision: str = "32") -> Any:
    """The Lightning ``strategy`` argument for ``scale`` (a string or a Strategy object).

    Args:
        scale: devices, nodes, strategy name, activation checkpointing, checkpoint format.
        targets: FSDP units and modules to checkpoint (FSDP applies checkpointing after wrapping; other
            strategies get it from :func:`prepare_module` before training).
        precision: ``"32"`` or ``"bf16-mixed"`` (FSDP: bf16 compute and storage of unsharded parameters,
            float32 gradient reduction and master weights).

    Raises:
        RuntimeError: ``deepspeed`` asked for but not installed.
    """
    name = scale.resolved_strategy
    if name == "single":
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=False, gradient_as_bucket_view=True)
    if name == "fsdp":
        from torch.distributed.fsdp import MixedPrecision
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        strategy_cls, precision_cls = _fsdp_classes()
        lightning_precision = _lightning_precision(precision)
        mixed = None
        if lightning_precision == "bf16-mixed":
            mixed = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.float32)
        return strategy_cls(
            auto_wrap_policy=ModuleWrapPolicy(set(targets.fsdp_units)) if targets.fsdp_units else None,
            use_orig_params=True, sharding_strategy="FULL_SHARD", state_dict_type=scale.checkpoint_format,
            mixed_precision=mixed, limit_all_gathers=True, precision_plugin=precision_cls(lightning_precision),
            checkpoint_modules=targets.checkpoint if scale.activation_checkpointing else ())
    if name == "deepspeed":
        _require_deepspeed("strategy 'deepspeed'")
        from lightning.pytorch.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(stage=2)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {scale.strategy!r}")


def prepare_module(scale: ScaleOut, root: nn.Module, targets: ModuleTargets,
                   compile_options: dict[str, Any] | None = None) -> dict[str, int]:
    """Apply what must happen before Lightning wraps ``root``: activation checkpointing (all strategies
    but FSDP, which applies it after wrapping) and ``torch.compile`` of the target modules.

    Returns:
        counts ``{"checkpointed": n, "compiled": n}`` for the run summary.
    """
    done = {"checkpointed": 0, "compiled": 0}
    if scale.activation_checkpointing and scale.resolved_strategy != "fsdp":
        done["checkpointed"] = apply_activation_checkpointing(root, targets.checkpoint)
    elif scale.activation_checkpointing:
        done["checkpointed"] = len(targets.checkpoint)
    if scale.compile:
        done["compiled"] = compile_modules(targets.compile, **(compile_options or {}))
    return done


def rank_of(trainer: Any) -> tuple[int, int]:
    """(global rank, world size) of a Lightning trainer."""
    return int(trainer.global_rank), int(trainer.world_size)


def is_sharded(trainer: Any) -> bool:
    """True when the trainer's strategy shards parameters (FSDP): module parameters are then local shards."""
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(trainer.strategy, FSDPStrategy)


def gathered_parameters(trainer: Any) -> Any:
    """Context manager in which the LightningModule's parameters are whole on every rank (FSDP:
    ``summon_full_params`` of the root module, a collective every rank must enter; else a no-op)."""
    from contextlib import nullcontext

    if not is_sharded(trainer):
        return nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(trainer.model, writeback=False)


def environment_world() -> tuple[int, int, int] | None:
    """(rank, local rank, world size) from a launcher's environment (torchrun, SLURM via torchrun), or None."""
    import os

    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"])
    return None


def join_launch_group(device: str | torch.device, local_rank: int) -> tuple[torch.device, bool]:
    """A launched process's device and process group: ``cuda`` becomes (and is set as) ``cuda:local_rank``;
    the default group is started (NCCL on CUDA, else gloo) unless one exists. Returns ``(device, started)``."""
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    started = not distributed_initialized()
    if started:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, started


def check_launch(scale: ScaleOut, command: str) -> None:
    """Raise a clear error when the launcher's world size (torchrun) disagrees with ``devices x nodes``, or its
    processes per machine (``LOCAL_WORLD_SIZE``, torchrun's ``--nproc_per_node``) with ``devices``: Lightning
    takes rank ``LOCAL_RANK``'s device from a list of ``devices`` and would fail with an IndexError (or leave
    devices unused) at the same world size."""
    import os

    env = environment_world()
    if env is None:
        return
    if env[2] != scale.world_size:
        raise ValueError(f"{command}: the launcher started {env[2]} processes but devices {scale.devices} x nodes "
                         f"{scale.nodes} = {scale.world_size}; make them agree")
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    if local.isdigit() and int(local) > 0 and int(local) != scale.devices:
        per_node = int(local)
        raise ValueError(f"{command}: the launcher started {per_node} processes per machine (--nproc_per_node) but "
                         f"--devices {scale.devices} x --nodes {scale.nodes}; --devices counts the processes of one "
                         f"machine: --devices {per_node} --nodes {scale.world_size // per_node}")


def recipe_global_batch(func: Any, args: dict[str, Any], given: dict[str, Any]) -> None:
    """Read a recipe's ``batch_size`` as its **global** batch (the released recipes' 384 sequences).

    When a recipe filled ``batch_size`` (the caller left it at ``func``'s default) and the caller gave
    no ``global_batch``, ``args`` gets ``global_batch`` = the recipe's batch and ``batch_size`` = that
    divided over ``devices x nodes x accumulate`` ranks and passes. A batch size given explicitly wins
    (it is then the per-device batch and the global batch follows from it). Modifies ``args`` in place.

    Raises:
        ValueError: the recipe's global batch does not split evenly over the ranks and passes.
    """
    import inspect

    from vavam.train.recipes import typed

    default_batch_size = inspect.signature(func).parameters["batch_size"].default
    explicit_batch = given["batch_size"] != default_batch_size or "batch_size" in typed()
    if given.get("recipe") is None or given.get("global_batch") is not None or explicit_batch:
        return
    recipe_batch = int(args["batch_size"])
    split = int(args.get("devices", 1)) * int(args.get("nodes", 1)) * int(args.get("accumulate", 1))
    if recipe_batch % split:
        raise ValueError(f"recipe {given['recipe']!r}: its global batch {recipe_batch} does not split over "
                         f"{split} device(s) x accumulation passes; pass --batch-size (per device) and "
                         f"--global-batch {recipe_batch}")
    args["global_batch"] = recipe_batch
    args["batch_size"] = recipe_batch // split


def scale_summary(scale: ScaleOut, plan: BatchPlan) -> dict[str, Any]:
    """JSON-able description of a run's scale-out (for summaries and checkpoint metadata)."""
    return {"strategy": scale.resolved_strategy, "devices": scale.devices, "nodes": scale.nodes,
            "world_size": plan.world_size, "micro_batch": plan.micro_batch, "accumulate": plan.accumulate,
            "global_batch": plan.global_batch, "activation_checkpointing": scale.activation_checkpointing,
            "compile": scale.compile, "checkpoint_format": scale.checkpoint_format}


def distributed_initialized() -> bool:
    """True when a ``torch.distributed`` process group exists in this process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def process_rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process's ``torch.distributed`` group; (0, 1) without one."""
    if distributed_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def finish_distributed() -> None:
    """End of a multi-process run: wait until every rank is done (rank 0 writes last), and make sure the
    process group is destroyed when the process exits (exiting with a live gloo / nccl group can abort the
    process, which the launcher then reports as a failed run). The group itself stays for further runs
    in the same processes."""
    if not distributed_initialized():
        return
    torch.distributed.barrier()
    global _EXIT_HOOK
    if not _EXIT_HOOK:
        import atexit

        atexit.register(_destroy_process_group)
        _EXIT_HOOK = True


_EXIT_HOOK = False


def _destroy_process_group() -> None:
    if distributed_initialized():
        torch.distributed.destroy_process_group()


class LoopParallel:
    """Data parallelism for a plain training loop (the tokenizer's): ranks come from the launcher's
    environment (``torchrun``), gradients are averaged by one flat all-reduce per step, decisions and
    per-step statistics are agreed by collectives. With one rank every method is the identity.

    Args:
        scale: devices x nodes must equal the launcher's world size; only ``ddp`` / ``auto`` strategies.
        device: ``cpu`` or ``cuda`` (each rank then takes ``cuda:LOCAL_RANK``).
        command: the command name, for error messages.

    Raises:
        ValueError: several devices asked for without a launcher, a world-size mismatch, or a sharding strategy.
    """

    def __init__(self, scale: ScaleOut, device: str = "cpu", command: str = "vavam train tokenizer") -> None:
        if scale.resolved_strategy in ("fsdp", "deepspeed"):
            raise ValueError(f"{command}: strategy {scale.strategy!r} is not supported here (the tokenizer is small "
                             "enough to replicate); use --strategy ddp")
        self.world_size, self.rank, self.local_rank = scale.world_size, 0, 0
        self.device = torch.device(device)
        self.owns_group = False
        if scale.world_size == 1:
            return
        env = environment_world()
        if env is None:
            raise ValueError(
                f"{command}: {scale.world_size} devices asked for, but this process was not started by a launcher. "
                f"Run: torchrun --nproc_per_node {scale.devices} --nnodes {scale.nodes} -m vavam.cli "
                f"{command.removeprefix('vavam ')} ... (see docs/scale-out.md)")
        check_launch(scale, command)
        self.rank, self.local_rank, _ = env
        self.device, self.owns_group = join_launch_group(self.device, self.local_rank)

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that writes files)."""
        return self.rank == 0

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over ranks (a missing gradient counts as zeros)."""
        if self.world_size == 1:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1).float() for p in params]).to(self._comm_device())
        torch.distributed.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad).to(p.grad.device, p.grad.dtype))
            offset += n

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate equally shaped ``[n, ...]`` tensors of all ranks along dim 0, in rank order."""
        if self.world_size == 1:
            return tensor
        local = tensor.contiguous().to(self._comm_device())
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, local)
        return torch.cat(parts).to(tensor.device)

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([0 if flag else 1], device=self._comm_device())
        torch.distributed.all_reduce(t)
        return int(t) == 0

    def max_int(self, value: int) -> int:
        """The largest ``value`` over ranks."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self._comm_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Per-key mean over ranks of a dict of floats with the same keys on every rank."""
        if self.world_size == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self._comm_device())
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        """Wait for every rank, then leave the process group to be destroyed at exit (see :func:`finish_distributed`)."""
        if self.world_size > 1:
            finish_distributed()
