"""The 2 Hz context under NeuroNCAP's timestamps: logged priming keyframes a little off 0.5 s apart."""

from __future__ import annotations

import torch

from vavam.serve.agent import TokenHistory


def test_logged_priming_intervals_do_not_cut_the_context():
    # NeuroNCAP replays nuScenes keyframes in its priming steps (here two 0.55 s intervals, as logged
    # keyframes can be), then steps exactly 0.5 s. Every interval is within the 0.1 s tolerance, so all
    # frames form the context, as in the reference's rolling buffer; measuring every target from the
    # newest frame instead put the first keyframe 0.1004 s off and dropped it.
    hist = TokenHistory(context_frames=8, spacing_us=500_000, tolerance_us=100_000)
    t0 = 1_532_402_927_647_951
    stamps = [t0, t0 + 550_201, t0 + 1_100_402]
    stamps += [stamps[-1] + k * 500_000 for k in (1, 2, 3)]
    for i, t in enumerate(stamps):
        hist.push(t, torch.full((1, 1), i))
    assert hist.context_indices() == [0, 1, 2, 3, 4, 5]
    assert [int(x) for x in hist.context()[:, 0, 0]] == [0, 1, 2, 3, 4, 5]


def test_chained_context_keeps_eight_frames_and_the_oldest_needed_frame():
    # eight frames 0.55 s apart (each within tolerance of the one after it) span 3.85 s: all are kept and used
    hist = TokenHistory(context_frames=8, spacing_us=500_000, tolerance_us=100_000)
    for i in range(12):
        hist.push(i * 550_000, torch.full((1, 1), i))
    assert [int(hist.tokens[j]) for j in hist.context_indices()] == [4, 5, 6, 7, 8, 9, 10, 11]


def test_context_near_the_int64_minimum():
    hist = TokenHistory(context_frames=8)
    low = -(2**63)
    hist.push(low, torch.zeros(1, 1))
    hist.push(low + 500_000, torch.ones(1, 1))
    assert hist.context_indices() == [0, 1]
