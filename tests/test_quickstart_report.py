"""The quickstart's report from a synthetic run folder: every number equals its JSON source, nothing shows
"nan" / "None", every picture and video it references exists, HTML text is escaped."""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from vavam.quickstart.plan import QuickstartPlan
from vavam.quickstart.report import write_quickstart_report
from vavam.stages import DONE_FILE

NAN = float("nan")
PLAN = QuickstartPlan.from_budget(3)


def _metrics(base: float, count: int, collision: float = 0.125) -> dict:
    return {"min_ade": base, "fde": base * 2, "l2@1s": base / 2, "l2@2s": base, "l2@3s": base * 1.5,
            "collision_rate": collision, "count": count}


def _results(missing: bool) -> dict:
    """A results.json like the eval stage's; ``missing``: the NaN a small run gives (empty groups, no FD, ...)."""
    ol_rows = {}
    for i, name in enumerate(["VaVAM", "constant velocity", "mean trajectory per command"]):
        b = 1.2345 + i
        ol_rows[name] = {"all": _metrics(b, 40), "right": _metrics(b + 0.111, 5),
                         "left": _metrics(NAN, 0, NAN) if missing else _metrics(b + 0.222, 5),
                         "straight": _metrics(b + 0.333, 30)}
    cf = ({"windows": 0, "left_minus_right_m": NAN} if missing else
          {"windows": 10, "lateral_at_3s_left_m": 2.516, "lateral_at_3s_right_m": -2.004, "left_minus_right_m": 4.52})
    return {
        "next_token": {"windows": 12, "rows": {"VaViM": {"cross_entropy": 1.1111, "perplexity": 3.0376},
                                               "unigram frequency": {"cross_entropy": 3.3337, "perplexity": 28.042},
                                               "per-position frequency": {"cross_entropy": 2.2226, "perplexity": 9.2311}},
                       "ratio_to_per_position": 0.49991},
        "next_frame": {"windows": 12, "greedy_accuracy": 0.5432, "copy_last_frame_accuracy": 0.5678,
                       "teacher_forced_accuracy": 0.7891,
                       "by_change": [{"kept": "< 50%", "windows": 0, "generated": NAN, "copy": NAN,
                                      "teacher_forced": NAN},
                                     {"kept": "50% to < 70%", "windows": 5, "generated": 0.4012, "copy": 0.4523,
                                      "teacher_forced": 0.4701},
                                     {"kept": "≥ 70%", "windows": 7, "generated": 0.6034, "copy": 0.6545,
                                      "teacher_forced": 0.6123}],
                       "by_persistence": [{"steps": 0, "tokens": 200, "copy": 0.3125, "copy_prob": 0.2875,
                                           "generated": 0.3011, "teacher_forced": 0.3333},
                                          {"steps": 1, "tokens": 0 if missing else 56, "copy": NAN if missing else 0.5,
                                           "copy_prob": NAN if missing else 0.4196, "generated": NAN if missing else 0.4643,
                                           "teacher_forced": NAN if missing else 0.4821},
                                          {"steps": 2, "tokens": 128, "copy": 0.7422, "copy_prob": 0.4831,
                                           "generated": 0.6641, "teacher_forced": 0.6719}]},
        "generated_frames": {"frechet_tokenizer_features": NAN if missing else 0.12345,
                             "frechet_tokenizer_features_copy": NAN if missing else 0.09876, "note": "not FID",
                             "figure": "next_frames.png"},
        "open_loop": {"windows": 40, "num_samples": 5, "rows": ol_rows, "ratio_to_best_baseline": 0.6123,
                      "ego_speed": True, "speed_prior": True},
        "command_following": cf,
        "probe": {"memory_images": 192, "query_images": 96,
                  "rows": {"VaViM": {"miou": 0.4321, "pixel_accuracy": 0.8765,
                                     "iou": {"road": 0.9012, "<car & truck>": NAN if missing else 0.25}},
                           "VaViM untrained": {"miou": 0.1234, "pixel_accuracy": 0.5012,
                                               "iou": {"road": 0.5034, "<car & truck>": 0.0}}}},
        "closed_loop": {
            "constant velocity": {"score": 1.5, "collision_rate": 0.75, "failures": 0,
                                  "types": {"frontal": {"score": 1.0}, "side": {"score": 2.0}, "stationary": {"score": 1.5}}},
            "VaVAM": {"score": 3.254, "collision_rate": NAN if missing else 0.25, "failures": 2,
                      "types": {"frontal": {"score": 3.01}, "side": {"score": 3.5}, "stationary": {"score": 3.25}}}},
    }


