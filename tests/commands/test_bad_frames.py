"""``--frames`` that cannot be read: the command's error names ``--frames`` and the file (no raw traceback)."""

from __future__ import annotations

import numpy as np
import pytest

from vavam.commands import common as C


@pytest.mark.parametrize("name, content", [("garbage.png", b"not a png"), ("empty.png", b"")])
def test_a_corrupt_first_image_names_frames_and_the_file(tmp_path, name, content):
    from PIL import Image

    bad = tmp_path / name
    bad.write_bytes(content)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(good)
    # the first file is read for its size before any frame is decoded: a PIL error escaped from there
    with pytest.raises(C.CommandError, match=rf"^--frames: .*{name}.*cannot decode image"):
        C.read_frames([str(bad), str(good)], 0, 2, 2, 24, 8, "")
    # the same file in an image folder
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / f"a_{name}").write_bytes(content)
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(folder / "b.png")
    with pytest.raises(C.CommandError, match=rf"^--frames: .*a_{name}"):
        C.read_frames([str(folder)], 0, 2, 2, 24, 8, "")


def test_an_unreadable_video_or_empty_folder_names_frames(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(C.CommandError, match=r"^--frames: .*empty\.mp4"):
        C.read_frames([str(tmp_path / "empty.mp4")], 0, 2, 2, 24, 8, "")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(C.CommandError, match=r"^--frames: .*nothing: no .* images"):
        C.read_frames([str(tmp_path / "nothing")], 0, 2, 2, 24, 8, "")
