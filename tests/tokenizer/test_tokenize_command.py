"""`vavam tokenize` with a tokenizer preset: bad tokenizer specs and frame sizes are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vavam.cli import main


def _scene(folder: Path, height: int, width: int, frames: int = 2) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(frames):
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / f"f_{i + 1}.png")
    return folder


@pytest.mark.parametrize(
    "spec, says",
    [
        ("preset:bogus", "unknown preset 'bogus'; known tokenizer presets:"),
        ("preset:vavim_tiny", "is a video preset, not a tokenizer one"),
    ],
)
def test_bad_tokenizer_preset_is_named(tmp_path: Path, capsys: pytest.CaptureFixture, spec: str, says: str) -> None:
    """An unknown or non-tokenizer preset is a one-line error naming --tokenizer (was an AttributeError traceback)."""
    scene = _scene(tmp_path / "imgs" / "a", 16, 32)
    code = main(["tokenize", "--sources", str(scene), "--out", str(tmp_path / "store"), "--tokenizer", spec,
                 "--no-progress", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and f"--tokenizer {spec!r}: " in err and says in err
    assert not (tmp_path / "store").exists()


def test_frames_not_divisible_by_the_downsampling_name_the_scene(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scene = _scene(tmp_path / "imgs" / "odd", 30, 60, frames=1)
    code = main(["tokenize", "--sources", str(scene), "--out", str(tmp_path / "store"), "--tokenizer", "preset:vq_tiny",
                 "--no-progress", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and f"{scene}: image size 60x30 (WxH) is not divisible" in err
