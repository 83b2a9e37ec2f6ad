"""The server under load and faults (loopback, tiny model): 4 clients x 200 requests with zero
failures and every answer equal to that client's solo answer, while other connections send
oversize bodies and disconnect mid-request; p50 / p99 latency is measured and reported."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from vavam.serve.agent import AgentOptions, VaVAMAgent
from vavam.serve.server import BackgroundServer, create_app

from test_server_e2e import T0, _frame, neuroncap_request, tiny  # noqa: F401  (fixture re-used)

pytestmark = pytest.mark.slow
CLIENTS, REQUESTS = 4, 200


def _raw_disconnect(host: str, port: int, body: bytes, send: int) -> None:
    """Open a connection, send the headers and part of a body, then drop the connection."""
    with socket.create_connection((host, port), timeout=10) as s:
        head = (f"POST /infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"X-Session-Id: vandal\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        s.sendall(head + body[:send])


def test_load_with_faulty_neighbours(tiny, record_property):  # noqa: F811
    tok, vam = tiny
    agent = VaVAMAgent(tok, vam, AgentOptions(seed=3))
    # small frames at the model's size keep 800 requests quick; one distinct clip per client
    clips = [[_frame(32, 48, 7 * c + k) for k in range(6)] for c in range(CLIENTS)]
    bodies = [[json.dumps(neuroncap_request(clips[c][i % 6], T0 + i * 500_000, command=c % 3, others="")).encode()
               for i in range(REQUESTS)] for c in range(CLIENTS)]
    with BackgroundServer(create_app(agent, max_body_bytes=2_000_000)) as srv:
        solo = []
        for c in range(CLIENTS):  # each client's answers alone, for the comparison under load
            with httpx.Client(base_url=srv.url, headers={"X-Session-Id": f"solo-{c}",
                                                          "Content-Type": "application/json"}, timeout=60) as http:
                http.post("/reset", json={})
                solo.append([http.post("/infer", content=bodies[c][i]).json()["trajectory"] for i in range(12)])

        latencies: list[float] = []
        answers: dict[int, list] = {}
        failures: list[str] = []
        stop = threading.Event()

        def client(c: int) -> None:
            with httpx.Client(base_url=srv.url, headers={"X-Session-Id": f"client-{c}",
                                                          "Content-Type": "application/json"}, timeout=60) as http:
                http.post("/reset", json={})
                out = []
                for i in range(REQUESTS):
                    t = time.perf_counter()
                    r = http.post("/infer", content=bodies[c][i])
                    latencies.append(time.perf_counter() - t)
                    if r.status_code != 200:
                        failures.append(f"client {c} request {i}: {r.status_code} {r.text[:200]}")
                        continue
                    out.append(r.json()["trajectory"])
                answers[c] = out

        faults = {"disconnects": 0, "oversize": 0}

        def vandal() -> None:
            big = b'{"images": "' + b"A" * 3_000_000 + b'"}'
            while not stop.is_set():
                _raw_disconnect(srv.host, srv.port, bodies[0][0], send=len(bodies[0][0]) // 2)
                faults["disconnects"] += 1
                with httpx.Client(base_url=srv.url, timeout=60) as http:
                    assert http.post("/infer", content=big, headers={"Content-Type": "application/json"}).status_code == 413
                faults["oversize"] += 1
                time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        bad = threading.Thread(target=vandal)
        bad.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        stop.set()
        bad.join(timeout=60)

        assert not failures, failures[:5]
        assert sorted(answers) == list(range(CLIENTS)) and all(len(a) == REQUESTS for a in answers.values())
        for c in range(CLIENTS):
            assert answers[c][:12] == solo[c]  # same answers as alone, despite the interleaving and the faults
        assert faults["disconnects"] >= 3 and faults["oversize"] >= 3
        with httpx.Client(base_url=srv.url, timeout=10) as http:  # still serving
            assert http.get("/alive").status_code == 200
    p50, p99 = np.percentile(np.array(latencies) * 1e3, [50, 99])
    record_property("latency_ms_p50", round(float(p50), 1))
    record_property("latency_ms_p99", round(float(p99), 1))
    print(f"\n{CLIENTS}x{REQUESTS} requests, 0 failed, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"{faults['disconnects']} mid-request disconnects, {faults['oversize']} oversize bodies")
