"""The model server end to end, with a real (tiny, random-weight) tokenizer and VaVAM behind a real
uvicorn on loopback, called over HTTP the way NeuroNCAP calls it.

Random weights are enough here: every check is an equality between the server's answer and the
same computation done in-process (or alone), not a quality bar.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vavam
from vavam.serve.agent import AgentOptions, VaVAMAgent, sample_seed
from vavam.serve.schemas import parse_server_timing
from vavam.serve.server import BackgroundServer, create_app

CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
T0 = 1_533_151_603_547_590  # a nuScenes-like timestamp (µs)
SEED = 7
TOKEN = "s3cret-token"


class CountingTokenizer:
    """Wraps a tokenizer and counts the frames it encodes."""

    def __init__(self, tok):
        self.tok, self.frames = tok, 0
        self.downsample = tok.downsample

    def encode(self, images):
        self.frames += images.shape[0]
        return self.tok.encode(images)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tok = vavam.build_model(vavam.presets.vq_tiny()).eval()
    vam = vavam.build_model(vavam.presets.vavam_tiny()).eval()
    with torch.no_grad():  # the expert's readout starts at zero (plans = pure noise): make plans depend on
        vam.expert.readout.weight.normal_(0.0, 0.05)  # the frames and the command, so equalities mean something
    return tok, vam


def _frame(h: int, w: int, k: int) -> np.ndarray:
    """A smooth, frame-dependent uint8 image (cheap to make at 900 x 1600)."""
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    r = 127 + 120 * np.sin(6 * x + k)
    g = 127 + 120 * np.cos(5 * y - 0.7 * k)
    b = 255 * (x * y + 0.1 * k) % 255
    return np.clip(np.stack([r + 0 * y, g + 0 * x, b], -1), 0, 255).astype(np.uint8)


def _torch_b64(image) -> str:
    """What NeuroNCAP's renderer returns and its engine forwards: base64 of ``torch.save(tensor h,w,3)``."""
    buf = io.BytesIO()
    torch.save(torch.tensor(np.asarray(image)), buf)
    return base64.b64encode(buf.getvalue()).decode("utf-8")


