"""``eval openloop`` draws its plans on the records' frames found through the records header's ``image_root``
(where ``data prepare`` records the dataroot), as ``load_records`` does; it looked next to the records file only,
so every prepared nuScenes / nuPlan split got no overlay."""

from __future__ import annotations

import numpy as np
from PIL import Image
from test_openloop_checks import _Planner, _split

import vavam
from vavam.data.records import load_records, save_records
from vavam.eval.planning import eval_openloop


def test_the_overlays_find_the_frames_through_the_header_image_root(tmp_path, monkeypatch):
    records, tokens = _split(tmp_path, "val")
    dataroot = tmp_path / "dataroot"
    scenes = load_records(records, check_files=False)
    for r in scenes:  # frames under the dataroot, paths relative to it (as the nuScenes / nuPlan readers write)
        r.image_paths = [f"samples/{r.name}_{k:02d}.png" for k in range(len(r))]
        for p in r.image_paths:
            (dataroot / p).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 32, 3), 90, np.uint8)).save(dataroot / p)
    split = tmp_path / "prepared" / "val"
    split.mkdir(parents=True)
    save_records(split / "records.npz", scenes, image_root=dataroot)
    (tmp_path / "vam").mkdir()
    monkeypatch.setattr(vavam, "load_action_model", lambda path, device="cpu": _Planner())
    eval_openloop(tmp_path / "vam", split / "records.npz", tokens, tmp_path / "out", num_samples=2, progress=False)
    assert (tmp_path / "out" / "trajectories_frames.png").is_file()
