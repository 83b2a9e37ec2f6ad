"""A NeuroNCAP-compatible model server (FastAPI), built by a factory around any planner.

Endpoints (NeuroNCAP's wire format, see :mod:`vavam.serve.schemas`):

- ``GET /alive`` -> ``true`` (never needs the token: NeuroNCAP polls it before anything else);
- ``POST /reset`` -> ``true``: clears the frame history of the session;
- ``POST /infer`` (a ``ModelInput``) -> ``{"trajectory": 6 x [x, y], "aux_outputs": {... null}}``;
  the response carries a ``Server-Timing`` header (tokenize / prefill / denoise / total, ms).

Only ``images["CAM_FRONT"]`` is decoded (the other cameras are accepted unread, as in the reference).

Sessions: a client may send ``X-Session-Id: <id>``; each id has its own frame history, so several
simulators can share one server. NeuroNCAP sends no such header and gets the ``default`` session.
The agent keeps at most ``max_sessions`` histories (64; ``--max-sessions``): beyond that the least
recently used one is dropped (logged as a warning) and its next call starts with an empty history.
Model compute is serialised by one lock in the agent (see :mod:`vavam.serve.agent`), so concurrent
clients get exactly the answers they would get alone.

Safety: binds 127.0.0.1 unless told otherwise; an optional bearer token (``Authorization: Bearer
TOKEN``) guards ``/reset`` and ``/infer``; bodies over ``max_body_bytes`` get 413 before they are
parsed; torch payloads go through vavam's restricted unpickler (a pickle that would run code is
refused with 400 and nothing of it runs); malformed requests get 400 / 422 with a message naming the
field, and the server keeps serving.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import re
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Literal, Protocol

import numpy as np
import tyro
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from vavam.io import UnsafePickleError, recorded_grid, recorded_tokenizer
from vavam.serve.errors import NonFiniteTrajectory
from vavam.serve.schemas import DEFAULT_PORT, ModelInput, ModelOutput, decode_image, parse_server_timing  # noqa: F401

FRONT_CAMERA = "CAM_FRONT"
SESSION_HEADER = "X-Session-Id"
DEFAULT_SESSION = "default"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024  # six 900x1600 torch-saved images are ~35 MB of base64
_SESSION_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_OPEN_PATHS = ("/alive",)
log = logging.getLogger("vavam.serve")


class Planner(Protocol):
    def reset(self) -> None: ...

    def plan(self, image: np.ndarray, timestamp_us: int, command: int) -> np.ndarray: ...


class _Guard:
    """ASGI middleware: bearer token (except ``/alive``) and request body size limit.

    The token is checked before the body is read. A declared ``Content-Length`` over the limit is
    answered 413 at once; an undeclared (chunked) body is counted while the app reads it and cut off
    with 413 when it passes the limit.
    """

    def __init__(self, app, token: str | None, max_body_bytes: int | None):
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is not None and scope.get("path") not in _OPEN_PATHS:
            given = headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token.encode()):
                detail = "missing bearer token" if not given else "wrong bearer token"
                return await _send_json(send, 401, {"detail": f"{detail} (send 'Authorization: Bearer TOKEN')"},
                                        {"www-authenticate": "Bearer"})
        limit = self.max_body_bytes
        if limit is None:
            return await self.app(scope, receive, send)
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _send_json(send, 400, {"detail": f"bad Content-Length {declared!r}"})
            if size > limit:
                return await _send_json(send, 413, {"detail": f"request body of {size} bytes exceeds the limit of {limit} bytes"})
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
            return message

        return await self.app(scope, limited_receive, send)


async def _send_json(send, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _check_token(token: str | None) -> None:
    """Refuse an empty bearer token: the guard would then let ``Authorization: Bearer`` through."""
    if token is not None and not token.strip():
        raise ValueError("token: the bearer token is empty (an empty --token or --token-file would let anyone "
                         "in); give a non-empty token, or none to serve without one")


def _accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def create_app(
    planner: Planner,
    camera: str = FRONT_CAMERA,
    token: str | None = None,
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
    session_header: str = SESSION_HEADER,
) -> FastAPI:
    """FastAPI app serving ``planner`` (e.g. a :class:`vavam.serve.agent.VaVAMAgent`).

    Args:
        planner: ``plan(image uint8 [H,W,3], timestamp_us, command) -> [6, 2]`` and ``reset()``;
            both may take ``session=`` (per-client histories); ``plan`` may take ``speed=`` (m/s, the
            request's ``canbus[13]``; a request with a shorter CAN bus is refused with 400, unless the
            planner says it does not read the speed (``reads_speed`` False), which then gets none) and
            ``position=`` (the ``ego2world`` translation's x, y: the agent measures the speed from it as
            training did, the CAN bus's being the fallback for a run's first frame);
            ``plan_timed`` (returning ``(trajectory, seconds per stage)``) is
            used when present.
        camera: the camera decoded from ``images``.
        token: require ``Authorization: Bearer <token>`` on ``/reset`` and ``/infer`` (None: open).
        max_body_bytes: larger request bodies get 413 (None: no limit).
        session_header: header naming the client's session (absent: ``default``).
    """
    _check_token(token)
    app = FastAPI(title="vavam model server", description="NeuroNCAP-compatible VaVAM planner")
    app.add_middleware(_Guard, token=token, max_body_bytes=max_body_bytes)
    timed = getattr(planner, "plan_timed", None)
    plan_fn = timed if callable(timed) else planner.plan
    plan_session = _accepts(plan_fn, "session")
    plan_speed = _accepts(plan_fn, "speed")
    plan_position = _accepts(plan_fn, "position")
    reset_session = _accepts(planner.reset, "session")

    def session_of(request: Request) -> str:
        value = request.headers.get(session_header)
        if value is None:
            return DEFAULT_SESSION
        if not _SESSION_RE.match(value):
            raise HTTPException(400, f"header {session_header}: 1-128 characters of A-Z a-z 0-9 . _ : - expected")
        if not (plan_session and reset_session) and value != DEFAULT_SESSION:
            raise HTTPException(400, f"header {session_header}: this planner keeps a single history (no sessions)")
        return value

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the offending input, which can be megabytes of base64: name the
        # field and the reason only.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in errors
        )
        return JSONResponse(status_code=422, content={"detail": errors, "message": message})

    @app.get("/alive")
    def alive() -> bool:
        return True

    @app.post("/reset")
    def reset(request: Request) -> bool:
        session = session_of(request)
        if reset_session:
            planner.reset(session=session)
        else:
            planner.reset()
        return True

    @app.post("/infer", response_model=ModelOutput)
    def infer(body: ModelInput, request: Request, response: Response) -> ModelOutput:
        session = session_of(request)
        if camera not in body.images:
            raise HTTPException(400, f"images: camera {camera} is missing (got {sorted(body.images)})")
        t0 = time.perf_counter()
        try:
            image = decode_image(body.images[camera], name=f"images.{camera}")
        except UnsafePickleError as exc:
            log.warning("refused an unsafe pickle in images.%s: %s", camera, exc)
            raise HTTPException(400, f"refused payload: {exc}") from exc
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        decode_s = time.perf_counter() - t0
        kwargs = {"session": session} if plan_session else {}
        if plan_position:
            kwargs["position"] = (body.ego2world[0][3], body.ego2world[1][3])
        if plan_speed and body.speed is not None:
            kwargs["speed"] = body.speed
        elif plan_speed and getattr(planner, "reads_speed", True):
            raise HTTPException(400, f"canbus: the planner reads the ego speed at canbus[13], but canbus has "
                                     f"{len(body.canbus)} values")
        try:
            out = plan_fn(image, body.timestamp, body.command, **kwargs)
        except ValueError as exc:  # e.g. timestamps going backwards without /reset, image too small
            raise HTTPException(400, str(exc)) from exc
        except NonFiniteTrajectory as exc:  # the agent forgot the frame: it may be sent again
            raise HTTPException(500, f"planner returned a bad trajectory: {_short(str(exc))}") from exc
        trajectory, timing = out if timed is not None and plan_fn is timed else (out, {})
        trajectory = np.asarray(trajectory, dtype=np.float64)
        if trajectory.shape != (6, 2) or not np.isfinite(trajectory).all():
            raise HTTPException(500, f"planner returned a bad trajectory: shape {list(trajectory.shape)}, {_short(trajectory.tolist())}")
        timing = {"decode": decode_s, **timing}
        response.headers["Server-Timing"] = ", ".join(f"{k};dur={1000 * v:.3f}" for k, v in timing.items())
        log.debug("infer session=%s t=%d command=%d %s", session, body.timestamp, body.command, timing)
        return ModelOutput(trajectory=trajectory.tolist())

    return app


class BackgroundServer:
    """Runs an ASGI app with uvicorn in a daemon thread on ``host`` (a free port by default).

    Use as a context manager; ``url`` is the address to call. Used by the closed-loop evaluation
    (``--through-server``) and by the tests.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        # proto IPPROTO_TCP: asyncio then sets TCP_NODELAY on accepted connections (else keep-alive
        # requests wait ~40 ms on delayed ACKs)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level=log_level, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"model server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def load_agent(
    checkpoint: Path,
    tokenizer: Path | None = None,
    device: str = "cpu",
    dtype: Literal["fp32", "bf16"] = "fp32",
    num_samples: int = 1,
    reduction: Literal["first", "mean", "medoid"] = "first",
    seed: int | None = None,
    num_steps: int | None = None,
    image_size: tuple[int, int] | None = None,
    neuroncap_rule: bool = True,
    trust_code: bool = False,
    max_sessions: int = 64,
):
    """A :class:`~vavam.serve.agent.VaVAMAgent` for a checkpoint (see :func:`serve` for the arguments).

    The image size is ``image_size`` if given, else the token grid our checkpoint folder was trained on
    (:func:`vavam.io.recorded_grid`) times the tokenizer's downsampling, else the one recorded in our tokenizer
    folder's ``meta.json`` (``image_size``), else the model's token grid times the tokenizer's downsampling
    (288 x 512 for the released models).
    """
    import vavam
    from vavam.serve.agent import AgentOptions, VaVAMAgent

    model = vavam.load_action_model(checkpoint, device=device).eval()
    tok_path = tokenizer or recorded_tokenizer(checkpoint)
    if tok_path is None:
        raise ValueError(f"{checkpoint}: no tokenizer recorded with this checkpoint; pass --tokenizer PATH")
    tok = vavam.load_tokenizer(tok_path, trust_code=trust_code, device=device)
    if hasattr(tok, "eval"):
        tok.eval()
    grid, ds = recorded_grid(checkpoint), getattr(tok, "downsample", None)
    if grid is not None and isinstance(ds, int) and ds > 0:  # the token grid the model was trained on
        if image_size is None:
            image_size = (grid[0] * ds, grid[1] * ds)
        elif (image_size[0] // ds) * (image_size[1] // ds) == grid[0] * grid[1] and \
                (image_size[0] // ds, image_size[1] // ds) != grid:  # other counts: the agent names them
            raise ValueError(f"--image-height {image_size[0]} --image-width {image_size[1]} give a "
                             f"{image_size[0] // ds}x{image_size[1] // ds} token grid, but {checkpoint} was trained on "
                             f"{grid[0]}x{grid[1]} (the same count, each token at another position); leave them out")
    if image_size is None:
        image_size = _recorded_image_size(Path(tok_path))
    options = AgentOptions(num_samples=num_samples, reduction=reduction, seed=seed, num_steps=num_steps, dtype=dtype,
                           device=device, image_size=image_size, neuroncap_rule=neuroncap_rule,
                           max_sessions=max_sessions)
    return VaVAMAgent(tok, model, options)


def serve(
    checkpoint: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CHECKPOINT")],
    tokenizer: Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    device: str = "cpu",
    dtype: Literal["fp32", "bf16"] = "fp32",
    num_samples: int = 1,
    reduction: Literal["first", "mean", "medoid"] = "first",
    seed: int | None = None,
    num_steps: int | None = None,
    image_height: int | None = None,
    image_width: int | None = None,
    token: str | None = None,
    token_file: Path | None = None,
    max_body_mb: float = DEFAULT_MAX_BODY_BYTES / 2**20,
    max_sessions: int = 64,
    trust_code: bool = False,
) -> None:
    """Serve a VaVAM checkpoint to NeuroNCAP (GET /alive, POST /reset, POST /infer).

    Args:
        checkpoint: a released VaVAM ``.pt`` or our checkpoint folder.
        tokenizer: the tokenizer (LlamaGen ``.pt``, our folder, or the released JIT pair with
            ``--trust-code``); our checkpoint folders record theirs, released files need it named.
        host: interface to bind (127.0.0.1 by default; 0.0.0.0 to accept remote simulators).
        port: NeuroNCAP's default is 9000.
        device: torch device.
        dtype: fp32, or bf16 autocast.
        num_samples: trajectories sampled per request (reduced by ``reduction``).
        reduction: first, mean or medoid of the samples.
        seed: makes answers reproducible (same frames, timestamp and seed -> same trajectory).
        num_steps: Euler steps (default: the checkpoint's).
        image_height: model input height (default: the token grid the checkpoint folder records, else the size
            recorded with the tokenizer, else the grid nearest 16:9 of the model's tokens per frame).
        image_width: model input width (idem).
        token: require ``Authorization: Bearer TOKEN`` on /reset and /infer (NeuroNCAP itself sends
            none: use it for servers reachable by others, behind a proxy that adds it).
        token_file: read the token from this file instead (keeps it out of the process list).
        max_body_mb: larger requests get HTTP 413.
        max_sessions: frame histories kept (one per ``X-Session-Id``; NeuroNCAP uses one); beyond this
            the least recently used is dropped, with a warning.
        trust_code: allow TorchScript tokenizer files.
    """
    import uvicorn

    if token_file is not None:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    _check_token(token)  # before the (slow) checkpoint load
    from vavam.checks import image_size_arg

    size = image_size_arg(image_height, image_width)
    agent = load_agent(checkpoint, tokenizer, device=device, dtype=dtype, num_samples=num_samples, reduction=reduction,
                       seed=seed, num_steps=num_steps, image_size=size, trust_code=trust_code, max_sessions=max_sessions)
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        log.warning("serving on %s without a bearer token: anyone who can reach the port can drive the model", host)
    app = create_app(agent, token=token, max_body_bytes=int(max_body_mb * 2**20))
    print(f"vavam serve: {checkpoint} at {agent.options.image_size[0]}x{agent.options.image_size[1]} "
          f"on http://{host}:{port} ({device}, {dtype}, K={num_samples} {reduction})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")


_recorded_tokenizer = recorded_tokenizer  # old private name


def _recorded_image_size(tokenizer: Path) -> tuple[int, int] | None:
    """``image_size`` from our tokenizer folder's meta.json (:func:`vavam.tokenizer.loading.recorded_image_size`)."""
    from vavam.tokenizer.loading import recorded_image_size

    return recorded_image_size(tokenizer)
