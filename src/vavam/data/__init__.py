"""Data sources and formats.

:mod:`.synthetic` renders procedural driving-like frames (``make_frames``, ``make_clip``), the
stand-in data source until the embedded driving world lands; the other modules hold the scene
records, token store and training windows.
"""

from vavam.data.synthetic import make_clip, make_frames

__all__ = ["make_frames", "make_clip"]
