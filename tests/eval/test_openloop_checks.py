"""Open-loop planning: non-finite plans and K = 0 are refused by window and sample, the evaluation and
the command refuse non-positive counts by name, and the report / --help say what the metrics mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vavam
from vavam.data.records import AgentBoxes, SceneRecord, load_records, save_records
from vavam.data.tokens import TokenStoreWriter
from vavam.eval.openloop import OpenLoopAccumulator, trajectory_errors
from vavam.eval.planning import eval_openloop, evaluate_open_loop

HZ, SPEED, CONTEXT = 2.0, 6.0, 4


def _gt_and_plans() -> tuple[torch.Tensor, torch.Tensor]:
    gt = torch.zeros(1, 6, 2)
    gt[0, :, 0] = torch.arange(1, 7.0)
    pred = gt[:, None].repeat(1, 3, 1, 1)
    pred[0, 0, :, 1] += 1.0  # ADE 1
    pred[0, 1, :, 1] += 0.5  # ADE 0.5: the best sample
    pred[0, 2, :, 1] += 2.0  # ADE 2
    return gt, pred


def test_a_nan_sample_is_refused_naming_window_and_sample():
    gt, pred = _gt_and_plans()
    assert trajectory_errors(pred, gt)["best"].tolist() == [1]
    pred[0, 0, 0, 0] = float("nan")  # before: minADE NaN and FDE / L2 from sample 0
    with pytest.raises(ValueError, match=r"pred: window 0, sample 0 holds NaN or infinite"):
        trajectory_errors(pred, gt)
    with pytest.raises(ValueError, match=r"VaVAM plans: window 0 \(scene 'a' frame 3\), sample 0 holds NaN"):
        OpenLoopAccumulator().update(pred, gt, torch.tensor([2]), windows=["scene 'a' frame 3"], what="VaVAM plans")
    gt_bad = gt.clone()
    gt_bad[0, 2, 1] = float("inf")
    with pytest.raises(ValueError, match="ground truth: window 0 holds NaN or infinite"):
        trajectory_errors(_gt_and_plans()[1], gt_bad)


def test_zero_samples_are_refused():
    with pytest.raises(ValueError, match=r"no sampled trajectory per window \(K = 0"):  # was a bare IndexError
        trajectory_errors(torch.zeros(2, 0, 6, 2), torch.zeros(2, 6, 2))


class _Planner:
    """A stand-in VaVAM: plans straight ahead at 6 m/s; ``nan_sample`` makes that sample NaN."""

    def __init__(self, nan_sample: int | None = None) -> None:
        self.nan_sample = nan_sample
        video = type("VideoConfig", (), {"tokens_per_frame": 6, "vocab_size": 17})()  # _split's 2 x 3 grid, 16 codes
        self.config = type("Config", (), {"train_frames": CONTEXT, "horizon": 6, "action_dim": 2, "video": video})()

    def sample_trajectory(self, tokens, commands, num_samples, noise=None, speed=None):
        plans = torch.zeros(len(tokens), num_samples, 6, 2)
        plans[..., 0] = SPEED * 0.5 * torch.arange(1, 7.0)
        if self.nan_sample is not None:
            plans[:, self.nan_sample] = float("nan")
        return plans


def _split(root, name: str, boxes: bool = False, grid: tuple[int, int] = (2, 3)):
    """Two straight 2 Hz drives with a token store; with ``boxes``, a parked car far to the left."""
    rng = np.random.default_rng(0)
    writer = TokenStoreWriter(root / f"{name}_tok", grid, codebook_size=16, tokenizer={"name": "rand"}, fps=HZ,
                              resume=False)
    records = []
    for k in range(2):
        n = 16
        ts = k * 10**9 + np.round(np.arange(n) * 1e6 / HZ).astype(np.int64)
        trans = np.zeros((n, 3))
        trans[:, 0] = SPEED * np.arange(n) / HZ
        agents = None
        if boxes:
            agents = AgentBoxes(offsets=np.arange(n + 1), centers=np.tile([20.0, 30.0, 0.0], (n, 1)),
                                sizes=np.tile([4.0, 2.0, 1.5], (n, 1)), yaws=np.zeros(n))
        records.append(SceneRecord(name=f"{name}{k}", timestamps=ts, translations=trans,
                                   rotations=np.tile([1.0, 0, 0, 0], (n, 1)), boxes=agents))
        writer.write_scene(records[-1].name, rng.integers(0, 16, size=(n, *grid), dtype=np.uint16), ts)
    save_records(root / f"{name}.npz", records)
    return root / f"{name}.npz", root / f"{name}_tok"


def _dataset(root):
    from vavam.train.action import make_window_dataset

    return make_window_dataset(*_split(root, "val"), CONTEXT)


def test_evaluation_names_the_scene_of_a_nan_plan_and_refuses_bad_counts(tmp_path):
    dataset = _dataset(tmp_path)
    with pytest.raises(ValueError, match=r"VaVAM plans: window 0 \(scene 'val0' frame \d+\), sample 1 holds NaN"):
        evaluate_open_loop(_Planner(nan_sample=1), dataset, num_samples=3)
    for kwargs, match in (({"limit": 0}, "limit must be a positive integer, got 0"),
                          ({"limit": -1}, "limit must be a positive integer, got -1"),  # both became 1 window
                          ({"batch_size": 0}, "batch_size must be a positive integer"),
                          ({"num_samples": 0}, "num_samples must be a positive integer")):
        with pytest.raises(ValueError, match=match):
            evaluate_open_loop(_Planner(), dataset, **kwargs)
    # the command checks its flags before anything is read (none of these paths exists)
    for kwargs, match in (({"limit": 0}, "--limit must be"), ({"batch_size": 0}, "--batch-size must be"),
                          ({"num_samples": 0}, "--num-samples must be")):
        with pytest.raises(ValueError, match=match):
            eval_openloop(tmp_path / "x", tmp_path / "y", tmp_path / "z", tmp_path / "out", progress=False, **kwargs)


def test_each_planner_batch_is_checked_once(tmp_path, monkeypatch):
    """The evaluation checked every planner's batch before the collision check and again in the accumulator."""
    from vavam.eval import openloop, planning
    from vavam.train.action import make_window_dataset

    records, tokens = _split(tmp_path, "val", boxes=True)
    dataset = make_window_dataset(records, tokens, CONTEXT)
    calls: list[str] = []
    real = openloop.check_trajectories

    def counted(pred, gt, windows=None, what="pred"):
        calls.append(what)
        real(pred, gt, windows, what)

    monkeypatch.setattr(openloop, "check_trajectories", counted)  # trajectory_errors' own check
    monkeypatch.setattr(planning, "check_trajectories", counted)  # the evaluation's check
    batches = -(-len(dataset) // 3)
    scenes = {r.name: r for r in load_records(records, check_files=False)}
    result = evaluate_open_loop(_Planner(), dataset, records=scenes, num_samples=2, batch_size=3)
    assert result["windows"] == len(dataset) and batches > 1
    assert sorted(calls) == sorted(["VaVAM plans", "constant velocity plans"] * batches)
    # and the errors still name the planner and the window
    with pytest.raises(ValueError, match=r"VaVAM plans: window 0 \(scene 'val0' frame \d+\), sample 1 holds NaN"):
        evaluate_open_loop(_Planner(nan_sample=1), dataset, num_samples=2, batch_size=3)


def test_report_says_what_l2_and_the_collision_rate_are(tmp_path, monkeypatch, capsys):
    records, tokens = _split(tmp_path, "val", boxes=True)
    (tmp_path / "vam").mkdir()
    monkeypatch.setattr(vavam, "load_action_model", lambda path, device="cpu": _Planner())
    eval_openloop(tmp_path / "vam", records, tokens, tmp_path / "out", num_samples=2, progress=False)
    text = " ".join((tmp_path / "out" / "report.md").read_text().split())
    assert "L2@t is the point error at time t (UniAD's convention), not the average of the errors up to t" in text
    assert "best-of-K sample, which is chosen with the ground truth" in text
    assert "over all K plans of a window (not only the best one)" in text

    from vavam.cli import main

    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main(["eval", "openloop", "--help"])
    help_text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "--train-records {None}|PATH scene records" in help_text
    assert "--train-tokens {None}|PATH token store of the training split" in help_text


def _ranked_worker(rank: int, root: str, errors_dir: str) -> None:
    """One rank of a 2-process gloo group: rank 1's planner returns NaN, rank 0's is fine."""
    import datetime
    from pathlib import Path

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{root}/pg", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        evaluate_open_loop(_Planner(nan_sample=0 if rank == 1 else None), _dataset(Path(root) / f"r{rank}"),
                           num_samples=2, batch_size=1)
        message = "no error"
    except Exception as error:  # noqa: BLE001 -- the test reads each rank's outcome
        message = f"{type(error).__name__}: {error}"
    (Path(errors_dir) / f"rank{rank}.txt").write_text(message)
    dist.barrier()  # both ranks are done before either tears the group down (a rank once aborted in gloo's teardown)
    dist.destroy_process_group()


