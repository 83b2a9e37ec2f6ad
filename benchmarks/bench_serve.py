"""Serving latency: one ``/infer``-equivalent call of the VaVAM agent, split into its stages.

Per call (steady state: the history already holds ``frames - 1`` frames, so the context is full):

- ``tokenize``: the new CAM_FRONT frame (900 x 1600 uint8) resized by the NeuroNCAP rule and encoded
  (only the new frame: the agent keeps the tokens of earlier frames);
- ``prefill``: VaViM's keys and values over the whole context (recomputed each call: the temporal
  position of every frame shifts as the context rolls);
- ``denoise``: the action expert's Euler steps (10) reading those keys and values;
- ``total``: the agent's whole call (the three stages plus preprocessing and bookkeeping).

Sizes (random weights, CPU unless CUDA is available, fp32):

- ``tiny``: ``vq_tiny`` + ``vavam_tiny`` (4 frames of 4 x 6 tokens, 32 x 48 input);
- ``vavam_s``: ``vq16`` + ``vavam_s`` (8 frames of 18 x 32 tokens, 288 x 512 input) -- the paper's
  VaVAM-S; slow on a small CPU, so only a few calls (``VAVAM_BENCH_SERVE_CALLS_S``, default 3);
- ``tiny_http``: the tiny agent behind the real server on loopback, fed NeuroNCAP-shaped requests
  (six torch-saved 900 x 1600 cameras, ~35 MB of JSON): ``http_total`` is the client's round trip.

Rows: {name, config, metric (``<stage>_p50`` / ``<stage>_p99``), value, unit ms}.
``python benchmarks/bench_serve.py`` or ``python benchmarks/run.py serve``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

STAGES = ("tokenize", "prefill", "denoise", "total")


def _image(k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    small = rng.integers(0, 256, (45, 80, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 20, 0), 20, 1)  # 900 x 1600, blocky content


def _agent(tok_cfg, vam_cfg, device: str):
    import vavam
    from vavam.serve.agent import AgentOptions, VaVAMAgent

    torch.manual_seed(0)
    tok = vavam.build_model(tok_cfg).to(device).eval()
    vam = vavam.build_model(vam_cfg).to(device).eval()
    with torch.no_grad():
        vam.expert.readout.weight.normal_(0.0, 0.05)
    return VaVAMAgent(tok, vam, AgentOptions(seed=0, device=device))


def _fill(agent, t_us: int) -> int:
    """Put ``frames - 1`` frames of random tokens in the history, 0.5 s apart; return the next time."""
    h, w = (s // agent.tokenizer.downsample for s in agent.options.image_size)
    vocab = agent.model.config.video.vocab_size - 1
    history = agent.history()
    for _ in range(agent.context_frames - 1):
        history.push(t_us, torch.randint(0, vocab, (h, w)))
        t_us += 500_000
    return t_us


def _rows(name: str, config: str, timings: list[dict[str, float]]) -> list[dict]:
    rows = []
    for stage in timings[0]:
        ms = 1000.0 * np.asarray([t[stage] for t in timings])
        for q in (50, 99):
            rows.append({"name": name, "config": f"{config} calls={len(ms)}", "metric": f"{stage}_p{q}",
                         "value": round(float(np.percentile(ms, q)), 3), "unit": "ms"})
    return rows


def _bench_agent(agent, calls: int) -> list[dict[str, float]]:
    t_us = _fill(agent, 1_000_000)
    agent.plan_timed(_image(0), t_us, 2)  # warm-up (also fills the last slot)
    out = []
    for k in range(calls):
        t_us += 500_000
        _, timing = agent.plan_timed(_image(k + 1), t_us, 2)
        out.append({s: timing.get(s, 0.0) for s in STAGES})
    return out


def _bench_http(agent, calls: int) -> list[dict[str, float]]:
    import base64
    import io

    import httpx

    from vavam.serve.schemas import parse_server_timing
    from vavam.serve.server import BackgroundServer, create_app

    def b64(img):
        buf = io.BytesIO()
        torch.save(torch.from_numpy(img), buf)
        return base64.b64encode(buf.getvalue()).decode()

    cams = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
    out = []
    with BackgroundServer(create_app(agent)) as srv, httpx.Client(base_url=srv.url, timeout=600) as http:
        http.post("/reset", json={})
        t_us = _fill(agent, 1_000_000)  # steady state, as in _bench_agent: every timed call sees a full context
        for k in range(calls + 1):
            img = b64(_image(k))
            body = {"images": {c: img for c in cams}, "ego2world": np.eye(4).tolist(), "canbus": [0.0] * 18,
                    "timestamp": t_us + k * 500_000, "command": 2,
                    "calibration": {"camera2image": {}, "camera2ego": {}, "lidar2ego": np.eye(4).tolist()}}
            t0 = time.perf_counter()
            r = http.post("/infer", json=body)
            wall = time.perf_counter() - t0
            r.raise_for_status()
            if k:  # the first call is a warm-up
                timing = parse_server_timing(r.headers["server-timing"])
                out.append({"decode": timing["decode"], **{s: timing.get(s, 0.0) for s in STAGES}, "http_total": wall})
    return out


@torch.no_grad()
def run() -> list[dict]:
    from vavam import presets

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("VAVAM_BENCH_THREADS", "1")))  # shared CPUs: 1 is steadier
        device_name = f"cpu threads={torch.get_num_threads()}"
    else:
        device_name = torch.cuda.get_device_name()
    calls_tiny = int(os.environ.get("VAVAM_BENCH_SERVE_CALLS_TINY", "50"))
    calls_s = int(os.environ.get("VAVAM_BENCH_SERVE_CALLS_S", "3" if device == "cpu" else "20"))
    rows = []
    tiny = _agent(presets.vq_tiny(), presets.vavam_tiny(), device)
    base = f"vq_tiny+vavam_tiny ctx={tiny.context_frames}x4x6 input=900x1600->32x48 K=1 steps=10 fp32 {device_name}"
    rows += _rows("serve.agent_call", base, _bench_agent(tiny, calls_tiny))
    tiny.reset()
    rows += _rows("serve.http_call", base + " six 900x1600 torch cameras over loopback", _bench_http(tiny, min(calls_tiny, 10)))
    del tiny
    if calls_s > 0:
        s = _agent(presets.vq16(), presets.vavam_s(), device)
        base = f"vq16+vavam_s ctx={s.context_frames}x18x32 input=900x1600->288x512 K=1 steps=10 fp32 {device_name}"
        rows += _rows("serve.agent_call", base, _bench_agent(s, calls_s))
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
