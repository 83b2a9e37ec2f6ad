"""ModelClient against servers that answer oddly: something else on the port, a refused token."""

from __future__ import annotations

import httpx
import pytest

from vavam.serve.client import ModelClient
from vavam.serve.errors import ServerUnreachable


def _client(handler) -> ModelClient:
    return ModelClient("http://planner.test:9000", transport=httpx.MockTransport(handler))


def test_non_json_alive_is_not_a_model_server():
    """Another web app on the port answers 200 with HTML: not alive, and require_alive names the address
    (it used to raise a JSONDecodeError that named nothing)."""
    client = _client(lambda request: httpx.Response(200, text="<html>hello</html>"))
    assert client.alive() is False
    with pytest.raises(ServerUnreachable, match="http://planner.test:9000"):
        client.require_alive()


def test_refused_token_stops_before_the_first_run():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/alive":
            return httpx.Response(200, json=True)
        return httpx.Response(401, json={"detail": "missing or wrong bearer token"})

    client = _client(handler)
    client.require_alive()  # /alive needs no token
    with pytest.raises(ValueError, match=r"http://planner.test:9000 refused POST /reset with HTTP 401.*--token"):
        client.require_ready()


def test_ready_server_is_reset():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json=True)

    _client(handler).require_ready()
    assert calls == ["/alive", "/reset"]
