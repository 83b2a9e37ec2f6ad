"""A small synchronous client for a NeuroNCAP-compatible model server (ours or anyone's)."""

from __future__ import annotations

import httpx
import numpy as np

from vavam.serve.errors import ServerUnreachable
from vavam.serve.schemas import DEFAULT_PORT, ModelInput, ModelOutput, parse_server_timing


class ModelClient:
    """Talks to ``/alive``, ``/reset`` and ``/infer`` of a model server.

    Args:
        base_url: e.g. ``http://127.0.0.1:9000``.
        timeout: seconds per request.
        transport: an ``httpx`` transport (tests pass ``httpx.ASGITransport``-like objects or use
            FastAPI's TestClient instead).
        token: bearer token for servers started with one (``Authorization: Bearer TOKEN``).
        session: session id (``X-Session-Id``) so that several clients can share one vavam server,
            each with its own frame history (None: the server's default session, as NeuroNCAP).
    """

    def __init__(
        self,
        base_url: str = f"http://127.0.0.1:{DEFAULT_PORT}",
        timeout: float = 60.0,
        transport=None,
        token: str | None = None,
        session: str | None = None,
    ):
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if session is not None:
            headers["X-Session-Id"] = session
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, headers=headers)
        self.last_timing: dict[str, float] = {}

    def alive(self) -> bool:
        """True when the server answers ``/alive`` with true."""
        try:
            response = self._http.get("/alive")
        except httpx.HTTPError:
            return False
        try:
            return response.status_code == 200 and response.json() is True
        except ValueError:  # something else answers there (not JSON)
            return False

    def require_alive(self) -> None:
        """Raise :class:`~vavam.serve.errors.ServerUnreachable`, naming the address, unless ``/alive`` answers
        true."""
        if not self.alive():
            raise ServerUnreachable(f"no NeuroNCAP-compatible model server answers at {self.base_url} (GET /alive)")

    def require_ready(self) -> None:
        """:meth:`require_alive`, then a ``/reset`` (which the runs do anyway), so that a refused bearer token
        stops a caller before its first run (``ValueError`` naming the address) instead of failing every run."""
        self.require_alive()
        self.reset()

    def reset(self) -> bool:
        """Clear the server's frame history (called before every run).

        Raises ``ValueError`` naming the address when the server refuses the (missing or wrong) bearer
        token, ``httpx.HTTPStatusError`` on other HTTP errors.
        """
        response = self._http.post("/reset", json={})
        if response.status_code in (401, 403):
            raise ValueError(f"the server at {self.base_url} refused POST /reset with HTTP {response.status_code} "
                             f"({response.reason_phrase}): give its bearer token (token=..., --token on the command line)")
        response.raise_for_status()
        return bool(response.json())

    def infer(self, request: ModelInput) -> np.ndarray:
        """Send one request -> trajectory float64 ``[6, 2]`` (ego frame, metres)."""
        response = self._http.post("/infer", json=request.model_dump())
        if response.status_code != 200:
            raise RuntimeError(f"/infer failed with HTTP {response.status_code}: {response.text[:500]}")
        if "server-timing" in response.headers:
            self.last_timing = parse_server_timing(response.headers["server-timing"])
        return np.asarray(ModelOutput.model_validate(response.json()).trajectory, dtype=np.float64)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
