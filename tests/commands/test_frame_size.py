"""The model-input frame size follows the model's token grid, never the source's aspect ratio."""

from __future__ import annotations

import warnings

import pytest

from vavam.commands.common import choose_frame_size


def test_grid_is_the_trained_one_or_16_9_never_the_sources():
    # a square source on a 4x8-token model: the quickstart's 64 x 128 frames (it used to pick an 8x4 grid)
    with pytest.warns(UserWarning, match="stretched"):
        assert choose_frame_size((100, 100), 32, 16) == (64, 128)
    with pytest.warns(UserWarning, match="stretched"):
        assert choose_frame_size((900, 900), 576, 16) == (288, 512)  # the released grid, not 24 x 24
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 16:9 source fits: no warning
        assert choose_frame_size((900, 1600), 576, 16) == (288, 512)
    # the tokenizer's recorded training size wins when it gives the model's tokens per frame (a square
    # 24 x 24 grid here, which neither the source's aspect rule of old nor 16:9 would give for a 16:9 clip)
    with pytest.warns(UserWarning, match="stretched"):
        assert choose_frame_size((900, 1600), 576, 16, trained_size=(384, 384)) == (384, 384)
    assert choose_frame_size(None, 32, 16, trained_size=(48, 48)) == (64, 128)  # 3x3 tokens: not this model's


def test_a_size_that_is_not_positive_is_refused_by_name():
    """--size -32 -48 passed the multiple-of-downsampling and token-count checks (a 4 x 6 grid) and failed later
    with an error about --frames resizing to an empty image."""
    from vavam.commands.common import CommandError

    for size in ((-32, -48), (-32, 48), (0, 48)):
        with pytest.raises(CommandError, match=rf"--size {size[0]} {size[1]}: height and width must be positive"):
            choose_frame_size((32, 48), 24, 8, size=size)
    assert choose_frame_size((32, 48), 24, 8, size=(32, 48)) == (32, 48)