def neuroncap_request(front: np.ndarray, timestamp: int, command: int = 2, others: str | None = None) -> dict:
    """``ModelInput.to_json_dict()`` of NeuroNCAP: six torch-saved cameras, tensors turned into lists."""
    other = others if others is not None else _torch_b64(np.zeros((900, 1600, 3), np.uint8))
    images = {cam: (_torch_b64(front) if cam == "CAM_FRONT" else other) for cam in CAMERAS}
    ego2world = torch.eye(4, dtype=torch.float64)
    ego2world[:3, 3] = torch.tensor([601.2, 1645.8, 0.0], dtype=torch.float64)
    canbus = torch.zeros(18, dtype=torch.float32)
    canbus[13] = 5.3
    intrinsics = torch.tensor([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
    return {
        "images": images,
        "ego2world": ego2world.tolist(),
        "canbus": canbus.tolist(),
        "timestamp": int(timestamp),
        "command": int(command),
        "calibration": {
            "camera2image": {cam: intrinsics.tolist() for cam in CAMERAS},
            "camera2ego": {cam: torch.eye(4).tolist() for cam in CAMERAS},
            "lidar2ego": torch.eye(4).tolist(),
        },
    }


def reference_tokens(tok, image: np.ndarray, size=(32, 48)) -> torch.Tensor:
    """In-process: NeuroNCAP rule (any size -> 900x1600 -> model size, rounding to uint8 after each), then the
    tokenizer."""
    def resize_u8(x, out):  # on uint8 values, rounded back to integers (torchvision's resize of a uint8 image)
        return F.interpolate(x, size=out, mode="bilinear", antialias=True, align_corners=False).round().clamp(0, 255)

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    if tuple(x.shape[-2:]) != (900, 1600):
        x = resize_u8(x, (900, 1600))
    x = resize_u8(x, size)
    with torch.inference_mode():
        return tok.encode((x / 255.0 * 2 - 1).clamp(-1, 1))[0]


def reference_plan(vam, context: list[torch.Tensor], command: int, timestamp: int, frames: int = 4) -> np.ndarray:
    tokens = torch.stack(context[-frames:])[None]
    g = torch.Generator().manual_seed(sample_seed(SEED, timestamp))
    with torch.inference_mode():
        traj = vam.sample_trajectory(tokens, torch.tensor([command]), num_samples=1, generator=g)
    return traj[0, 0].double().numpy()


@pytest.fixture(scope="module")
def server(tiny):
    tok, vam = tiny
    counting = CountingTokenizer(tok)
    agent = VaVAMAgent(counting, vam, AgentOptions(seed=SEED))
    assert agent.options.image_size == (32, 48)  # the checkpoint's own resolution: 4 x 6 tokens x 8
    with BackgroundServer(create_app(agent)) as srv:
        yield srv, agent, counting


def test_neuroncap_request_matches_in_process(server, tiny):
    srv, agent, counting = server
    tok, vam = tiny
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        assert http.get("/alive").json() is True
        assert http.post("/reset", json={}).json() is True
        counting.frames = 0
        context: list[torch.Tensor] = []
        other = _torch_b64(np.zeros((900, 1600, 3), np.uint8))
        for i in range(5):  # more frames than the model's 4: the context rolls
            width = 1599 if i % 2 else 1600  # NeuRAD renders are sometimes 1599 wide
            image = _frame(900, width, i)
            ts = T0 + i * 500_000 + (i % 3) * 1_000  # nuScenes keyframes are only about 0.5 s apart
            command = (2, 1, 0, 2, 1)[i]
            r = http.post("/infer", json=neuroncap_request(image, ts, command, other))
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"trajectory", "aux_outputs"}
            assert body["aux_outputs"] == {k: None for k in ("objects_in_bev", "object_classes", "object_scores", "object_ids", "future_trajs")}
            context.append(reference_tokens(tok, image))
            expected = reference_plan(vam, context, command, ts)
            np.testing.assert_array_equal(np.asarray(body["trajectory"]), expected)
            timing = parse_server_timing(r.headers["server-timing"])
            assert {"decode", "tokenize", "prefill", "denoise", "total"} <= set(timing)
            assert all(v >= 0 for v in timing.values())
        assert counting.frames == 5  # one tokenization per call, never the whole buffer again
        assert len(agent.history().context_indices()) == 4


def test_reset_clears_history(server, tiny):
    srv, agent, _ = server
    tok, vam = tiny
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        http.post("/reset", json={})
        for i in range(3):
            assert http.post("/infer", json=neuroncap_request(_frame(90, 160, i), T0 + i * 500_000)).status_code == 200
        assert len(agent.history()) == 3
        assert http.post("/reset", json={}).json() is True
        assert len(agent.history()) == 0
        # a new run may start at an earlier time, and its first plan sees one frame only
        image = _frame(900, 1600, 9)
        r = http.post("/infer", json=neuroncap_request(image, T0, 2))
        assert r.status_code == 200
        expected = reference_plan(vam, [reference_tokens(tok, image)], 2, T0)
        np.testing.assert_array_equal(np.asarray(r.json()["trajectory"]), expected)


# ------------------------------------------------------------------ malformed requests


class _Gadget:
    """Unpickling this runs ``os.system`` -- which the restricted unpickler must refuse."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _b64_of(obj) -> str:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def guarded(tiny):
    tok, vam = tiny
    agent = VaVAMAgent(tok, vam, AgentOptions(seed=SEED))
    with BackgroundServer(create_app(agent, token=TOKEN, max_body_bytes=2_000_000)) as srv:
        yield srv, agent


def _small(ts, **over):
    req = neuroncap_request(_frame(90, 160, 1), ts, others=_torch_b64(np.zeros((9, 16, 3), np.uint8)))
    req.update(over)
    return req


def _bad_cases(tmp):
    def with_front(payload):
        return lambda ts: {**_small(ts), "images": {**_small(ts)["images"], "CAM_FRONT": payload}}

    def without_front(ts):
        req = _small(ts)
        del req["images"]["CAM_FRONT"]
        return req

    nan_pose = np.eye(4).tolist()
    nan_pose[0][3] = float("nan")
    return {
        "bad base64": (with_front("this is not base64!!"), 400, "not valid base64"),
        "not a torch payload": (with_front(base64.b64encode(b"garbage bytes").decode()), 400, "cannot read"),
        "tensor shape H x W": (with_front(_b64_of(torch.zeros(90, 160, dtype=torch.uint8))), 400, "H x W x 3"),
        "tensor shape 3 x H x W": (with_front(_b64_of(torch.zeros(3, 90, 160, dtype=torch.uint8))), 400, "H x W x 3"),
        "tensor dtype float32": (with_front(_b64_of(torch.zeros(90, 160, 3))), 400, "uint8"),
        "not a tensor": (with_front(_b64_of({"a": 1})), 400, "expected a uint8 tensor"),
        "code-running pickle": (with_front(_b64_of({"x": _Gadget(str(tmp / "pwned"))})), 400, "refused payload"),
        "unknown command": (lambda ts: _small(ts, command=7), 422, "command"),
        "missing CAM_FRONT": (without_front, 400, "CAM_FRONT is missing"),
        "NaN pose": (lambda ts: _small(ts, ego2world=nan_pose), 422, "ego2world"),
        "pose not 4x4": (lambda ts: _small(ts, ego2world=[[1.0, 0.0], [0.0, 1.0]]), 422, "ego2world"),
        "missing timestamp": (lambda ts: {k: v for k, v in _small(ts).items() if k != "timestamp"}, 422, "timestamp"),
    }


CASES = list(_bad_cases(Path("/nonexistent")))


@pytest.mark.parametrize("case", CASES)
def test_malformed_request_is_4xx_and_server_keeps_serving(guarded, case, tmp_path):
    srv, agent = guarded
    build, status, text = _bad_cases(tmp_path)[case]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=srv.url, timeout=60, headers=auth) as http:
        http.post("/reset", json={})
        # json.dumps writes NaN as the bare token NaN (httpx's json= refuses it), as a buggy client would
        body = json.dumps(build(T0)).encode()
        r = http.post("/infer", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        answer = r.json()
        message = answer.get("message", "") + str(answer.get("detail"))
        assert text in message, message
        assert len(r.content) < 4000  # the offending input is not echoed back
        assert not (tmp_path / "pwned").exists()  # the gadget never ran
        assert len(agent.history()) == 0  # a refused request leaves no frame behind
        ok = http.post("/infer", json=_small(T0))
        assert ok.status_code == 200 and len(ok.json()["trajectory"]) == 6


def test_pickle_that_runs_code_is_refused(guarded, tmp_path):
    srv, _ = guarded
    target = tmp_path / "pwned"
    payload = _b64_of([torch.zeros(2, 2, 3, dtype=torch.uint8), _Gadget(str(target))])
    with httpx.Client(base_url=srv.url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        r = http.post("/infer", json={**_small(T0), "images": {"CAM_FRONT": payload}})
    assert r.status_code == 400 and "refused payload" in r.json()["detail"]
    assert "system" in r.json()["detail"]  # names the global it would have called
    assert not target.exists()


def test_auth_size_limit_and_order(guarded):
    srv, _ = guarded
    good = _small(T0)
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        assert http.get("/alive").json() is True  # liveness needs no token (NeuroNCAP polls it first)
        r = http.post("/infer", json=good)
        assert r.status_code == 401 and "missing bearer token" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        assert http.post("/reset", json={}).status_code == 401
        r = http.post("/infer", json=good, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and "wrong bearer token" in r.json()["detail"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert http.post("/reset", json={}, headers=auth).json() is True
        big = {**good, "images": {**good["images"], "CAM_BACK": "A" * 2_100_000}}
        r = http.post("/infer", json=big, headers=auth)
        assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]

        def chunks():  # no Content-Length: counted while read
            data = httpx.Request("POST", "/", json=big).read()
            for i in range(0, len(data), 65536):
                yield data[i : i + 65536]

        r = http.post("/infer", content=chunks(), headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 413
        r = http.post("/infer", content=b"{not json", headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 422
        assert http.post("/infer", json=good, headers=auth).status_code == 200
        r = http.post("/infer", json=_small(T0 - 500_000), headers=auth)  # time going backwards
        assert r.status_code == 400 and "reset" in r.json()["detail"]
        assert http.post("/infer", json=_small(T0 + 500_000), headers=auth).status_code == 200


# ------------------------------------------------------------------ concurrency


def _drive(url: str, session: str, frames: list[tuple[np.ndarray, int, int]], barrier=None) -> list[list[list[float]]]:
    out = []
    with httpx.Client(base_url=url, timeout=120, headers={"X-Session-Id": session}) as http:
        assert http.post("/reset", json={}).json() is True
        for image, ts, command in frames:
            if barrier is not None:
                barrier.wait(timeout=60)
            r = http.post("/infer", json=neuroncap_request(image, ts, command, others=""))
            assert r.status_code == 200, r.text
            out.append(r.json()["trajectory"])
    return out


def test_two_concurrent_sessions_match_their_solo_answers(server):
    """Real uvicorn on loopback + two threads with their own httpx clients; a barrier makes their
    requests arrive together, so the two sessions' calls interleave on the server."""
    srv, agent, _ = server
    seq_a = [(_frame(90, 160, k), T0 + k * 500_000, 2) for k in range(4)]
    seq_b = [(_frame(120, 200, 10 + k), T0 + k * 500_000, 1) for k in range(4)]
    solo_a = _drive(srv.url, "client-a", seq_a)
    solo_b = _drive(srv.url, "client-b", seq_b)
    assert all(not np.allclose(a, b) for a, b in zip(solo_a, solo_b))
    barrier = threading.Barrier(2)
    results: dict[str, list] = {}
    errors: list[BaseException] = []

    def run(name, seq):
        try:
            results[name] = _drive(srv.url, name, seq, barrier)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=("client-a", seq_a)), threading.Thread(target=run, args=("client-b", seq_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert results["client-a"] == solo_a
    assert results["client-b"] == solo_b
    assert {"client-a", "client-b"} <= set(agent.sessions)


def test_bad_session_header(server):
    srv, _, _ = server
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        r = http.post("/reset", json={}, headers={"X-Session-Id": "a b/c"})
        assert r.status_code == 400 and "X-Session-Id" in r.json()["detail"]


@pytest.mark.parametrize("reduction", ["first", "mean", "medoid"])
def test_k_samples_reduced_like_in_process(tiny, reduction):
    """K = 4 samples per call, reduced on the server; in-process: the same K samples and the same reduction."""
    from fastapi.testclient import TestClient

    from vavam.serve.agent import reduce_samples

    tok, vam = tiny
    agent = VaVAMAgent(tok, vam, AgentOptions(seed=SEED, num_samples=4, reduction=reduction))
    client = TestClient(create_app(agent))  # in-process ASGI is enough for a single client
    context = []
    for i in range(2):
        image = _frame(90, 160, 20 + i)
        ts = T0 + i * 500_000
        r = client.post("/infer", json=neuroncap_request(image, ts, 1, others=""))
        assert r.status_code == 200, r.text
        context.append(reference_tokens(tok, image))
        g = torch.Generator().manual_seed(sample_seed(SEED, ts))
        with torch.inference_mode():
            samples = vam.sample_trajectory(torch.stack(context)[None], torch.tensor([1]), num_samples=4, generator=g)
        expected = reduce_samples(samples[0].float(), reduction).double().numpy()
        np.testing.assert_array_equal(np.asarray(r.json()["trajectory"]), expected)


def test_bf16_autocast_runs_and_is_reproducible(tiny):
    tok, vam = tiny
    agent = VaVAMAgent(tok, vam, AgentOptions(seed=SEED, dtype="bf16"))
    image = _frame(90, 160, 3)
    a = agent.plan(image, T0, 2)
    agent.reset()
    b = agent.plan(image, T0, 2)
    assert np.isfinite(a).all() and np.array_equal(a, b)
    fp32 = VaVAMAgent(tok, vam, AgentOptions(seed=SEED)).plan(image, T0, 2)
    assert np.abs(a - fp32).max() < 0.1 * np.abs(fp32).max() + 1.0  # close to fp32, not equal


def test_load_agent_from_checkpoint_folders(tiny, tmp_path):
    from vavam.action.convert import save_action_model
    from vavam.serve.server import load_agent
    from vavam.tokenizer.loading import save_tokenizer

    tok, vam = tiny
    tok_dir = save_tokenizer(tok, tmp_path / "tok")
    ckpt = save_action_model(vam, tmp_path / "vam", meta={"tokenizer": str(tok_dir)})
    agent = load_agent(ckpt, seed=1, num_samples=2, reduction="mean")
    assert agent.options.image_size == (32, 48) and agent.context_frames == 4  # from the token grid
    tok2 = save_tokenizer(tok, tmp_path / "tok2", meta={"training": {"image_size": [24, 64]}})  # 3 x 8 = 24 tokens
    assert load_agent(ckpt, tokenizer=tok2).options.image_size == (24, 64)  # recorded with the tokenizer
    assert load_agent(ckpt, image_size=(48, 32)).options.image_size == (48, 32)
    # a size (or a tokenizer) whose token grid is not the model's 24 tokens is refused before any frame (every
    # call failed later, naming neither); so is a checkpoint without a recorded tokenizer (a bare SystemExit)
    tok3 = save_tokenizer(tok, tmp_path / "tok3", meta={"training": {"image_size": [64, 96]}})
    for kwargs in ({"tokenizer": tok3}, {"image_size": (16, 24)}):
        with pytest.raises(ValueError, match=r"tokens per frame, but the model takes 24: pass the tokenizer"):
            load_agent(ckpt, **kwargs)
    bare = save_action_model(vam, tmp_path / "bare")
    with pytest.raises(ValueError, match="no tokenizer recorded with this checkpoint; pass --tokenizer PATH"):
        load_agent(bare)
    image = _frame(90, 160, 0)
    expected = VaVAMAgent(tok, vam, AgentOptions(seed=1, num_samples=2, reduction="mean")).plan(image, T0, 2)
    np.testing.assert_allclose(agent.plan(image, T0, 2), expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------ closed loop through the server


@pytest.mark.slow
def test_closed_loop_scores_same_through_server(tiny, tmp_path):
    """A tiny random-weight VaVAM on one layout per scenario type: same plans, same scores in-process
    and through the server (which also gets the priming frames through /infer, as from NeuroNCAP).
    Also checks the CLI function on checkpoint folders: table, JSON, baselines, mp4s."""
    from vavam.action.convert import save_action_model
    from vavam.eval.closedloop import eval_closedloop
    from vavam.tokenizer.loading import save_tokenizer

    tok, vam = tiny
    tok_dir = save_tokenizer(tok, tmp_path / "tok")
    ckpt = save_action_model(vam, tmp_path / "vam", meta={"tokenizer": str(tok_dir)})
    common = {"runs": 1, "layouts": 1, "seed": 3, "progress": False, "video_height": 48, "video_width": 80}
    local = eval_closedloop(ckpt, out=tmp_path / "local", video_runs=1, **common)
    served = eval_closedloop(ckpt, through_server=True, out=tmp_path / "served", video_runs=0, baselines=False, **common)
    assert local["mode"] == "in-process" and served["mode"] == "server"
    a, b = local["planners"]["VaVAM"], served["planners"]["VaVAM"]
    for key in ("score", "collision_rate", "mean_deviation", "max_deviation", "progress"):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    assert a["types"] == b["types"] and set(a["types"]) == {"stationary", "frontal", "side"}
    runs_a = json.loads((tmp_path / "local" / "vavam" / "runs.json").read_text())
    runs_b = json.loads((tmp_path / "served" / "vavam" / "runs.json").read_text())
    assert [r["plans"] for r in runs_a] == [r["plans"] for r in runs_b]
    assert all(r["failure"] is None for r in runs_a + runs_b)
    # the table holds the baselines next to VaVAM, as Markdown and JSON
    assert set(local["planners"]) == {"constant velocity", "emergency brake", "expert (privileged)", "VaVAM"}
    md = (tmp_path / "local" / "closedloop.md").read_text()
    assert "| **expert (privileged)** | **overall** |" in md and "max dev. (m)" in md
    saved = json.loads((tmp_path / "local" / "closedloop.json").read_text())
    assert saved["planners"]["expert (privileged)"]["score"] == pytest.approx(local["planners"]["expert (privileged)"]["score"])
    assert local["planners"]["expert (privileged)"]["collision_rate"] == 0.0
    assert local["planners"]["constant velocity"]["collision_rate"] > 0.5
    assert len(a["videos"]) == 3 and all(os.path.getsize(v) > 0 for v in a["videos"])


@pytest.mark.slow
def test_closed_loop_through_a_running_server_does_not_claim_local_options(tiny, tmp_path):
    """With ``--url`` the planning is the running server's: closedloop.json names that server and does not
    report the local checkpoint's options (seed, samples, ...) as if they had planned."""
    from vavam.action.convert import save_action_model
    from vavam.eval.closedloop import eval_closedloop
    from vavam.tokenizer.loading import save_tokenizer

    tok, vam = tiny
    ckpt = save_action_model(vam, tmp_path / "vam", meta={"tokenizer": str(save_tokenizer(tok, tmp_path / "tok"))})
    with BackgroundServer(create_app(VaVAMAgent(tok, vam, AgentOptions(seed=11)))) as srv:
        result = eval_closedloop(ckpt, through_server=True, url=srv.url, out=tmp_path / "cl", runs=1, layouts=1,
                                 kinds=["stationary"], seed=3, video_runs=0, baselines=False, progress=False)
    saved = json.loads((tmp_path / "cl" / "closedloop.json").read_text())
    assert saved["url"] == srv.url and result["planners"]["VaVAM"]["num_runs"] == 1
    assert saved["agent"]["server"] == srv.url and saved["agent"]["image_size"] == [32, 48]
    assert "seed" not in saved["agent"] and "num_samples" not in saved["agent"]
