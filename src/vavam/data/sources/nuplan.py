"""nuPlan v1.1 log databases (SQLite) + sensor blobs -> scene records of one camera at 10 Hz with boxes.

Each ``<log>.db`` is read with :mod:`sqlite3` (read-only; no devkit). Per log:

- the camera: ``camera`` row with ``channel == camera`` (``CAM_F0``); its ``intrinsic`` blob is a
  pickle, read through the restricted unpickler (containers and numpy arrays only);
- frames: its ``image`` rows in timestamp order, ``image.ego_pose_token -> ego_pose`` (``x, y, z``,
  ``qw, qx, qy, qz``: ego-to-world), image file ``<sensor_root>/<filename_jpg>``;
- scene and boxes: each image is matched to the nearest ``lidar_pc`` within ``match_tolerance_us``
  (50 ms, the devkit's rule; ``lidar_pc`` is at 20 Hz, images at 10 Hz); ``lidar_pc.scene_token``
  gives its scene, and the ``lidar_box`` rows of that ``lidar_pc`` its boxes (world frame: centre
  ``x, y, z``, size (``length, width, height``), ``yaw``; category ``track -> category.name``,
  track id = ``track_token`` as hex).

Records: by default one per nuPlan ``scene`` (``group="scene"``), named ``<log>/<scene.name>`` —
the dataset's own ~20 s units, so names are stable and splits/evaluations can refer to them; the
windows a scene loses at its edges are the price. ``group="log"`` gives one record per log
(maximal windows; boxes still attached where a ``lidar_pc`` matches). Images that match no
``lidar_pc`` outside every scene's time span are not part of any scene (counted in the record
metadata as ``log_unmatched_images``); inside a scene's span they are bad frames (missing rows).
``dataset="nuplan"`` (tokenizing divides 1920x1080 by 3.75), image paths relative to ``sensor_root``.

Bad input raises :class:`SourceError` naming the scene and the frame (position in the scene's time
order, plus file name), or with ``skip_bad`` drops and counts it: missing or corrupt image, missing
``ego_pose`` row, NULL/NaN pose, duplicate timestamps, a timestamp out of order along the image chain,
an image without a timestamp (named by log and file), a log or scene without the camera, an unreadable database.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vavam.data.records import AgentBoxes, SceneRecord
from vavam.data.sources import SkipLog, SourceError, SourceResult
from vavam.data.sources._tables import (
    check_images,
    in_time_order,
    restricted_loads,
    scene_problem,
    screen_frames,
    table_timestamp,
)

DATASET = "nuplan"
MATCH_TOLERANCE_US = 50_000
LIDAR_CHANNEL = "MergedPointCloud"
_CHUNK = 1 << 15
REQUIRED_TABLES = ("log", "camera", "image", "ego_pose")
SCENE_TABLES = ("lidar_pc", "scene")
BOX_TABLES = ("lidar_box", "track", "category")


def find_log_dbs(db_paths_or_folder: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """``.db`` files of one path or a list of paths; sorted, each file once.

    Every path is a ``.db`` file or a folder of them (its ``*.db``, else recursively), so a list may
    mix split folders and single logs (``--db splits/mini splits/extra/<log>.db``).

    Raises:
        SourceError: a path does not exist, or a folder holds no ``*.db`` (naming that path).
    """
    given = [db_paths_or_folder] if isinstance(db_paths_or_folder, (str, os.PathLike)) else list(db_paths_or_folder)
    if not given:
        raise SourceError("no nuPlan log database given")
    found: dict[Path, Path] = {}
    for item in given:
        p = Path(item)
        if p.is_dir():
            dbs = sorted(p.glob("*.db")) or sorted(p.rglob("*.db"))
            if not dbs:
                raise SourceError(f"{p}: no nuPlan log database (*.db) in this folder")
        elif p.is_file():
            dbs = [p]
        else:
            raise SourceError(f"{p}: nuPlan log database is missing")
        for db in dbs:
            found.setdefault(db.resolve(), db)  # the same file reached twice (folder and file) is read once
    return sorted(found.values())


@dataclass
class _Frames:
    """One log's camera frames in time order (arrays ``[N]``)."""

    tokens: list[bytes]
    next_tokens: list[bytes | None]
    timestamps: np.ndarray
    files: list[str]
    pose_tokens: list[bytes | None]
    pose_found: np.ndarray
    translations: np.ndarray
    rotations: np.ndarray