def _build(out: Path, missing: bool = False, figures: bool = True) -> dict:
    """A finished quickstart folder without the report; returns the results written to ``eval/results.json``."""
    from PIL import Image

    (out / "eval").mkdir(parents=True)
    res = _results(missing)
    (out / "eval" / "results.json").write_text(json.dumps(res))  # NaN stays NaN, as atomic_write_json writes it
    summaries = {
        "world": {"frames_per_s": 100.0, "seconds": 10.0,
                  "train": {"scenes": 36, "frames": 1440, "hazard scenes": 7, "scenes with a turn": 20},
                  "heldout": {"scenes": 8, "frames": 320, "hazard scenes": 2, "scenes with a turn": 5}},
        "tokenizer": {"initial_psnr": 10.53, "final_psnr": 17.31, "codebook_usage": 87.5},
        "tokens": {}, "video": {}, "action": {}, "eval": {},
    }
    for i, (stage, summary) in enumerate(summaries.items()):
        (out / stage).mkdir(parents=True, exist_ok=True)
        (out / stage / DONE_FILE).write_text(json.dumps({"stage": stage, "seconds": 10.0 * (i + 1), "summary": summary}))
    if figures:
        image = np.zeros((8, 8, 3), np.uint8)
        for name in ("next_frames.png", "trajectories.png", "probe_examples.png"):
            Image.fromarray(image).save(out / "eval" / name)
        Image.fromarray(image).save(out / "tokenizer" / "reconstructions.png")
    return res


def _md_tables(md: str) -> dict[str, list[list[str]]]:
    """Markdown tables by their header line's first columns: ``"| a | b |"`` -> rows of cells (header first)."""
    tables, current = {}, None
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if current is None:
                current = tables.setdefault(" | ".join(cells), [cells])
            else:
                current.append(cells)
        elif not line.startswith("|---"):
            current = None
    return tables


def _find(tables: dict[str, list[list[str]]], first_columns: str) -> list[list[str]]:
    found = [t for head, t in tables.items() if head.startswith(first_columns)]
    assert len(found) == 1, (first_columns, list(tables))
    return found[0]


def _cell(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:.{digits}f}" if isinstance(value, float) else str(value))


