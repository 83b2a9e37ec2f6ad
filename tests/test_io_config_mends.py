"""Regression tests of the io / config / geometry / synthetic / stages / hardware audit: each failed before its fix."""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from vavam import hardware, presets
from vavam.config import ActionConfig, VideoConfig, VQConfig, config_from_dict, config_to_dict
from vavam.data.geometry import quat_from_yaw, quat_to_matrix, yaw_from_quat
from vavam.data.synthetic import make_clip, make_frames
from vavam.io import atomic_write, atomic_write_text, load_checkpoint, save_checkpoint
from vavam.stages import Stage, run_stages

# ------------------------------------------------------------------------------ stages


def _nothing(folder: Path) -> dict:
    return {}


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x"])
def test_a_stage_name_that_is_not_a_folder_inside_the_run_is_refused_before_anything_is_deleted(tmp_path, name):
    # a stage's folder is cleared with rmtree: the name '..' used to delete the run folder's parent
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "precious.txt").write_text("keep")
    (run / "keep.txt").write_text("keep")
    with pytest.raises(ValueError, match="stage name"):
        run_stages(run, [Stage(name, _nothing)], log=lambda s: None)
    assert (tmp_path / "precious.txt").read_text() == "keep" and (run / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize("outputs", [("../precious.txt",), (None,), ("",), "precious.txt"])
def test_stage_outputs_outside_the_run_folder_or_given_as_a_string_are_refused(tmp_path, outputs):
    # outputs are unlinked when the stage is to run: '../x' (or an absolute path) deleted a file outside the run, and
    # outputs="report.md" (a string, not a tuple) unlinked one file per letter
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "precious.txt").write_text("keep")
    (run / "p").write_text("keep")  # a letter of "precious.txt"
    with pytest.raises(ValueError, match="output"):
        run_stages(run, [Stage("ok", _nothing, outputs=outputs)], log=lambda s: None)
    assert (tmp_path / "precious.txt").read_text() == "keep" and (run / "p").read_text() == "keep"
    assert not (run / "ok").exists()


def test_an_absolute_output_path_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    with pytest.raises(ValueError, match="relative path inside the run folder"):
        run_stages(tmp_path / "run", [Stage("ok", _nothing, outputs=(str(victim),))], log=lambda s: None)
    assert victim.read_text() == "keep" and not (tmp_path / "run").exists()


def test_valid_stage_outputs_in_subfolders_still_work(tmp_path):
    def page(folder: Path) -> dict:
        (tmp_path / "sub").mkdir(exist_ok=True)
        (tmp_path / "sub" / "page.html").write_text("x")
        return {"n": 1}

    assert run_stages(tmp_path, [Stage("page", page, outputs=("sub/page.html",))], log=lambda s: None) == {
        "page": {"n": 1}}


def test_a_fresh_run_and_a_resumed_one_hand_out_the_same_summaries(tmp_path):
    # a fresh run returned the stage's own dict (tuples, int keys), a resumed one what DONE.json holds (lists, str
    # keys): later stages (the quickstart's report) saw different summaries depending on where the run resumed
    def sizes(folder: Path) -> dict:
        return {"grid": (4, 8), 3: "three", "nested": {"pair": (1.5, None)}}

    stages = [Stage("sizes", sizes)]
    fresh = run_stages(tmp_path, stages, log=lambda s: None)
    resumed = run_stages(tmp_path, stages, log=lambda s: None)
    assert fresh == resumed == {"sizes": {"grid": [4, 8], "3": "three", "nested": {"pair": [1.5, None]}}}


# ------------------------------------------------------------------------------ io: atomic writes


def test_atomic_write_keeps_the_permissions_of_the_file_it_replaces(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    os.chmod(secret, 0o600)
    atomic_write_text(secret, '{"token": 1}')
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600  # was reset to 0666 & ~umask (0644): world-readable
    assert secret.read_text() == '{"token": 1}'
    os.chmod(secret, 0o640)
    atomic_write_text(secret, "x")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o640
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "new.txt", "y")  # a new file: the usual permissions, not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("mode", ["ab", "a", "r+b", "rb"])
def test_atomic_write_refuses_modes_that_would_drop_the_old_content(tmp_path, mode):
    # "ab" appended to an empty temporary file that then replaced the file: the old content was lost
    path = tmp_path / "log.txt"
    path.write_bytes(b"old\n")
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(path, mode) as f:
            if "a" in mode:
                f.write(b"new\n" if "b" in mode else "new\n")
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["log.txt"]  # no temporary file left


