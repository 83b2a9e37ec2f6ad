"""Bad input on the ``vavam`` command line ends in a one-line error (status 2) that names the option, before
anything is written: no traceback, no half-made output folder."""

from __future__ import annotations

import pytest

from vavam import cli


@pytest.fixture(autouse=True)
def _no_traceback(monkeypatch):
    monkeypatch.delenv("VAVAM_TRACEBACK", raising=False)


def _run(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command, preset, message", [
    ("tokenizer", "nope", "--preset 'nope': unknown preset; known tokenizer presets: vq16, vq_mini, vq_tiny"),
    ("tokenizer", "vavim_tiny", "--preset 'vavim_tiny' is a video preset, not a tokenizer one"),
    ("video", "nope", "--preset 'nope': unknown preset; known video presets: vavim_b"),
    ("action", "nope", "--preset 'nope': unknown preset; known action presets: vavam_b"),
])
def test_train_preset_errors_are_one_line(tmp_path, capsys, command, preset, message):
    extra = {"tokenizer": [], "video": ["--tokens", str(tmp_path / "tok")],
             "action": ["--video", str(tmp_path / "v"), "--records", str(tmp_path / "r.npz"),
                        "--tokens", str(tmp_path / "tok")]}[command]
    code, err = _run(capsys, "train", command, "--out", str(tmp_path / "run"), "--preset", preset, *extra)
    assert code == 2
    assert f"vavam train {command}: error: {message}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value", [("--log-every", "0"), ("--ckpt-every", "0"), ("--steps", "0"),
                                           ("--steps", "-3"), ("--val-frames", "0")])
def test_train_tokenizer_counts_are_refused_by_name(tmp_path, capsys, option, value):
    small = {"--steps": "2", "--batch-size": "1", "--val-frames": "1"}  # a short run, should a check be missing
    small.pop(option, None)
    args = [a for kv in small.items() for a in kv] + ["--image-size", "16", "16", "--no-progress"]
    code, err = _run(capsys, "train", "tokenizer", "--out", str(tmp_path / "run"), *args, option, value)
    assert code == 2 and f"error: {option} must be a positive integer, got {value}" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, make, message", [
    ("--data", None, "--data {path}: no such folder"),
    ("--data", "folder", "need at least 2 images"),
    ("--perceptual-weights", None, "perceptual weights not found at {path}"),
])
def test_train_tokenizer_refuses_missing_inputs_before_making_its_folder(tmp_path, capsys, option, make, message):
    """A missing --data folder (or one without images) or --perceptual-weights file was refused after --out was
    made, leaving an empty folder behind; a folder that was there before stays."""
    path = tmp_path / "input"
    if make == "folder":
        path.mkdir()
    args = ["--steps", "2", "--batch-size", "1", "--val-frames", "1", "--image-size", "16", "16", "--no-progress",
            option, str(path)]
    code, err = _run(capsys, "train", "tokenizer", "--out", str(tmp_path / "run" / "a"), *args)
    assert code == 2 and message.format(path=path) in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    (tmp_path / "existing").mkdir()
    code, _ = _run(capsys, "train", "tokenizer", "--out", str(tmp_path / "existing"), *args)
    assert code == 2 and (tmp_path / "existing").is_dir()


