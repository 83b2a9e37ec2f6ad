"""The main job end to end at a reduced budget: every stage runs, resumes, and the report is complete."""

from __future__ import annotations

import json

import pytest

from vavam.quickstart import quickstart
from vavam.quickstart.plan import QuickstartPlan

BUDGET = 3.0


def test_plan_scales_with_budget():
    small, default, big = (QuickstartPlan.from_budget(b) for b in (3, 15, 60))
    assert small.video_steps < default.video_steps < big.video_steps
    assert default.train_scenes == 180 and default.heldout_scenes == 16
    assert (small.train_scenes, small.heldout_scenes) == (36, 8)  # whole towns of 4 scenes
    assert default.tokenizer_precision == default.video_precision == default.action_precision == "32"
    assert big.video_width == 256 and default.video_width is None
    # the expert's weights are averaged from the default budget on; a 220-step run keeps its last weights
    assert small.action_ema == 0.0 and default.action_ema == big.action_ema == 0.99
    assert small.action_ego_speed and default.action_ego_speed and big.action_ego_speed  # VaVAM reads the speed
    # ... and its flow generates the deviation from constant velocity, in units of 10 m
    assert all(p.action_speed_prior and p.action_scaling == 10.0 for p in (small, default, big))
    # VaViM's weights too; and it trains with half its windows' codes permuted, on its own greedy last frames
    assert small.video_ema == 0.0 and default.video_ema == big.video_ema == 0.99
    assert all(p.video_permute_codes == 0.5 and p.video_self_forcing for p in (small, default, big))
    # wider steps cost 2.3x (VaViM, and 1.4x more with self-forcing) and 2.1x (VaVAM): a 60-minute plan takes
    # fewer than 4x the steps
    assert big.video_steps == round(1200 * 4 / (2.3 * 1.4)) and big.action_steps == round(1100 * 4 / 2.1)
    with pytest.raises(ValueError):
        QuickstartPlan.from_budget(0)


