"""The NeuroNCAP-compatible server and agent, with a recording fake tokenizer and model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from vavam.serve.agent import AgentOptions, TokenHistory, VaVAMAgent, preprocess_image, reduce_samples
from vavam.serve.schemas import encode_image
from vavam.serve.server import create_app


class FakeTokenizer:
    """Token = mean pixel value bucket; counts calls so we can check each frame is encoded once."""

    downsample = 16

    def __init__(self):
        self.calls = 0

    def encode(self, images):
        self.calls += images.shape[0]
        b, _, h, w = images.shape
        value = ((images.mean(dim=(1, 2, 3)) + 1) * 50).round().long()  # [B]
        return value[:, None, None].expand(b, h // 16, w // 16).clone()


class FakeModel:
    """Trajectory encodes what it saw: x = number of context frames, y = command; noise adds jitter."""

    def __init__(self):
        self.contexts = []

    def sample_trajectory(self, tokens, command, num_samples=1, num_steps=10, noise=None, generator=None):
        self.contexts.append(tokens.clone())
        b, t = tokens.shape[:2]
        base = torch.zeros(b, num_samples, 6, 2)
        base[..., 0] = t
        base[..., 1] = command.float()[:, None, None]
        return base + 0.01 * torch.randn(b, num_samples, 6, 2, generator=generator)


def _request(ts_us, value=0, command=2, size=(90, 160), fmt="torch"):
    img = np.full((*size, 3), value, dtype=np.uint8)
    return {
        "images": {"CAM_FRONT": encode_image(img, fmt), "CAM_BACK": encode_image(img, fmt)},
        "ego2world": np.eye(4).tolist(),
        "canbus": [0.0] * 18,
        "timestamp": ts_us,
        "command": command,
        "calibration": {"camera2image": {}, "camera2ego": {}, "lidar2ego": np.eye(4).tolist()},
    }


def _client(**opts):
    tok, model = FakeTokenizer(), FakeModel()
    agent = VaVAMAgent(tok, model, AgentOptions(image_size=(32, 64), neuroncap_rule=False, **opts), context_frames=8)
    return TestClient(create_app(agent)), tok, model


def test_alive_reset_infer_round():
    client, tok, model = _client()
    assert client.get("/alive").json() is True
    assert client.post("/reset", json={}).json() is True
    for i in range(10):
        out = client.post("/infer", json=_request(i * 500_000, value=i * 20, command=1)).json()
        assert len(out["trajectory"]) == 6 and all(len(p) == 2 for p in out["trajectory"])
        assert isinstance(out["aux_outputs"], dict)
        assert out["trajectory"][0][0] == pytest.approx(min(i + 1, 8), abs=0.1)  # context grows to 8, then rolls
        assert out["trajectory"][0][1] == pytest.approx(1.0, abs=0.1)
    assert tok.calls == 10  # each frame tokenized once
    # rolling context keeps the LAST 8 frames, oldest first
    last = model.contexts[-1][0, :, 0, 0]
    expected = ((torch.arange(2, 10) * 20 / 255 * 2 - 1 + 1) * 50).round()
    assert torch.equal(last, expected.long())
    client.post("/reset", json={})
    out = client.post("/infer", json=_request(0)).json()
    assert out["trajectory"][0][0] == pytest.approx(1.0, abs=0.1)


def test_context_is_chosen_at_2hz_when_called_faster():
    hist = TokenHistory(context_frames=4, spacing_us=500_000, tolerance_us=60_000)
    for i in range(30):  # 10 Hz calls
        hist.push(i * 100_000, torch.full((1, 1), i))
    assert [int(hist.tokens[j]) for j in hist.context_indices()] == [14, 19, 24, 29]
    with pytest.raises(ValueError, match="reset"):
        hist.push(5, torch.zeros(1, 1))


def test_gap_in_history_shortens_context():
    hist = TokenHistory(context_frames=8)
    for t in (0, 500_000, 2_000_000, 2_500_000):  # a 1.5 s gap
        hist.push(t, torch.full((1, 1), t))
    assert len(hist.context_indices()) == 2


def test_bad_requests_are_named():
    client, _, _ = _client()
    req = _request(0)
    del req["images"]["CAM_FRONT"]
    r = client.post("/infer", json=req)
    assert r.status_code == 400 and "CAM_FRONT" in r.json()["detail"]
    req = _request(0)
    req["images"]["CAM_FRONT"] = "not base64!"
    r = client.post("/infer", json=req)
    assert r.status_code == 400 and "images.CAM_FRONT" in r.json()["detail"]
    assert client.post("/infer", json={**_request(0), "command": 7}).status_code == 422
    client.post("/infer", json=_request(1_000_000))
    r = client.post("/infer", json=_request(500_000))
    assert r.status_code == 400 and "reset" in r.json()["detail"]


def test_png_payload_and_seed_reproducible():
    client, _, _ = _client(num_samples=3, reduction="medoid", seed=7)
    a = client.post("/infer", json=_request(0, value=10, fmt="png")).json()["trajectory"]
    client.post("/reset", json={})
    b = client.post("/infer", json=_request(0, value=10, fmt="torch")).json()["trajectory"]
    assert a == b


def test_preprocess_neuroncap_rule_and_reductions():
    img = np.zeros((900, 1599, 3), dtype=np.uint8)
    x = preprocess_image(img)
    assert x.shape == (3, 288, 512) and x.min() >= -1 and x.max() <= 1
    samples = torch.tensor([[[0.0, 0.0]] * 6, [[1.0, 0.0]] * 6, [[10.0, 0.0]] * 6])
    assert torch.equal(reduce_samples(samples, "first"), samples[0])
    assert torch.allclose(reduce_samples(samples, "mean"), samples.mean(0))
    assert torch.equal(reduce_samples(samples, "medoid"), samples[1])
    with pytest.raises(ValueError):
        preprocess_image(np.zeros((4, 4), dtype=np.uint8))


def test_sessions_are_separate_and_bounded():
    tok, model = FakeTokenizer(), FakeModel()
    agent = VaVAMAgent(tok, model, AgentOptions(image_size=(32, 64), neuroncap_rule=False, max_sessions=2), context_frames=8)
    client = TestClient(create_app(agent))
    for i in range(3):
        for s in ("a", "b"):
            r = client.post("/infer", json=_request(i * 500_000), headers={"X-Session-Id": s})
            assert r.json()["trajectory"][0][0] == pytest.approx(i + 1, abs=0.1)  # each session sees its own frames
    client.post("/reset", json={}, headers={"X-Session-Id": "a"})
    assert len(agent.history("a")) == 0 and len(agent.history("b")) == 3
    client.post("/infer", json=_request(0), headers={"X-Session-Id": "c"})  # a third session evicts the oldest
    assert set(agent.sessions) == {"b", "c"} or set(agent.sessions) == {"a", "c"}
    assert len(agent.sessions) == 2


class SessionlessPlanner:
    def reset(self):
        pass

    def plan(self, image, timestamp_us, command):
        return np.zeros((6, 2))


def test_planner_without_sessions_refuses_session_header():
    client = TestClient(create_app(SessionlessPlanner()))
    assert client.post("/infer", json=_request(0)).status_code == 200
    r = client.post("/infer", json=_request(0), headers={"X-Session-Id": "x"})
    assert r.status_code == 400 and "single history" in r.json()["detail"]


class BadPlanner(SessionlessPlanner):
    def plan(self, image, timestamp_us, command):
        if command == 0:
            raise RuntimeError("model exploded")
        return np.full((6, 2), np.nan)


def test_planner_errors_are_5xx_and_server_keeps_serving():
    client = TestClient(create_app(BadPlanner()), raise_server_exceptions=False)
    assert client.post("/infer", json=_request(0, command=0)).status_code == 500
    r = client.post("/infer", json=_request(0, command=2))
    assert r.status_code == 500 and "bad trajectory" in r.json()["detail"]
    assert client.get("/alive").json() is True


def test_preprocess_rules():
    from vavam.serve.agent import checkpoint_image_size, grid_for

    img = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    x = preprocess_image(img, (32, 48))  # already the model's size: no resize at all (not via 900x1600)
    from vavam.data.frames import preprocess_frame

    assert torch.equal(x, torch.from_numpy(img).permute(2, 0, 1).float().mul(1 / 255).mul(2).sub(1))
    assert torch.equal(x, preprocess_frame(img, (32, 48)))  # bit for bit the frames the models were trained on
    big = np.random.default_rng(1).integers(0, 256, (900, 1599, 3), dtype=np.uint8)
    t = torch.from_numpy(big).permute(2, 0, 1)[None].float()
    for size in ((900, 1600), (288, 512)):  # each resize on uint8 values, rounded (torchvision's uint8 resize)
        t = torch.nn.functional.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
        t = t.round().clamp(0, 255)
    assert torch.equal(preprocess_image(big), (t[0].mul(1 / 255).mul(2).sub(1)).clamp(-1, 1))
    assert grid_for(576) == (18, 32) and grid_for(128) == (8, 16) and grid_for(24) == (4, 6)
    assert checkpoint_image_size(FakeTokenizer(), FakeModel()) == (288, 512)  # unknown -> the paper's size


def test_timing_split_reported():
    client, _, _ = _client()
    r = client.post("/infer", json=_request(0))
    from vavam.serve.schemas import parse_server_timing

    timing = parse_server_timing(r.headers["server-timing"])
    assert {"decode", "tokenize", "denoise", "total"} <= set(timing)
    assert parse_server_timing("tokenize;dur=1.5, prefill;dur=20") == {"tokenize": 0.0015, "prefill": 0.02}


class SpeedModel(FakeModel):
    """A fake model trained with the ego speed: trajectory x = the speed it was given."""

    class config:  # noqa: N801 - stands in for an ActionConfig
        ego_speed = True

    def __init__(self):
        super().__init__()
        self.speeds = []

    def sample_trajectory(self, tokens, command, num_samples=1, num_steps=10, noise=None, generator=None, speed=None):
        self.speeds.append(speed)
        out = super().sample_trajectory(tokens, command, num_samples, num_steps, noise, generator)
        out[..., 0] = speed.float()[:, None, None]
        return out


def test_speed_reaching_model_gets_the_canbus_speed():
    """A model with ``ego_speed`` is handed the request's CAN bus speed (``canbus[13]``); an in-process
    call without a speed is refused by name; a model without it is never given one."""
    model = SpeedModel()
    agent = VaVAMAgent(FakeTokenizer(), model, AgentOptions(image_size=(32, 64), neuroncap_rule=False),
                       context_frames=8)
    assert agent.reads_speed
    client = TestClient(create_app(agent))
    body = _request(0)
    body["canbus"][13] = 6.25
    out = client.post("/infer", json=body).json()
    assert out["trajectory"][0][0] == pytest.approx(6.25, abs=0.1)
    assert float(model.speeds[-1][0]) == 6.25
    with pytest.raises(ValueError, match="speed"):
        agent.plan(np.zeros((90, 160, 3), np.uint8), 500_000, 2)
    plain_client, _, plain = _client()
    assert plain_client.post("/infer", json=body).status_code == 200  # FakeModel takes no speed argument


def test_out_of_range_timestamp_is_refused_and_leaves_no_trace():
    """A timestamp beyond int64 is a 422 naming ``timestamp``; the session keeps working (it used to be a 500
    that left the frame in the history, so every later request was refused until /reset)."""
    client, _, _ = _client()
    for ts in (2**70, -(2**70)):
        r = client.post("/infer", json=_request(ts))
        assert r.status_code == 422 and "timestamp" in r.text
    assert client.post("/infer", json=_request(1_533_151_603_547_590)).status_code == 200
    history = TokenHistory(context_frames=8)
    with pytest.raises(ValueError, match="int64"):
        history.check_next(2**63)


def test_pickle_whose_allowed_global_raises_is_a_400():
    """A payload calling an allowed global with bad arguments (TypeError inside the unpickler) is refused
    with 400 naming the camera, not a 500."""
    import base64

    client, _, _ = _client()
    body = _request(0)
    crafted = b"\x80\x02ccollections\ndefaultdict\nK\x01\x85R."  # defaultdict(1): TypeError when loaded
    body["images"]["CAM_FRONT"] = base64.b64encode(crafted).decode()
    r = client.post("/infer", json=body)
    assert r.status_code == 400 and "images.CAM_FRONT" in r.text
    assert client.post("/infer", json=_request(0)).status_code == 200


class FlakyModel(FakeModel):
    """Fails its first call (e.g. out of memory), then works."""

    def __init__(self):
        super().__init__()
        self.failed = False

    def sample_trajectory(self, *args, **kwargs):
        if not self.failed:
            self.failed = True
            raise RuntimeError("out of memory")
        return super().sample_trajectory(*args, **kwargs)


def test_failed_call_leaves_history_unchanged():
    """A call that fails after its frame was tokenized forgets that frame: the same frame can be sent again
    and the context is what it would have been."""
    model = FlakyModel()
    agent = VaVAMAgent(FakeTokenizer(), model, AgentOptions(image_size=(32, 64), neuroncap_rule=False),
                       context_frames=8)
    image = np.zeros((90, 160, 3), np.uint8)
    agent.observe(image, 0)
    with pytest.raises(RuntimeError, match="out of memory"):
        agent.plan(image, 500_000, 2)
    assert agent.history().timestamps == [0]
    agent.plan(image, 500_000, 2)
    assert agent.history().timestamps == [0, 500_000] and model.contexts[-1].shape[1] == 2


def test_speed_is_checked_before_the_frame_joins_the_history():
    """For a speed-reading model: a short CAN bus is a 400 naming ``canbus``, an implausible speed a 400
    naming ``speed``; neither leaves its frame behind."""
    agent = VaVAMAgent(FakeTokenizer(), SpeedModel(), AgentOptions(image_size=(32, 64), neuroncap_rule=False),
                       context_frames=8)
    client = TestClient(create_app(agent))
    short = _request(0)
    short["canbus"] = [0.0] * 13
    r = client.post("/infer", json=short)
    assert r.status_code == 400 and "canbus" in r.text and "13 values" in r.text
    absurd = _request(0)
    absurd["canbus"][13] = -1e30
    r = client.post("/infer", json=absurd)
    assert r.status_code == 400 and "speed" in r.text
    assert len(agent.history()) == 0
    good = _request(0)
    good["canbus"][13] = 5.0
    assert client.post("/infer", json=good).status_code == 200


def test_dropping_a_session_with_frames_is_logged(caplog):
    client, _, _ = _client(max_sessions=2)
    assert client.post("/infer", json=_request(0)).status_code == 200  # default session holds a frame
    with caplog.at_level("WARNING", logger="vavam.serve.agent"):
        for name in ("a", "b"):
            client.post("/reset", json={}, headers={"X-Session-Id": name})
    assert any("'default' dropped with its 1 frames" in rec.getMessage() for rec in caplog.records)


def test_image_size_flags_go_together():
    from vavam.checks import image_size_arg

    assert image_size_arg(None, None) is None
    assert image_size_arg(64, 128) == (64, 128)
    for h, w in ((64, None), (None, 128)):
        with pytest.raises(ValueError, match="--image-height and --image-width go together"):
            image_size_arg(h, w)
    with pytest.raises(ValueError, match="positive"):
        image_size_arg(0, 128)


class NaNModel(FakeModel):
    def sample_trajectory(self, *args, **kwargs):
        return super().sample_trajectory(*args, **kwargs) * float("nan")


def test_non_finite_answer_is_a_500_and_forgets_the_frame():
    agent = VaVAMAgent(FakeTokenizer(), NaNModel(), AgentOptions(image_size=(32, 64), neuroncap_rule=False),
                       context_frames=8)
    client = TestClient(create_app(agent))
    r = client.post("/infer", json=_request(500_000))
    assert r.status_code == 500 and "bad trajectory" in r.text
    assert len(agent.history()) == 0
    agent.model = FakeModel()
    assert client.post("/infer", json=_request(500_000)).status_code == 200  # the same frame, sent again


class SpeedPlanner:
    """A planner taking a speed, saying nothing about whether it needs one (or saying it does not)."""

    def __init__(self, reads_speed=None):
        if reads_speed is not None:
            self.reads_speed = reads_speed
        self.speeds = []

    def plan(self, image, timestamp_us, command, speed=None):
        self.speeds.append(speed)
        return np.zeros((6, 2))

    def reset(self):
        pass


def test_short_canbus_for_planners_that_take_a_speed():
    body = _request(0)
    body["canbus"] = []
    unknown = SpeedPlanner()
    r = TestClient(create_app(unknown)).post("/infer", json=body)
    assert r.status_code == 400 and "canbus" in r.text
    blind = SpeedPlanner(reads_speed=False)
    assert TestClient(create_app(blind)).post("/infer", json=body).status_code == 200
    assert blind.speeds == [None]


class BlockingFailingModel(FakeModel):
    """Its first call waits for ``release`` and then fails; later calls work."""

    def __init__(self):
        super().__init__()
        import threading

        self.entered, self.release, self.calls = threading.Event(), threading.Event(), 0

    def sample_trajectory(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.release.wait(10)
            raise RuntimeError("device lost")
        return super().sample_trajectory(*args, **kwargs)


def test_a_sessions_calls_do_not_interleave_so_a_failure_forgets_only_its_frame():
    """While a call of a session is planning, the session's next call (here: the same frame, sent again) waits;
    when the first fails, its frame is forgotten and the second plans on the frames before it plus its own."""
    import threading
    import time

    model = BlockingFailingModel()
    agent = VaVAMAgent(FakeTokenizer(), model, AgentOptions(image_size=(32, 64), neuroncap_rule=False),
                       context_frames=8)
    image = np.zeros((90, 160, 3), np.uint8)
    agent.observe(image, 0)
    errors = []
    first = threading.Thread(target=lambda: errors.append(_raises(lambda: agent.plan(image, 500_000, 2))))
    first.start()
    assert model.entered.wait(10)
    second = threading.Thread(target=lambda: agent.plan(image, 500_000, 2))
    second.start()
    time.sleep(0.2)
    assert agent.history().timestamps == [0, 500_000] and len(model.contexts) == 0  # the second one waits
    model.release.set()
    first.join(10)
    second.join(10)
    assert errors == ["device lost"]
    assert agent.history().timestamps == [0, 500_000]
    assert len(model.contexts) == 1 and model.contexts[-1].shape[1] == 2


def _raises(fn) -> str | None:
    try:
        fn()
    except RuntimeError as exc:
        return str(exc)
    return None


def test_preprocess_resizes_uint8_values_like_the_reference_and_the_training_frames():
    """The reference's NeuroNCAPTransform resizes a uint8 tensor (900x1600 first, then / 3.125), so pixel values
    are rounded to integers after each resize; the training frames (``vavam.data.frames.preprocess_frame``) are
    rounded the same way. A served 900x1600 frame must match the training preprocessing of the same frame, and
    every output value must sit on the uint8 grid (it used to be resized in float, never rounded)."""
    from vavam.data.frames import preprocess_frame

    rng = np.random.default_rng(3)
    nuscenes = rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    served = preprocess_image(nuscenes)  # -> 288 x 512
    trained = preprocess_frame(nuscenes, divisor=3.125)  # nuScenes: 1600x900 / 3.125
    assert served.shape == trained.shape == (3, 288, 512)
    assert torch.allclose(served, trained, rtol=0, atol=1e-6)
    for image in (rng.integers(0, 256, (900, 1599, 3), dtype=np.uint8), nuscenes):
        levels = (preprocess_image(image) + 1) / 2 * 255
        assert torch.allclose(levels, levels.round(), rtol=0, atol=1e-3)


def test_num_steps_below_one_is_refused_at_startup():
    """``--num-steps 0`` used to start a server that answered every request 400 (blaming the request)."""
    with pytest.raises(ValueError, match="num_steps"):
        AgentOptions(num_steps=0)
    assert AgentOptions(num_steps=1).num_steps == 1 and AgentOptions().num_steps is None


def test_self_referencing_pickle_is_a_400_naming_the_camera():
    """A torch payload holding a list that contains itself used to crash the loader with RecursionError: a bare
    500 with a traceback in the log. It is bad input: 400 naming the field, and the server keeps serving."""
    import base64
    import io

    loop: list = []
    loop.append(loop)
    buf = io.BytesIO()
    torch.save(loop, buf)
    client, _, _ = _client()
    client = TestClient(client.app, raise_server_exceptions=False)
    body = _request(0)
    body["images"]["CAM_FRONT"] = base64.b64encode(buf.getvalue()).decode()
    r = client.post("/infer", json=body)
    assert r.status_code == 400 and "images.CAM_FRONT" in r.text, r.text
    assert client.post("/infer", json=_request(0)).status_code == 200


@pytest.mark.parametrize("field, value", [("command", True), ("command", "1"), ("timestamp", True), ("timestamp", "0")])
def test_booleans_and_strings_are_not_integers(field, value):
    """JSON ``true`` used to be taken as command 1 (LEFT) or timestamp 1 us, and ``"1"`` as 1, silently."""
    client, _, model = _client()
    r = client.post("/infer", json={**_request(0), field: value})
    assert r.status_code == 422 and field in r.json()["message"], r.text
    assert model.contexts == []
    assert client.post("/infer", json={**_request(0), "command": 1.0}).status_code == 200  # an integral number is fine


def test_empty_bearer_token_is_refused():
    """An empty token (e.g. an empty --token-file) used to be accepted: the server then let in any request
    sending ``Authorization: Bearer`` with nothing after it, and did not warn that it was unprotected."""
    for token in ("", "  "):
        with pytest.raises(ValueError, match="token"):
            create_app(SessionlessPlanner(), token=token)
    client = TestClient(create_app(SessionlessPlanner(), token="t0k"))
    assert client.post("/reset", headers={"Authorization": "Bearer"}).status_code == 401
    assert client.post("/reset", headers={"Authorization": "Bearer t0k"}).status_code == 200
