"""Training the tokenizer: checkpoints that load, reproducibility, resume, data sources, and PSNR gains."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vavam
from vavam.train.tokenizer import (
    SyntheticImages,
    evaluate,
    learning_rate,
    save_reconstruction_grid,
    to_model_images,
    train_tokenizer,
)

SMALL = dict(image_size=(16, 32), batch_size=2, val_frames=4, log_every=2, progress=False, lr=2e-3)


def _weights_sha(folder):
    return json.loads((folder / "tokenizer" / "meta.json").read_text())["model_sha256"]


def test_checkpoint_loads_and_reconstructs_the_same(tmp_path):
    summary = train_tokenizer(tmp_path / "run", steps=4, ckpt_every=2, dead_code_window=2, **SMALL)
    folder = tmp_path / "run" / "tokenizer"
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "meta.json"}
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["step"] == 4 and meta["metrics"]["val_psnr"] == pytest.approx(summary["final_psnr"])
    assert "dead_code_restarts" in meta["metrics"] and meta["training"]["losses"]

    tok = vavam.load_tokenizer(folder)
    val = SyntheticImages(16, 32, seed=0).validation(4)
    again = evaluate(tok, val)
    assert again["psnr"] == pytest.approx(summary["final_psnr"], abs=1e-6)
    assert again["codebook_usage"] == pytest.approx(summary["codebook_usage"])
    grid = np.asarray(Image.open(summary["reconstructions"]))  # written from the in-memory model
    recon = ((tok(to_model_images(val)).recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    recon = recon.permute(0, 2, 3, 1).numpy()  # [N,3,H,W] -> [N,H,W,3]
    np.testing.assert_array_equal(grid[16:], np.concatenate(list(recon), axis=1))
    np.testing.assert_array_equal(grid[:16], np.concatenate(list(val), axis=1))
    assert (tmp_path / "run" / "metrics.csv").read_text().startswith("step,")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 4


def test_training_is_reproducible_and_resumes_exactly(tmp_path):
    kw = dict(SMALL, dead_code_window=2, ckpt_every=2)
    train_tokenizer(tmp_path / "a", steps=4, **kw)
    train_tokenizer(tmp_path / "b", steps=4, **kw)
    assert _weights_sha(tmp_path / "a") == _weights_sha(tmp_path / "b")
    train_tokenizer(tmp_path / "c", steps=4, seed=1, **kw)
    assert _weights_sha(tmp_path / "c") != _weights_sha(tmp_path / "a")
    # stop after 2 steps, then resume to 4: the same weights as the uninterrupted run
    train_tokenizer(tmp_path / "r", steps=2, **kw)
    summary = train_tokenizer(tmp_path / "r", steps=4, resume=True, **kw)
    assert summary["resumed_from"] == 2
    assert _weights_sha(tmp_path / "r") == _weights_sha(tmp_path / "a")
    # another learning rate or seed would continue a different run: refused by name, nothing trained
    with pytest.raises(ValueError, match=r"lr: run started with 0.002, this call asks 0.001") as info:
        train_tokenizer(tmp_path / "r", steps=6, resume=True, **dict(kw, lr=1e-3, seed=3))
    assert "seed: run started with 0, this call asks 3" in str(info.value)
    assert _weights_sha(tmp_path / "r") == _weights_sha(tmp_path / "a")


def test_gan_and_perceptual_losses_train(tmp_path):
    from safetensors.torch import save_file

    from vavam.tokenizer.losses import VGGPerceptualLoss

    state = {f"features.{k}": torch.randn(v.shape) * 0.05 for k, v in VGGPerceptualLoss().features.state_dict().items()}
    save_file(state, str(tmp_path / "vgg.safetensors"))
    summary = train_tokenizer(
        tmp_path / "run", steps=3, ckpt_every=3, gan=True, gan_start=1,
        perceptual_weights=tmp_path / "vgg.safetensors", precision="bf16-mixed", **{**SMALL, "image_size": (32, 32)},
    )
    active = " ".join(summary["active_losses"])
    assert "gan(hinge, adaptive" in active and "perceptual(vgg16)" in active
    assert np.isfinite(summary["final_psnr"])
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "train_d_loss" in header and "train_perceptual" in header
    with pytest.raises(FileNotFoundError):
        train_tokenizer(tmp_path / "x", steps=1, perceptual_weights=tmp_path / "missing.pt", **SMALL)


def test_folder_of_images(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 100, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "sub" / f"{i}.png")
    summary = train_tokenizer(tmp_path / "run", steps=2, ckpt_every=2, data=str(tmp_path / "imgs"), **SMALL)
    assert "folder" in summary["data"] and "1 held-out" in summary["data"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: need at least 2 images"):
        train_tokenizer(tmp_path / "run2", steps=1, data=str(tmp_path / "empty"), **SMALL)
    with pytest.raises(FileNotFoundError, match="--data .*missing: no such folder"):
        train_tokenizer(tmp_path / "run3", steps=1, data=str(tmp_path / "missing"), **SMALL)


def test_folder_with_a_truncated_image_names_it(tmp_path):
    """PIL says only 'image file is truncated': the refusal names the data folder and the file."""
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    whole = (tmp_path / "imgs" / "2.png").read_bytes()
    (tmp_path / "imgs" / "2.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"--data .*imgs: .*2\.png: cannot decode image"):
        train_tokenizer(tmp_path / "run", steps=1, data=str(tmp_path / "imgs"), **SMALL)


def _mixed_folder(root, n=12):
    """``n`` small images of different sizes and aspects (wider and taller than 2:1), PNG and JPEG, in two
    folders."""
    rng = np.random.default_rng(1)
    sizes = [(16, 32), (20, 60), (40, 30), (9, 50), (33, 17), (24, 48), (50, 50), (12, 40), (31, 70), (18, 18),
             (45, 20), (28, 56)]
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        folder = root / ("a" if i % 3 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        im.save(folder / f"{i}.png") if i % 2 else im.save(folder / f"{i}.jpg", quality=85)
    return root


def _eager_folder(folder, height, width, seed, val):
    """What FolderImages held before it read on demand: every image decoded, cropped and resized up front."""
    from vavam.data.frames import read_image
    from vavam.train.tokenizer import IMAGE_SUFFIXES, _crop_resize

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    val = max(min(val, len(files) // 5) if len(files) < 5 * val else val, 1)
    frames = np.stack([np.asarray(_crop_resize(Image.fromarray(read_image(p)), height, width)) for p in files])
    train = frames[:-val]
    return (lambda step, n: train[np.random.default_rng([seed, step, 1]).integers(0, len(train), n)]), frames[-val:]


@pytest.mark.parametrize("cache_frames", [None, 0, 1, 4])
def test_folder_images_read_on_demand_are_those_loaded_up_front(tmp_path, cache_frames):
    """A folder used to be decoded whole into memory at start-up (tens of GB for a real dataset): images are now
    read when a batch draws them, keeping processed frames up to a byte limit; the batches and held-out frames
    are the same, to the bit, whatever the limit."""
    from vavam.train.tokenizer import FolderImages

    folder = _mixed_folder(tmp_path / "imgs")
    height, width, seed = 16, 32, 7
    batch, val = _eager_folder(folder, height, width, seed, val=2)
    frame_bytes = height * width * 3
    kw = {} if cache_frames is None else {"cache_bytes": cache_frames * frame_bytes + frame_bytes // 2}
    source = FolderImages(folder, height, width, seed, 2, **kw)
    assert source.description == f"folder {folder} (10 train / 2 held-out images, 16x32)"
    assert source.cache_capacity == (2 * 1024**3 // frame_bytes if cache_frames is None else cache_frames)
    for step in [0, 1, 2, 5, 1, 1000]:
        got = source.batch(step, 7)
        assert got.dtype == np.uint8 and got.shape == (7, height, width, 3)
        np.testing.assert_array_equal(got, batch(step, 7), err_msg=f"step {step}")
        assert len(source._cache) <= source.cache_capacity
    assert len(source._cache) == (min(cache_frames, 10) if cache_frames is not None else 10)
    np.testing.assert_array_equal(source.validation(2), val)
    np.testing.assert_array_equal(source.validation(1), val[:1])
    assert FolderImages(folder, height, width, seed, 2, workers=1).batch(3, 5).tobytes() == batch(3, 5).tobytes()
    # a rank's slices of the global batch: only their images are read
    fresh = FolderImages(folder, height, width, seed, 2, cache_bytes=0)
    np.testing.assert_array_equal(fresh.batch(4, 7, rows=[5, 6, 1]), batch(4, 7)[[5, 6, 1]])


def test_synthetic_batch_rows_are_rows_of_the_whole_batch():
    from vavam.train.tokenizer import SyntheticImages

    source = SyntheticImages(16, 32, seed=3)
    np.testing.assert_array_equal(source.batch(2, 6, rows=[4, 0]), source.batch(2, 6)[[4, 0]])


def test_folder_image_broken_after_start_up_is_named_when_drawn(tmp_path):
    """A file that stops decoding after start-up (changed on disk) fails the batch that draws it, naming --data
    and the file; a frame already kept in memory is not read again."""
    from vavam.train.tokenizer import FolderImages

    folder = _mixed_folder(tmp_path / "imgs", n=6)
    source = FolderImages(folder, 16, 32, 0, 1, cache_bytes=0)
    drawn = np.random.default_rng([0, 3, 1]).integers(0, 5, 8)
    broken = source.train_files[int(drawn[0])]
    whole = broken.read_bytes()
    broken.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=rf"--data .*imgs: .*{broken.name}: cannot decode image"):
        source.batch(3, 8)
    broken.unlink()
    with pytest.raises(ValueError, match=rf"--data .*imgs: .*{broken.name}: image file is missing"):
        source.batch(3, 8)
    broken.write_bytes(whole)
    kept = FolderImages(folder, 16, 32, 0, 1)  # everything it draws is kept: read once
    first = kept.batch(3, 8)
    broken.write_bytes(whole[: len(whole) // 2])
    np.testing.assert_array_equal(kept.batch(3, 8), first)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_folder_with_a_truncated_training_image_is_refused_up_front(tmp_path, suffix):
    """Training images are no longer decoded at start-up: a cheap check still refuses a truncated PNG (its chunks
    and checksums) or JPEG (decoded at 1/8 scale; PIL's verify passes a truncated JPEG) by name."""
    from vavam.train.tokenizer import FolderImages

    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}{suffix}")
    FolderImages(tmp_path / "imgs", 16, 32, 0, 1)
    whole = (tmp_path / "imgs" / f"1{suffix}").read_bytes()
    (tmp_path / "imgs" / f"1{suffix}").write_bytes(whole[: len(whole) * 9 // 10])
    with pytest.raises(ValueError, match=rf"--data .*imgs: .*1\{suffix}: cannot decode image"):
        FolderImages(tmp_path / "imgs", 16, 32, 0, 1)
    (tmp_path / "imgs" / f"1{suffix}").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=rf"--data .*imgs: .*1\{suffix}: cannot decode image"):
        FolderImages(tmp_path / "imgs", 16, 32, 0, 1)


def test_a_resume_on_other_images_is_refused_naming_data(tmp_path):
    """The run settings recorded only that images came from a folder: a resume on another folder trained the rest
    of the run on other images without a word. A moved copy of the same images still resumes."""
    import json
    import shutil

    rng = np.random.default_rng(0)
    for name in ("imgs", "other"):
        (tmp_path / name).mkdir()
        for i in range(6 if name == "imgs" else 7):
            Image.fromarray(rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    run = tmp_path / "run"
    train_tokenizer(run, steps=1, ckpt_every=1, data=str(tmp_path / "imgs"), **SMALL)
    with pytest.raises(ValueError, match=r"--data .*other: not the images this run started with"):
        train_tokenizer(run, steps=2, ckpt_every=1, resume=True, data=str(tmp_path / "other"), **SMALL)
    shutil.copytree(tmp_path / "imgs", tmp_path / "moved")
    train_tokenizer(run, steps=2, ckpt_every=1, resume=True, data=str(tmp_path / "moved"), **SMALL)
    # a run recorded before the fingerprint existed resumes without it
    settings = json.loads((run / "run_settings.json").read_text())
    del settings["data_images"]
    (run / "run_settings.json").write_text(json.dumps(settings))
    train_tokenizer(run, steps=3, ckpt_every=1, resume=True, data=str(tmp_path / "other"), **SMALL)


def _train_rows(run):
    import csv

    with open(run / "metrics.csv") as f:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")}


def test_an_older_checkpoint_counts_its_running_steps_from_its_rows():
    """Checkpoints of older versions did not store how many steps their running sums hold: counted from the
    last train row (not from multiples of log_every: a run that ended on step 3 with log_every 10, resumed
    and checkpointed at step 6, holds 3 steps, not 6), leaving skipped steps out."""
    from vavam.train.tokenizer import _steps_since_train_row

    rows = [{"step": 3, "train_l1": 0.5, "lr": 1e-3}]
    assert _steps_since_train_row(rows, 6) == 3
    assert _steps_since_train_row([*rows, {"step": 5, "skipped": 1.0}], 6) == 2
    assert _steps_since_train_row([{"step": 2, "skipped": 1.0}], 4) == 3  # no train row yet
    assert _steps_since_train_row([*rows, {"step": 6, "val_psnr": 20.0}], 6) == 3  # eval rows do not count


@pytest.mark.slow
def test_train_rows_after_a_resume_average_the_steps_they_cover(tmp_path):
    """Each train row is the mean over the steps since the previous row, also after a resume from a checkpoint
    that is not at a multiple of log_every (the rows were divided by a step count they did not cover)."""
    kw = dict(SMALL, dead_code_window=2, ckpt_every=3, log_every=4)
    train_tokenizer(tmp_path / "a", steps=5, **kw)  # rows: 4 (steps 1-4), 5 (step 5)
    train_tokenizer(tmp_path / "r", steps=3, **kw)  # rows: 3 (steps 1-3)
    train_tokenizer(tmp_path / "r", steps=5, resume=True, **kw)  # rows: 4 (step 4), 5 (step 5)
    a, r = _train_rows(tmp_path / "a"), _train_rows(tmp_path / "r")
    assert sorted(a) == [4, 5] and sorted(r) == [3, 4, 5]
    assert r[5] == pytest.approx(a[5], rel=1e-6)
    assert r[4] == pytest.approx(4 * a[4] - 3 * r[3], rel=1e-4)


def test_skipped_last_step_still_saves_the_model(tmp_path, monkeypatch):
    """nan_policy='skip' on the last step: the model of the steps before it is still evaluated and written
    (the skipped step jumped over the final evaluation and checkpoint: no tokenizer folder at all)."""
    from vavam.tokenizer.losses import TokenizerLoss

    original = TokenizerLoss.generator_loss

    def nan_at_step_2(self, *args, **kwargs):
        total, logs = original(self, *args, **kwargs)
        return (total * float("nan"), logs) if args[5] == 2 else (total, logs)

    monkeypatch.setattr(TokenizerLoss, "generator_loss", nan_at_step_2)
    run = tmp_path / "run"
    summary = train_tokenizer(run, steps=3, ckpt_every=10, nan_policy="skip", **SMALL)
    meta = json.loads((run / "tokenizer" / "meta.json").read_text())
    assert meta["step"] == 3 and (run / "checkpoints" / "step-00000003.ckpt").is_file()
    assert summary["final_psnr"] != summary["initial_psnr"]  # evaluated after the two updates
    assert meta["metrics"]["val_psnr"] == pytest.approx(summary["final_psnr"])
    assert "skipped" in (run / "metrics.csv").read_text().splitlines()[0]


def test_gan_with_images_too_small_for_the_discriminator_is_refused_up_front(tmp_path):
    """16x32 frames shrink below the patch discriminator's 4x4 kernels: refused before training, naming the flags
    (it failed with a convolution RuntimeError at step --gan-start, after all the steps before it)."""
    with pytest.raises(ValueError, match=r"--gan: --image-size 16 32 is too small .* at least 24 pixels"):
        train_tokenizer(tmp_path / "run", steps=2, gan=True, gan_start=1, **SMALL)
    assert not (tmp_path / "run").exists()


def test_patch_discriminator_output_size():
    from vavam.tokenizer.losses import PatchDiscriminator

    disc = PatchDiscriminator().eval()
    for height, width in [(24, 24), (32, 64), (64, 128)]:
        assert tuple(disc(torch.zeros(1, 3, height, width)).shape[-2:]) == disc.output_size(height, width)
    assert disc.min_side() == 24 and min(disc.output_size(23, 64)) < 1


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="precision"):
        train_tokenizer(tmp_path, steps=1, precision="16", **SMALL)
    with pytest.raises(ValueError, match="multiple"):
        train_tokenizer(tmp_path, steps=1, **{**SMALL, "image_size": (20, 32)})


def test_learning_rate_warmup_then_cosine():
    assert learning_rate(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert learning_rate(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert learning_rate(99, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert learning_rate(10 + 89 // 2, 100, 1.0, 10, 0.1) == pytest.approx(0.55, abs=0.02)
    assert learning_rate(50, 100, 2.0, 0, 1.0) == pytest.approx(2.0)  # ratio 1: constant


def test_reconstruction_grid(tmp_path):
    model = vavam.build_model(vavam.presets.vq_tiny())
    frames = SyntheticImages(16, 32, seed=0).validation(3)
    path = save_reconstruction_grid(model, frames, tmp_path / "grid.png")
    grid = np.asarray(Image.open(path))
    assert grid.shape == (32, 96, 3)
    np.testing.assert_array_equal(grid[:16, 32:64], frames[1])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


# float32: bf16 autocast is 10-80x slower than float32 on CPUs without native bf16 (vavam.hardware)
STEPS, BATCH, IMAGE, LR, PRECISION = 400, 8, (32, 64), 2e-3, "32"


@pytest.mark.slow
def test_vq_tiny_learns_driving_frames(tmp_path):
    """A few hundred steps on generated frames: >= 6 dB over the initial model, >= 20 dB on held-out seeds."""
    summary = train_tokenizer(
        tmp_path / "run", steps=STEPS, batch_size=BATCH, image_size=IMAGE, lr=LR, precision=PRECISION,
        val_frames=64, log_every=50, ckpt_every=STEPS, progress=False,
    )
    print(json.dumps({k: summary[k] for k in ("initial_psnr", "final_psnr", "codebook_usage", "seconds_per_step")}))
    assert summary["final_psnr"] - summary["initial_psnr"] >= 6.0
    assert summary["final_psnr"] >= 20.0
    assert summary["codebook_usage"] > 10.0  # dead-code restarts keep the codebook in use



def test_non_finite_discriminator_loss_stops_or_skips_its_step(tmp_path, monkeypatch):
    """The discriminator's loss was not checked: a NaN there was backpropagated into its weights (and from them
    into every later generator loss). It now stops the run, or with nan_policy='skip' skips the discriminator's
    step while the generator's stands."""
    from vavam.tokenizer.losses import TokenizerLoss
    from vavam.train.resume import read_checkpoint

    original = TokenizerLoss.discriminator_loss

    def nan_loss(self, images, recon):
        loss, logs = original(self, images, recon)
        return loss * float("nan"), logs

    monkeypatch.setattr(TokenizerLoss, "discriminator_loss", nan_loss)
    kw = dict(SMALL, image_size=(32, 32), gan=True, gan_start=0, ckpt_every=1)
    with pytest.raises(FloatingPointError, match="discriminator loss is non-finite at step 0"):
        train_tokenizer(tmp_path / "stop", steps=2, **kw)
    run = tmp_path / "skip"
    train_tokenizer(run, steps=3, nan_policy="skip", keep=0, **kw)
    first, last = (read_checkpoint(run / "checkpoints" / f"step-0000000{k}.ckpt") for k in (1, 3))
    weights = {k: v for k, v in first["discriminator"].items() if "running_" not in k and "num_batches" not in k}
    assert weights  # (batch-norm statistics move with every forward pass; the weights only with a step)
    for name, value in weights.items():
        assert torch.equal(value, last["discriminator"][name]) and torch.isfinite(value).all(), name
    assert any(not torch.equal(v, last["model"][k]) for k, v in first["model"].items())  # the generator trained
    assert "skipped_discriminator" in (run / "metrics.csv").read_text().splitlines()[0]


def _batch_norm_stats(state: dict) -> dict:
    return {k: v.clone() for k, v in state.items() if "running_" in k or "num_batches" in k}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_skipped_steps_leave_the_discriminators_batch_norm_statistics(tmp_path, monkeypatch):
    """The discriminator's forwards update its batch-norm running statistics, also in a step skipped for a
    non-finite loss: a NaN there stayed for good. A skipped discriminator step now keeps the statistics from
    before its forwards (those of the generator loss's forward stand with the generator's step), a skipped step
    those from before all its forwards; a step that is not skipped still moves them."""
    from vavam.tokenizer.losses import TokenizerLoss
    from vavam.train.resume import read_checkpoint

    kw = dict(SMALL, image_size=(32, 32), gan=True, gan_start=0, ckpt_every=1, keep=0, nan_policy="skip")
    disc_loss, gen_loss = TokenizerLoss.discriminator_loss, TokenizerLoss.generator_loss

    def stats(run, step):
        return _batch_norm_stats(read_checkpoint(run / "checkpoints" / f"step-{step:08d}.ckpt")["discriminator"])

    # the discriminator's loss non-finite at step 1 (its fake logits NaN: NaN statistics in that forward)
    before, after = [], []

    def nan_in_step_1(self, images, recon):
        before.append(_batch_norm_stats(self.discriminator.state_dict()))
        out = disc_loss(self, images, recon * float("nan") if len(before) == 2 else recon)
        after.append(_batch_norm_stats(self.discriminator.state_dict()))
        return out

    monkeypatch.setattr(TokenizerLoss, "discriminator_loss", nan_in_step_1)
    run = tmp_path / "disc"
    train_tokenizer(run, steps=2, **kw)
    assert len(before) == 2 and "skipped_discriminator" in (run / "metrics.csv").read_text().splitlines()[0]
    assert not _same(after[0], before[0]) and _same(stats(run, 1), after[0])  # step 0: kept
    assert any(v.isnan().any() for v in after[1].values())  # step 1's forwards poisoned them ...
    assert _same(stats(run, 2), before[1])  # ... and were put back with its skipped discriminator step
    monkeypatch.setattr(TokenizerLoss, "discriminator_loss", disc_loss)

    # the generator's loss non-finite at step 1 (the discriminator forward of its GAN term on NaN images)
    entry = {}

    def nan_at_step_1(self, images, recon, *args, **kwargs):
        step = args[3]
        entry[step] = _batch_norm_stats(self.discriminator.state_dict())
        return gen_loss(self, images, recon * float("nan") if step == 1 else recon, *args, **kwargs)

    monkeypatch.setattr(TokenizerLoss, "generator_loss", nan_at_step_1)
    run = tmp_path / "gen"
    train_tokenizer(run, steps=3, **kw)
    assert sorted(entry) == [0, 1, 2] and "skipped" in (run / "metrics.csv").read_text().splitlines()[0]
    assert not _same(stats(run, 1), entry[0]) and _same(stats(run, 1), entry[1])  # step 0 moved them
    assert _same(stats(run, 2), entry[1]) and _same(entry[2], entry[1])  # skipped step 1: as before it
    assert all(torch.isfinite(v).all() for v in stats(run, 3).values()) and not _same(stats(run, 3), entry[2])


def test_checkpoint_meta_quotes_the_last_evaluation_and_its_step(tmp_path, monkeypatch):
    """A resumed run's checkpoints written before its next evaluation reported the step-0 PSNR as the model's;
    meta.json now quotes the last evaluation in the log and says at which step it was made."""
    import vavam.tokenizer as tt

    kw = dict(SMALL, ckpt_every=1, eval_every=2)
    train_tokenizer(tmp_path / "r", steps=2, **kw)
    logged = [r for r in csv.DictReader((tmp_path / "r" / "metrics.csv").open()) if r.get("val_psnr")]
    assert [int(r["step"]) for r in logged] == [0, 2]
    metas = []
    real = tt.save_tokenizer
    monkeypatch.setattr(tt, "save_tokenizer", lambda model, path, meta: (metas.append(meta), real(model, path, meta)))
    train_tokenizer(tmp_path / "r", steps=4, resume=True, **dict(kw, eval_every=4))
    at3, at4 = metas
    assert at3["step"] == 3 and at3["metrics"]["evaluated_at_step"] == 2
    assert at3["metrics"]["val_psnr"] == pytest.approx(float(logged[1]["val_psnr"]))
    assert at3["metrics"]["val_psnr"] != at3["metrics"]["initial_val_psnr"]
    assert at4["step"] == 4 and at4["metrics"]["evaluated_at_step"] == 4


def test_logged_gan_losses_average_over_the_steps_that_had_them(tmp_path, monkeypatch):
    """A log row's GAN terms were divided by every step of the row, also those before --gan-start (or whose
    discriminator step was skipped): the discriminator loss of the one GAN step of a 2-step row read half."""
    from vavam.tokenizer.losses import TokenizerLoss

    seen = []
    original = TokenizerLoss.discriminator_loss

    def spy(self, images, recon):
        loss, logs = original(self, images, recon)
        seen.append(logs["d_loss"])
        return loss, logs

    monkeypatch.setattr(TokenizerLoss, "discriminator_loss", spy)
    run = tmp_path / "run"
    train_tokenizer(run, steps=2, gan=True, gan_start=1, **dict(SMALL, image_size=(32, 32), log_every=2))
    row = next(r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train_d_loss"))
    assert len(seen) == 1 and int(row["step"]) == 2
    assert float(row["train_d_loss"]) == pytest.approx(seen[0], rel=1e-6)
