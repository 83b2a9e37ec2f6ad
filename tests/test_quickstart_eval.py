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
