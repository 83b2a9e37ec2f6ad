"""Mends of the generation / planning tools: sampling at tiny temperatures, ``--out`` that cannot be a folder,
the closed-loop video's waypoint dots and a run whose planner fails at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import vavam
from vavam.cli import main
from vavam.commands import common as C
from vavam.commands.generate import generate
from vavam.commands.plan import plan
from vavam.video import generate_frames, sample_logits


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Tiny VaViM / VaVAM / VQ checkpoint folders and 4 frames of 32 x 48 (a 4 x 6 grid = 24 tokens per frame)."""
    from PIL import Image

    from vavam.action import save_action_model
    from vavam.tokenizer import save_tokenizer
    from vavam.video import save_video_model

    root = tmp_path_factory.mktemp("mends")
    torch.manual_seed(0)
    tok_cfg = vavam.presets.vq_tiny()
    vim_cfg = dataclasses.replace(vavam.presets.vavim_tiny(), vocab_size=tok_cfg.codebook_size + 1)
    vam_cfg = vavam.presets.vavam_tiny()
    video_cfg = dataclasses.replace(vam_cfg.video, vocab_size=tok_cfg.codebook_size + 1)
    vam_cfg = dataclasses.replace(vam_cfg, video=video_cfg)
    save_tokenizer(vavam.build_model(tok_cfg).eval(), root / "tok")
    save_video_model(vavam.build_model(vim_cfg).eval(), root / "vim")
    save_action_model(vavam.build_model(vam_cfg).eval(), root / "vam")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / "images" / f"f{i}.png")
    (root / "a_file").write_text("not a folder")
    return {"root": root}


# ------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 1e-320])
@pytest.mark.parametrize("top_k", [None, 2])
def test_a_tiny_temperature_samples_the_argmax_instead_of_crashing(temperature: float, top_k: int | None) -> None:
    """softmax(logits / T) tends to the argmax as T -> 0+. ``logits / 1e-40`` overflowed float32 to inf (and 1e-300
    rounded to 0: 0 / 0), so softmax gave NaN and ``torch.multinomial`` raised a RuntimeError (a traceback from
    ``vavam generate --top-k 0 --temperature 1e-40``)."""
    logits = torch.tensor([[0.1, 0.3, 0.2, -1.0], [2.0, -3.0, 1.5, 1.9999]])  # [B=2, V=4]
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert sample_logits(logits, temperature, top_k, g).tolist() == [1, 0]


