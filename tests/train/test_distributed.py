"""Scale-out training: global-batch arithmetic, strategies, activation checkpointing / compile from
outside the models, sharded-folder checkpoints, and (slow) real 2-process runs on CPU with gloo that
give the weights of a 1-process run with the same global batch.

Two references: against one process with a batch of 4, the 2-process runs sum gradients in another
order, and AdamW divides each update by sqrt(v) + 1e-8, so entries whose gradient is ~1e-8
(cancellations) turn the 1e-7 relative float32 reordering into visible update differences (3.5e-4 after
3 steps at lr 0.01 with muP's lr / m = 0.04 on tiny matrices); that comparison runs in float64, where it
agrees to ~1e-12 and pins the arithmetic (data split, loss scaling, gradient averaging, flow noise).
In float32 the reference is one process accumulating the same 2 + 2 micro batches, which DDP matches
bit for bit (both form g0/2 + g1/2) and FSDP (which cannot run in float64) to 1e-7.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_action_training import _frozen_video, _write_scenes
from test_video_training import _moving_store

import vavam
from vavam.train import distributed as dist_mod
from vavam.train.distributed import (
    ModuleTargets,
    ScaleOut,
    apply_activation_checkpointing,
    clean_name,
    compile_modules,
    make_strategy,
    plan_batch,
    recipe_global_batch,
)
from vavam.train.resume import (
    CheckpointError,
    find_resume_checkpoint,
    prune_checkpoints,
    verify_checkpoint,
    write_folder_manifest,
)

DRIVER = Path(__file__).with_name("distributed_driver.py")


# --------------------------------------------------------------------------- batch arithmetic


def test_plan_batch_splits_the_global_batch():
    p = plan_batch(6, devices=4, nodes=16, global_batch=384)  # VaViM-S pretraining: 6 x 64 GPUs
    assert (p.micro_batch, p.world_size, p.accumulate, p.global_batch) == (6, 64, 1, 384)
    p = plan_batch(6, devices=4, global_batch=384)  # same recipe on one node: 16 accumulation passes
    assert (p.accumulate, p.global_batch, p.stream_batch) == (16, 384, 24)
    assert plan_batch(3, devices=2, accumulate=5).global_batch == 30
    with pytest.raises(ValueError, match=r"--global-batch 384 is not a multiple of --batch-size 5 x --devices 4 x --nodes 1 = 20"):
        plan_batch(5, devices=4, global_batch=384)
    with pytest.raises(ValueError, match="--accumulate 3 contradicts --global-batch 384"):
        plan_batch(6, devices=4, global_batch=384, accumulate=3)
    with pytest.raises(ValueError, match="--devices must be a positive integer"):
        plan_batch(6, devices=0)


def test_recipe_batch_is_the_global_batch():
    from vavam.train.video import train_video

    given = {"recipe": "pretrain", "batch_size": 8, "global_batch": None, "devices": 4, "nodes": 16, "accumulate": 1}
    args = dict(given, batch_size=384)  # as apply_recipe fills it
    recipe_global_batch(train_video, args, given)
    assert (args["batch_size"], args["global_batch"]) == (6, 384)
    given = dict(given, batch_size=3, nodes=1)  # an explicit per-device batch wins
    args = dict(given)
    recipe_global_batch(train_video, args, given)
    assert (args["batch_size"], args["global_batch"]) == (3, None)
    given = {"recipe": "pretrain", "batch_size": 8, "global_batch": None, "devices": 5, "nodes": 1, "accumulate": 1}
    with pytest.raises(ValueError, match="does not split over 5"):
        recipe_global_batch(train_video, dict(given, batch_size=384), given)


def test_scale_out_settings_are_checked(monkeypatch):
    assert ScaleOut(devices=2).resolved_strategy == "ddp" and ScaleOut().resolved_strategy == "single"
    with pytest.raises(ValueError, match="strategy must be one of"):
        ScaleOut(strategy="zero3")
    with pytest.raises(ValueError, match="FSDP option"):
        ScaleOut(devices=2, strategy="ddp", checkpoint_format="sharded")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="launcher started 4 processes but devices 2 x nodes 1 = 2"):
        dist_mod.check_launch(ScaleOut(devices=2), "vavam train video")
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match="torchrun --nproc_per_node 2"):
        dist_mod.LoopParallel(ScaleOut(devices=2))
    with pytest.raises(ValueError, match="use --strategy ddp"):
        dist_mod.LoopParallel(ScaleOut(devices=2, strategy="fsdp"))


# --------------------------------------------------------------------------- strategies


def test_strategies_are_built_lazily_and_deepspeed_fails_clearly(monkeypatch):
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    from vavam.nn import Block

    assert make_strategy(ScaleOut()) == "auto"
    assert isinstance(make_strategy(ScaleOut(devices=2)), DDPStrategy)
    fsdp = make_strategy(ScaleOut(devices=2, strategy="fsdp", checkpoint_format="sharded"),
                         ModuleTargets(fsdp_units=(Block,)), precision="bf16-mixed")
    assert isinstance(fsdp, FSDPStrategy) and type(fsdp) is not FSDPStrategy  # a subclass: CPU devices allowed
    assert fsdp.kwargs["use_orig_params"] is True and fsdp._state_dict_type == "sharded"
    mp = fsdp.mixed_precision_config
    assert (mp.param_dtype, mp.reduce_dtype) == (torch.bfloat16, torch.float32)
    monkeypatch.setattr(dist_mod, "deepspeed_available", lambda: False)
    with pytest.raises(dist_mod.StrategyUnavailable, match="needs the 'deepspeed' package.*--strategy ddp / fsdp"):
        make_strategy(ScaleOut(devices=2, strategy="deepspeed"))


def test_fsdp_wraps_each_block_and_checkpoints_it_on_cpu(tmp_path):
    """The FSDP strategy on a CPU device (a 1-process gloo group): one unit per VaViM block, activation
    checkpointing applied inside the units after wrapping, clipping through the root module, muP groups
    intact (the multipliers were taken before sharding flattened the parameters)."""
    import torch.distributed as tdist
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
    from torch.distributed.fsdp import FullyShardedDataParallel

    from vavam.train.video import VideoLitModule

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        module = VideoLitModule(vavam.presets.vavim_tiny())
        strategy = make_strategy(ScaleOut(devices=2, strategy="fsdp", activation_checkpointing=True),
                                 module.distributed_targets())
        strategy.parallel_devices = [torch.device("cpu")]
        wrapped = strategy._setup_model(module)
        units = [m for m in wrapped.modules() if isinstance(m, FullyShardedDataParallel)]
        assert len(units) == 1 + len(module.model.blocks)  # the root + one per block
        assert sum(isinstance(m, CheckpointWrapper) for m in wrapped.modules()) == len(module.model.blocks)
        assert strategy.precision_plugin.root is wrapped  # clipping uses the root's global norm
        # the optimiser still finds every muP multiplier through the wrappers
        groups = module.configure_optimizers()["optimizer"].param_groups
        assert sorted(g["width_mult"] for g in groups) == [module.model.config.width_mult, 1.0]
    finally:
        tdist.destroy_process_group()


def test_activation_checkpointing_and_compile_keep_names_and_numbers():
    model = vavam.build_model(vavam.presets.vavim_tiny())
    tokens = torch.randint(0, model.config.vocab_size, (2, 2, 2, 3))
    ref = vavam.build_model(model.config)
    ref.load_state_dict(model.state_dict())
    assert apply_activation_checkpointing(model, list(model.blocks)) == len(model.blocks)
    assert apply_activation_checkpointing(model, list(model.blocks)) == 0  # already wrapped
    assert list(model.state_dict()) == list(ref.state_dict())  # state-dict keys unchanged
    assert any("_checkpoint_wrapped_module" in n for n, _ in model.named_parameters())
    assert {clean_name(n) for n, _ in model.named_parameters()} == {n for n, _ in ref.named_parameters()}
    for m in (model, ref):
        m(tokens[..., :2, :3]).logsumexp(-1).mean().backward()
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[clean_name(name)].grad, rtol=0, atol=1e-6)
    assert compile_modules(list(ref.blocks), backend="eager") == len(ref.blocks)
    with torch.no_grad():
        torch.testing.assert_close(ref(tokens), model(tokens), rtol=0, atol=1e-6)
    assert list(ref.state_dict()) == list(model.state_dict())


def test_mup_groups_survive_wrapping():
    from vavam.train.video import VideoLitModule

    def groups(module):
        opt = module.configure_optimizers()["optimizer"]
        return [(g["width_mult"], g["lr"], sum(p.numel() for p in g["params"])) for g in opt.param_groups]

    plain = VideoLitModule(vavam.presets.vavim_tiny(), lr=0.01)
    wrapped = VideoLitModule(vavam.presets.vavim_tiny(), lr=0.01)
    apply_activation_checkpointing(wrapped, wrapped.distributed_targets().checkpoint)
    assert groups(plain) == groups(wrapped) and len(groups(plain)) == 2  # embeddings (m=1) and block matrices


# --------------------------------------------------------------------------- sharded checkpoint folders


def test_checkpoint_folders_are_verified_and_pruned(tmp_path):
    ckpts = tmp_path / "checkpoints"
    for step in (2, 4):
        folder = ckpts / f"step-{step:08d}.ckpt"
        folder.mkdir(parents=True)
        (folder / "__0_0.distcp").write_bytes(b"x" * 100)
        (folder / "meta.pt").write_bytes(b"y" * 10)
        write_folder_manifest(folder, step)
    verify_checkpoint(ckpts / "step-00000004.ckpt")
    (ckpts / "step-00000004.ckpt" / "__0_0.distcp").write_bytes(b"x" * 50)  # truncated shard
    with pytest.raises(CheckpointError, match="missing or truncated"):
        verify_checkpoint(ckpts / "step-00000004.ckpt")
    with pytest.warns(UserWarning, match="skipping unusable checkpoint"):
        assert find_resume_checkpoint(tmp_path).name == "step-00000002.ckpt"
    (ckpts / "step-00000006.ckpt").mkdir()  # a folder without its file list: a kill while writing
    with pytest.raises(CheckpointError, match="without a readable file list"):
        verify_checkpoint(ckpts / "step-00000006.ckpt")
    prune_checkpoints(tmp_path, keep=1)
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000006.ckpt"]


# --------------------------------------------------------------------------- 2 processes vs 1 process

VIDEO = {"preset": "vavim_tiny", "steps": 3, "num_frames": 2, "progress": False, "seed": 3}
ACTION = {"preset": "vavam_tiny", "steps": 3, "progress": False, "seed": 5}
TOKENIZER = {"preset": "vq_tiny", "steps": 3, "image_size": (32, 64), "val_frames": 4, "log_every": 1, "ckpt_every": 3,
                 "warmup_steps": 1, "dead_code_window": 2, "progress": False, "seed": 2}
LR64, LR32 = 0.01, 5e-4  # float32: a small lr keeps AdamW's near-eps amplification of reorderings small


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model" / "model.safetensors")


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _val_loss(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["metrics"]["val/loss"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One torchrun launch of 2 gloo processes running every multi-process case, and the 1-process references."""
    root = tmp_path_factory.mktemp("dist")
    _moving_store(root / "vtok", num_scenes=4, num_frames=8, grid=(2, 3), codes=16)
    _write_scenes(root, num_scenes=4, num_frames=12)
    # validation sets of 9 windows: shards of 5 per rank, the last padded (5 + 4 real)
    _moving_store(root / "vval", num_scenes=3, num_frames=4, grid=(2, 3), codes=16, seed=1)
    (root / "aval").mkdir()
    _write_scenes(root / "aval", num_scenes=3, num_frames=12, seed=1)
    vim = _frozen_video(root)
    video = dict(VIDEO, tokens=str(root / "vtok"), val_tokens=[str(root / "vval")], val_every=3)
    action = dict(ACTION, video=str(vim), records=str(root / "records.npz"), tokens=str(root / "tok"),
                  val_records=str(root / "aval" / "records.npz"), val_tokens=str(root / "aval" / "tok"), val_every=3)
    two = {"devices": 2, "batch_size": 2}
    sharded = dict(strategy="fsdp", checkpoint_format="sharded", lr=LR32, **two)
    cases = [
        dict(kind="video", out="v_ddp64", strategy="ddp", precision="64-true", lr=LR64, **two, **video),
        dict(kind="action", out="a_ddp64", strategy="ddp", precision="64-true", lr=LR64, plot_every=2, **two,
             **action),
        dict(kind="video", out="v_ddp", strategy="ddp", lr=LR32, **two, **video),
        dict(kind="action", out="a_ddp", strategy="ddp", lr=LR32, plot_every=0, **two, **action),
        dict(kind="tokenizer", out="t_ddp", strategy="ddp", **two, **TOKENIZER),
        dict(kind="video", out="v_fsdp", strategy="fsdp", lr=LR32, **two, **video),
        dict(kind="video", out="v_fsdp_sh", activation_checkpointing=True, **sharded, **video),
        # stops at step 2 (the same schedule: 3 steps have no warmup or drop) and resumes from its sharded folder
        dict(kind="video", out="v_fsdp_cut", **sharded, **dict(video, steps=2)),
        dict(kind="video", out="v_fsdp_cut", resume=True, **sharded, **video),
        # the same with FSDP's full single files (which FSDP, and only it among the strategies, can resume)
        dict(kind="video", out="v_fsdp_fcut", strategy="fsdp", lr=LR32, **two, **dict(video, steps=2)),
        dict(kind="video", out="v_fsdp_fcut", strategy="fsdp", resume=True, lr=LR32, **two, **video),
        dict(kind="action", out="a_fsdp", strategy="fsdp", activation_checkpointing=True, lr=LR32, plot_every=2,
             **two, **action),
    ]
    for case in cases:
        case["out"] = str(root / case["out"])
    spec = root / "runs.json"
    spec.write_text(json.dumps(cases))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(DRIVER), str(spec)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each driver process: conv kernels split their sums by thread count
    try:  # the 1-process references run meanwhile
        from vavam.train.action import train_action
        from vavam.train.tokenizer import train_tokenizer
        from vavam.train.video import train_video

        train_video(root / "v_one64", batch_size=4, precision="64-true", lr=LR64, **video)
        train_action(root / "a_one64", batch_size=4, precision="64-true", lr=LR64, plot_every=0, **action)
        train_video(root / "v_acc", batch_size=2, accumulate=2, lr=LR32, **video)
        train_action(root / "a_acc", batch_size=2, accumulate=2, lr=LR32, plot_every=0, **action)
        train_tokenizer(root / "t_acc", batch_size=2, accumulate=2, **TOKENIZER)
        output, _ = proc.communicate(timeout=500)
    finally:
        torch.set_num_threads(threads)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-6000:]
    return root


