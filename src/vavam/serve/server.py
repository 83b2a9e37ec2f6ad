"""A NeuroNCAP-compatible model server (FastAPI), built by a factory around any planner.

Endpoints (NeuroNCAP's wire format, see :mod:`vavam.serve.schemas`): ``GET /alive`` -> true,
``POST /reset`` -> true (clears the frame history), ``POST /infer`` -> ``{"trajectory": 6 x [x, y],
"aux_outputs": {...}}``. Bad requests get HTTP 400/422 with a message naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from fastapi import FastAPI, HTTPException

from vavam.io import UnsafePickleError
from vavam.serve.schemas import DEFAULT_PORT, ModelInput, ModelOutput, decode_image

FRONT_CAMERA = "CAM_FRONT"


class Planner(Protocol):
    def reset(self) -> None: ...

    def plan(self, image: np.ndarray, timestamp_us: int, command: int) -> np.ndarray: ...


def create_app(planner: Planner, camera: str = FRONT_CAMERA) -> FastAPI:
    """FastAPI app serving ``planner`` (e.g. a :class:`vavam.serve.agent.VaVAMAgent`)."""
    app = FastAPI(title="vavam model server", description="NeuroNCAP-compatible VaVAM planner")

    @app.get("/alive")
    def alive() -> bool:
        return True

    @app.post("/reset")
    def reset() -> bool:
        planner.reset()
        return True

    @app.post("/infer", response_model=ModelOutput)
    def infer(request: ModelInput) -> ModelOutput:
        if camera not in request.images:
            raise HTTPException(400, f"images: camera {camera} is missing (got {sorted(request.images)})")
        try:
            image = decode_image(request.images[camera], name=f"images.{camera}")
        except UnsafePickleError as exc:
            raise HTTPException(400, f"refused payload: {exc}") from exc
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        try:
            trajectory = planner.plan(image, request.timestamp, request.command)
        except ValueError as exc:  # e.g. timestamps going backwards without /reset
            raise HTTPException(400, str(exc)) from exc
        return ModelOutput(trajectory=np.asarray(trajectory, dtype=np.float64).tolist())

    return app


def serve(
    checkpoint: Path,
    tokenizer: Path | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    device: str = "cpu",
    dtype: Literal["fp32", "bf16"] = "fp32",
    num_samples: int = 1,
    reduction: Literal["first", "mean", "medoid"] = "first",
    seed: int | None = None,
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
        seed: makes answers reproducible (same request, same seed -> same trajectory).
        trust_code: allow TorchScript tokenizer files.
    """
    import uvicorn

    import vavam
    from vavam.serve.agent import AgentOptions, VaVAMAgent

    model = vavam.load_action_model(checkpoint, device=device)
    tok_path = tokenizer or _recorded_tokenizer(checkpoint)
    if tok_path is None:
        raise SystemExit(f"{checkpoint}: no tokenizer recorded with this checkpoint; pass --tokenizer PATH")
    tok = vavam.load_tokenizer(tok_path, trust_code=trust_code, device=device)
    options = AgentOptions(num_samples=num_samples, reduction=reduction, seed=seed, dtype=dtype, device=device)
    app = create_app(VaVAMAgent(tok, model, options))
    uvicorn.run(app, host=host, port=port, log_level="info")


def _recorded_tokenizer(checkpoint: Path) -> Path | None:
    """The tokenizer path our checkpoint folders record in meta.json (``tokenizer``), if any."""
    from vavam.io import is_checkpoint_folder, read_json

    checkpoint = Path(checkpoint)
    if not is_checkpoint_folder(checkpoint):
        return None
    recorded = read_json(checkpoint / "meta.json").get("tokenizer")
    if not recorded:
        return None
    path = Path(recorded)
    return path if path.is_absolute() else (checkpoint / path).resolve()