def test_generation_at_a_tiny_temperature_is_the_greedy_generation() -> None:
    """``generate_frames`` (cached) at T = 1e-40 without a top-k cut gives the greedy frames (the logits of a random
    model have no ties)."""
    torch.manual_seed(0)
    model = vavam.build_model(vavam.presets.vavim_tiny()).eval()
    context = torch.randint(0, 1024, (2, 2, 4, 6))  # [B, T0, h, w]
    greedy = generate_frames(model, context, 1)  # [B, 1, h, w]
    cold = generate_frames(model, context, 1, temperature=1e-40, top_k=None, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(cold, greedy, rtol=0, atol=0)


# ------------------------------------------------------------------------------ --out


def test_an_out_that_is_a_file_is_refused_by_name_before_any_work(assets, capsys) -> None:
    """``--out`` naming a file (or a path under one) raised FileExistsError / NotADirectoryError from ``mkdir`` after
    the whole generation / sampling, with a traceback; now a CommandError naming ``--out``, one line on the CLI."""
    root = assets["root"]
    frames, tok = [str(root / "images")], str(root / "tok")
    for out in (root / "a_file", root / "a_file" / "sub"):
        with pytest.raises(C.CommandError, match=r"^--out .*a_file.* is a file, not a folder"):
            generate(root / "vim", tokenizer=tok, frames=frames, context=2, new_frames=1, out=out, progress=False)
        with pytest.raises(C.CommandError, match=r"^--out .*a_file.* is a file, not a folder"):
            plan(root / "vam", "left", tokenizer=tok, frames=frames, num_samples=1, num_steps=1, out=out)
    assert (root / "a_file").read_text() == "not a folder"

    code = main(["generate", str(root / "vim"), "--tokenizer", tok, "--frames", *frames, "--context", "2",
                 "--new-frames", "1", "--no-progress", "--out", str(root / "a_file" / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and "vavam generate: error: --out" in err and "Traceback" not in err
    code = main(["plan", str(root / "vam"), "--command", "left", "--tokenizer", tok, "--frames", *frames,
                 "--num-samples", "1", "--num-steps", "1", "--out", str(root / "a_file")])
    err = capsys.readouterr().err
    assert code == 2 and "vavam plan: error: --out" in err and "Traceback" not in err


def test_make_out_dir_names_out_when_mkdir_fails(tmp_path) -> None:
    """The folder is created with its parents; an OSError of ``mkdir`` is a CommandError naming ``--out``."""
    assert C.make_out_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(C.CommandError, match=r"^--out .*f/g: cannot create the output folder"):
        C.make_out_dir(tmp_path / "f" / "g")


# ------------------------------------------------------------------------------ closed-loop video


def test_draw_plan_puts_a_dot_on_every_visible_waypoint_the_first_included() -> None:
    """The plan's origin (the rear axle) is 1.70 m behind the camera, so it is never drawn; the dots skipped the
    first *visible* point, i.e. the 0.5 s waypoint never had its dot (it lay under the cyan line only)."""
    from vavam.world.camera import Camera
    from vavam.world.video import draw_plan

    camera = Camera(72, 128)
    pose = np.eye(4)  # ego at the world origin, heading +x
    plan_world = np.array([[0.0, 0.0], [10, 2], [20, 4], [30, 6], [40, 8], [50, 10], [60, 12]])  # [7, 2], origin first
    uv, depth = camera.project(np.c_[plan_world, np.zeros(7)], pose)
    assert depth[0] < camera.near and (depth[1:] > camera.near).all()
    out = draw_plan(np.zeros((72, 128, 3), np.uint8), camera, pose, plan_world)
    for u, v in uv[1:]:
        r, c = int(round(v)), int(round(u))
        patch = out[max(0, r - 1) : r + 2, max(0, c - 1) : c + 2].reshape(-1, 3)
        assert (patch == (255, 0, 255)).all(axis=1).any(), f"no waypoint dot near pixel ({c}, {r})"


def test_a_run_video_whose_planner_fails_at_once_keeps_its_result(tmp_path, gl_context) -> None:
    """A planner that raises on its first call: ``simulate`` returns the failed run before any frame, and
    ``write_mp4`` raised "no frames", losing the result; now the video holds the start frame (one per pose)."""
    av = pytest.importorskip("av")
    from vavam.world.scenarios import make_scenario
    from vavam.world.video import record_run_video

    def broken(obs):
        raise RuntimeError("planner down")

    spec = dataclasses.replace(make_scenario("stationary", 0, 0), priming_steps=0)
    path = tmp_path / "run.mp4"
    res = record_run_video(spec, broken, path, 36, 64, ctx=gl_context)
    assert res.failure is not None and "planner down" in res.failure
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == len(res.poses) == 1 and frames[0].shape == (36, 64, 3)


def test_one_generator_per_row_makes_each_row_independent_of_the_batch() -> None:
    """Sampled generation drew every row from one generator in turn, so a row's tokens changed with the batch size
    and with the rows beside it. With one generator per row, row i's frames are the ones it gets alone."""
    torch.manual_seed(0)
    vim = vavam.build_model(vavam.presets.vavim_tiny()).eval()
    ctx = torch.randint(0, 1024, (3, 2, 4, 6))  # [B, T0, h, w]: 24 tokens per frame

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    together = generate_frames(vim, ctx, 2, top_k=None, generator=gens([5, 6, 7]))
    for i, s in enumerate([5, 6, 7]):
        alone = generate_frames(vim, ctx[i : i + 1], 2, top_k=None, generator=gens([s]))
        assert torch.equal(together[i : i + 1], alone)
    shared = generate_frames(vim, ctx, 2, top_k=None, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(shared[1:2], generate_frames(vim, ctx[1:2], 2, top_k=None,
                                                        generator=torch.Generator().manual_seed(5)))  # the old way
    logits = torch.randn(3, 10)
    top = sample_logits(logits, top_k=4, generator=gens([1, 2, 3]))
    assert all(int(top[i]) in logits[i].topk(4).indices.tolist() for i in range(3))
    with pytest.raises(ValueError, match="2 generators for 3 rows"):
        sample_logits(logits, top_k=None, generator=gens([1, 2]))