@pytest.mark.slow
def test_quickstart_reduced_budget(tmp_path, capsys):
    out = tmp_path / "qs"
    assert quickstart(out=out, budget=BUDGET, seed=0) == 0
    assert "eval: 100%" in capsys.readouterr().err  # the eval stage's bar over its 6 parts ran to the end
    report = (out / "report.md").read_text()
    for section in ("## Targets", "## Data", "## Tokenizer", "## VaViM: next-token prediction",
                    "## VaViM: generating the next frame", "## VaVAM: open-loop planning",
                    "## VaVAM: following the command", "## Closed loop", "## Training"):
        assert section in report
    assert (out / "report.html").is_file() and (out / "trajectories.png").is_file()
    results = json.loads((out / "eval" / "results.json").read_text())
    from vavam.data.tokens import TokenStore

    plan = QuickstartPlan.from_budget(BUDGET)  # the held-out towns hold exactly the planned scenes
    assert len(TokenStore(out / "tokens" / "heldout").scenes) == plan.heldout_scenes
    rows = results["next_token"]["rows"]
    assert set(rows) == {"VaViM", "unigram frequency", "per-position frequency"}
    assert set(results["closed_loop"]) >= {"VaVAM", "constant velocity", "emergency brake"}
    assert results["open_loop"]["windows"] > 0 and results["command_following"]["windows"] > 0
    nf = results["next_frame"]
    assert all(0 <= nf[k] <= 1 for k in ("greedy_accuracy", "copy_last_frame_accuracy", "teacher_forced_accuracy"))
    assert f"VaViM gets {nf['teacher_forced_accuracy']:.3f} of the tokens right" in report
    groups = nf["by_change"]  # the same windows, grouped by how much their last context step kept
    assert sum(g["windows"] for g in groups) == nf["windows"] and "| tokens kept in the last context step |" in report
    assert sum(g["windows"] * g["copy"] for g in groups if g["windows"]) / nf["windows"] == pytest.approx(
        nf["copy_last_frame_accuracy"])
    # the same tokens again, grouped by how many context steps each stayed (0 .. 6 for 7 context frames)
    kept = nf["by_persistence"]
    tokens = sum(g["tokens"] for g in kept)
    assert [g["steps"] for g in kept] == list(range(nf["context_frames"])) and "| steps the token stayed |" in report
    assert tokens == nf["windows"] * (plan.height // 16) * (plan.width // 16)
    assert sum(g["tokens"] * g["copy"] for g in kept if g["tokens"]) / tokens == pytest.approx(
        nf["copy_last_frame_accuracy"])
    assert all(0 <= g["copy_prob"] <= 1 for g in kept if g["tokens"])
    # it learns, on held-out towns: VaViM beats the token-frequency baselines (measured: 1.13 vs 2.12
    # nats); VaVAM's flow loss falls several-fold, its plans beat both baselines after 220 steps
    # (measured minADE@5: 2.20 m vs constant velocity 2.52 m and per-command mean 5.50 m) and it turns
    # as told (LEFT - RIGHT: 4.4 m)
    assert rows["VaViM"]["cross_entropy"] < rows["per-position frequency"]["cross_entropy"]
    losses = [json.loads(line)["loss"] for line in (out / "action" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == QuickstartPlan.from_budget(BUDGET).action_steps and sum(losses[-10:]) < 0.3 * sum(losses[:10])
    ol = results["open_loop"]["rows"]
    assert results["open_loop"]["ego_speed"] and results["open_loop"]["speed_prior"]
    assert ol["VaVAM"]["all"]["min_ade"] < min(ol["mean trajectory per command"]["all"]["min_ade"],
                                               ol["constant velocity"]["all"]["min_ade"])
    assert results["command_following"]["left_minus_right_m"] > 0
    _evaluations_beat_untrained(out, tmp_path)
    # a re-run skips every finished stage
    capsys.readouterr()
    assert quickstart(out=out, budget=BUDGET, seed=0) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 7
    with pytest.raises(SystemExit, match="another budget"):
        quickstart(out=out, budget=BUDGET + 1, seed=0)


def _evaluations_beat_untrained(out, tmp_path):
    """``vavam eval nexttoken`` / ``eval openloop`` on the quickstart's trained models and on the same
    architectures untrained; the trained ones win, and ``vavam report`` gathers both into one page."""
    import torch

    import vavam
    from vavam.action.convert import save_action_model
    from vavam.cli import main
    from vavam.data.records import load_records
    from vavam.eval.collision import future_boxes, planned_collisions
    from vavam.train.action import make_window_dataset
    from vavam.video.convert import save_video_model

    torch.manual_seed(123)
    vam = vavam.load_action_model(out / "action" / "model")
    meta = json.loads((out / "action" / "model" / "meta.json").read_text())  # the tokenizer, found from anywhere
    assert meta["tokenizer_relative"] == "../../tokenizer/tokenizer"
    assert meta["tokenizer"] == str((out / "tokenizer" / "tokenizer").resolve())
    untrained = tmp_path / "untrained"
    save_video_model(vavam.build_model(vam.video.config), untrained / "video")
    save_action_model(vavam.build_model(vam.config), untrained / "action")
    evals = tmp_path / "evals"
    tokens, world = out / "tokens", out / "world"
    for name, video, action in (("trained", out / "video" / "model", out / "action" / "model"),
                                ("untrained", untrained / "video", untrained / "action")):
        assert main(["eval", "nexttoken", "--video", str(video), "--tokens", str(tokens / "heldout"),
                     "--train-tokens", str(tokens / "train"), "--out", str(evals / name / "nexttoken"),
                     "--no-progress"]) == 0
        assert main(["eval", "openloop", "--action", str(action), "--records", str(world / "heldout.npz"),
                     "--tokens", str(tokens / "heldout"), "--train-records", str(world / "train.npz"),
                     "--train-tokens", str(tokens / "train"), "--out", str(evals / name / "openloop"),
                     "--limit", "48", "--no-progress"]) == 0
    res = {name: {kind: json.loads((evals / name / kind / "evaluation.json").read_text())["results"]
                  for kind in ("nexttoken", "openloop")} for name in ("trained", "untrained")}
    ce = {n: r["nexttoken"]["datasets"]["heldout"]["model"]["cross_entropy"] for n, r in res.items()}
    ade = {n: r["openloop"]["rows"]["VaVAM"]["all"]["min_ade"] for n, r in res.items()}
    assert ce["trained"] < ce["untrained"] and ade["trained"] < ade["untrained"], (ce, ade)
    ol = res["trained"]["openloop"]
    assert ol["windows"] == 48 and 0.0 <= ol["rows"]["VaVAM"]["all"]["collision_rate"] <= 1.0
    # the expert's own ground-truth plans never run into another agent's box
    records = {r.name: r for r in load_records(world / "heldout.npz", check_files=False)}
    ds = make_window_dataset(world / "heldout.npz", tokens / "heldout", vam.config.train_frames)
    items = [ds[i] for i in range(0, len(ds), 3)]
    gt = torch.stack([it["positions"][-1] for it in items])[:, None].numpy()
    flags = planned_collisions(gt, [future_boxes(records[it["scene"]], int(it["frame_indices"][-1])) for it in items])
    assert flags.sum() == 0 and not (flags != flags).any()
    assert main(["report", str(evals)]) == 0
    page = (evals / "summary" / "report.md").read_text()
    assert page.count("## Next-token prediction") == 2 and page.count("## Open-loop planning") == 2
    assert "../trained/openloop/trajectories_bev.png" in page


def test_interrupt_says_how_to_continue(tmp_path, monkeypatch, capsys):
    """Ctrl-C: one line saying the finished stages are kept and the same command continues (exit 130),
    instead of a KeyboardInterrupt traceback."""
    import vavam.quickstart as qs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(qs, "run_stages", interrupted)
    assert quickstart(out=tmp_path / "qs", budget=BUDGET, seed=0) == 130
    assert "run the same command again to continue" in capsys.readouterr().out


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), -1.0])
def test_a_budget_that_is_not_positive_finite_minutes_is_refused_clearly(budget):
    """NaN passed the "<= 0" check and failed later with "cannot convert float NaN to integer"; infinity with an
    OverflowError traceback (the command line shows a ValueError in one line, other errors as tracebacks)."""
    with pytest.raises(ValueError, match="budget must be positive minutes"):
        QuickstartPlan.from_budget(budget)