@pytest.mark.slow
def test_ddp_equals_one_process(runs):
    """2-process DDP = 1 process with the same global batch (4 windows per step).

    Float64 against one batch of 4 (the sums run in another order): 1e-10. Float32 against one process
    accumulating the same 2 + 2 micro batches: bit-identical (DDP averages g0/2 + g1/2, as accumulation does).
    """
    assert _max_diff(runs / "v_one64", runs / "v_ddp64") < 1e-10
    assert _max_diff(runs / "a_one64", runs / "a_ddp64") < 1e-10  # the same flow noise per sample on any split
    # (VaViM's cross-entropy is computed in float32 even in a float64 model: its loss values agree to 1e-7)
    for one, other, rtol in (("v_one64", "v_ddp64", 1e-6), ("a_one64", "a_ddp64", 1e-10)):
        torch.testing.assert_close(_losses(runs / other), _losses(runs / one), rtol=rtol, atol=0)
    assert _losses(runs / "v_ddp") == _losses(runs / "v_acc") and _losses(runs / "a_ddp") == _losses(runs / "a_acc")
    assert _max_diff(runs / "v_acc", runs / "v_ddp") == 0.0
    assert _max_diff(runs / "a_acc", runs / "a_ddp") == 0.0
    # validation: each rank took its shard of the 9 windows (5 + 4 and a padding window that counts for nothing);
    # the logged loss is the mean over all 9, as one process computes it (flow noise drawn per window)
    for one, other, rtol in (("v_one64", "v_ddp64", 1e-9), ("a_one64", "a_ddp64", 1e-9), ("v_acc", "v_ddp", 1e-6),
                             ("a_acc", "a_ddp", 1e-6)):
        assert _val_loss(runs / other) == pytest.approx(_val_loss(runs / one), rel=rtol, abs=0)
    # the weights moved far beyond the tolerance (same init: seed 3 before the model is built)
    from vavam.video import VideoGPT

    torch.manual_seed(3)
    init = VideoGPT(vavam.load_video_model(runs / "v_one64" / "model").config).state_dict()
    trained = _weights(runs / "v_one64")
    assert max(float((trained[k].double() - init[k].double()).abs().max()) for k in init) > 1e-2
    summary = json.loads((runs / "v_ddp64" / "summary.json").read_text())
    assert summary["scale"] == {"strategy": "ddp", "devices": 2, "nodes": 1, "world_size": 2, "micro_batch": 2,
                                "accumulate": 1, "global_batch": 4, "activation_checkpointing": False,
                                "compile": False, "checkpoint_format": "full"}
    # VaViM stayed frozen in the VaVAM run; trajectory plots were drawn (by rank 0 only)
    vim = vavam.load_video_model(runs / "vim")
    vam = vavam.load_action_model(runs / "a_ddp64" / "model")
    torch.testing.assert_close(vam.video.state_dict(), vim.state_dict(), rtol=0, atol=0)
    assert sorted(p.name for p in (runs / "a_ddp64" / "trajectories").iterdir()) == \
        ["step-00000002.png", "step-00000003.png"]


