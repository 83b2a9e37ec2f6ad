"""Dataset export (``vavam world generate``): layout, records, splits, resume, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("moderngl")

from vavam.data.records import load_records
from vavam.world.export import _town_chunks, generate, plan_scenes

KW = {
    "num_scenes": 3,
    "duration_s": 3.0,
    "rate_hz": 10.0,
    "height": 36,
    "width": 64,
    "seed": 3,
    "hazard_share": 0.34,
    "held_out_towns": 1,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "data"
    summary = generate(out, labels=True, depth=True, progress=False, **KW)
    return out, summary


def test_records_frames_labels_depth(dataset):
    out, summary = dataset
    recs = load_records(out / "records.npz")  # validates, checks image files relative to out
    assert [r.name for r in recs] == ["scene-000000", "scene-000001", "scene-000002"]
    assert summary["scenes"] == 3 and summary["frames"] == sum(len(r) for r in recs) == 90
    assert summary["frames_per_s"] > 0
    from PIL import Image

    for r in recs:
        assert len(r) == 30
        frames = sorted((out / "frames" / r.name).glob("*.png"))
        assert len(frames) == len(r) == len(r.image_paths) == len(r.metadata["commands"]) == len(r.metadata["speeds"])
        assert r.image_paths[0] == f"frames/{r.name}/000000.png"
        assert np.asarray(Image.open(frames[0])).shape == (36, 64, 3)
        lab = np.load(out / r.metadata["labels_path"])
        dep = np.load(out / r.metadata["depth_path"])
        assert lab.shape == dep.shape == (30, 36, 64) and lab.dtype == np.uint8 and dep.dtype == np.float16
        assert set(r.metadata["commands"]) <= {0, 1, 2}
        np.testing.assert_allclose(np.diff(r.timestamps), 100_000)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["num_frames"] == 90 and meta["image_size"] == [36, 64]
    assert meta["label_names"]["0"] and meta["rate_hz"] == 10.0
    assert sum(meta["splits"][s]["num_scenes"] for s in ("train", "heldout")) == 3
    assert not list((out / "frames").glob(".*"))  # no temp folders left


def test_heldout_towns_are_disjoint(dataset):
    out, _ = dataset
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["heldout"]["num_scenes"] >= 1 and meta["splits"]["train"]["num_scenes"] >= 1
    assert not set(meta["towns"]["train"]) & set(meta["towns"]["heldout"])
    recs = {r.name: r for r in load_records(out / "records.npz", check_files=False)}
    for split in ("train", "heldout"):
        for name in meta["splits"][split]["scenes"]:
            assert recs[name].metadata["split"] == split
            assert recs[name].metadata["town_seed"] in meta["towns"][split]
    # larger plans: exact hazard counts per split, disjoint towns, benchmark layouts never used
    plans, towns = plan_scenes(40, 0, 0.2, 2, 4)
    assert not set(towns["train"]) & set(towns["heldout"])
    for split in ("train", "heldout"):
        sp = [p for p in plans if p.split == split]
        assert sum(p.kind != "drive" for p in sp) == round(0.2 * len(sp))
    assert all(p.layout >= 100 for p in plans if p.kind != "drive")
    with pytest.raises(ValueError):
        plan_scenes(2, 0, 0.2, 2, 4)  # not enough scenes for 2 held-out towns + 1 training town


def test_resume_skips_and_repairs(dataset, tmp_path):
    out, _ = dataset
    again = generate(out, labels=True, depth=True, progress=False, **KW)
    assert again["generated"] == 0 and again["skipped"] == 3 and again["frames"] == 90
    with pytest.raises(ValueError, match="other settings"):
        generate(out, labels=True, depth=True, progress=False, **{**KW, "seed": 4})


def test_deterministic_and_resumable_bytes(dataset, tmp_path):
    """Two worker processes, then an interrupted scene regenerated in-process: the same bytes as one process."""
    out, _ = dataset
    other = tmp_path / "again"
    assert len(_town_chunks(plan_scenes(KW["num_scenes"], KW["seed"], KW["hazard_share"], 1, 4)[0])) >= 2
    generate(other, labels=True, depth=True, progress=False, workers=2, **KW)
    # interrupt: drop one scene's completion marker and leave a temp folder; resume regenerates it
    (other / "scenes" / "scene-000001.npz").unlink()
    (other / "frames" / ".scene-000001.tmp").mkdir()
    res = generate(other, labels=True, depth=True, progress=False, **KW)
    assert res["generated"] == 1 and res["skipped"] == 2
    for f in sorted((out / "frames").rglob("*.png")):
        assert f.read_bytes() == (other / f.relative_to(out)).read_bytes(), f
    for sub in ("labels", "depth"):
        for f in sorted((out / sub).glob("*.npy")):
            assert f.read_bytes() == (other / f.relative_to(out)).read_bytes()
    assert (out / "meta.json").read_bytes() == (other / "meta.json").read_bytes()
    a, b = load_records(out / "records.npz"), load_records(other / "records.npz")
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.translations, rb.translations)
        assert ra.metadata == rb.metadata and ra.image_paths == rb.image_paths


def test_town_chunks_keep_towns_together():
    plans, _ = plan_scenes(24, 0, 0.25, 2, 4)
    chunks = _town_chunks(plans)
    assert [p for c in chunks for p in c] == plans
    for c in chunks:
        assert len({p.town_seed for p in c}) == 1
        assert all(p.kind == "drive" for p in c) or len(c) == 1
    assert len(chunks) < len(plans)  # drives of a town share a chunk


def test_bad_settings(tmp_path):
    with pytest.raises(ValueError):
        generate(tmp_path / "x", num_scenes=0, progress=False)
    with pytest.raises(ValueError):
        generate(tmp_path / "x", num_scenes=2, duration_s=-1.0, progress=False)
    with pytest.raises(ValueError):
        generate(tmp_path / "x", num_scenes=2, rate_hz=3.0, progress=False)