def test_a_folder_that_is_not_a_quickstart_run_is_refused_untouched(tmp_path, monkeypatch):
    """Without plan.json, folders named like the stages were taken as the run's: a finished one skipped whatever
    budget and seed made it, an unfinished one (any folder, say the user's ``video/``) deleted."""
    import vavam.quickstart as qs

    def ran(*args, **kwargs):
        raise AssertionError("the stages ran")

    monkeypatch.setattr(qs, "run_stages", ran)
    out = tmp_path / "mine"
    (out / "video").mkdir(parents=True)
    (out / "video" / "holiday.mp4").write_bytes(b"keep me")
    with pytest.raises(SystemExit, match="holds video but no plan.json"):
        quickstart(out=out, budget=BUDGET, seed=0)
    assert (out / "video" / "holiday.mp4").read_bytes() == b"keep me" and not (out / "plan.json").exists()
    (tmp_path / "empty").mkdir()  # an empty or unrelated folder is fine
    (tmp_path / "empty" / "notes.txt").write_text("x")
    monkeypatch.setattr(qs, "run_stages", lambda *a, **k: {"report": {"report_html": "r.html", "headline": []}})
    assert quickstart(out=tmp_path / "empty", budget=BUDGET, seed=0) == 0


def test_an_out_that_cannot_be_written_is_one_clear_error(tmp_path):
    """A file in the way of --out (or no permission) gave a FileExistsError / NotADirectoryError traceback."""
    (tmp_path / "a_file").write_text("x")
    for out in (tmp_path / "a_file", tmp_path / "a_file" / "qs"):
        with pytest.raises(SystemExit, match="cannot write the run folder"):
            quickstart(out=out, budget=BUDGET, seed=0)


def test_the_printed_report_path_is_in_the_run_folder(tmp_path, monkeypatch, capsys):
    """A re-run whose report stage was done earlier printed the path stored then: after the folder moved (or from
    another working directory with a relative --out) a path to no file."""
    import vavam.quickstart as qs

    stored = {"report_md": "/gone/qs/report.md", "report_html": "/gone/qs/report.html", "headline": ["a: met (1)"]}
    monkeypatch.setattr(qs, "run_stages", lambda *a, **k: {"report": stored})
    out = tmp_path / "moved"
    assert quickstart(out=out, budget=BUDGET, seed=0) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}\n" in printed and "/gone/" not in printed
    assert "a: met (1)" in printed
