"""The quickstart's next-frame evaluation: teacher-forced and greedy predictions of the last frame line up; the
breakdowns by scene change and by how long each token stayed."""

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


def test_teacher_forced_probability_of_reference_tokens_is_the_softmax_at_the_position_before():
    import pytest

    torch.manual_seed(0)
    vim = VideoGPT(vavim_tiny()).eval()
    windows = torch.randint(0, 1024, (5, 3, 2, 3))  # [N, T, h, w]
    reference = windows[:, -2]  # the last context frame: the copy
    pred, prob = teacher_forced_last_frame(vim, windows, batch_size=2, reference=reference)
    assert torch.equal(pred, teacher_forced_last_frame(vim, windows, batch_size=5))
    with torch.no_grad():
        full = vim(windows).softmax(-1)  # [N, 18, V]; position j predicts token j + 1
    # the last frame's tokens are 12..17, predicted at positions 11..16
    expected = full[:, 11:17].gather(-1, reference.reshape(5, 6, 1)).reshape(5, 2, 3)
    assert prob.shape == (5, 2, 3) and torch.allclose(prob, expected, atol=1e-6)
    # the probability of the argmax is the largest any token gets
    top = full[:, 11:17].max(-1).values.reshape(5, 2, 3)
    assert torch.allclose(teacher_forced_last_frame(vim, windows, reference=pred)[1], top, atol=1e-6)
    with pytest.raises(ValueError, match=r"reference: expected \(5, 2, 3\)"):
        teacher_forced_last_frame(vim, windows, reference=reference[:, 0])


def test_accuracy_by_persistence_counts_the_steps_each_token_stayed():
    import math

    import pytest

    from vavam.quickstart.evaluate import accuracy_by_persistence

    # one window of 3 context frames, 1 x 4 tokens; counted back from the last frame, the positions kept their
    # token for 0 (changed last step), 1 (changed the step before), 2 and 2 steps
    context = torch.tensor([[[1, 5, 3, 4], [2, 6, 3, 4], [3, 6, 3, 4]]])[:, :, None, :]  # [1, 3, 1, 4]
    truth = torch.tensor([[[3, 7, 3, 9]]])  # copying gets positions 0 and 2 right
    generated = torch.tensor([[[3, 7, 0, 9]]])
    forced = torch.tensor([[[0, 7, 3, 4]]])
    prob = torch.tensor([[[0.25, 0.5, 0.75, 0.125]]])
    rows = accuracy_by_persistence(context, truth, generated, forced, prob)
    assert [(r["steps"], r["tokens"]) for r in rows] == [(0, 1), (1, 1), (2, 2)]
    assert [r["copy"] for r in rows] == pytest.approx([1.0, 0.0, 0.5])
    assert [r["copy_prob"] for r in rows] == pytest.approx([0.25, 0.5, (0.75 + 0.125) / 2])
    assert [r["generated"] for r in rows] == pytest.approx([1.0, 1.0, 0.5])
    assert [r["teacher_forced"] for r in rows] == pytest.approx([0.0, 1.0, 0.5])
    # a token that changed back (A, B, A) stayed 0 steps, whatever the earlier frames; an empty group is NaN
    flicker = torch.tensor([[[1, 1, 1, 1], [1, 1, 1, 2], [2, 2, 2, 1]]])[:, :, None, :]
    rows = accuracy_by_persistence(flicker, truth, generated, forced, prob)
    assert [r["tokens"] for r in rows] == [4, 0, 0] and math.isnan(rows[1]["copy_prob"])
    with pytest.raises(ValueError, match=r"copy_prob: expected \(1, 1, 4\)"):
        accuracy_by_persistence(context, truth, generated, forced, prob[0])
    with pytest.raises(ValueError, match=r"context: expected \[N, T-1 >= 2, h, w\]"):
        accuracy_by_persistence(context[:, :1], truth, generated, forced, prob)


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
    assert all("teacher_forced" not in r for r in rows)
    # teacher-forced predictions per group too: 4/4, 1/4, then 2/4 and 4/4 (mean 3/4)
    forced = torch.tensor([[9, 9, 9, 9], [1, 0, 0, 0], [2, 2, 0, 0], [3, 3, 3, 7]])[:, None, :]
    with_forced = accuracy_by_change(context, truth, generated, teacher_forced=forced)
    assert [r["teacher_forced"] for r in with_forced] == pytest.approx([1.0, 0.25, 0.75])
    assert [r["generated"] for r in with_forced] == [r["generated"] for r in rows]
    with pytest.raises(ValueError, match=r"teacher_forced: expected \(4, 1, 4\)"):
        accuracy_by_change(context, truth, generated, teacher_forced=forced[:, 0])
    empty = accuracy_by_change(context, truth, generated, edges=(0.1, 0.2))
    assert empty[1]["windows"] == 0 and math.isnan(empty[1]["copy"])
    assert accuracy_by_change(context, truth, generated, edges=())[0]["kept"] == "all"
    with pytest.raises(ValueError, match=r"context: expected \[N, T-1 >= 2, h, w\]"):
        accuracy_by_change(context[:, :1], truth, generated)
    with pytest.raises(ValueError, match=r"truth: expected \(4, 1, 4\).*got \(4, 4\)"):
        accuracy_by_change(context, truth[:, 0], generated)  # would broadcast into wrong accuracies
    with pytest.raises(ValueError, match="edges: expected increasing"):
        accuracy_by_change(context, truth, generated, edges=(0.7, 0.5))


def test_command_following_reads_each_held_out_item_once_and_compares_the_same_frames():
    """LEFT minus RIGHT from a stand-in planner whose lateral offset is the command's id: the same turning frames
    under both commands, straight frames left out, each (costly: it loads tokens) item read once."""
    from vavam.quickstart.evaluate import command_following
    from vavam.types import Command

    class Items:
        def __init__(self, commands):
            self.commands, self.reads = commands, 0

        def __len__(self):
            return len(self.commands)

        def __getitem__(self, i):
            self.reads += 1
            return {"tokens": torch.zeros(2, 1, 1, dtype=torch.long), "speeds": torch.ones(2),
                    "commands": torch.tensor([0, self.commands[i]])}

    class Planner:
        calls = []

        def sample_trajectory(self, tokens, command, num_samples, generator, speed):
            self.calls.append(len(tokens))
            traj = torch.zeros(len(tokens), num_samples, 6, 2)
            traj[..., 1] = command.float()[:, None, None]
            return traj

    items = Items([int(Command.LEFT), int(Command.STRAIGHT), int(Command.RIGHT), int(Command.STRAIGHT)])
    out = command_following(Planner(), items, num_samples=2)
    assert items.reads == 4 and out["windows"] == 2 and Planner.calls == [2, 2]
    assert out["left_minus_right_m"] == float(Command.LEFT) - float(Command.RIGHT)