@pytest.mark.parametrize("missing", [False, True])
def test_every_table_number_equals_its_json_value(tmp_path, missing):
    out = tmp_path / "qs"
    _build(out, missing)
    write_quickstart_report(out, PLAN, seed=0)
    res = json.loads((out / "eval" / "results.json").read_text())
    md = (out / "report.md").read_text()
    tables = _md_tables(md)

    rows = _find(tables, "model | cross-entropy | perplexity")
    assert rows[1:] == [[k, _cell(v["cross_entropy"]), _cell(v["perplexity"])] for k, v in res["next_token"]["rows"].items()]
    rows = _find(tables, "tokens kept in the last context step")
    assert rows[0][-1] == "teacher-forced"
    assert rows[1:] == [[g["kept"], str(g["windows"]), _cell(g["generated"]), _cell(g["copy"]), _cell(g["teacher_forced"])]
                        for g in res["next_frame"]["by_change"]]
    rows = _find(tables, "steps the token stayed")
    groups = res["next_frame"]["by_persistence"]
    total = sum(g["tokens"] for g in groups)
    assert total == (328 if missing else 384)
    assert rows[1:] == [[str(g["steps"]), _cell(g["tokens"] / total), *(_cell(g[k]) for k in
                                                                         ("copy", "copy_prob", "generated", "teacher_forced"))]
                        for g in groups]
    # the text quotes the last group (tokens unchanged over the whole context) in percent
    assert "Tokens unchanged over all 2 steps of the context stay 74% of the time; VaViM gives the copied token 48%" in md
    assert ("– : no token in that group." in md) == missing
    ol = res["open_loop"]["rows"]
    rows = _find(tables, "planner | minADE | FDE")
    assert rows[0] == ["planner", "minADE", "FDE", "L2@1s", "L2@2s", "L2@3s", "collision rate", "windows"]
    assert rows[1:] == [[k, *(_cell(v["all"][m]) for m in ("min_ade", "fde", "l2@1s", "l2@2s", "l2@3s", "collision_rate")),
                         str(v["all"]["count"])] for k, v in ol.items()]
    rows = _find(tables, "planner | right")
    # the per-command table says how many windows each command had
    assert rows[0] == ["planner", *(f"{c} ({ol['VaVAM'][c]['count']} windows)" for c in ("right", "left", "straight"))]
    assert rows[1:] == [[k, *(_cell(v[c]["min_ade"]) for c in ("right", "left", "straight"))] for k, v in ol.items()]
    rows = _find(tables, "planner | NCAP score")
    assert rows[0] == ["planner", "NCAP score", "frontal", "side", "stationary", "collision rate", "failed runs"]
    assert rows[1:] == [[k, _cell(v["score"], 2), *(_cell(v["types"][t]["score"], 2) for t in ("frontal", "side", "stationary")),
                         _cell(v["collision_rate"], 2), str(v["failures"])] for k, v in res["closed_loop"].items()]
    pr = res["probe"]["rows"]
    rows = _find(tables, "features | mIoU")
    assert rows[1:] == [[k, _cell(v["miou"]), _cell(v["pixel_accuracy"])] for k, v in pr.items()]
    rows = _find(tables, "features | road")
    assert rows[1:] == [[k, *(_cell(v["iou"][c]) for c in ("road", "<car & truck>"))] for k, v in pr.items()]
    targets = _find(tables, "target | met | measured")
    nt, nf = res["next_token"], res["next_frame"]
    assert targets[1][1:] == ["yes", f"ratio {nt['ratio_to_per_position']:.3f}"]
    assert targets[2][1:] == ["no", f"{nf['greedy_accuracy']:.3f} vs {nf['copy_last_frame_accuracy']:.3f}"]
    assert targets[3][1:] == ["yes", f"ratio {res['open_loop']['ratio_to_best_baseline']:.3f}"]

    # numbers quoted in the prose
    assert f"Token accuracy {nf['greedy_accuracy']:.3f} against {nf['copy_last_frame_accuracy']:.3f}" in md
    assert f"VaViM gets {nf['teacher_forced_accuracy']:.3f} of the tokens right" in md
    assert f"over {nt['windows']} held-out windows" in md and f"{res['open_loop']['windows']} held-out windows" in md
    assert "17.3 dB" in md and "10.5 dB" in md and "87.5 %" in md
    cf = res["command_following"]
    if missing:
        assert "not computed (needs more than 2 windows)" in md
        assert targets[4][1:] == ["no", "not measured (no held-out frame at an intersection) over 0 frames"]
        # every "–" in a table is explained in its section's text (the next-frame section: one per table)
        assert md.count("– : ") == 5
    else:
        gf = res["generated_frames"]
        assert f"{gf['frechet_tokenizer_features']:.3f} (copying the last frame: {gf['frechet_tokenizer_features_copy']:.3f})" in md
        assert f"{cf['lateral_at_3s_left_m']:.2f} m (LEFT) vs {cf['lateral_at_3s_right_m']:.2f} m (RIGHT)" in md
        assert targets[4][1:] == ["yes", f"{cf['left_minus_right_m']:.2f} m over {cf['windows']} frames"]
        assert md.count("– : ") == 1  # the empty group of the next-frame table

    # no missing value shown as a number
    page = (out / "report.html").read_text()
    for text in (md, page):
        assert not re.search(r"\bnan\b|\bNone\b|\binf\b", text, re.IGNORECASE), re.findall(r".{40}\bnan\b.{10}", text)
    # the HTML tables hold the same cells as the Markdown ones, escaped
    md_cells = [c for t in tables.values() for row in t for c in row]
    html_cells = [html.unescape(c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", page)]
    assert html_cells == md_cells
    assert "&lt;car &amp; truck&gt;" in page and "<car & truck>" not in page


def test_data_section_states_the_share_of_hazard_and_turn_scenes(tmp_path):
    out = tmp_path / "qs"
    _build(out)
    write_quickstart_report(out, PLAN, seed=0)
    md = (out / "report.md").read_text()
    assert "- heldout: scenes 8, frames 320, hazard scenes 2 (25 % of scenes), scenes with a turn 5 (62 % of scenes)" in md
    assert "- train: scenes 36, frames 1440, hazard scenes 7 (19 % of scenes), scenes with a turn 20 (56 % of scenes)" in md
    # the tokenizer's PSNR is measured on frames of the training towns, not on the held-out towns
    assert "PSNR on frames held out from the training towns" in md and "Held-out PSNR" not in md


@pytest.mark.parametrize("figures", [True, False])
def test_every_referenced_picture_and_video_exists(tmp_path, figures):
    out = tmp_path / "qs"
    res = _build(out, figures=figures)
    if figures:
        from vavam.media import write_mp4

        video = write_mp4(out / "eval" / "closed_loop" / "vavam" / "run.mp4", [np.zeros((16, 16, 3), np.uint8)] * 2)
        res["closed_loop"]["VaVAM"]["videos"] = [str(video)]
        (out / "eval" / "results.json").write_text(json.dumps(res))
    write_quickstart_report(out, PLAN, seed=0)
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    md_refs = re.findall(r"\]\(([^)]+)\)", md)
    html_refs = [html.unescape(r) for r in re.findall(r'src="([^"]+)"', page)]
    assert sorted(md_refs) == sorted(html_refs)
    for ref in md_refs:
        assert (out / ref).is_file(), ref
    expected = {"next_frames.png", "trajectories.png", "probe_examples.png", "reconstructions.png",
                "closed_loop_vavam.mp4"}
    assert expected <= set(md_refs) if figures else not expected & set(md_refs)


def test_training_curves_cover_a_resumed_run(tmp_path, monkeypatch):
    """A resumed stage logs to ``logs/version_1``; the curve comes from ``metrics.jsonl`` (the whole run)."""
    import matplotlib.axes

    out = tmp_path / "qs"
    _build(out)
    for stage, steps in (("video", 100), ("action", 80)):
        (out / stage / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": s, "loss": 5.0 / s, "lr": 0.001}) + "\n" for s in range(1, steps + 1)))
        for version, rows in ((0, range(9, 30, 10)), (1, range(39, steps, 10))):  # interrupted after step 30
            log = out / stage / "logs" / f"version_{version}"
            log.mkdir(parents=True)
            (log / "metrics.csv").write_text("epoch,step,train/loss\n" + "".join(f"0,{s},{5.0 / (s + 1)}\n" for s in rows))
    plotted = []
    original = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        plotted.append(list(args[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    write_quickstart_report(out, PLAN, seed=0)
    spans = [(x[0], x[-1], len(x)) for x in plotted]
    assert (1, 100, 100) in spans and (1, 80, 80) in spans  # every step of both stages, not version_0's three rows
    assert "![training_curves](training_curves.png)" in (out / "report.md").read_text()


def test_missing_values_are_explained_not_printed_as_nan(tmp_path):
    """A small run has no Fréchet distance (<= 2 windows) and maybe no intersection: the prose says so."""
    out = tmp_path / "qs"
    _build(out, missing=True)
    write_quickstart_report(out, PLAN, seed=0)
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        assert not re.search(r"\bnan\b", text, re.IGNORECASE), re.findall(r".{60}\bnan\b", text)
    md = (out / "report.md").read_text()
    assert "Fréchet distance of tokenizer-encoder features (channel mean and std) to the true frames: not computed" in md
    assert "mean lateral offset (positive: left) at 3 s not measured (no held-out frame at an intersection)" in md


def test_window_sizes_and_euler_steps_come_from_the_results(tmp_path):
    """The report said "× 8 frames", "the 7 before it" and "10 Euler steps" whatever the models were; it now
    quotes what the evaluation recorded, and leaves the numbers out for results from before they were."""
    out = tmp_path / "qs"
    res = _build(out)
    res["next_token"]["frames"], res["next_frame"]["context_frames"], res["open_loop"]["euler_steps"] = 6, 5, 4
    (out / "eval" / "results.json").write_text(json.dumps(res))
    write_quickstart_report(out, PLAN, seed=0)
    md = (out / "report.md").read_text()
    assert "tokens × 6 frames;" in md and "windows from the 5 frames before it." in md
    assert "K = 5 samples of 4 Euler steps;" in md
    assert "8 frames" not in md and "7 before" not in md and "10 Euler" not in md
    old = tmp_path / "old"
    _build(old)  # a results.json without the sizes
    write_quickstart_report(old, PLAN, seed=0)
    md = (old / "report.md").read_text()
    assert "tokens; the baselines" in md and "windows from the frames before it." in md and "K = 5 samples;" in md


def test_only_the_video_of_this_evaluation_is_shown(tmp_path):
    """The report showed the first mp4 anywhere under eval/ (one an earlier evaluation left there too) and kept
    an earlier report's copy; it now shows the video the results name, found again after the folder moved."""
    import shutil

    from vavam.media import write_mp4

    out = tmp_path / "closed_loop" / "qs"  # the folder's own path holds the word too
    res = _build(out)
    frames = [np.zeros((16, 16, 3), np.uint8)] * 2
    write_mp4(out / "eval" / "closed_loop" / "vavam" / "videos" / "a-old.mp4", frames)  # not in the results
    write_quickstart_report(out, PLAN, seed=0)
    assert "closed_loop_vavam.mp4" not in (out / "report.md").read_text()
    assert not (out / "closed_loop_vavam.mp4").exists()
    video = write_mp4(out / "eval" / "closed_loop" / "vavam" / "videos" / "b-new.mp4", frames + frames)
    res["closed_loop"]["VaVAM"]["videos"] = [str(video)]
    (out / "eval" / "results.json").write_text(json.dumps(res))
    moved = tmp_path / "moved"
    shutil.move(out, moved)  # the recorded path no longer exists
    write_quickstart_report(moved, PLAN, seed=0)
    assert "](closed_loop_vavam.mp4)" in (moved / "report.md").read_text()
    assert (moved / "closed_loop_vavam.mp4").read_bytes() == (moved / "eval" / "closed_loop" / "vavam" / "videos"
                                                              / "b-new.mp4").read_bytes()
    res["closed_loop"]["VaVAM"]["videos"] = []  # a later evaluation without a video: the old copy goes
    (moved / "eval" / "results.json").write_text(json.dumps(res))
    write_quickstart_report(moved, PLAN, seed=0)
    assert not (moved / "closed_loop_vavam.mp4").exists()


def test_a_picture_the_latest_evaluation_did_not_draw_is_not_shown(tmp_path):
    """A report re-written after the evaluation ran again kept showing an earlier report's copy of a picture the
    new evaluation did not draw (its folder is cleared when it runs again)."""
    out = tmp_path / "qs"
    _build(out)
    write_quickstart_report(out, PLAN, seed=0)
    assert "](trajectories.png)" in (out / "report.md").read_text()
    (out / "eval" / "trajectories.png").unlink()  # e.g. an evaluation with no example to draw
    write_quickstart_report(out, PLAN, seed=0)
    assert "trajectories.png" not in (out / "report.md").read_text() and not (out / "trajectories.png").exists()
    assert "](next_frames.png)" in (out / "report.md").read_text()


def test_data_section_shows_held_out_frames_of_the_world_stage(tmp_path):
    """The montage of held-out frames looked for ``world/heldout/frames/``, a folder the world stage never makes
    (it keeps every scene in ``world/frames/<scene>/`` and lists the held-out ones in ``heldout.npz``): the Data
    section never had its picture."""
    from PIL import Image

    from vavam.data.records import SceneRecord, save_records

    out = tmp_path / "qs"
    _build(out)
    world = out / "world"
    records = []
    for k, split in enumerate(["train", "heldout", "heldout"]):
        name = f"scene-{k:06d}"
        (world / "frames" / name).mkdir(parents=True)
        paths = []
        for i in range(6):
            Image.fromarray(np.full((8, 16, 3), 40 * k + i, np.uint8)).save(world / "frames" / name / f"{i:06d}.png")
            paths.append(f"frames/{name}/{i:06d}.png")
        ts = np.arange(6, dtype=np.int64) * 500_000 + k * 10**9
        records.append(SceneRecord(name=name, timestamps=ts, translations=np.zeros((6, 3)),
                                   rotations=np.tile([1.0, 0, 0, 0], (6, 1)), image_paths=paths,
                                   metadata={"split": split}))
    save_records(world / "heldout.npz", [r for r in records if r.metadata["split"] == "heldout"],
                 image_root=str(world))
    write_quickstart_report(out, PLAN, seed=0)
    md = (out / "report.md").read_text()
    assert "![heldout_frames](heldout_frames.png)" in md
    montage = np.asarray(Image.open(out / "heldout_frames.png"))
    assert montage.shape == (8, 32, 3)  # the two held-out scenes' frame 4, side by side; not the training scene
    assert montage[0, 0, 0] == 40 + 4 and montage[0, 16, 0] == 80 + 4


def test_change_table_of_results_without_teacher_forced_groups_keeps_four_columns():
    """Results written before the teacher-forced column (an earlier run's eval/) still make their table."""
    from vavam.quickstart.report import _change_table

    table = _change_table([{"kept": "all", "windows": 3, "generated": 0.5, "copy": 0.25}])
    assert list(table.columns) == ["tokens kept in the last context step", "windows", "greedy", "copy"]
    assert [list(r) for r in table.rows] == [["all", 3, 0.5, 0.25]]


def test_results_of_runs_before_the_persistence_table_give_the_report_without_it(tmp_path):
    """Runs made before the persistence breakdown have no ``by_persistence``: the report keeps the change table
    alone (called "the table") and says nothing about the missing one."""
    out = tmp_path / "qs"
    _build(out, missing=False)
    path = out / "eval" / "results.json"
    res = json.loads(path.read_text())
    del res["next_frame"]["by_persistence"]
    path.write_text(json.dumps(res))
    write_quickstart_report(out, PLAN, seed=0)
    md = (out / "report.md").read_text()
    assert "| tokens kept in the last context step |" in md and "steps the token stayed" not in md
    assert "The table groups the windows" in md and "second table groups" not in md