def _connect(path: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        con.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise SourceError(f"{path}: not a readable SQLite database ({exc})") from exc
    return con


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _hex(token: Any) -> str:
    return token.hex() if isinstance(token, (bytes, bytearray)) else str(token)


def _read_frames(con: sqlite3.Connection, camera_tokens: list[bytes]) -> tuple[_Frames, list[tuple]]:
    """The camera's images with an integer timestamp, in time order, and those without one (NULL or text: they
    cannot be placed in time) as ``(row, token, filename_jpg, timestamp)``, ``row`` counting the camera's images."""
    marks = ",".join("?" * len(camera_tokens))
    rows = con.execute(
        "SELECT i.token, i.timestamp, i.filename_jpg, i.ego_pose_token, e.token IS NOT NULL, "
        "e.x, e.y, e.z, e.qw, e.qx, e.qy, e.qz, i.next_token "
        "FROM image AS i LEFT JOIN ego_pose AS e ON e.token = i.ego_pose_token "
        f"WHERE i.camera_token IN ({marks}) ORDER BY i.timestamp, i.rowid",
        camera_tokens,
    ).fetchall()
    stamps = [table_timestamp(r[1]) for r in rows]
    untimed = [(k, r[0], r[2], r[1]) for k, (r, s) in enumerate(zip(rows, stamps)) if s is None]
    rows = [(r[0], s, *r[2:]) for r, s in zip(rows, stamps) if s is not None]
    if not rows:
        n = 0
        cols: list[tuple] = [() for _ in range(13)]
    else:
        n = len(rows)
        cols = list(zip(*rows))
    pose = np.asarray(np.array(cols[5:12], dtype=object).T if n else np.zeros((0, 7)), dtype=np.float64).reshape(n, 7)
    frames = _Frames(
        tokens=list(cols[0]),
        next_tokens=list(cols[12]),
        timestamps=np.asarray(cols[1], dtype=np.int64).reshape(n),
        files=[str(f or "") for f in cols[2]],
        pose_tokens=list(cols[3]),
        pose_found=np.asarray(cols[4], dtype=bool).reshape(n),
        translations=pose[:, :3].copy(),
        rotations=pose[:, 3:].copy(),
    )
    return frames, untimed


def _camera(con: sqlite3.Connection, camera: str, db: Path) -> tuple[list[bytes], np.ndarray | None, tuple | None]:
    """Tokens of the ``camera`` rows, intrinsics ``[3,3]`` (or None) and (width, height) (or None)."""
    rows = con.execute("SELECT token, intrinsic, width, height FROM camera WHERE channel = ?", (camera,)).fetchall()
    if not rows:
        return [], None, None
    k = None
    blob = rows[0][1]
    if blob is not None:
        try:
            k = np.asarray(restricted_loads(blob, f"{db}: camera.intrinsic"), dtype=np.float64).reshape(3, 3)
            if not np.isfinite(k).all():
                raise ValueError("not finite")
        except Exception as exc:  # noqa: BLE001 - any unreadable blob only loses the optional intrinsics
            warnings.warn(f"{db}: {camera} intrinsics unreadable ({exc}); records get none", stacklevel=3)
            k = None
    size = (int(rows[0][2]), int(rows[0][3])) if rows[0][2] and rows[0][3] else None
    return [r[0] for r in rows], k, size


def _lidar_pcs(con: sqlite3.Connection, present: set[str]) -> tuple[list[bytes], np.ndarray, list[bytes | None]]:
    """lidar_pc tokens, timestamps ``[P]`` and scene tokens, by time (the merged lidar only, if named)."""
    has_merged = (
        "lidar" in present and con.execute("SELECT 1 FROM lidar WHERE channel = ? LIMIT 1", (LIDAR_CHANNEL,)).fetchone()
    )
    if has_merged:
        sql = (
            "SELECT lp.token, lp.timestamp, lp.scene_token FROM lidar_pc AS lp JOIN lidar AS l "
            "ON l.token = lp.lidar_token WHERE l.channel = ? ORDER BY lp.timestamp"
        )
        rows = con.execute(sql, (LIDAR_CHANNEL,)).fetchall()
    else:
        rows = con.execute("SELECT token, timestamp, scene_token FROM lidar_pc ORDER BY timestamp").fetchall()
    rows = [(r[0], table_timestamp(r[1]), r[2]) for r in rows]
    rows = [r for r in rows if r[1] is not None]  # a lidar_pc without a valid time matches no image
    return [r[0] for r in rows], np.asarray([r[1] for r in rows], dtype=np.int64), [r[2] for r in rows]


def _nearest(sorted_ts: np.ndarray, query: np.ndarray, tol: int) -> np.ndarray:
    """Index of the nearest ``sorted_ts`` entry for each query, -1 when farther than ``tol``."""
    if len(sorted_ts) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    hi = np.clip(np.searchsorted(sorted_ts, query), 0, len(sorted_ts) - 1)
    lo = np.clip(hi - 1, 0, len(sorted_ts) - 1)
    pick = np.where(np.abs(sorted_ts[lo] - query) <= np.abs(sorted_ts[hi] - query), lo, hi)
    return np.where(np.abs(sorted_ts[pick] - query) <= tol, pick, -1).astype(np.int64)


@dataclass
class _LogBoxes:
    """Boxes of every frame of one log (CSR over frames); tracks as codes into ``track_ids``/``categories``."""

    offsets: np.ndarray  # [N+1]
    values: np.ndarray  # [M, 7]: x, y, z, length, width, height, yaw
    track_codes: np.ndarray  # [M] index into track_ids / track_categories, -1 unknown
    track_ids: list[str]
    track_categories: list[str]
    dropped: int

    def select(self, rows: np.ndarray) -> AgentBoxes:
        """The boxes of frames ``rows`` (indices into the log's frames) as :class:`AgentBoxes`."""
        counts = np.diff(self.offsets)[rows]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        idx = np.repeat(self.offsets[rows] - offsets[:-1], counts) + np.arange(int(offsets[-1]))
        codes = self.track_codes[idx].tolist()
        ids, cats = self.track_ids + [""], self.track_categories + [""]  # code -1 -> ""
        return AgentBoxes(
            offsets=offsets,
            centers=self.values[idx, 0:3],
            sizes=self.values[idx, 3:6],
            yaws=self.values[idx, 6],
            categories=[cats[c] for c in codes],
            track_ids=[ids[c] for c in codes],
        )


_BOX_DTYPE = np.dtype([("pc", "i8"), ("v", "f8", (7,)), ("track", "i8")])


def _boxes(con: sqlite3.Connection, pc_tokens: list[bytes], frame_pc: np.ndarray) -> _LogBoxes:
    """Boxes of each frame from its matched lidar_pc (``frame_pc[i]`` = index into ``pc_tokens``, or -1).

    Boxes with NULL / non-finite values or negative sizes are dropped and counted.
    """
    used = np.unique(frame_pc[frame_pc >= 0])
    con.execute("CREATE TEMP TABLE IF NOT EXISTS vavam_pc (token BLOB PRIMARY KEY, pc INTEGER)")
    con.execute("DELETE FROM vavam_pc")
    con.executemany("INSERT INTO vavam_pc VALUES (?, ?)", [(pc_tokens[i], int(i)) for i in used.tolist()])
    tracks = con.execute(
        "SELECT t.rowid, t.token, c.name FROM track AS t LEFT JOIN category AS c ON c.token = t.category_token"
    ).fetchall()
    code_of_rowid = {r[0]: k for k, r in enumerate(tracks)}
    # NULL -> 1e999 (= inf in SQLite), so every row converts to numbers in C and is dropped as non-finite.
    cursor = con.execute(
        "SELECT w.pc, COALESCE(b.x, 1e999), COALESCE(b.y, 1e999), COALESCE(b.z, 1e999), COALESCE(b.length, 1e999), "
        "COALESCE(b.width, 1e999), COALESCE(b.height, 1e999), COALESCE(b.yaw, 1e999), COALESCE(t.rowid, -1) "
        "FROM lidar_box AS b JOIN vavam_pc AS w ON w.token = b.lidar_pc_token "
        "LEFT JOIN track AS t ON t.token = b.track_token ORDER BY w.pc, b.rowid"
    )
    parts = []
    while rows := cursor.fetchmany(_CHUNK):  # chunked: never all boxes as Python tuples at once
        parts.append(np.array([(r[0], r[1:8], r[8]) for r in rows], dtype=_BOX_DTYPE))
    arr = np.concatenate(parts) if parts else np.zeros(0, dtype=_BOX_DTYPE)
    vals = arr["v"].reshape(-1, 7)
    good = np.isfinite(vals).all(axis=1) & (vals[:, 3:6] >= 0).all(axis=1)
    arr, vals = arr[good], vals[good]
    lookup = np.full(max(code_of_rowid, default=0) + 2, -1, dtype=np.int64)
    lookup[list(code_of_rowid)] = list(code_of_rowid.values())
    track_codes = lookup[np.where(arr["track"] >= 0, arr["track"], len(lookup) - 1)]
    # rows are sorted by pc: per frame, the slice of its pc (frames without a pc get none).
    pc_of_box = arr["pc"]
    n_pc = max(len(pc_tokens), 1)
    start = np.searchsorted(pc_of_box, np.arange(n_pc), side="left")
    stop = np.searchsorted(pc_of_box, np.arange(n_pc), side="right")
    pc = np.maximum(frame_pc, 0)
    counts = np.where(frame_pc >= 0, (stop - start)[pc], 0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    idx = np.repeat(np.where(frame_pc >= 0, start[pc], 0) - offsets[:-1], counts) + np.arange(int(offsets[-1]))
    return _LogBoxes(
        offsets=offsets,
        values=vals[idx],
        track_codes=track_codes[idx],
        track_ids=[_hex(r[1]) for r in tracks],
        track_categories=[str(r[2]) if r[2] is not None else "" for r in tracks],
        dropped=int((~good).sum()),
    )


def load_nuplan(
    db_paths_or_folder: str | os.PathLike | Sequence[str | os.PathLike],
    sensor_root: str | os.PathLike,
    camera: str = "CAM_F0",
    skip_bad: bool = False,
    check_images: bool = True,
    *,
    group: Literal["scene", "log"] = "scene",
    with_boxes: bool = True,
    match_tolerance_us: int = MATCH_TOLERANCE_US,
    split: str | None = None,
    workers: int = 8,
) -> SourceResult:
    """Read nuPlan logs into :class:`SceneRecord` s of ``camera`` frames at 10 Hz.

    Args:
        db_paths_or_folder: a ``.db`` file, a folder of them (``nuplan-v1.1/splits/<split>``), or a list.
        sensor_root: ``nuplan-v1.1/sensor_blobs``; image files are ``sensor_root / image.filename_jpg``.
        camera: camera channel (``CAM_F0``).
        skip_bad: drop bad frames / scenes / logs and count them instead of raising.
        check_images: check every image file (exists, complete JPEG/PNG, size as in the camera table).
        group: ``"scene"`` (one record per nuPlan scene, default) or ``"log"`` (one per log).
        with_boxes: attach ``lidar_box`` boxes of the matched ``lidar_pc`` to each frame.
        match_tolerance_us: largest |image - lidar_pc| time difference for a match.
        split: label stored in the result; default the folder name when a folder is given, else "".
        workers: threads for the image checks.

    Returns:
        records sorted by name, ``image_root = sensor_root``, skip log.

    Raises:
        SourceError: unreadable database, missing tables, or bad input, without ``skip_bad`` (with it, such a
            log is skipped and counted as a scene named after the database file).
    """
    if group not in ("scene", "log"):
        raise ValueError(f"group must be 'scene' or 'log', got {group!r}")
    dbs = find_log_dbs(db_paths_or_folder)
    if split is None:
        given = db_paths_or_folder
        split = Path(given).name if isinstance(given, (str, os.PathLike)) and Path(given).is_dir() else ""
    root = Path(sensor_root)
    skipped = SkipLog()
    records: list[SceneRecord] = []
    for db in dbs:
        try:
            records.extend(
                _load_log(
                    db, root, camera, skip_bad, check_images, group, with_boxes, match_tolerance_us, skipped, workers
                )
            )
        except SourceError as exc:  # with skip_bad only database-level problems raise: skip the log
            if not skip_bad:
                raise
            skipped.add(db.stem, None, str(exc))
    records.sort(key=lambda r: r.name)
    origin: dict[str, str] = {}
    for r in records:
        db_name = str(r.metadata.get("db", "?"))
        if r.name in origin:
            raise SourceError(f"scene '{r.name}' comes from more than one database ({origin[r.name]} and {db_name}: "
                              "the same log given twice?)")
        origin[r.name] = db_name
    return SourceResult(records=records, image_root=root, skipped=skipped, split=split)


def _load_log(
    db: Path,
    root: Path,
    camera: str,
    skip_bad: bool,
    check: bool,
    group: str,
    with_boxes: bool,
    tol: int,
    skipped: SkipLog,
    workers: int,
) -> list[SceneRecord]:
    """All records of one log database."""
    con = _connect(db)
    try:
        present = _tables(con)
        need = (
            REQUIRED_TABLES
            + (SCENE_TABLES if group == "scene" else ())
            + (BOX_TABLES + ("lidar_pc",) if with_boxes else ())
        )
        missing = [t for t in need if t not in present]
        if missing:
            raise SourceError(f"{db}: nuPlan database lacks table(s) {missing}")
        row = con.execute("SELECT logfile FROM log LIMIT 1").fetchone()
        log = str(row[0]) if row and row[0] else db.stem
        cam_tokens, intrinsics, size = _camera(con, camera, db)
        frames, untimed = _read_frames(con, cam_tokens) if cam_tokens else (None, [])
        for k, token, file, value in untimed:
            why = f"{camera} image {_hex(token)} ({file}) has no valid timestamp ({value!r}) in {db}"
            if not skip_bad:
                raise SourceError(f"log '{log}', image {k}: {why}; pass --skip-bad to drop such images")
            skipped.add(log, k, why)
        if frames is None or len(frames.timestamps) == 0:
            why = "no camera row" if frames is None else "no image rows"
            scene_problem(log, f"log has no {camera} images ({why}; nuPlan ships camera data for only part of its "
                          f"logs) in {db}", skip_bad=skip_bad, skipped=skipped)  # fmt: skip
            return []
        need_pc = group == "scene" or with_boxes
        pc_tokens, pc_ts, pc_scene = _lidar_pcs(con, present) if need_pc else ([], np.zeros(0, np.int64), [])
        frame_pc = _nearest(pc_ts, frames.timestamps, tol)
        groups, frame_problems = _group_frames(con, log, frames, frame_pc, pc_ts, pc_scene, group, tol)
        boxes = _boxes(con, pc_tokens, frame_pc) if with_boxes else None
    except sqlite3.Error as exc:
        raise SourceError(f"{db}: cannot read the nuPlan database ({exc})") from exc
    finally:
        con.close()

    problems: list[str | None] = [frame_problems.get(i) for i in range(len(frames.timestamps))]
    for i, file in enumerate(frames.files):
        if not file:
            problems[i] = problems[i] or f"image {_hex(frames.tokens[i])} has no filename_jpg"
    for i in np.flatnonzero(~frames.pose_found).tolist():
        problems[i] = (
            problems[i] or f"ego_pose {_hex(frames.pose_tokens[i])} of image {_hex(frames.tokens[i])} is missing"
        )
    _check_chain(frames, problems)
    if check:
        todo = [i for i, p in enumerate(problems) if p is None]
        for i, r in zip(
            todo, check_images([root / frames.files[i] for i in todo], [size] * len(todo), workers=workers)
        ):
            problems[i] = r
    unmatched = int(len(frames.timestamps) - sum(len(idx) for _, idx in groups))
    if not groups:  # no lidar_pc carries a scene: every image would be dropped without a word
        scene_problem(log, f"none of its {len(frames.timestamps)} {camera} images lies in a scene (no lidar_pc row "
                      f"with a scene_token; group='log' reads the log whole) in {db}", skip_bad=skip_bad,
                      skipped=skipped)  # fmt: skip
        return []
    records = []
    for name, idx in groups:
        if len(idx) == 0:
            scene_problem(name, f"no {camera} image in the scene (camera missing)", skip_bad=skip_bad, skipped=skipped)
            continue
        kept = screen_frames(
            name, [frames.files[i] or _hex(frames.tokens[i]) for i in idx.tolist()], frames.timestamps[idx],
            frames.translations[idx], frames.rotations[idx], [problems[i] for i in idx.tolist()],
            skip_bad=skip_bad, skipped=skipped,
        )  # fmt: skip
        if kept is None:
            continue
        rows = idx[kept]
        records.append(
            SceneRecord(
                name=name,
                timestamps=frames.timestamps[rows],
                translations=frames.translations[rows],
                rotations=frames.rotations[rows],
                camera=camera,
                dataset=DATASET,
                image_paths=[frames.files[i] for i in rows.tolist()],
                intrinsics=intrinsics,
                boxes=None if boxes is None else boxes.select(rows),
                metadata={
                    "log": log,
                    "db": db.name,
                    "log_unmatched_images": unmatched,
                    "log_dropped_boxes": boxes.dropped if boxes is not None else 0,
                },
            )
        )
    return records


def _check_chain(frames: _Frames, problems: list[str | None]) -> None:
    """Flag images whose timestamp is out of order along the ``image.next_token`` chain.

    Time order is by timestamp, so a corrupted timestamp would otherwise silently move a frame (with its
    image and pose) to another place in the scene. Along each chain the images kept are those of
    :func:`~vavam.data.sources._tables.in_time_order`: a single image whose timestamp jumps back or ahead
    is the one flagged, not its good neighbours (nor every image after it).
    """
    position = {t: i for i, t in enumerate(frames.tokens)}
    nxt = [position.get(t) if t is not None else None for t in frames.next_tokens]
    has_prev = np.zeros(len(nxt), dtype=bool)
    for j in nxt:
        if j is not None:
            has_prev[j] = True
    ts = frames.timestamps
    seen = np.zeros(len(nxt), dtype=bool)
    # chains from their first image, then any loop (no first image) from its lowest one
    for head in [*np.flatnonzero(~has_prev).tolist(), *range(len(nxt))]:
        chain: list[int] = []
        i: int | None = head
        while i is not None and not seen[i]:  # a looping chain stops where it closes
            seen[i] = True
            chain.append(i)
            i = nxt[i]
        if len(chain) < 2:
            continue
        order = np.asarray(chain, dtype=np.int64)
        keep = in_time_order(ts[order])
        for c in np.flatnonzero(~keep).tolist():
            j = chain[c]
            before = np.flatnonzero(keep[:c])
            if len(before) and ts[chain[before[-1]]] >= ts[j]:
                k = chain[before[-1]]
                kind = "duplicate timestamp" if ts[k] == ts[j] else "timestamp goes backwards"
                why = (f"{kind} along the image chain: {int(ts[j])} us, after image {_hex(frames.tokens[k])} "
                       f"at {int(ts[k])} us")
            else:
                k = chain[c + 1 + int(np.flatnonzero(keep[c + 1:])[0])]
                why = (f"timestamp jumps ahead along the image chain: {int(ts[j])} us, the later image "
                       f"{_hex(frames.tokens[k])} has {int(ts[k])} us")
            problems[j] = problems[j] or why


def _group_frames(
    con: sqlite3.Connection,
    log: str,
    frames: _Frames,
    frame_pc: np.ndarray,
    pc_ts: np.ndarray,
    pc_scene: list[bytes | None],
    group: str,
    tol: int,
) -> tuple[list[tuple[str, np.ndarray]], dict[int, str]]:
    """Records of one log: ``(name, frame indices in time order)`` each, and per-frame problems.

    With ``group="scene"`` a frame belongs to the scene of its matched lidar_pc; an unmatched frame
    inside a scene's time span belongs to that scene as a bad frame (missing lidar_pc rows); one
    outside every span belongs to no record.
    """
    n = len(frames.timestamps)
    if group == "log":
        return [(log, np.arange(n, dtype=np.int64))], {}
    names: dict[bytes, str] = {}
    used: set[str] = set()
    for token, name in sorted(
        con.execute("SELECT token, name FROM scene").fetchall(), key=lambda r: (str(r[1]), _hex(r[0]))
    ):
        base = f"{log}/{name or _hex(token)}"
        names[token] = base if base not in used else f"{base}-{_hex(token)}"
        used.add(names[token])
    codes = {t: k for k, t in enumerate(dict.fromkeys(t for t in pc_scene if t is not None))}
    pc_code = np.asarray([-1 if t is None else codes[t] for t in pc_scene], dtype=np.int64)
    frame_code = pc_code[np.maximum(frame_pc, 0)] if len(pc_code) else np.full(n, -1, dtype=np.int64)
    frame_code = np.where(frame_pc >= 0, frame_code, -1)
    groups: list[tuple[str, np.ndarray]] = []
    problems: dict[int, str] = {}
    reason = f"no lidar_pc within {tol} us of the image (missing lidar_pc rows?): no scene, no boxes"
    taken = np.zeros(n, dtype=bool)
    for token, k in codes.items():
        span = pc_ts[pc_code == k]
        lost = (
            (frame_pc < 0) & ~taken & (frames.timestamps >= span.min() - tol) & (frames.timestamps <= span.max() + tol)
        )
        taken |= lost
        problems.update({i: reason for i in np.flatnonzero(lost).tolist()})
        idx = np.flatnonzero((frame_code == k) | lost).astype(np.int64)
        groups.append((names.get(token, f"{log}/{_hex(token)}"), idx))
    return groups, problems


__all__ = ["find_log_dbs", "load_nuplan"]