@pytest.mark.slow
def test_fsdp_equals_one_process(runs):
    """Float32 FSDP (gloo, CPU) = 1 process; activation checkpointing, the sharded checkpoint format and a
    resume from a sharded folder change nothing."""
    assert _max_diff(runs / "v_acc", runs / "v_fsdp") < 1e-6  # measured 9e-8 (clip norm summed over shards)
    assert _max_diff(runs / "a_acc", runs / "a_fsdp") < 1e-6  # measured 0
    torch.testing.assert_close(_losses(runs / "v_fsdp"), _losses(runs / "v_acc"), rtol=1e-5, atol=0)
    torch.testing.assert_close(_losses(runs / "a_fsdp"), _losses(runs / "a_acc"), rtol=1e-5, atol=0)
    # FSDP gathers parameters in every forward: the padded shards give both ranks the same number of passes
    for one, other in (("v_acc", "v_fsdp"), ("a_acc", "a_fsdp"), ("v_fsdp", "v_fsdp_cut"), ("v_fsdp", "v_fsdp_fcut")):
        assert _val_loss(runs / other) == pytest.approx(_val_loss(runs / one), rel=1e-5, abs=0)
    assert _max_diff(runs / "v_fsdp", runs / "v_fsdp_sh") == 0.0
    assert _max_diff(runs / "v_fsdp_sh", runs / "v_fsdp_cut") == 0.0
    assert _losses(runs / "v_fsdp_cut") == _losses(runs / "v_fsdp_sh")
    assert _max_diff(runs / "v_fsdp", runs / "v_fsdp_fcut") == 0.0  # resumed from a full file FSDP wrote
    assert _losses(runs / "v_fsdp_fcut") == _losses(runs / "v_fsdp")
    sharded = runs / "v_fsdp_sh" / "checkpoints" / "step-00000003.ckpt"
    assert sharded.is_dir() and (sharded / "meta.pt").is_file()
    verify_checkpoint(sharded)
    meta = json.loads((runs / "v_fsdp_sh" / "model" / "meta.json").read_text())
    assert meta["consolidated_from"]["source"] == "fsdp-sharded" and meta["consolidated_from"]["step"] == 3
    meta = json.loads((runs / "a_fsdp" / "model" / "meta.json").read_text())
    assert meta["consolidated_from"]["source"] == "lightning"  # a full (gathered) checkpoint file
    vam = vavam.load_action_model(runs / "a_fsdp" / "model")  # the model folders load on one CPU
    torch.testing.assert_close(vam.video.state_dict(), vavam.load_video_model(runs / "vim").state_dict(),
                               rtol=0, atol=0)
    assert (runs / "a_fsdp" / "trajectories" / "step-00000002.png").is_file()


