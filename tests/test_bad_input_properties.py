"""Property-based bad-input suite (hypothesis) over the public entry points: every input is either
accepted (and gives a result of the documented shape) or rejected with ValueError / TypeError whose
message names the argument — never an IndexError or a kernel error from deep inside, never NaN out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vavam
from vavam import presets
from vavam.video import generate_frames

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    vim = vavam.build_model(presets.vavim_tiny()).eval()
    vam = vavam.build_model(presets.vavam_tiny()).eval()
    tok = vavam.build_model(presets.vq_tiny()).eval()
    return vim, vam, tok


INT_DTYPES = st.sampled_from([torch.int64, torch.int32, torch.float32, torch.bool])


@FAST
@given(b=st.integers(0, 2), t=st.integers(0, 6), h=st.integers(1, 5), w=st.integers(1, 7),
       lo=st.integers(-3, 1030), span=st.integers(0, 40), dtype=INT_DTYPES)
def test_video_model_tokens(models, b, t, h, w, lo, span, dtype):
    vim = models[0]
    c = vim.config
    tokens = (torch.arange(b * t * h * w).reshape(b, t, h, w) % (span + 1) + lo).to(dtype)
    valid = (dtype in (torch.int64, torch.int32) and b * t > 0 and h * w <= c.tokens_per_frame
             and t <= c.num_frames and lo >= 0 and lo + min(span, b * t * h * w - 1) < c.vocab_size)
    if valid:
        logits = vim(tokens)
        assert logits.shape == (b, t * h * w, c.vocab_size) and torch.isfinite(logits).all()
    else:
        with pytest.raises((ValueError, TypeError), match="tokens|grid|frames"):
            vim(tokens)


@FAST
@given(new=st.integers(-1, 2), top_k=st.one_of(st.none(), st.integers(-1, 3)),
       temperature=st.sampled_from([1.0, 0.0, -1.0, float("nan")]), bad_id=st.booleans())
def test_generate_frames_arguments(models, new, top_k, temperature, bad_id):
    vim = models[0]
    ctx = torch.randint(0, 100, (1, 2, 4, 6))
    if bad_id:
        ctx[0, 1, 2, 3] = vim.config.vocab_size
    valid = new >= 1 and (top_k is None or top_k >= 1) and temperature > 0 and not bad_id
    if valid:
        out = generate_frames(vim, ctx, new, top_k=top_k, temperature=temperature,
                              generator=torch.Generator().manual_seed(0))
        assert out.shape == (1, new, 4, 6) and out.dtype == torch.long
    else:
        with pytest.raises(ValueError, match="num_frames|top_k|temperature|context"):
            generate_frames(vim, ctx, new, top_k=top_k, temperature=temperature)


BAD_FLOATS = st.sampled_from([0.0, float("nan"), float("inf"), -float("inf")])


@FAST
@given(cmd=st.integers(-2, 4), k=st.integers(-1, 3), steps=st.sampled_from([None, 0, 1, 3, -2]),
       noise_value=BAD_FLOATS, with_noise=st.booleans(), cmd_dtype=st.sampled_from([torch.long, torch.float32]))
def test_sample_trajectory_arguments(models, cmd, k, steps, noise_value, with_noise, cmd_dtype):
    vam = models[1]
    tokens = torch.randint(0, 100, (1, 2, 4, 6))
    command = torch.tensor([cmd], dtype=cmd_dtype)
    noise = torch.full((1, max(k, 1), 6, 2), noise_value) if with_noise else None
    valid = (0 <= cmd <= 2 and cmd_dtype == torch.long and k >= 1 and (steps is None or steps >= 1)
             and not (with_noise and not np.isfinite(noise_value)))
    if valid:
        traj = vam.sample_trajectory(tokens, command, k, num_steps=steps, noise=noise)
        assert traj.shape == (1, k, 6, 2) and torch.isfinite(traj).all()
    else:
        with pytest.raises((ValueError, TypeError), match="command|num_samples|num_steps|noise"):
            vam.sample_trajectory(tokens, command, k, num_steps=steps, noise=noise)


@FAST
@given(value=BAD_FLOATS, where=st.sampled_from(["actions", "none"]), cmd=st.integers(-1, 3))
def test_flow_loss_rejects_non_finite_actions_and_bad_commands(models, value, where, cmd):
    vam = models[1]
    tokens = torch.randint(0, 100, (1, 2, 4, 6))
    actions = torch.zeros(1, 2, 6, 2)
    if where == "actions":
        actions[0, 1, 3, 0] = value
    commands = torch.full((1, 2), cmd)
    valid = (where == "none" or np.isfinite(value)) and 0 <= cmd <= 2
    if valid:
        assert torch.isfinite(vam.flow_loss(tokens, commands, actions, generator=torch.Generator().manual_seed(0)))
    else:
        with pytest.raises(ValueError, match="actions|command"):
            vam.flow_loss(tokens, commands, actions)


@FAST
@given(b=st.integers(0, 2), c=st.integers(1, 4), h=st.sampled_from([8, 12, 16, 32]), w=st.sampled_from([8, 20, 48]),
       dtype=st.sampled_from([torch.float32, torch.uint8, torch.bfloat16]), value=BAD_FLOATS)
def test_tokenizer_images(models, b, c, h, w, dtype, value):
    tok = models[2]
    images = torch.full((b, c, h, w), value).to(dtype) if dtype != torch.uint8 else torch.zeros(b, c, h, w, dtype=dtype)
    valid = (b > 0 and c == 3 and h % 8 == 0 and w % 8 == 0 and dtype != torch.uint8 and np.isfinite(value))
    if valid:
        ids = tok.encode(images)
        assert ids.shape == (b, h // 8, w // 8)
    else:
        with pytest.raises((ValueError, TypeError), match="images|channels|multiple|dtype|empty"):
            tok.encode(images)


@FAST
@given(kind=st.sampled_from(["nan_pose", "backwards", "duplicate", "empty", "bad_quat", "ok"]))
def test_scene_records_name_the_scene_and_frame(kind):
    from vavam.data.geometry import quat_from_yaw
    from vavam.data.records import RecordError, SceneRecord, validate_record

    n = 6
    ts = np.arange(n, dtype=np.int64) * 500_000
    trans = np.zeros((n, 3))
    rot = quat_from_yaw(np.zeros(n))
    if kind == "nan_pose":
        trans[3, 1] = np.nan
    elif kind == "backwards":
        ts[4] = ts[2]
    elif kind == "duplicate":
        ts[2] = ts[1]
    elif kind == "bad_quat":
        rot[2] = [2.0, 0, 0, 0]
    elif kind == "empty":
        ts, trans, rot = ts[:0], trans[:0], rot[:0]
    if kind == "ok":
        validate_record(SceneRecord(name="scene-7", timestamps=ts, translations=trans, rotations=rot))
        return
    with pytest.raises(RecordError, match="scene-7"):
        validate_record(SceneRecord(name="scene-7", timestamps=ts, translations=trans, rotations=rot))


def test_integer_and_fraction_checks_take_numpy_numbers_but_not_bools():
    from vavam.checks import check_fraction, check_nonnegative_int, check_positive_int

    check_positive_int(np.int64(3), "--steps")  # e.g. a count computed with numpy
    check_nonnegative_int(np.int32(0), "--keep", "keep all")
    check_fraction(np.float32(0.25), "--warmup")
    for bad in (np.int64(0), np.bool_(True), True, 2.0, np.float64(2.0)):
        with pytest.raises(ValueError, match="--steps must be a positive integer"):
            check_positive_int(bad, "--steps")
    with pytest.raises(ValueError, match="--keep must be a non-negative integer"):
        check_nonnegative_int(np.int64(-1), "--keep", "keep all")
    for bad in (np.float32(1.5), np.float64("nan"), np.bool_(False)):
        with pytest.raises(ValueError, match="--warmup must be a fraction"):
            check_fraction(bad, "--warmup")