@pytest.mark.slow
def test_a_nan_plan_on_one_rank_stops_every_rank(tmp_path):
    """Before, the failing rank raised alone and the others waited in the accumulators' all-reduce until the
    process group's timeout (30 min by default) or died on a closed connection; now every rank raises: the
    failing one its own error (naming the window), the others which rank failed."""
    import torch.multiprocessing as mp

    for rank in range(2):
        (tmp_path / f"r{rank}").mkdir()
    mp.start_processes(_ranked_worker, args=(str(tmp_path), str(tmp_path)), nprocs=2, start_method="spawn")
    assert (tmp_path / "rank1.txt").read_text().startswith("ValueError: VaVAM plans: window 0 (scene 'val")
    assert (tmp_path / "rank0.txt").read_text() == (
        "RuntimeError: open-loop evaluation failed on rank(s) 1 of 2; their error names the window")


def test_trajectory_plot_with_no_example_writes_nothing(tmp_path):
    """With no example (an evaluation without VaVAM plans to show) the plot used to fail inside matplotlib."""
    from vavam.eval.planning import plot_examples_bev

    assert plot_examples_bev([], tmp_path / "none.png") is False and not (tmp_path / "none.png").exists()
    example = {"gt": np.zeros((6, 2)), "pred": np.zeros((2, 6, 2)), "command": 2}
    assert plot_examples_bev([example], tmp_path / "one.png") is True and (tmp_path / "one.png").stat().st_size > 0


