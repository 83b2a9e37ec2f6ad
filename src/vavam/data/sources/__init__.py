"""Readers that turn a dataset's raw on-disk layout into :class:`vavam.data.records.SceneRecord` s.

Each source module (``nuscenes``, ``nuplan``, ``opendv``) exposes a ``load_*`` function returning a
:class:`SourceResult`. Bad input (missing or corrupt files, missing table rows, duplicate or
non-monotonic timestamps, NaN poses, a missing camera) raises a :class:`SourceError` naming the scene
and frame, or, with ``skip_bad=True``, drops the frame or scene and records why in ``skipped`` — a
window is never built across a dropped frame silently (dropping a frame splits nothing: records keep
their real timestamps, and the window index refuses gaps larger than its tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vavam.data.records import SceneRecord

__all__ = ["SourceError", "SourceResult", "SkipLog"]


class SourceError(ValueError):
    """A dataset's raw files are missing, corrupt or inconsistent; the message names where."""


@dataclass
class SkipLog:
    """What ``skip_bad=True`` dropped: ``(scene, frame or None for a whole scene, reason)`` rows."""

    rows: list[tuple[str, int | None, str]] = field(default_factory=list)

    def add(self, scene: str, frame: int | None, reason: str) -> None:
        self.rows.append((scene, frame, reason))

    @property
    def frames(self) -> int:
        """Number of single frames dropped."""
        return sum(1 for _, f, _ in self.rows if f is not None)

    @property
    def scenes(self) -> int:
        """Number of whole scenes dropped."""
        return sum(1 for _, f, _ in self.rows if f is None)

    def summary(self) -> str:
        """One line: counts of dropped frames and scenes (for logs and the CLI)."""
        return f"skipped {self.frames} frame(s) and {self.scenes} scene(s)"


@dataclass
class SourceResult:
    """Records read from one dataset split.

    Attributes:
        records: one record per scene, sorted by name; image paths relative to ``image_root``.
        image_root: folder the records' relative image paths start from (None for absolute paths or videos).
        skipped: what ``skip_bad`` dropped.
        split: split name the records belong to (``train``, ``val``, ...), "" when unsplit.
    """

    records: list[SceneRecord]
    image_root: Path | None = None
    skipped: SkipLog = field(default_factory=SkipLog)
    split: str = ""
