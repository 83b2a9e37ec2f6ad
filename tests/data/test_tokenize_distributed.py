"""Distributed tokenization: torchrun ranks shard the scenes, rank 0 merges after a barrier; SLURM / env
shards without a process group; kill-and-rerun resumes every rank's finished scenes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from vavam.data.tokenize import LaunchInfo, _fold_earlier_parts, launch_info, resolve_device, tokenize
from vavam.data.tokens import MANIFEST, TokenStore, merge_manifests, read_manifest

SIZE = {"height": 16, "width": 32}  # vq_tiny (downsampling 8) -> 2 x 4 tokens per frame
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
             "GROUP_RANK", "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny world export: 5 scenes of 5 frames (16 x 32 PNG)."""
    from vavam.world.export import generate

    root = tmp_path_factory.mktemp("world")
    generate(root, num_scenes=5, duration_s=0.5, hazard_share=0.0, progress=False, **SIZE)
    return root


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory) -> Path:
    """The same scenes tokenized by one process (vq_tiny preset, random seeded weights)."""
    out = tmp_path_factory.mktemp("ref") / "store"
    tokenize([str(world / "frames" / "*")], out, "preset:vq_tiny", num_workers=0, progress=False, **SIZE)
    return out


@pytest.fixture
def clean_env(monkeypatch):
    for var in DIST_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def assert_same_store(a: Path, b: Path) -> None:
    """Same manifest (scene entries and header) and identical token / timestamp arrays."""
    ma, mb = read_manifest(a / MANIFEST), read_manifest(b / MANIFEST)
    assert ma == mb
    sa, sb = TokenStore(a), TokenStore(b)
    assert sa.scenes == sb.scenes and len(sa) == 5
    for scene in sa.scenes:
        np.testing.assert_array_equal(sa.tokens(scene), sb.tokens(scene))
        np.testing.assert_array_equal(sa.timestamps(scene), sb.timestamps(scene))
    assert not list(b.glob("manifest.part-*")), "parts must be folded into manifest.json"
    assert not list((b / "scenes").glob(".*.tmp")), "no temporaries may be left behind"


