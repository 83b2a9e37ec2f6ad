"""Dataset-export workers end with the process that started them (a parent killed by a signal runs no
clean-up; its spawned workers kept rendering into the output folder for up to a chunk's time)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a container's pid 1 may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_worker_exits_soon_after_its_parent_is_killed(tmp_path):
    script = textwrap.dedent("""
        import multiprocessing, os, signal, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from vavam.world.export import _exit_with_parent

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            ex = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_exit_with_parent,
                                     initargs=(os.getpid(), 0.1))
            print(ex.submit(os.getpid).result(), flush=True)
            ex.submit(time.sleep, 120)  # the worker is busy: only its watch can end it
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    log = tmp_path / "out.txt"
    with open(log, "w") as out:  # a file, not a pipe: a lingering worker would hold a pipe open
        returncode = subprocess.run([sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                    timeout=120).returncode
    assert returncode == -9, log.read_text()
    worker = int(log.read_text().split()[0])
    deadline = time.monotonic() + 10.0
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker), f"worker {worker} outlived its killed parent by 10 s"


def test_export_starts_its_workers_with_the_watch(monkeypatch, tmp_path):
    """generate(workers=2) gives its process pool the initializer (checked on the pool's arguments)."""
    pytest.importorskip("moderngl")
    import vavam.world.export as export

    seen = {}

    class Refused(Exception):
        pass

    def pool(*args, **kwargs):
        seen.update(kwargs)
        raise Refused

    monkeypatch.setattr(export, "ProcessPoolExecutor", pool)
    with pytest.raises(Refused):
        export.generate(tmp_path / "data", num_scenes=8, duration_s=1.0, rate_hz=2.0, height=36, width=64, seed=3,
                        hazard_share=0.0, held_out_towns=1, workers=2, progress=False)
    assert seen["initializer"] is export._exit_with_parent and seen["initargs"] == (os.getpid(),)
