"""Shared test fixtures: the authors' reference outputs live in ../shared/fixtures/reference."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("VAVAM_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "fixtures" / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Folder of the reference fixtures; tests that need it skip with a reason when it is absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference fixtures not found at {REFERENCE_DIR} (set VAVAM_REFERENCE_DIR)")
    return REFERENCE_DIR


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on a shared
    2-core machine two OpenMP threads can be much slower for small ops, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gl_context():
    """A headless moderngl (EGL) context for a module's renders, released after it; skips without moderngl or EGL."""
    pytest.importorskip("moderngl")
    from vavam.world.render import create_context

    try:
        ctx = create_context()
    except RuntimeError as err:
        pytest.skip(str(err))
    yield ctx
    ctx.release()