def _tiny_vavam():
    torch.manual_seed(0)
    return vavam.build_model(vavam.presets.vavam_tiny()).eval()


def test_open_loop_noise_is_drawn_per_window(tmp_path):
    """Each window's K starting noises come from (seed, window index): the rows do not depend on the batch size,
    and a window's plans are the model's for that noise (before, one generator per rank ran through the batches:
    the numbers changed with the batch size's draw order and with the number of ranks, seeded seed + rank)."""
    from vavam.eval.planning import window_noise
    from vavam.train.action import make_window_dataset

    vam = _tiny_vavam()
    dataset = make_window_dataset(*_split(tmp_path, "val", grid=(4, 6)), CONTEXT)
    one = evaluate_open_loop(vam, dataset, num_samples=3, batch_size=1, seed=7, num_examples=2)
    many = evaluate_open_loop(vam, dataset, num_samples=3, batch_size=5, seed=7, num_examples=2)
    assert one["windows"] == many["windows"] == len(dataset) > 5
    for planner, rows in one["rows"].items():
        for group, row in rows.items():
            assert many["rows"][planner][group] == pytest.approx(row, rel=1e-5, nan_ok=True), (planner, group)
    item = dataset[1]
    noise = window_noise(7, 1, 3, vam.config.horizon, vam.config.action_dim)[None]  # [1, K, H, 2]
    expected = vam.sample_trajectory(torch.as_tensor(item["tokens"])[None], torch.as_tensor(item["commands"])[None],
                                     num_samples=3, noise=noise)[0]
    torch.testing.assert_close(torch.as_tensor(one["_examples"][1]["pred"]), expected, rtol=1e-5, atol=1e-5)
    other_seed = evaluate_open_loop(vam, dataset, num_samples=3, batch_size=5, seed=8)
    assert other_seed["rows"]["VaVAM"]["all"]["min_ade"] != one["rows"]["VaVAM"]["all"]["min_ade"]


@pytest.mark.slow
def test_eval_openloop_under_torchrun_equals_one_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m vavam.cli eval openloop``: each rank evaluates every other window, the sums
    are reduced and rank 0 alone writes the report, with one process's numbers (before, the command ignored the
    launcher: every process evaluated every window, on the same device, and wrote the same files)."""
    import json
    import os
    import subprocess
    import sys

    from vavam.action.convert import save_action_model

    records, tokens = _split(tmp_path, "val", boxes=True, grid=(4, 6))
    save_action_model(_tiny_vavam(), tmp_path / "vam")
    args = ["eval", "openloop", "--action", str(tmp_path / "vam"), "--records", str(records), "--tokens",
            str(tokens), "--num-samples", "3", "--batch-size", "4", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "vavam.cli", *args, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert proc.stdout.count("report: ") == 1  # rank 0 alone reports
    two = json.loads((tmp_path / "two" / "evaluation.json").read_text())["results"]
    one = eval_openloop(tmp_path / "vam", records, tokens, tmp_path / "one", num_samples=3, batch_size=4,
                        progress=False)
    assert two["windows"] == one["windows"] > 2
    for planner, rows in one["rows"].items():
        for group, row in rows.items():  # evaluation.json writes NaN (an empty group) as null
            got = {k: float("nan") if v is None else v for k, v in two["rows"][planner][group].items()}
            assert got == pytest.approx(row, rel=1e-5, nan_ok=True), (planner, group)


def test_reduced_sums_keep_their_shape(tmp_path):
    """After the all-reduce the per-command sums were left flat ([4·M], not [4, M]): compute() then failed with
    an IndexError on every multi-process evaluation (a 1-process gloo group takes the same path)."""
    import torch.distributed as dist

    gt, pred = _gt_and_plans()
    acc = OpenLoopAccumulator()
    acc.update(pred, gt, torch.tensor([1]), torch.tensor([[0.0, 1.0, 0.0]]))
    alone = acc.compute()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        acc.reduce()
        assert acc.sums.shape == (4, len(acc.metrics)) and acc.counts.shape == (4,)
        reduced = acc.compute()
        for group, row in alone.items():
            assert reduced[group] == pytest.approx(row, nan_ok=True)
    finally:
        dist.destroy_process_group()
    assert alone["left"]["min_ade"] == pytest.approx(0.5) and alone["left"]["collision_rate"] == pytest.approx(1 / 3)
