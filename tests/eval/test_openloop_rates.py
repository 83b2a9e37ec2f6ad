"""``vavam eval openloop`` on 10 Hz records: windows step 0.5 s through ``subsampling``, and without it the
refusal says which ``--subsampling`` the records need."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vavam
from vavam.data.records import SceneRecord, save_records
from vavam.data.tokens import TokenStoreWriter
from vavam.eval.planning import eval_openloop

HZ = 10.0
SPEED = 6.0  # m/s, straight


def _scene(name, hz, n, t0=0):
    """A straight drive at ``SPEED`` along x, ``n`` frames at ``hz`` from ``t0`` (µs)."""
    ts = t0 + np.round(np.arange(n) * 1e6 / hz).astype(np.int64)
    trans = np.zeros((n, 3))
    trans[:, 0] = SPEED * (ts - t0) / 1e6
    return SceneRecord(name=name, timestamps=ts, translations=trans, rotations=np.tile([1.0, 0, 0, 0], (n, 1)))


def _write_10hz(root, name, num_scenes=2, num_frames=60, grid=(4, 6)):
    """Straight constant-speed drives recorded at 10 Hz, with a token store of the same frames."""
    rng = np.random.default_rng(0)
    writer = TokenStoreWriter(root / f"{name}_tok", grid, codebook_size=32, tokenizer={"name": "rand"}, fps=HZ,
                              resume=False)
    records = []
    for k in range(num_scenes):
        records.append(_scene(f"{name}{k}", HZ, num_frames, t0=k * 10**9))
        writer.write_scene(f"{name}{k}", rng.integers(0, 32, size=(num_frames, *grid), dtype=np.uint16),
                           records[-1].timestamps)
    save_records(root / f"{name}.npz", records)
    return root / f"{name}.npz", root / f"{name}_tok"


@pytest.fixture
def setup(tmp_path):
    from vavam.action.convert import save_action_model

    torch.manual_seed(0)
    vam = vavam.build_model(vavam.presets.vavam_tiny())  # 4 context frames
    save_action_model(vam, tmp_path / "vam")
    val = _write_10hz(tmp_path, "val")
    train = _write_10hz(tmp_path, "train")
    return tmp_path, val, train


def test_openloop_subsamples_10hz_records(setup):
    tmp_path, (records, tokens), (train_records, train_tokens) = setup
    with pytest.raises(ValueError, match=r"val\.npz: no window .*0\.1 s apart \(10 Hz\).*--subsampling 5.*not 1\)"):
        eval_openloop(tmp_path / "vam", records, tokens, tmp_path / "out1", progress=False)
    res = eval_openloop(tmp_path / "vam", records, tokens, tmp_path / "out5", train_records=train_records,
                        train_tokens=train_tokens, subsampling=5, limit=8, progress=False)
    assert res["subsampling"] == 5 and res["windows"] == 8
    # context frames 0.5 s apart: constant velocity reads 6 m/s and extrapolates the 3-s future exactly
    cv = res["rows"]["constant velocity"]["all"]
    assert cv["min_ade"] == pytest.approx(0.0, abs=1e-4)
    # every training window drives the same straight line, so the mean trajectory is exact too
    assert res["rows"]["mean trajectory per command"]["all"]["min_ade"] == pytest.approx(0.0, abs=1e-4)


def test_subsampling_is_checked_by_name(setup):
    tmp_path, (records, tokens), _ = setup
    with pytest.raises(ValueError, match="--subsampling must be a positive integer"):
        eval_openloop(tmp_path / "vam", records, tokens, tmp_path / "out0", subsampling=0, progress=False)


@pytest.mark.parametrize(
    "scenes, subsampling, hint",
    [
        ([_scene("a", 2.0, 8)], 5, r" \(its frames are 0\.5 s apart \(2 Hz\): windows step 0\.5 s, so use "
                                   r"subsampling 1 \(--subsampling 1 on the command line\), not 5\)$"),
        ([_scene("a", 2.0, 8)], 1, r"$"),  # the rate is right: the scene is too short
        ([_scene("a", 3.0, 60)], 1,
         r" \(its frames are 0\.333 s apart \(3 Hz\): no subsampling steps 0\.5 s; resample"),
        ([_scene("a", 2.0, 1), _scene("b", 2.0, 1)], 1, r" \(no scene has 2 frames\)$"),
        ([], 1, r" \(the file holds no scene\)$"),
    ],
)
def test_no_window_says_what_the_rate_needs(tmp_path, scenes, subsampling, hint):
    from vavam.train.action import make_window_dataset

    save_records(tmp_path / "r.npz", scenes)
    with pytest.raises(ValueError, match=r"r\.npz: no window of 4 frames \+ 3 s future fits any scene" + hint):
        make_window_dataset(tmp_path / "r.npz", tmp_path / "tok", 4, subsampling)