# ------------------------------------------------------------------------------ io: checkpoint folders


def test_a_meta_json_cannot_hold_fails_before_an_existing_checkpoint_is_touched(tmp_path):
    folder = tmp_path / "ckpt"
    good = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([True, False])}
    save_checkpoint(folder, good, presets.vavim_tiny(), {"step": 1})
    with pytest.raises(TypeError, match="meta.json"):  # numpy ints are not JSON
        save_checkpoint(folder, {"w": torch.zeros(2, 3)}, presets.vavim_tiny(), {"step": np.int64(2)})
    state, config, meta = load_checkpoint(folder)  # used to fail: new weights under the old meta's hash
    assert meta["step"] == 1 and config == presets.vavim_tiny()
    assert state["w"].dtype == torch.float32 and state["w"].shape == (2, 3) and torch.equal(state["w"], good["w"])
    assert torch.equal(state["b"], good["b"])


def test_save_checkpoint_of_a_bad_meta_writes_nothing_into_a_new_folder(tmp_path):
    with pytest.raises(TypeError, match="nothing was written"):
        save_checkpoint(tmp_path / "new", {"w": torch.zeros(1)}, presets.vq_tiny(), {"path": Path("/x")})
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("name, text", [("meta.json", "[1, 2]"), ("meta.json", "3"), ("config.json", "[1, 2]"),
                                        ("config.json", '"video"')])
def test_json_files_that_are_not_objects_are_named(tmp_path, name, text):
    folder = save_checkpoint(tmp_path / "ckpt", {"w": torch.zeros(1)}, presets.vavim_tiny())
    (folder / name).write_text(text)
    with pytest.raises(ValueError, match=name):  # were an AttributeError / TypeError naming no file
        load_checkpoint(folder)


# ------------------------------------------------------------------------------ geometry


def test_yaw_from_quat_does_not_depend_on_the_scale_of_the_quaternion():
    # [1, 0, 0, 1] is the +90 degree yaw scaled by sqrt(2); quat_to_matrix normalises it, yaw_from_quat gave
    # atan2(2, 1 - 2) = 2.03 rad
    assert yaw_from_quat(np.array([1.0, 0.0, 0.0, 1.0])) == pytest.approx(math.pi / 2)
    yaws = np.array([0.0, 0.4, -1.2, 2.9, -3.0])
    for scale in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(yaw_from_quat(scale * quat_from_yaw(yaws)), yaws, atol=1e-12)
    # any rotation: the yaw is the heading of the rotated x axis, atan2(R10, R00), also for float32 quaternions
    rng = np.random.default_rng(0)
    q = rng.normal(size=(16, 4)).astype(np.float32)
    r = quat_to_matrix(q)
    np.testing.assert_allclose(yaw_from_quat(q), np.arctan2(r[:, 1, 0], r[:, 0, 0]), atol=1e-6)
    assert yaw_from_quat(np.zeros(4)) == 0.0 and np.isnan(yaw_from_quat(np.full(4, np.nan)))  # as before


# ------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("make, message", [
    (lambda: VideoConfig(width=100, head_dim=32), "width 100 is not a multiple of head_dim 32"),
    (lambda: dataclasses.replace(presets.vavim_tiny(), tokens_per_frame=0), "'tokens_per_frame' must be a positive"),
    (lambda: dataclasses.replace(presets.vavim_tiny(), base_width=0), "'base_width' must be a positive"),
    (lambda: dataclasses.replace(presets.vavim_tiny(), num_layers=-1), "'num_layers' must be a positive"),
    (lambda: dataclasses.replace(presets.vq_tiny(), ch_mult=()), "'ch_mult' must be a non-empty"),
    (lambda: dataclasses.replace(presets.vq_tiny(), codebook_size=0), "'codebook_size' must be a positive"),
    (lambda: dataclasses.replace(presets.vavam_tiny(), horizon=0), "'horizon' must be a positive"),
    (lambda: dataclasses.replace(presets.vavam_tiny(), action_scaling=0.0), "'action_scaling' must be a positive"),
    (lambda: dataclasses.replace(presets.vavam_tiny(), action_scaling=math.nan), "'action_scaling' must be a pos"),
])
def test_configs_refuse_inconsistent_or_empty_sizes_by_name(make, message):
    # these built models with no heads / empty tables, a 0.5 downsampling factor or a ZeroDivisionError later on
    with pytest.raises(ValueError, match=message):
        make()