def torchrun(args: list[str], script: Path | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    target = [str(script)] if script is not None else ["-m", "vavam.cli"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target,
           "tokenize", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env)


def cli_args(world: Path, out: Path) -> list[str]:
    return ["--sources", str(world / "frames" / "*"), "--out", str(out), "--tokenizer", "preset:vq_tiny",
            "--height", "16", "--width", "32", "--num-workers", "0", "--batch-size", "2", "--no-progress"]


# ------------------------------------------------------------------------------ launch environment


def test_launch_info_reads_torchrun_and_slurm():
    torchrun_env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    slurm_env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SLURM_LOCALID": "2"}
    assert launch_info(None, torchrun_env) == LaunchInfo(3, 8, 1, "torchrun")
    assert launch_info("auto", torchrun_env) == LaunchInfo(3, 8, 1, "torchrun")
    assert launch_info("1/4", torchrun_env) is None  # explicit shards win
    assert launch_info(None, {}) is None and launch_info("auto", {}) is None
    # SLURM variables also exist in a batch script's own shell: only --shard auto reads them
    assert launch_info(None, slurm_env) is None
    assert launch_info("auto", slurm_env) == LaunchInfo(5, 6, 2, "slurm")
    assert launch_info(None, {"RANK": "0", "WORLD_SIZE": "2"}).local_rank == 0
    with pytest.raises(ValueError, match="RANK='x'"):
        launch_info(None, {"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="RANK=2 is not below WORLD_SIZE=2"):
        launch_info(None, {"RANK": "2", "WORLD_SIZE": "2"})


def test_resolve_device_uses_local_rank():
    assert resolve_device("cuda", 3) == "cuda:3" or not torch.cuda.is_available()
    assert resolve_device("cpu", 3) == "cpu"
    assert resolve_device("cuda:1", 0) == "cuda:1"  # explicit index kept
    assert resolve_device("cuda") == "cuda"  # single process: unchanged
    if not torch.cuda.is_available():
        assert resolve_device("auto", 1) == "cpu"


# ------------------------------------------------------------------------------ without a process group


def test_env_ranks_without_process_group_write_parts_then_merge(world, reference, tmp_path, clean_env, capsys):
    """RANK/WORLD_SIZE but no MASTER_ADDR: each rank writes its part and says how to merge."""
    out = tmp_path / "store"
    clean_env.setenv("WORLD_SIZE", "2")
    paths = []
    for rank in (1, 0):
        clean_env.setenv("RANK", str(rank))
        clean_env.setenv("LOCAL_RANK", str(rank))
        paths.append(tokenize([str(world / "frames" / "*")], out, "preset:vq_tiny", num_workers=0,
                              progress=False, **SIZE))
    assert [p.name for p in paths] == ["manifest.part-001-of-002.json", "manifest.part-000-of-002.json"]
    assert sorted(read_manifest(paths[1])["scenes"]) == ["scene-000000", "scene-000002", "scene-000004"]
    assert "vavam tokenize merge --root" in capsys.readouterr().err
    merge_manifests(out, remove_parts=True)
    assert_same_store(reference, out)


def test_rank_with_no_scene_writes_nothing(world, tmp_path, clean_env):
    """More ranks than scenes: rank 6 of 7 has no scene and, knowing no image size, records nothing."""
    clean_env.setenv("WORLD_SIZE", "7")
    clean_env.setenv("RANK", "6")
    path = tokenize([str(world / "frames" / "*")], tmp_path / "s", "preset:vq_tiny", num_workers=0, progress=False)
    assert path.name == "manifest.part-006-of-007.json" and not path.exists()
    assert (tmp_path / "s" / "manifest.part-006-of-007.empty").is_file()  # for the merge: finished, empty


def test_rerun_with_another_process_count_keeps_finished_scenes(world, reference, tmp_path, clean_env):
    """Parts of an interrupted 3-shard run are folded into manifest.json; a 2-rank rerun skips their scenes."""
    out = tmp_path / "store"
    tokenize([str(world / "frames" / "*")], out, "preset:vq_tiny", shard="0/3", num_workers=0, progress=False,
             **SIZE)
    tokenize([str(world / "frames" / "*")], out, "preset:vq_tiny", shard="2/3", num_workers=0, progress=False,
             **SIZE)
    done = {"scene-000000", "scene-000003", "scene-000002"}
    stamps = {s: (out / "scenes" / f"{s}.npy").stat().st_mtime_ns for s in done}
    _fold_earlier_parts(out, resume=True)  # what rank 0 does first
    assert set(read_manifest(out / MANIFEST)["scenes"]) == done and not list(out.glob("manifest.part-*"))
    clean_env.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        clean_env.setenv("RANK", str(rank))
        tokenize([str(world / "frames" / "*")], out, "preset:vq_tiny", num_workers=0, progress=False, **SIZE)
    merge_manifests(out, remove_parts=True)
    assert_same_store(reference, out)
    assert {s: (out / "scenes" / f"{s}.npy").stat().st_mtime_ns for s in done} == stamps  # not redone


def test_fold_without_resume_starts_afresh(tmp_path):
    from vavam.data.tokens import write_synthetic_store

    write_synthetic_store(tmp_path / "s", 2, 3, grid=(2, 2))
    (tmp_path / "s" / "manifest.part-000-of-002.json").write_text("{}")
    _fold_earlier_parts(tmp_path / "s", resume=False)
    assert not (tmp_path / "s" / MANIFEST).exists() and not list((tmp_path / "s").glob("manifest.part-*"))


# ------------------------------------------------------------------------------ torchrun


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(world, reference, tmp_path):
    out = tmp_path / "store"
    proc = torchrun(cli_args(world, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_store(reference, out)


KILLER = """
import os, signal, sys
import vavam.data.tokenize as T

load = T._load_tokenizer

def load_and_arm(spec, device):
    model = load(spec, device)
    if os.environ["RANK"] == "1":  # rank 1 (scenes 1 and 3) dies in the 2nd batch of its 2nd scene
        encode, calls = model.encode, [0]

        def killer(images):
            calls[0] += 1
            if calls[0] == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return encode(images)

        model.encode = killer
    return model

T._load_tokenizer = load_and_arm
from vavam.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_torchrun_kill_and_rerun(world, reference, tmp_path):
    """SIGKILL of one rank mid-scene: the job fails, its finished scene stays recorded; the same command
    again skips every finished scene, redoes the interrupted one and merges."""
    out = tmp_path / "store"
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent(KILLER))
    proc = torchrun(cli_args(world, out), script=script)
    assert proc.returncode != 0
    assert f"exitcode  : -{int(signal.SIGKILL)}" in proc.stderr or "SIGKILL" in proc.stderr, proc.stderr[-3000:]
    part = read_manifest(out / "manifest.part-001-of-002.json")
    assert list(part["scenes"]) == ["scene-000001"]  # scene-000003 was interrupted: not recorded
    assert not (out / "scenes" / "scene-000003.npy").exists()
    recorded = set(part["scenes"])
    for other in [out / MANIFEST, out / "manifest.part-000-of-002.json"]:
        if other.is_file():  # rank 0 may or may not have finished before torchrun stopped it
            recorded |= set(read_manifest(other)["scenes"])
    stamps = {s: (out / "scenes" / f"{s}.npy").stat().st_mtime_ns for s in recorded}
    proc = torchrun(cli_args(world, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_store(reference, out)
    assert {s: (out / "scenes" / f"{s}.npy").stat().st_mtime_ns for s in recorded} == stamps  # skipped
