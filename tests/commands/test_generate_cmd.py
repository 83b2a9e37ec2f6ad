"""``vavam generate`` (vavam.commands.generate): outputs, equality with a direct generate_frames call, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vavam
from vavam.commands import common as C
from vavam.commands.generate import generate
from vavam.data.frames import FrameSource
from vavam.data.tokens import TokenStoreWriter
from vavam.tokenizer import save_tokenizer
from vavam.video import generate_frames, save_video_model

H, W = 32, 48  # vq_tiny (downsampling 8) -> a 4 x 6 grid = vavim_tiny's 24 tokens per frame


def _frames(n: int) -> list[np.ndarray]:
    """Smooth moving gradients, RGB uint8 [H, W, 3]."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = []
    for t in range(n):
        r = 127 + 100 * np.sin((xx + 3 * t) / 7.0)
        g = 127 + 100 * np.cos((yy - 2 * t) / 5.0)
        b = np.full_like(xx, 40 + 30 * t)
        out.append(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))
    return out


def _read_mp4(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("generate_cmd")
    torch.manual_seed(0)
    tok_cfg = vavam.presets.vq_tiny()
    vim_cfg = dataclasses.replace(vavam.presets.vavim_tiny(), vocab_size=tok_cfg.codebook_size + 1)
    assert (H // tok_cfg.downsample) * (W // tok_cfg.downsample) == vim_cfg.tokens_per_frame
    tok = vavam.build_model(tok_cfg).eval()
    vim = vavam.build_model(vim_cfg).eval()
    save_tokenizer(tok, root / "tok")
    save_video_model(vim, root / "vim")
    images = root / "images"
    images.mkdir()
    frames = _frames(6)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(images / f"frame_{i}.png")
    C.write_mp4(root / "clip.mp4", frames, fps=2.0)
    rng = np.random.default_rng(0)
    writer = TokenStoreWriter(root / "store", (4, 6), image_size=(H, W), downsample=8, codebook_size=1024, fps=2.0)
    writer.write_scene("s0", rng.integers(0, 1024, (6, 4, 6)), np.arange(6) * 500_000)
    bad = TokenStoreWriter(root / "store_bad", (4, 8), image_size=(H, 64), downsample=8, codebook_size=1024)
    bad.write_scene("s0", rng.integers(0, 1024, (6, 4, 8)), np.arange(6) * 500_000)
    return {"root": root, "tok": tok, "vim": vim, "images": images, "frames": frames}


def _direct(assets, images: torch.Tensor, context: int, new: int, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = assets["tok"].encode(images)
    gen = generate_frames(assets["vim"], tokens[None, :context], new, **kw)[0]
    return tokens, gen


def test_generate_from_images_outputs_and_direct_equality(assets, tmp_path):
    root = assets["root"]
    s = generate(root / "vim", tokenizer=str(root / "tok"), frames=[str(assets["images"])], context=2, new_frames=3,
                 out=tmp_path / "out", progress=False)
    out = tmp_path / "out"
    for name in ("generated.mp4", "strip.png", "context.png", "generated.png", "real.png", "summary.json",
                 "context_tokens.npy", "generated_tokens.npy", "real_tokens.npy"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == s

    # same tokens as tokenizer + generate_frames called directly on the same (unresized) frames
    images = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 127.5 - 1 for f in assets["frames"][:5]])
    tokens, gen = _direct(assets, images, 2, 3, top_k=1)
    np.testing.assert_array_equal(np.load(out / "context_tokens.npy"), tokens[:2].numpy())
    np.testing.assert_array_equal(np.load(out / "generated_tokens.npy"), gen.numpy())
    np.testing.assert_array_equal(np.load(out / "real_tokens.npy"), tokens[2:5].numpy())
    expected_acc = [float((gen[i] == tokens[2 + i]).float().mean()) for i in range(3)]
    assert s["token_accuracy"] == pytest.approx(expected_acc)
    assert s["real_frames_known"] == 3 and s["sampling"]["mode"] == "greedy"
    assert set(s["timings_s"]) >= {"load", "read", "tokenize", "generate", "decode", "write", "total"}

    # mp4: context + generated frames; real and generated panels side by side, upscaled x9 (288 / 32)
    video = _read_mp4(out / "generated.mp4")
    assert len(video) == 2 + 3
    scale = s["display_scale"]
    assert scale == 9
    vh, vw = video[0].shape[:2]
    assert vw == 2 * W * scale + 4 and H * scale < vh <= H * scale + 26 and vh % 2 == 0
    # strips: one frame per column
    from PIL import Image

    assert Image.open(out / "generated.png").size == (3 * W * scale + 2 * 4, H * scale)
    assert Image.open(out / "context.png").size == (2 * W * scale + 4, H * scale)


def test_generate_from_video_top_k_seed_and_partial_future(assets, tmp_path):
    root = assets["root"]
    kw = {"tokenizer": str(root / "tok"), "frames": [str(root / "clip.mp4")], "start": 3, "context": 2,
          "new_frames": 2, "top_k": 5, "temperature": 1.0, "seed": 3, "fps": None, "progress": False}
    s = generate(root / "vim", out=tmp_path / "a", **kw)
    s2 = generate(root / "vim", out=tmp_path / "b", **kw)
    a = np.load(tmp_path / "a" / "generated_tokens.npy")
    np.testing.assert_array_equal(a, np.load(tmp_path / "b" / "generated_tokens.npy"))
    assert s["token_accuracy"] == s2["token_accuracy"]
    # the mp4 has 6 frames: start 3 + context 2 leaves 1 real future frame for 2 generated ones
    assert s["real_frames_known"] == 1 and len(s["token_accuracy"]) == 1
    decoded = torch.stack([f.image for f in FrameSource.from_video(root / "clip.mp4").frames()])
    _, gen = _direct(assets, decoded[3:], 2, 2, top_k=5, temperature=1.0,
                          generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(a, gen.numpy())
    assert len(_read_mp4(tmp_path / "a" / "generated.mp4")) == 4


def test_generate_from_token_store_without_future(assets, tmp_path):
    import tyro

    root = assets["root"]
    s = tyro.cli(generate, args=[str(root / "vim"), "--tokenizer", str(root / "tok"), "--tokens", str(root / "store"),
                                 "--start", "4", "--context", "2", "--new-frames", "1", "--out", str(tmp_path / "o"),
                                 "--no-progress"])
    assert s["input"]["scene"] == "s0" and s["real_frames_known"] == 0 and s["token_accuracy"] == []
    assert not (tmp_path / "o" / "real.png").exists()
    from vavam.data.tokens import TokenStore

    ctx = torch.from_numpy(TokenStore(root / "store").window("s0", 4, 2).astype(np.int64))
    gen = generate_frames(assets["vim"], ctx[None], 1, top_k=1)[0]
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "generated_tokens.npy"), gen.numpy())
    video = _read_mp4(tmp_path / "o" / "generated.mp4")
    assert len(video) == 3 and video[0].shape[1] == W * s["display_scale"]  # one panel only


def test_a_clip_without_a_real_future_leaves_no_earlier_real_frames(assets, tmp_path):
    """A run with a known future into a folder, then one without (here: the store's last frames): real.png and
    real_tokens.npy of the first clip stayed beside the second clip's frames, though its summary knew no real
    frame."""
    root, out = assets["root"], tmp_path / "o"
    first = generate(root / "vim", tokenizer=str(root / "tok"), tokens=root / "store", start=0, context=2,
                     new_frames=2, out=out, progress=False)
    assert first["real_frames_known"] == 2 and (out / "real.png").is_file() and (out / "real_tokens.npy").is_file()
    second = generate(root / "vim", tokenizer=str(root / "tok"), tokens=root / "store", start=4, context=2,
                      new_frames=1, out=out, progress=False)
    assert second["real_frames_known"] == 0 and "real_png" not in second["files"]
    assert not (out / "real.png").exists() and not (out / "real_tokens.npy").exists()
    assert (out / "generated.png").is_file() and (out / "summary.json").is_file()


def test_generate_errors(assets, tmp_path):
    root = assets["root"]
    tok, imgs = str(root / "tok"), [str(assets["images"])]
    with pytest.raises(FileNotFoundError, match=r"^checkpoint .*: no such file or folder"):  # positional
        generate(tmp_path / "missing", tokenizer=tok, frames=imgs, out=tmp_path / "o")
    released = tmp_path / "vavim.pt"
    released.write_bytes(b"not read before the tokenizer check")
    with pytest.raises(C.CommandError, match="--tokenizer is required.*released"):
        generate(released, frames=imgs, out=tmp_path / "o")
    with pytest.raises(C.CommandError, match="--tokenizer is required"):
        generate(root / "vim", frames=imgs, out=tmp_path / "o")  # our folder records no tokenizer
    with pytest.raises(C.CommandError, match="exactly one input"):
        generate(root / "vim", tokenizer=tok, out=tmp_path / "o")
    with pytest.raises(C.CommandError, match="--frames.*--context needs 3"):
        generate(root / "vim", tokenizer=tok, frames=[str(p) for p in sorted(assets["images"].iterdir())[:2]],
                 context=3, out=tmp_path / "o", progress=False)
    with pytest.raises(C.CommandError, match="--context 4.*at most 3"):
        generate(root / "vim", tokenizer=tok, frames=imgs, context=4, out=tmp_path / "o")
    with pytest.raises(C.CommandError, match=r"--size 32 64.*4x8 token grid = 32 tokens.*expects 24"):
        generate(root / "vim", tokenizer=tok, frames=imgs, context=2, size=(32, 64), out=tmp_path / "o")
    with pytest.raises(C.CommandError, match=r"--tokens .*token grid 4x8 = 32 tokens per frame.*expects 24"):
        generate(root / "vim", tokenizer=tok, tokens=root / "store_bad", context=2, out=tmp_path / "o")
    big = vavam.build_model(dataclasses.replace(vavam.presets.vq_tiny(), codebook_size=2048))
    save_tokenizer(big, tmp_path / "big_tok")
    with pytest.raises(C.CommandError, match="--tokenizer .*2048 codes.*vocabulary has 1025"):
        generate(root / "vim", tokenizer=str(tmp_path / "big_tok"), frames=imgs, context=2, out=tmp_path / "o")
    with pytest.raises(C.CommandError, match="--scene 'nope'"):
        generate(root / "vim", tokenizer=tok, tokens=root / "store", scene="nope", context=2, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing written on errors


def test_generate_accepts_a_tokenizer_preset_like_tokenize(assets, tmp_path, capsys):
    """``--tokenizer preset:NAME`` (an untrained tokenizer, accepted by ``vavam tokenize`` and ``vavam data
    prepare``) was refused as a missing file; it is the preset's tokenizer with the same random weights."""
    from vavam import cli

    root = assets["root"]
    kw = {"frames": [str(assets["images"])], "context": 2, "new_frames": 2, "progress": False}
    s = generate(root / "vim", tokenizer="preset:vq_tiny", out=tmp_path / "preset", **kw)
    generate(root / "vim", tokenizer=str(root / "tok"), out=tmp_path / "folder", **kw)  # saved with those weights
    assert s["tokenizer"] == "preset:vq_tiny"
    for name in ("context_tokens.npy", "generated_tokens.npy", "real_tokens.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "preset" / name), np.load(tmp_path / "folder" / name))
    with pytest.raises(C.CommandError, match=r"^--tokenizer 'preset:nope': unknown preset 'nope'; known tokenizer"):
        generate(root / "vim", tokenizer="preset:nope", out=tmp_path / "o", **kw)
    code = cli.main(["generate", str(root / "vim"), "--tokenizer", "preset:vavim_tiny", "--frames",
                     str(assets["images"]), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "vavam generate: error: --tokenizer 'preset:vavim_tiny'" in err and "a video preset" in err
    assert not (tmp_path / "o").exists()


def test_generate_with_a_vavam_folder_and_its_recorded_tokenizer(assets, tmp_path):
    from vavam.action import save_action_model

    root = assets["root"]
    cfg = vavam.presets.vavam_tiny()
    vam = vavam.build_model(dataclasses.replace(cfg, video=assets["vim"].config))
    vam.video.load_state_dict(assets["vim"].state_dict())
    save_action_model(vam, tmp_path / "vam", meta={"tokenizer": str(root / "tok")})  # as `vavam train action` does
    s = generate(tmp_path / "vam", tokens=root / "store", context=3, new_frames=1, out=tmp_path / "o", progress=False)
    assert s["tokenizer"] == str(root / "tok")
    from vavam.data.tokens import TokenStore

    window = torch.from_numpy(TokenStore(root / "store").window("s0", 0, 4).astype(np.int64))
    gen = generate_frames(assets["vim"], window[None, :3], 1)[0]
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "generated_tokens.npy"), gen.numpy())
    assert s["real_frames_known"] == 1
    assert s["token_accuracy"] == pytest.approx([float((gen[0] == window[3]).float().mean())])


def test_generate_refuses_bad_rates_and_temperatures_by_name(assets, tmp_path):
    """--video-fps 0 wrote a 24 fps mp4 (PyAV's default for rate 0); --fps 0 meant every frame, --fps -2 failed
    late; a negative temperature was accepted for greedy decoding: all refused up front, nothing written."""
    root = assets["root"]
    kw = dict(tokenizer=str(root / "tok"), frames=[str(root / "clip.mp4")], context=2, new_frames=1,
              out=tmp_path / "o", progress=False)
    with pytest.raises(C.CommandError, match=r"^--video-fps must be a positive frame rate .*got 0"):
        generate(root / "vim", video_fps=0.0, **kw)
    with pytest.raises(C.CommandError, match=r"^--video-fps must be a positive frame rate .*got -1"):
        generate(root / "vim", video_fps=-1.0, **kw)
    with pytest.raises(C.CommandError, match=r"^--video-fps must be a positive frame rate \(0.001 to 1000\).*got 10000.0"):
        generate(root / "vim", video_fps=1e4, **kw)
    for fps in (0.0, -2.0, float("nan")):
        with pytest.raises(C.CommandError, match=r"^--fps must be a positive frame rate in frames per second"):
            generate(root / "vim", fps=fps, **kw)
    with pytest.raises(C.CommandError, match=r"^--temperature must be a finite number >= 0"):
        generate(root / "vim", temperature=-1.0, **kw)
    with pytest.raises(C.CommandError, match=r"^--temperature must be > 0 when sampling \(--top-k 5"):
        generate(root / "vim", temperature=0.0, top_k=5, **kw)
    assert not (tmp_path / "o").exists()


def test_greedy_generation_accepts_temperature_zero(assets, tmp_path):
    """--help says the temperature is unused when greedy (--top-k 1): 0 is accepted and changes nothing."""
    root = assets["root"]
    kw = dict(tokenizer=str(root / "tok"), tokens=root / "store", context=2, new_frames=1, top_k=1, progress=False)
    s = generate(root / "vim", temperature=0.0, out=tmp_path / "zero", **kw)
    generate(root / "vim", out=tmp_path / "default", **kw)
    assert s["sampling"]["mode"] == "greedy" and s["sampling"]["temperature"] == 0.0
    np.testing.assert_array_equal(np.load(tmp_path / "zero" / "generated_tokens.npy"),
                                  np.load(tmp_path / "default" / "generated_tokens.npy"))


def test_write_mp4_and_frame_sources_refuse_non_positive_rates(tmp_path):
    frame = np.zeros((8, 8, 3), np.uint8)
    for fps in (0, -1.0, float("inf"), 1e-4, 1001, 10_000):  # 10,000 fps wrote an mp4 that decodes to no frame
        with pytest.raises(ValueError, match="write_mp4: fps must be a positive frame rate"):
            C.write_mp4(tmp_path / "v.mp4", [frame], fps=fps)
    assert not (tmp_path / "v.mp4").exists()
    C.write_mp4(tmp_path / "v.mp4", [frame, frame], fps=2.0)
    from vavam.data.frames import FrameError

    for fps in (0, -2.0):
        with pytest.raises(FrameError, match="fps must be a positive frame rate"):
            FrameSource.from_video(tmp_path / "v.mp4", fps=fps)
        with pytest.raises(FrameError, match="fps must be a positive frame rate"):
            FrameSource.from_files("s", [tmp_path / "a.png"], fps=fps)
    assert FrameSource.from_video(tmp_path / "v.mp4", fps=None).fps is None


def test_write_mp4_refuses_frames_that_differ_before_padding(tmp_path):
    # 63 and 64 rows both pad to 64: the sizes are compared before padding, so nothing is written misaligned
    a, b = np.zeros((63, 8, 3), np.uint8), np.zeros((64, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"frames of different sizes \(frame 0 \(63, 8\), frame 1 \(64, 8\)\)"):
        C.write_mp4(tmp_path / "v.mp4", [a, b])
    with pytest.raises(ValueError, match=r"frame 1 must be RGB uint8 \[H, W, 3\], got float32 \(63, 8, 3\)"):
        C.write_mp4(tmp_path / "v.mp4", [a, a.astype(np.float32)])
    with pytest.raises(ValueError, match=r"frame 0 must be RGB uint8 \[H, W, 3\], got uint8 \(63, 8\)"):
        C.write_mp4(tmp_path / "v.mp4", [a[..., 0]])
    assert not (tmp_path / "v.mp4").exists()
    C.write_mp4(tmp_path / "v.mp4", [a, a], fps=2.0)  # odd sizes alike are padded to even and written
    import av

    with av.open(str(tmp_path / "v.mp4")) as c:
        f = next(c.decode(video=0))
        assert (f.height, f.width) == (64, 8)


def test_a_moved_run_still_finds_its_recorded_tokenizer(assets, tmp_path):
    """meta.json recorded only the tokenizer's absolute path: runs moved or copied elsewhere (another machine, a
    renamed folder) lost it, and serve / plan / generate / eval closedloop needed --tokenizer again. The path
    relative to the model folder is recorded too and used when the absolute one is gone."""
    import shutil

    from vavam.action import save_action_model
    from vavam.io import recorded_tokenizer, tokenizer_record
    from vavam.serve.server import load_agent

    root = assets["root"]
    cfg = vavam.presets.vavam_tiny()
    vam = vavam.build_model(dataclasses.replace(cfg, video=assets["vim"].config))
    runs = tmp_path / "runs"
    shutil.copytree(root / "tok", runs / "tok")
    save_action_model(vam, runs / "vam" / "model", meta=tokenizer_record(runs / "tok", runs / "vam" / "model"))
    assert recorded_tokenizer(runs / "vam" / "model") == (runs / "tok").resolve()
    moved = tmp_path / "elsewhere"
    shutil.move(str(runs), str(moved))
    assert recorded_tokenizer(moved / "vam" / "model") == (moved / "tok").resolve()
    assert C.resolve_tokenizer(moved / "vam" / "model", None, required=True) == str((moved / "tok").resolve())
    assert load_agent(moved / "vam" / "model").tokenizer is not None
    shutil.rmtree(moved / "tok")  # gone from both places: the recorded path is named as missing
    with pytest.raises(C.CommandError, match="does not record a tokenizer that exists"):
        C.resolve_tokenizer(moved / "vam" / "model", None, required=True)
