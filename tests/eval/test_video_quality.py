"""Video quality (FD@k): equivalences with hand-computed Fréchet distances, reference sets, report, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import vavam
from vavam.eval.quality import frechet_distance_from_features
from vavam.eval.video_quality import eval_quality, evaluate_video_quality, plan_windows

N, C, F, H, W = 12, 4, 4, 4, 6


class PixelTokenizer:
    """Lossless stub: images on the uint8 grid [B, 3, H, W] <-> ids [B, 3 H, W] (the 256 pixel values)."""

    codebook_size = 256
    downsample = 1

    def __init__(self, levels: int = 256) -> None:
        self.levels = levels  # < 256: a lossy tokenizer (pixel values quantised to `levels` steps)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        u = ((images + 1) / 2).clamp(0, 1)
        q = (u * (self.levels - 1)).round() / (self.levels - 1)
        return (q * 255).round().long().flatten(1, 2)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids.float() / 127.5 - 1).view(ids.shape[0], 3, -1, ids.shape[-1])


class MeanStd:
    """Stub extractor: per-channel mean and std of [0, 1] images -> [N, 6]."""

    name = "meanstd"
    comparable_to_published = False
    description = "per-channel mean and std"
    dim = 6

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1)], 1)


class Oracle:
    """A 'generator' that returns the tokens of the true future of the window whose context it is given."""

    def __init__(self, tokenizer, windows: torch.Tensor) -> None:
        self.pairs = [(tokenizer.encode(w[:C]), tokenizer.encode(w[C:])) for w in windows]

    def __call__(self, ctx: torch.Tensor, n: int) -> torch.Tensor:
        out = []
        for c in ctx:
            match = [fut for key, fut in self.pairs if torch.equal(key, c)]
            assert len(match) == 1
            out.append(match[0][:n])
        return torch.stack(out)


def _copy_last(ctx: torch.Tensor, n: int) -> torch.Tensor:
    return ctx[:, -1:].repeat(1, n, 1, 1)


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    """[N, 8, 3, H, W] on the uint8 grid: dark context frames, bright future frames (different distributions)."""
    g = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, 128, (N, C, 3, H, W), generator=g)
    fut = torch.randint(128, 256, (N, F, 3, H, W), generator=g)
    return torch.cat([ctx, fut], 1).float() / 127.5 - 1


def _feats(images: torch.Tensor) -> torch.Tensor:
    return MeanStd()((images + 1) / 2)


def test_perfect_generator_gives_zero_against_the_future(windows):
    tok = PixelTokenizer()
    res = evaluate_video_quality(Oracle(tok, windows), tok, windows, MeanStd(), context=C, horizon=F, batch_size=5)
    assert res.windows == N and res.feature_dim == 6 and res.reference == "future"
    assert res.fd_generated == pytest.approx([0.0] * F, abs=1e-6)  # FD(X, X) = 0 through the whole pipeline
    assert res.fd_reconstruction == pytest.approx([0.0] * F, abs=1e-6)  # lossless tokenizer: no bound
    # copy baseline: last context frame vs the true k-th future, by hand
    for k in range(F):
        expected = frechet_distance_from_features(_feats(windows[:, C - 1]), _feats(windows[:, C + k]))
        assert res.fd_copy_last[k] == pytest.approx(expected, rel=1e-9)
        assert expected > 0.01
    assert res.examples["generated"].shape == (4, F, 3, H, W)
    torch.testing.assert_close(res.examples["generated"], windows[:4, C:])


def test_context_reference_is_the_original_protocol(windows):
    tok = PixelTokenizer()
    oracle = Oracle(tok, windows)
    future = evaluate_video_quality(oracle, tok, windows, MeanStd(), context=C, horizon=F, reference="future")
    context = evaluate_video_quality(oracle, tok, windows, MeanStd(), context=C, horizon=F, reference="context")
    all_ctx = _feats(windows[:, :C].flatten(0, 1))  # all 4 real context frames of every window pooled
    for k in range(F):
        expected = frechet_distance_from_features(_feats(windows[:, C + k]), all_ctx)
        assert context.fd_generated[k] == pytest.approx(expected, rel=1e-9)
        assert context.fd_generated[k] > 0.01 and future.fd_generated[k] < 1e-6
    # the copy-the-last-frame baseline looks good against the context set and bad against the future
    copy_ctx = evaluate_video_quality(_copy_last, tok, windows, MeanStd(), context=C, horizon=F, reference="context")
    copy_fut = evaluate_video_quality(_copy_last, tok, windows, MeanStd(), context=C, horizon=F, reference="future")
    assert max(copy_ctx.fd_generated) < min(copy_fut.fd_generated)
    assert copy_fut.fd_generated == pytest.approx(copy_fut.fd_copy_last, rel=1e-9)  # the generator IS the copy


def test_reconstruction_bound_with_a_lossy_tokenizer(windows):
    tok = PixelTokenizer(levels=4)
    res = evaluate_video_quality(Oracle(tok, windows), tok, windows, MeanStd(), context=C, horizon=F)
    for k in range(F):
        fut = windows[:, C + k]
        recon = tok.decode(tok.encode(fut))
        expected = frechet_distance_from_features(_feats(recon), _feats(fut))
        assert res.fd_reconstruction[k] == pytest.approx(expected, rel=1e-9) and expected > 1e-3
    # a perfect token predictor reaches exactly the reconstruction bound
    assert res.fd_generated == pytest.approx(res.fd_reconstruction, rel=1e-9)
    pooled = frechet_distance_from_features(_feats(tok.decode(tok.encode(windows[:, C:].flatten(0, 1)))),
                                            _feats(windows[:, C:].flatten(0, 1)))
    assert res.fd_reconstruction_all == pytest.approx(pooled, rel=1e-9)


def test_iterable_input_equals_tensor_input(windows):
    tok = PixelTokenizer()
    a = evaluate_video_quality(_copy_last, tok, windows, MeanStd(), context=C, horizon=F, batch_size=12)
    b = evaluate_video_quality(_copy_last, tok, iter([windows[:7], windows[7:]]), MeanStd(), context=C, horizon=F)
    for key in ("fd_generated", "fd_reconstruction", "fd_copy_last"):
        assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-6, abs=1e-9)


def test_bad_inputs(windows):
    tok = PixelTokenizer()
    with pytest.raises(ValueError, match="context 4 \\+ horizon 5 = 9"):
        evaluate_video_quality(_copy_last, tok, windows, MeanStd(), context=C, horizon=5)
    with pytest.raises(ValueError, match="at least 2 windows"):
        evaluate_video_quality(_copy_last, tok, windows[:1], MeanStd(), context=C, horizon=F)
    with pytest.raises(ValueError, match=r"\[N, T, 3, H, W\]"):
        evaluate_video_quality(_copy_last, tok, windows[0], MeanStd(), context=C, horizon=F)
    with pytest.raises(ValueError, match="reference"):
        evaluate_video_quality(_copy_last, tok, windows, MeanStd(), reference="past")
    with pytest.raises(ValueError, match="the generator returned"):
        evaluate_video_quality(lambda c, n: c[:, :1], tok, windows, MeanStd(), context=C, horizon=F)
    vim = vavam.build_model(vavam.presets.vavim_tiny())  # holds 4 frames: at most 3 context frames
    with pytest.raises(ValueError, match="at most 3 context frames"):
        evaluate_video_quality(vim, tok, windows, MeanStd(), context=4, horizon=F)


def test_plan_windows_is_seeded_and_fits():
    plan = plan_windows({"a": 10, "b": 3, "c": 8}, count=100, span=8, stride=1, seed=0)
    assert plan == [("a", 0), ("a", 1), ("a", 2), ("c", 0)]
    few = plan_windows({"a": 10, "b": 3, "c": 8}, count=2, span=8, stride=1, seed=0)
    assert len(few) == 2 and set(few) <= set(plan)
    assert few == plan_windows({"a": 10, "b": 3, "c": 8}, count=2, span=8, stride=1, seed=0)


# ------------------------------------------------------------------------------ end to end: world export + CLI


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    pytest.importorskip("moderngl")
    from vavam.tokenizer import save_tokenizer
    from vavam.video import save_video_model
    from vavam.world.export import generate

    root = tmp_path_factory.mktemp("quality")
    generate(root / "world", num_scenes=2, duration_s=6.0, rate_hz=2.0, height=32, width=48, seed=0,
             hazard_share=0.0, held_out_towns=1, scenes_per_town=1, progress=False)
    torch.manual_seed(0)
    tok_cfg = vavam.presets.vq_tiny()
    tok = vavam.build_model(tok_cfg).eval()
    vim = vavam.build_model(dataclasses.replace(vavam.presets.vavim_tiny(), num_frames=8,
                                                vocab_size=tok_cfg.codebook_size + 1)).eval()
    save_tokenizer(tok, root / "tok")
    save_video_model(vim, root / "vim")
    return root, tok, vim


def _world_windows(world, starts) -> torch.Tensor:
    from PIL import Image

    from vavam.types import uint8_to_unit

    out = []
    for scene, start in starts:
        frames = [np.asarray(Image.open(world / "frames" / scene / f"{i:06d}.png").convert("RGB"))
                  for i in range(start, start + 8)]
        out.append(uint8_to_unit(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)))
    return torch.stack(out)


@pytest.mark.slow
def test_eval_quality_command_end_to_end(assets, capsys):
    from PIL import Image

    from vavam.eval.features import VQEncoderFeatures

    root, tok, vim = assets
    out = root / "out"
    summary = eval_quality(root / "vim", root / "tok", out, root / "world", split="all", windows=8, progress=False)
    # 12 frames per scene, non-overlapping windows of 8 -> one window per scene
    assert summary["windows"] == 2 and summary["image_size"] == [32, 48]
    assert "only 2 windows fit" in summary["warnings"][0]
    data = json.loads((out / "evaluation.json").read_text())
    assert data["kind"] == "quality" and "not comparable to published FID" in data["title"]
    res = data["results"]
    assert set(res["fd_at_k"]) == {"1", "2", "3", "4"} and res["comparable_to_published"] is False
    assert res["label"].startswith("Not comparable to published FID")
    report = (out / "report.md").read_text()
    assert report.count("not comparable to published FID") + report.count("Not comparable to published FID") >= 2
    assert "| VaViM (generated) |" in report and "| tokenizer reconstruction (bound) |" in report
    for name in ["fd_vs_k.png", *[f"strip_k{k}.png" for k in range(1, 5)]]:
        assert (out / name).is_file() and name in report
    strip = Image.open(out / "strip_k1.png")
    assert strip.size[0] > 2 * 48 * 2 and strip.size[1] > 2 * 32 * 2  # 2 rows of 2 upscaled, labelled frames
    assert "FD@1" in capsys.readouterr().out
    # the command equals the function on the same windows (read here from the PNGs)
    direct = evaluate_video_quality(vim, tok, _world_windows(root / "world", [("scene-000000", 0),
                                                                              ("scene-000001", 0)]),
                                    VQEncoderFeatures(tok))
    assert [res["fd_at_k"][str(k)] for k in range(1, 5)] == pytest.approx(direct.fd_generated, rel=1e-6, abs=1e-9)
    assert res["fd_reconstruction_all"] == pytest.approx(direct.fd_reconstruction_all, rel=1e-6, abs=1e-9)


def test_eval_quality_command_errors(assets):
    from vavam.commands.common import CommandError

    root, _, _ = assets
    with pytest.raises(CommandError, match="--extractor dinov2 needs --weights"):
        eval_quality(root / "vim", root / "tok", root / "o", root / "world", extractor="dinov2")
    with pytest.raises(FileNotFoundError, match="--weights.*pt_inception-2015-12-05"):
        eval_quality(root / "vim", root / "tok", root / "o", root / "world", extractor="inception",
                     weights=root / "none.pth")
    with pytest.raises(CommandError, match="need at least 2"):
        eval_quality(root / "vim", root / "tok", root / "o", root / "world", split="heldout", progress=False)
    with pytest.raises(FileNotFoundError, match="--video"):
        eval_quality(root / "novim", root / "tok", root / "o", root / "world")
    with pytest.raises(FileNotFoundError, match="--data"):
        eval_quality(root / "vim", root / "tok", root / "o", root / "nothing", progress=False)


def test_eval_quality_temperature_checked_by_flag_and_unused_when_greedy(assets):
    from vavam.commands.common import CommandError

    root, _, _ = assets
    # greedy (--top-k 1, the default) ignores the temperature: 0 is accepted, as in `vavam generate`; it used to
    # fail after loading everything with "temperature must be positive", naming no flag
    summary = eval_quality(root / "vim", root / "tok", root / "o_t0", root / "world", split="all", windows=2,
                           temperature=0.0, examples=0, progress=False)
    assert summary["windows"] == 2 and summary["temperature"] == 0.0
    with pytest.raises(CommandError, match="--temperature must be > 0 when sampling"):
        eval_quality(root / "vim", root / "tok", root / "o_t1", root / "world", split="all", top_k=0,
                     temperature=0.0, progress=False)
    with pytest.raises(CommandError, match="--temperature must be a finite number"):
        eval_quality(root / "vim", root / "tok", root / "o_t2", root / "world", split="all", top_k=5,
                     temperature=float("nan"), progress=False)


@pytest.mark.slow
def test_eval_quality_with_local_dinov2(assets):
    transformers = pytest.importorskip("transformers")
    root, _, _ = assets
    torch.manual_seed(0)
    config = transformers.Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                    intermediate_size=64, num_register_tokens=4, patch_size=14)
    transformers.Dinov2WithRegistersModel(config).save_pretrained(root / "dino")
    summary = eval_quality(root / "vim", root / "tok", root / "out_dino", root / "world", extractor="dinov2",
                           weights=root / "dino", split="all", stride=4, windows=3, reference="context",
                           progress=False)
    assert summary["windows"] == 3 and summary["feature_dim"] == 32 and summary["extractor"] == "dinov2"
    assert summary["label"].startswith("Not comparable to published numbers: DINOv2")
    assert all(np.isfinite(v) for v in summary["fd_at_k"].values())
    report = (root / "out_dino" / "report.md").read_text()
    assert "all 4 real context frames" in report


@pytest.mark.slow
def test_eval_quality_on_image_folders_records_no_split_and_drops_old_strips(assets):
    """--split only applies to world exports (evaluation.json said "heldout" for any data), and strips an
    earlier run left in --out (here a longer horizon's) were shown beside this run's numbers."""
    root, tok, vim = assets
    out = root / "o_images"
    out.mkdir()
    (out / "strip_k9.png").write_bytes(b"an earlier run's")
    summary = eval_quality(root / "vim", root / "tok", out, root / "world" / "frames", windows=8, examples=0,
                           progress=False)
    assert summary["split"] is None and summary["windows"] == 2
    assert json.loads((out / "evaluation.json").read_text())["results"]["split"] is None
    assert not list(out.glob("strip_k*.png"))
