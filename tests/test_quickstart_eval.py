"""The quickstart's next-frame evaluation: teacher-forced and greedy predictions of the last frame line up."""

import torch

from vavam.presets import vavim_tiny
from vavam.quickstart.evaluate import teacher_forced_last_frame
from vavam.video import VideoGPT, generate_frames


def test_teacher_forced_prediction_of_a_greedy_frame_is_that_frame():
    torch.manual_seed(0)
    vim = VideoGPT(vavim_tiny()).eval()
    windows = torch.randint(0, 1024, (5, 4, 4, 6))  # [N, T, h, w]
    greedy = generate_frames(vim, windows[:, :-1], 1, top_k=1)  # [N, 1, h, w]
    on_greedy = torch.cat([windows[:, :-1], greedy], 1)
    # each greedy token is the argmax given the tokens before it, so teacher forcing on it reproduces it
    assert torch.equal(teacher_forced_last_frame(vim, on_greedy, batch_size=2), greedy[:, 0])
    # on the true frame only the first token (no earlier token of the frame) must agree with greedy
    tf = teacher_forced_last_frame(vim, windows, batch_size=3)
    assert tf.shape == (5, 4, 6) and torch.equal(tf[:, 0, 0], greedy[:, 0, 0, 0])
    assert not torch.equal(tf, greedy[:, 0])  # the true earlier tokens change later predictions


def test_accuracy_by_change_groups_windows_by_how_much_the_last_step_kept():
    import math

    import pytest

    from vavam.quickstart.evaluate import accuracy_by_change

    # 4 windows of 2 context frames, 1 x 4 tokens; the last step keeps 0, 2, 3 and 4 of the 4 tokens
    before = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]])
    last = torch.tensor([[9, 9, 9, 9], [1, 1, 9, 9], [2, 2, 2, 9], [3, 3, 3, 3]])
    context = torch.stack([before, last], 1)[:, :, None, :]  # [4, 2, 1, 4]
    truth = torch.tensor([[9, 9, 9, 9], [1, 5, 5, 5], [2, 2, 2, 2], [3, 3, 3, 7]])[:, None, :]  # [4, 1, 4]
    generated = torch.tensor([[9, 9, 0, 0], [5, 5, 5, 5], [2, 2, 2, 9], [3, 3, 3, 3]])[:, None, :]
    rows = accuracy_by_change(context, truth, generated)
    assert [(r["kept"], r["windows"]) for r in rows] == [("< 50%", 1), ("50% to < 70%", 1), ("≥ 70%", 2)]
    # copy: window 0 4/4, window 1 1/4, windows 2 and 3 3/4 each; generated: 2/4, 3/4, 3/4 and 3/4
    assert [r["copy"] for r in rows] == pytest.approx([1.0, 0.25, 0.75])
    assert [r["generated"] for r in rows] == pytest.approx([0.5, 0.75, 0.75])
    # the groups partition the windows: their window-weighted means give back the overall accuracies
    assert sum(r["windows"] * r["copy"] for r in rows) / 4 == pytest.approx(float((last == truth[:, 0]).float().mean()))
    empty = accuracy_by_change(context, truth, generated, edges=(0.1, 0.2))
    assert empty[1]["windows"] == 0 and math.isnan(empty[1]["copy"])
    assert accuracy_by_change(context, truth, generated, edges=())[0]["kept"] == "all"
    with pytest.raises(ValueError, match=r"context: expected \[N, T-1 >= 2, h, w\]"):
        accuracy_by_change(context[:, :1], truth, generated)
    with pytest.raises(ValueError, match=r"truth: expected \(4, 1, 4\).*got \(4, 4\)"):
        accuracy_by_change(context, truth[:, 0], generated)  # would broadcast into wrong accuracies
    with pytest.raises(ValueError, match="edges: expected increasing"):
        accuracy_by_change(context, truth, generated, edges=(0.7, 0.5))