@pytest.mark.slow
def test_tokenizer_ddp_equals_one_process(runs):
    """The tokenizer's plain loop on 2 processes = 1 process accumulating the same micro batches, dead-code
    restarts (from the gathered global batch) included."""
    acc = json.loads((runs / "t_acc" / "summary.json").read_text())
    ddp = json.loads((runs / "t_ddp" / "summary.json").read_text())
    assert (ddp["global_batch"], ddp["world_size"], acc["global_batch"], acc["accumulate"]) == (4, 2, 4, 2)
    assert ddp["dead_code_restarts"] == acc["dead_code_restarts"] > 0
    from safetensors.torch import load_file

    a = load_file(runs / "t_acc" / "tokenizer" / "model.safetensors")
    b = load_file(runs / "t_ddp" / "tokenizer" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0


@pytest.mark.slow
def test_checkpoints_name_their_writer_and_fsdp_refuses_other_files(runs):
    """Each single-file checkpoint names the strategy that wrote it; FSDP, which loads a single file's optimiser
    state only in its own layout (another writer's file fails at the first step), refuses the others up front."""
    from vavam.train.resume import check_resume_layout, checkpoint_writer, list_checkpoints

    writers = {run: checkpoint_writer(list_checkpoints(runs / run)[-1])
               for run in ("v_ddp", "a_ddp", "v_fsdp", "a_fsdp", "v_acc")}
    assert writers == {"v_ddp": "ddp", "a_ddp": "ddp", "v_fsdp": "fsdp", "a_fsdp": "fsdp", "v_acc": "single"}
    for run, writer in writers.items():
        ckpt = list_checkpoints(runs / run)[-1]
        check_resume_layout(ckpt, "ddp")
        if writer == "fsdp":
            check_resume_layout(ckpt, "fsdp")
        else:
            with pytest.raises(ValueError, match=f"written by strategy '{writer}', whose optimiser state FSDP"):
                check_resume_layout(ckpt, "fsdp")