@pytest.mark.parametrize("args, message", [
    (["--tokenizer", "preset:nope"], "--tokenizer 'preset:nope': unknown preset"),
    (["--shard", "4/2"], "shard '4/2': need 0 <= i < N"),
    (["--videos", "{tmp}/no_videos"], "no_videos: OpenDV video folder does not exist"),
    (["--splits", "train", "val", "--videos", "{tmp}/videos_train_only"], "OpenDV video 'v2'"),
    (["--tokenizer", "preset:vq_tiny", "--height", "30", "--width", "64"],
     "--height 30 --width 64: not positive multiples of the tokenizer's downsampling"),
])
def test_prepare_opendv_refuses_bad_input_before_making_its_folder(tmp_path, capsys, args, message):
    """--out was made before the tokenizer, --shard and the splits were checked: a refused call left an empty
    folder (and a later split's missing video was found only after the earlier splits were written)."""
    import json

    rows = [{"videoid": "v1", "youtuber": "C", "split": "Train", "start_discard": 0, "end_discard": 0},
            {"videoid": "v2", "youtuber": "C", "split": "Val", "start_discard": 0, "end_discard": 0}]
    (tmp_path / "meta.json").write_text(json.dumps(rows))
    (tmp_path / "videos").mkdir()
    if "{tmp}/videos_train_only" in args:  # a readable video for the first split only
        import numpy as np

        from vavam.media import write_mp4

        (tmp_path / "videos_train_only" / "C").mkdir(parents=True)
        write_mp4(tmp_path / "videos_train_only" / "C" / "v1.mp4", [np.zeros((16, 16, 3), np.uint8)] * 4, fps=2.0)
    base = {"--meta": str(tmp_path / "meta.json"), "--videos": str(tmp_path / "videos"), "--splits": "train"}
    given = [a.format(tmp=tmp_path) for a in args]
    base = {k: v for k, v in base.items() if k not in given}
    argv = [a for kv in base.items() for a in kv] + given + ["--no-progress"]
    code, err = _run(capsys, "data", "prepare", "opendv", "--out", str(tmp_path / "out" / "a"), *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_resume_hint_is_not_a_command_line_option(capsys):
    for command in ("tokenizer", "video", "action"):
        with pytest.raises(SystemExit) as info:
            cli.main(["train", command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "--seed" in out and "resume-hint" not in out and "resume_hint" not in out


def test_unknown_command_of_a_group_is_named(capsys):
    code, err = _run(capsys, "train", "bogus")
    assert code == 2
    assert err.startswith("vavam: unknown command 'train bogus'\n")
    assert "train tokenizer" in err  # then the group's commands
    code, err = _run(capsys, "train", "--steps", "3")
    assert code == 2 and "'vavam train' needs a command before the option '--steps'" in err
    assert cli.main(["train", "--help"]) == 0
    assert "train video" in capsys.readouterr().out


def test_report_on_a_folder_without_anything_leaves_no_summary_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    code, err = _run(capsys, "report", str(run))
    assert code == 2 and "no evaluation.json" in err
    assert list(run.iterdir()) == []  # no empty summary/
    code, _ = _run(capsys, "report", str(run), "--out", str(tmp_path / "a" / "b"))
    assert code == 2 and not (tmp_path / "a").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    code, _ = _run(capsys, "report", str(run), "--out", str(existing))
    assert code == 2 and existing.is_dir()  # a folder that was there stays


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine with CUDA has the device")
@pytest.mark.parametrize("argv", [
    ["plan", "CKPT", "--device", "cuda"],
    ["serve", "CKPT", "--device=cuda:1"],
    ["eval", "nexttoken", "CKPT", "--device", "cuda"],
    ["tokenize", "--frames", "F", "--out", "O", "--device", "cuda"],
])
def test_a_missing_gpu_is_a_one_line_error(tmp_path, capsys, argv):
    """--device cuda on a machine without CUDA ended in torch's 'Torch not compiled with CUDA enabled'
    traceback (exit 1) in serve / plan / eval ...; it is now refused before anything runs, naming --device."""
    argv = [str(tmp_path / a) if a in ("CKPT", "F", "O") else a for a in argv]
    code, err = _run(capsys, *argv)
    assert code == 2 and "--device cuda" in err and "no CUDA device here" in err and "Traceback" not in err
    assert not (tmp_path / "O").exists()


def test_help_is_shown_whatever_device_is_typed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plan", "--help", "--device", "nonsense"])
    assert exit_info.value.code == 0 and "--device" in capsys.readouterr().out


def test_a_gpu_index_beyond_the_visible_ones_is_refused(monkeypatch):
    import torch

    from vavam.hardware import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(ValueError, match=r"--device cuda:2: only 2 GPU\(s\) visible"):
        check_device("cuda:2")


def test_a_device_that_is_no_device_name_is_refused(capsys, tmp_path):
    code, err = _run(capsys, "generate", str(tmp_path / "ckpt"), "--device", "gpu0")
    assert code == 2 and "--device 'gpu0': not a device name" in err


def test_a_torchscript_tokenizer_without_trust_code_is_a_one_line_error(tmp_path, capsys):
    """The refusal of a TorchScript --tokenizer without --trust-code is a PermissionError whose message names
    --tokenizer; the command line let it through as a traceback (exit 1) instead of its one-line error."""
    import vavam
    from vavam.video import save_video_model

    save_video_model(vavam.build_model(vavam.presets.vavim_tiny()), tmp_path / "vim")
    (tmp_path / "x_encoder.jit").write_bytes(b"not really TorchScript")
    (tmp_path / "frames").mkdir()
    code, err = _run(capsys, "generate", str(tmp_path / "vim"), "--tokenizer", str(tmp_path / "x_encoder.jit"),
                     "--frames", str(tmp_path / "frames"), "--out", str(tmp_path / "gen"), "--no-progress")
    assert code == 2 and "Traceback" not in err
    assert f"vavam generate: error: --tokenizer {tmp_path / 'x_encoder.jit'}:" in err and "--trust-code" in err
    assert not (tmp_path / "gen").exists()


def test_a_nested_group_lists_its_commands(capsys):
    """`vavam data prepare --help` said "unknown command 'data prepare'" (exit 2), and `vavam data prepare bogus`
    named 'data prepare' as the unknown command: only the first word was taken for the group."""
    assert cli.main(["data", "prepare", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vavam data prepare <command>") and "data prepare nuscenes" in out
    code, err = _run(capsys, "data", "prepare", "bogus")
    assert code == 2 and err.startswith("vavam: unknown command 'data prepare bogus'\n")
    assert "data prepare opendv" in err
    code, err = _run(capsys, "data", "prepare", "--dataroot", "x")
    assert code == 2 and "'vavam data prepare' needs a command before the option '--dataroot'" in err
    assert cli.main(["data", "prepare"]) == 2  # no command: the group's commands, as for `vavam train`
    assert "data prepare nuplan" in capsys.readouterr().out


def test_a_checkpoint_that_fails_its_hash_is_a_one_line_error(tmp_path, capsys):
    """CheckpointError (a RuntimeError) used to end the command in a traceback."""
    import json

    ckpt = tmp_path / "step-00000010.ckpt"
    ckpt.write_bytes(b"0123456789")
    (tmp_path / "step-00000010.ckpt.sha256").write_text(json.dumps({"size": 99, "sha256": "0" * 64}))
    code, err = _run(capsys, "checkpoint", "consolidate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m"))
    assert code == 2 and "Traceback" not in err
    assert f"{ckpt}: truncated or overwritten (10 bytes, expected 99)" in err


def test_a_message_that_names_its_command_is_not_prefixed_twice(tmp_path, capsys):
    """'vavam train tokenizer: error: vavam train tokenizer: 2 devices asked for ...' named the command twice."""
    code, err = _run(capsys, "train", "tokenizer", "--out", str(tmp_path / "t"), "--devices", "2", "--steps", "1")
    assert code == 2 and err.count("vavam train tokenizer:") == 1
    assert "vavam train tokenizer: error: 2 devices asked for, but this process was not started by a launcher" in err


_WARNING_DEMO = '''
import sys, warnings
import vavam.cli as cli
import vavam.data.tokens as inside

exec(compile("import warnings\\ndef warn_here():\\n    warnings.warn('a vavam warning', stacklevel=2)\\n",
             inside.__file__, "exec"), inside.__dict__)  # a function of a vavam module, warning for its caller


def demo() -> int:
    """A command whose code warns from vavam and from elsewhere."""
    inside.warn_here()
    warnings.warn("another package's warning")
    return 0


sys.modules["demo_commands"] = sys.modules[__name__]
cli.COMMANDS["demo"] = "demo_commands:demo"
sys.exit(cli.main(["demo"]))
'''


def test_vavam_warnings_are_one_line_naming_the_command(tmp_path):
    """A vavam warning printed 'file:line: UserWarning: ...' and the source line of its warnings.warn call (with
    stacklevel=2, a line of tyro's); under a command it is now 'vavam <command>: warning: ...'. Other packages'
    warnings keep Python's format, and the format is restored after the command."""
    import subprocess
    import sys

    script = tmp_path / "demo.py"
    script.write_text(_WARNING_DEMO)
    done = subprocess.run([sys.executable, "-W", "always", str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "vavam demo: warning: a vavam warning"
    assert lines[1] == f"{script}:13: UserWarning: another package's warning"
    assert len(lines) == 3 and "warnings.warn" in lines[2]  # the source line, Python's default


@pytest.mark.parametrize("flag", ["--url", "--token"])
def test_eval_closedloop_server_options_need_through_server(tmp_path, capsys, flag):
    """--url / --token without --through-server were ignored: the evaluation planned in-process, not with the
    server the user named. They are now refused, before any checkpoint is read."""
    code, err = _run(capsys, "eval", "closedloop", str(tmp_path / "missing"), flag, "http://127.0.0.1:9")
    assert code == 2
    assert err.splitlines()[0] == (f"vavam eval closedloop: error: {flag} is for planning through a server: add "
                                   "--through-server")