def test_config_json_with_bad_sizes_is_refused_by_field_and_presets_stay_valid():
    data = config_to_dict(presets.vavam_tiny())
    data["video"]["head_dim"] = 48  # width 64
    with pytest.raises(ValueError, match="not a multiple of head_dim 48"):
        config_from_dict(data)
    with pytest.raises(ValueError, match="JSON object"):
        config_from_dict([["kind", "video"]])  # dict() of it used to give a TypeError or a config
    for name, fn in presets.PRESETS.items():
        assert config_from_dict(config_to_dict(fn())) == fn(), name
    assert isinstance(presets.vavam_l(), ActionConfig) and isinstance(presets.vq16(), VQConfig)


# ------------------------------------------------------------------------------ synthetic data


def test_make_clip_of_no_frames_is_empty_and_bad_sizes_are_named():
    clip = make_clip(0, 8, 16, seed=3)  # was a ValueError from np.stack
    assert clip.shape == (0, 8, 16, 3) and clip.dtype == np.uint8
    assert np.array_equal(make_clip(2, 8, 16, seed=3), make_clip(3, 8, 16, seed=3)[:2])
    for call, name in ((lambda: make_clip(2, 8, 16, seed=0, fps=0.0), "fps"),  # was a ZeroDivisionError
                       (lambda: make_frames(1, 8, 16, seed=-1), "seed"),
                       (lambda: make_frames(-1, 8, 16, seed=0), "n"),
                       (lambda: make_frames(1, 8, 16, seed=0, supersample=0), "supersample"),
                       (lambda: make_clip(1, 0, 16, seed=0), "height")):
        with pytest.raises(ValueError, match=rf"^{name} must be"):
            call()


# ------------------------------------------------------------------------------ hardware


def test_the_bf16_warning_for_a_gpu_does_not_speak_of_a_cpu(monkeypatch, capsys):
    monkeypatch.setattr(hardware, "bf16_is_fast", lambda device="cpu": False)
    with pytest.warns(RuntimeWarning) as record:
        hardware.warn_if_slow_bf16("bf16-mixed", "cuda:0", "training")
    message = str(record[0].message)
    assert "CPU" not in message and "'cuda:0'" in message and "precision '32'" in message
    capsys.readouterr()


# ------------------------------------------------------------------------------ io: omegaconf stand-ins


def _fake_omegaconf(monkeypatch: pytest.MonkeyPatch) -> tuple[type, type]:
    """Classes pickled under omegaconf's names (omegaconf itself is not a dependency)."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    classes = []
    for module_name, name in (("omegaconf.dictconfig", "DictConfig"), ("omegaconf.listconfig", "ListConfig")):
        module = types.ModuleType(module_name)
        cls = type(name, (), {"__module__": module_name})
        setattr(module, name, cls)
        monkeypatch.setitem(sys.modules, module_name, module)
        classes.append(cls)
    return classes[0], classes[1]


def test_a_none_or_missing_omegaconf_section_stays_none_or_missing(tmp_path, monkeypatch):
    # a DictConfig / ListConfig whose _content is None (an unset Optional section) became {} / [] (present but empty);
    # one holding "???" (missing) or an interpolation raised AttributeError outside the loader's error handling
    import pickle

    from vavam.io import safe_pickle_load

    dict_config, list_config = _fake_omegaconf(monkeypatch)

    def config(cls: type, content) -> object:
        obj = cls()
        obj.__dict__.update({"_content": content, "_parent": None})
        return obj

    payload = {"none_dict": config(dict_config, None), "none_list": config(list_config, None),
               "missing": config(dict_config, "???"), "interp": config(list_config, "${other}"),
               "full": config(dict_config, {"a": config(list_config, [1, 2]), "b": 3})}
    path = tmp_path / "hp.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    assert safe_pickle_load(path) == {"none_dict": None, "none_list": None, "missing": "???", "interp": "${other}",
                                      "full": {"a": [1, 2], "b": 3}}
