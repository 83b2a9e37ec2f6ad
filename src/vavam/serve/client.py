"""A small synchronous client for a NeuroNCAP-compatible model server (ours or anyone's)."""

from __future__ import annotations

import httpx
import numpy as np

from vavam.serve.schemas import DEFAULT_PORT, ModelInput, ModelOutput


class ModelClient:
    """Talks to ``/alive``, ``/reset`` and ``/infer`` of a model server.

    Args:
        base_url: e.g. ``http://127.0.0.1:9000``.
        timeout: seconds per request.
        transport: an ``httpx`` transport (tests pass ``httpx.ASGITransport``-like objects or use
            FastAPI's TestClient instead).
    """

    def __init__(self, base_url: str = f"http://127.0.0.1:{DEFAULT_PORT}", timeout: float = 60.0, transport=None):
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def alive(self) -> bool:
        """True when the server answers ``/alive`` with true."""
        try:
            response = self._http.get("/alive")
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json() is True

    def reset(self) -> bool:
        """Clear the server's frame history (called before every run)."""
        response = self._http.post("/reset", json={})
        response.raise_for_status()
        return bool(response.json())

    def infer(self, request: ModelInput) -> np.ndarray:
        """Send one request -> trajectory float64 ``[6, 2]`` (ego frame, metres)."""
        response = self._http.post("/infer", json=request.model_dump())
        if response.status_code != 200:
            raise RuntimeError(f"/infer failed with HTTP {response.status_code}: {response.text[:500]}")
        return np.asarray(ModelOutput.model_validate(response.json()).trajectory, dtype=np.float64)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
