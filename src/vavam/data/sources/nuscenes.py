"""nuScenes v1.0 -> scene records of one camera's keyframes (2 Hz) with ego poses and annotation boxes.

Reads the JSON tables of ``<dataroot>/<version>/`` directly (no devkit): for each scene of the split,
the sample chain ``scene.first_sample_token -> sample.next -> ...`` gives the keyframes in time order;
each sample's camera keyframe is the ``sample_data`` row with ``is_key_frame`` whose
``calibrated_sensor -> sensor.channel`` is ``camera``. Per frame the record keeps

- ``timestamps``: ``sample_data.timestamp`` (µs, the image's capture time),
- ``translations`` / ``rotations``: ``sample_data.ego_pose_token -> ego_pose`` (ego-to-world,
  quaternion w, x, y, z),
- ``image_paths``: ``sample_data.filename`` (relative to the dataroot, ``SourceResult.image_root``),
- ``intrinsics``: ``calibrated_sensor.camera_intrinsic`` of the scene's first frame,
- ``boxes``: the sample's ``sample_annotation`` rows in the world frame: centre = ``translation``,
  size = (length, width, height) — nuScenes stores ``size`` as **[width, length, height]** —, yaw
  about +z from ``rotation``, category ``instance -> category.name``, track id = ``instance_token``.

One record per scene, named by ``scene.name`` (``scene-0061``), ``dataset="nuscenes"`` (so
tokenizing divides 1600x900 by 3.125), ``camera`` as asked. Metadata: scene token, description,
log file name and location.

Splits (:data:`VAL_SCENES`, :data:`MINI_TRAIN_SCENES`, :data:`MINI_VAL_SCENES`) are the official
devkit lists (``nuscenes.utils.splits``): ``val`` = 150 named scenes, ``train`` = every other scene
of ``v1.0-trainval`` (700); on ``v1.0-mini`` ``train``/``val`` mean ``mini_train``/``mini_val``;
``test`` = every scene of ``v1.0-test``; ``all`` = every scene. A custom split is a list of scene
names, a text/JSON file of names, or a key of ``<dataroot>/<version>/splits.json``.

Bad input raises :class:`SourceError` naming the scene and the frame (frame = position in the
scene's sample chain), or with ``skip_bad`` drops and counts it: missing or corrupt image, a
``sample_data`` whose ``ego_pose`` / ``calibrated_sensor`` row is absent, a sample without the camera,
a broken sample chain, a missing or malformed timestamp, duplicate or out-of-order timestamps (the
frame out of order is dropped, see :func:`~vavam.data.sources._tables.screen_frames`), NaN poses, a scene
without the camera.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vavam.data.geometry import yaw_from_quat
from vavam.data.records import AgentBoxes, SceneRecord
from vavam.data.sources import SkipLog, SourceError, SourceResult
from vavam.data.sources._tables import check_images, scene_problem, screen_frames, table_timestamp
from vavam.io import read_json

DATASET = "nuscenes"

# Official val scenes of v1.0-trainval (devkit nuscenes/utils/splits.py `val`, 150 scenes), by number.
_VAL_NUMBERS = (
    3, 12, 13, 14, 15, 16, 17, 18, 35, 36, 38, 39, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 221,
    268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 329, 330, 331, 332, 344,
    345, 346, 519, 520, 521, 522, 523, 524, 552, 553, 554, 555, 556, 557, 558, 559,
    560, 561, 562, 563, 564, 565, 625, 626, 627, 629, 630, 632, 633, 634, 635, 636,
    637, 638, 770, 771, 775, 777, 778, 780, 781, 782, 783, 784, 794, 795, 796, 797,
    798, 799, 800, 802, 904, 905, 906, 907, 908, 909, 910, 911, 912, 913, 914, 915,
    916, 917, 919, 920, 921, 922, 923, 924, 925, 926, 927, 928, 929, 930, 931, 962,
    963, 966, 967, 968, 969, 971, 972, 1059, 1060, 1061, 1062, 1063, 1064, 1065, 1066, 1067,
    1068, 1069, 1070, 1071, 1072, 1073,
)  # fmt: skip
#: official val split of v1.0-trainval (150 scene names); train is every other trainval scene.
VAL_SCENES: frozenset[str] = frozenset(f"scene-{n:04d}" for n in _VAL_NUMBERS)
#: official v1.0-mini splits.
MINI_TRAIN_SCENES: frozenset[str] = frozenset(f"scene-{n:04d}" for n in (61, 553, 655, 757, 796, 1077, 1094, 1100))
MINI_VAL_SCENES: frozenset[str] = frozenset(("scene-0103", "scene-0916"))

#: tables read (``<dataroot>/<version>/<name>.json``); the annotation ones only when boxes are wanted.
CORE_TABLES = ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "log")
BOX_TABLES = ("sample_annotation", "instance", "category")

SplitSpec = str | os.PathLike | Sequence[str] | None


# ------------------------------------------------------------------------------------- tables


def load_table(table_dir: Path, name: str) -> list[dict[str, Any]]:
    """Read ``<table_dir>/<name>.json`` (a JSON list of records); errors name the file."""
    path = table_dir / f"{name}.json"
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: nuScenes table '{name}' is missing") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: nuScenes table '{name}' is not valid JSON ({exc})") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SourceError(f"{path}: nuScenes table '{name}' must be a JSON list of objects")
    return rows


def _by_token(
    rows: list[dict[str, Any]], table: str, table_dir: Path, required: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """A table's rows by their ``token``. Every row must hold ``token`` and the ``required`` fields (the reader
    indexes them): a row without one is refused naming the file, the row and the field (it was a bare KeyError).
    """
    for i, row in enumerate(rows):
        for field in ("token", *required):
            if field not in row:
                which = f"the record with token {row['token']!r}" if "token" in row else f"record {i}"
                raise SourceError(f"{table_dir / (table + '.json')}: {which} has no {field!r}")
    return {r["token"]: r for r in rows}


# ------------------------------------------------------------------------------------- splits


def _read_json(path: Path, what: str) -> Any:
    """A JSON file's content (:func:`vavam.io.read_json`); a missing or invalid file raises :class:`SourceError`
    naming it and saying what it is."""
    try:
        return read_json(path)
    except ValueError as exc:  # the message names the file
        raise SourceError(f"{path}: {what} is not valid JSON ({exc})") from exc


def _read_name_list(path: Path) -> list[str]:
    if path.suffix == ".json":
        names = _read_json(path, "nuScenes scene list")
        if not isinstance(names, list):
            raise SourceError(f"{path}: a scene list file must hold a JSON list of scene names")
        return [str(n) for n in names]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read the nuScenes scene list ({exc})") from exc
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def resolve_split(split: SplitSpec, version: str, scene_names: Sequence[str], table_dir: Path) -> tuple[str, set[str]]:
    """Scene names of ``split`` among ``scene_names`` -> (split label, names).

    ``split``: ``train`` / ``val`` (official; on ``v1.0-mini`` the mini lists), ``mini_train`` /
    ``mini_val``, ``test`` / ``all`` / None (every scene), a key of ``<table_dir>/splits.json``, a path
    to a scene list file (``.json`` list or one name per line), or a sequence of names. Custom lists
    must name existing scenes only.
    """
    available = set(scene_names)
    if split is None:
        return "all", available
    if isinstance(split, (str, os.PathLike)) and not (isinstance(split, str) and split in _NAMED_SPLITS):
        custom = table_dir / "splits.json"
        if isinstance(split, str) and custom.is_file():
            table = _read_json(custom, "nuScenes custom split table")
            if isinstance(table, dict) and split in table:
                names = table[split]
                if not isinstance(names, list):
                    raise SourceError(f"{custom}[{split!r}]: must be a JSON list of scene names, got {names!r}")
                return _custom(split, [str(n) for n in names], available, f"{custom}[{split!r}]")
        path = Path(split)
        if path.is_file():
            return _custom(path.stem, _read_name_list(path), available, str(path))
        raise SourceError(
            f"nuScenes split {str(split)!r} is neither a known split ({', '.join(sorted(_NAMED_SPLITS))}), "
            f"a key of {custom}, nor a scene list file"
        )
    if not isinstance(split, str):
        return _custom("custom", [str(n) for n in split], available, "the scene list")
    mini = version.endswith("mini")
    if split in ("all", "test"):
        if split == "test" and not version.endswith("test"):
            raise SourceError(f"nuScenes split 'test' needs version v1.0-test, not {version!r}")
        return split, available
    if split in ("mini_train", "mini_val") or mini:
        if not mini:
            raise SourceError(f"nuScenes split {split!r} needs version v1.0-mini, not {version!r}")
        wanted = MINI_VAL_SCENES if split in ("val", "mini_val") else MINI_TRAIN_SCENES
        return split, available & set(wanted)
    if not version.endswith("trainval"):
        raise SourceError(f"nuScenes split {split!r} needs version v1.0-trainval, not {version!r}")
    if split == "val":
        return split, available & set(VAL_SCENES)
    return split, available - set(VAL_SCENES)


_NAMED_SPLITS = frozenset({"train", "val", "mini_train", "mini_val", "test", "all"})


def _custom(label: str, names: list[str], available: set[str], where: str) -> tuple[str, set[str]]:
    missing = sorted(set(names) - available)
    if missing:
        raise SourceError(
            f"{where}: {len(missing)} scene(s) not in the dataset, e.g. {missing[:5]} (the version has {len(available)})"
        )
    return label, set(names)


# ------------------------------------------------------------------------------------- loader


def _sample_chain(scene: dict[str, Any], samples: dict[str, dict[str, Any]]) -> tuple[list[str], str | None]:
    """Sample tokens of a scene in chain order, and a reason when the chain is broken (or None)."""
    chain: list[str] = []
    seen: set[str] = set()
    token = scene.get("first_sample_token", "")
    while token:
        if token in seen:
            return chain, f"sample chain loops back to sample {token}"
        row = samples.get(token)
        if row is None:
            return chain, f"sample {token} is missing from sample.json (the chain breaks here)"
        if row.get("scene_token") != scene["token"]:
            return chain, f"sample {token} belongs to scene token {row.get('scene_token')!r}, not this scene"
        seen.add(token)
        chain.append(token)
        token = row.get("next", "")
    if not chain:
        return chain, "has no samples (first_sample_token is empty or unknown)"
    return chain, None


def _camera_keyframes(
    sample_data: list[dict[str, Any]], calib: dict[str, dict[str, Any]], channels: dict[str, str], camera: str
) -> dict[str, list[dict[str, Any]]]:
    """sample token -> the camera's keyframe sample_data rows (normally one).

    The channel comes from ``calibrated_sensor -> sensor``; when that row is missing, from the
    file name (``samples/<CHANNEL>/...``) so the broken row is still reported.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    prefix = f"samples/{camera}/"
    for sd in sample_data:
        key = sd.get("is_key_frame")
        filename = sd.get("filename", "")
        if key is None:
            key = filename.startswith("samples/")
        if not key:
            continue
        cs = calib.get(sd.get("calibrated_sensor_token", ""))
        channel = channels.get(cs.get("sensor_token", "")) if cs is not None else None  # no sensor: by file name
        if channel == camera or (channel is None and filename.startswith(prefix)):
            out.setdefault(sd.get("sample_token", ""), []).append(sd)
    return out


def load_nuscenes(
    dataroot: str | os.PathLike,
    version: str = "v1.0-trainval",
    split: SplitSpec = "train",
    camera: str = "CAM_FRONT",
    skip_bad: bool = False,
    check_images: bool = True,
    *,
    with_boxes: bool = True,
    workers: int = 8,
) -> SourceResult:
    """Read a nuScenes dataroot into one :class:`SceneRecord` per scene of ``split``.

    Args:
        dataroot: folder holding ``<version>/*.json`` and ``samples/``.
        version: table folder name (``v1.0-trainval``, ``v1.0-mini``, ``v1.0-test``).
        split: see :func:`resolve_split` (``train``, ``val``, ``mini_train``, ``all``, a file, names).
        camera: sensor channel (``CAM_FRONT``).
        skip_bad: drop bad frames / scenes and count them in ``SourceResult.skipped`` instead of raising.
        check_images: check every image file (exists, complete JPEG/PNG header, size as in the table).
        with_boxes: read ``sample_annotation`` / ``instance`` / ``category`` into ``record.boxes``
            (None when the version has no annotations, e.g. v1.0-test).
        workers: threads for the image checks.

    Returns:
        records sorted by scene name, ``image_root = dataroot``, ``split`` label, skip log.

    Raises:
        SourceError: missing/invalid tables, unknown split, or bad input without ``skip_bad``.
    """
    root = Path(dataroot)
    table_dir = root / version
    if not table_dir.is_dir():
        raise SourceError(f"{table_dir}: nuScenes table folder for version {version!r} is missing")
    tables = {name: load_table(table_dir, name) for name in CORE_TABLES}
    scenes = _by_token(tables["scene"], "scene", table_dir, ("name",))
    label, wanted = resolve_split(split, version, [s["name"] for s in scenes.values()], table_dir)
    samples = _by_token(tables["sample"], "sample", table_dir)
    calib = _by_token(tables["calibrated_sensor"], "calibrated_sensor", table_dir)
    channels = {t: s.get("channel", "") for t, s in _by_token(tables["sensor"], "sensor", table_dir).items()}
    logs = _by_token(tables["log"], "log", table_dir)
    keyframes = _camera_keyframes(tables["sample_data"], calib, channels, camera)
    del tables["sample_data"]

    selected = sorted((s for s in scenes.values() if s["name"] in wanted), key=lambda s: s["name"])
    chains = {s["token"]: _sample_chain(s, samples) for s in selected}
    pose_tokens = {
        sd.get("ego_pose_token", "") for s in selected for t in chains[s["token"]][0] for sd in keyframes.get(t, [])
    }
    poses = {p["token"]: p for p in tables.pop("ego_pose") if p.get("token") in pose_tokens}
    boxes_by_sample = _annotations(table_dir, {t for c, _ in chains.values() for t in c}) if with_boxes else None

    skipped = SkipLog()
    records = []
    for scene in selected:
        rec = _scene_record(
            root, scene, chains[scene["token"]], samples, keyframes, poses, calib, logs, boxes_by_sample,
            camera=camera, skip_bad=skip_bad, check=check_images, skipped=skipped, workers=workers,
        )  # fmt: skip
        if rec is not None:
            records.append(rec)
    return SourceResult(records=records, image_root=root, skipped=skipped, split=label)


def _scene_record(
    root: Path,
    scene: dict[str, Any],
    chain_info: tuple[list[str], str | None],
    samples: dict[str, dict[str, Any]],
    keyframes: dict[str, list[dict[str, Any]]],
    poses: dict[str, dict[str, Any]],
    calib: dict[str, dict[str, Any]],
    logs: dict[str, dict[str, Any]],
    boxes_by_sample: dict[str, dict[str, list]] | None,
    *,
    camera: str,
    skip_bad: bool,
    check: bool,
    skipped: SkipLog,
    workers: int,
) -> SceneRecord | None:
    """One scene -> record (None when skipped)."""
    name = scene["name"]
    chain, broken = chain_info
    if broken is not None:
        if not chain:
            scene_problem(name, broken, skip_bad=skip_bad, skipped=skipped)
            return None
        if not skip_bad:
            raise SourceError(
                f"scene '{name}', frame {len(chain)}: {broken}; pass --skip-bad to keep the frames before it"
            )
        skipped.add(name, len(chain), broken)
    if not any(keyframes.get(t) for t in chain):
        scene_problem(name, f"no {camera} keyframe in any of its {len(chain)} samples (camera missing)",
                      skip_bad=skip_bad, skipped=skipped)  # fmt: skip
        return None
    n = len(chain)
    ts = np.zeros(n, dtype=np.int64)
    trans = np.full((n, 3), np.nan)
    rots = np.full((n, 4), np.nan)
    paths: list[str] = [""] * n
    labels: list[str] = []
    problems: list[str | None] = [None] * n
    sizes: list[tuple[int, int] | None] = [None] * n
    intrinsics: list[Any] = [None] * n
    for i, token in enumerate(chain):
        rows = keyframes.get(token, [])
        if len(rows) != 1:
            ts[i] = table_timestamp(samples[token].get("timestamp")) or 0  # a bad frame either way
            labels.append(f"sample {token}")
            problems[i] = (
                f"sample has no {camera} keyframe" if not rows else f"sample has {len(rows)} {camera} keyframes"
            )
            continue
        sd = rows[0]
        stamp = table_timestamp(sd.get("timestamp"))
        ts[i] = stamp or 0
        paths[i] = sd.get("filename", "")
        labels.append(paths[i] or f"sample_data {sd.get('token')}")
        pose = poses.get(sd.get("ego_pose_token", ""))
        cs = calib.get(sd.get("calibrated_sensor_token", ""))
        if stamp is None:
            problems[i] = f"sample_data {sd.get('token')} has no valid timestamp ({sd.get('timestamp')!r})"
        elif not paths[i]:
            problems[i] = f"sample_data {sd.get('token')} has no filename"
        elif pose is None:
            problems[i] = f"ego_pose {sd.get('ego_pose_token')!r} of sample_data {sd.get('token')} is missing"
        elif cs is None:
            problems[i] = (
                f"calibrated_sensor {sd.get('calibrated_sensor_token')!r} of sample_data {sd.get('token')} is missing"
            )
        else:
            trans[i] = _floats(pose.get("translation"), 3)
            rots[i] = _floats(pose.get("rotation"), 4)
            intrinsics[i] = cs.get("camera_intrinsic") or None
        if sd.get("width") and sd.get("height"):
            sizes[i] = (int(sd["width"]), int(sd["height"]))
    if check:
        todo = [i for i in range(n) if problems[i] is None]
        found = check_images([root / paths[i] for i in todo], [sizes[i] for i in todo], workers=workers)
        for i, reason in zip(todo, found):
            problems[i] = reason
    kept = screen_frames(name, labels, ts, trans, rots, problems, skip_bad=skip_bad, skipped=skipped)
    if kept is None:
        return None
    k = next((intrinsics[i] for i in kept.tolist() if intrinsics[i] is not None), None)
    log = logs.get(scene.get("log_token", ""), {})
    return SceneRecord(
        name=name,
        timestamps=ts[kept],
        translations=trans[kept],
        rotations=rots[kept],
        camera=camera,
        dataset=DATASET,
        image_paths=[paths[i] for i in kept.tolist()],
        intrinsics=None if k is None else np.asarray(k, dtype=np.float64).reshape(3, 3),
        boxes=None if boxes_by_sample is None else _frame_boxes([chain[i] for i in kept.tolist()], boxes_by_sample),
        metadata={
            "token": scene["token"],
            "description": scene.get("description", ""),
            "log": log.get("logfile", ""),
            "location": log.get("location", ""),
        },
    )


def _floats(value: Any, size: int) -> np.ndarray:
    """A JSON list -> float array of ``size`` (NaN when malformed; the frame screen reports it)."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return np.full(size, np.nan)
    return arr if arr.size == size else np.full(size, np.nan)


# ------------------------------------------------------------------------------------- boxes


def _annotations(table_dir: Path, sample_tokens: set[str]) -> dict[str, dict[str, list]] | None:
    """sample token -> columns of its boxes (world frame); None when the version has no annotations."""
    anns = load_table(table_dir, "sample_annotation")
    if not anns:
        return None
    instances = _by_token(load_table(table_dir, "instance"), "instance", table_dir)
    categories = {t: c.get("name", "") for t, c in _by_token(load_table(table_dir, "category"), "category",
                                                              table_dir).items()}
    out: dict[str, dict[str, list]] = {}
    for a in anns:
        st = a.get("sample_token")
        if st not in sample_tokens:
            continue
        cols = out.setdefault(st, {"centers": [], "wlh": [], "quats": [], "categories": [], "track_ids": []})
        inst = instances.get(a.get("instance_token", ""), {})
        cols["centers"].append(_floats(a.get("translation"), 3))
        cols["wlh"].append(_floats(a.get("size"), 3))
        cols["quats"].append(_floats(a.get("rotation"), 4))
        cols["categories"].append(categories.get(inst.get("category_token", ""), ""))
        cols["track_ids"].append(a.get("instance_token", ""))
    return out


def _frame_boxes(sample_tokens: list[str], by_sample: dict[str, dict[str, list]]) -> AgentBoxes:
    """Boxes of the record's frames. Size [w, l, h] -> (length, width, height); yaw from the quaternion.

    Boxes with non-finite values or negative sizes are dropped (they cannot be used for collisions).
    """
    frames = []
    for token in sample_tokens:
        cols = by_sample.get(token)
        if not cols:
            frames.append({})
            continue
        centers = np.asarray(cols["centers"]).reshape(-1, 3)
        wlh = np.asarray(cols["wlh"]).reshape(-1, 3)
        quats = np.asarray(cols["quats"]).reshape(-1, 4)
        sizes = wlh[:, [1, 0, 2]]
        yaws = yaw_from_quat(quats)
        good = np.isfinite(centers).all(1) & np.isfinite(sizes).all(1) & np.isfinite(yaws) & (sizes >= 0).all(1)
        idx = np.flatnonzero(good).tolist()
        frames.append(
            {
                "centers": centers[good],
                "sizes": sizes[good],
                "yaws": yaws[good],
                "categories": [cols["categories"][j] for j in idx],
                "track_ids": [cols["track_ids"][j] for j in idx],
            }
        )
    return AgentBoxes.from_frames(frames)


__all__ = ["MINI_TRAIN_SCENES", "MINI_VAL_SCENES", "VAL_SCENES", "load_nuscenes", "load_table", "resolve_split"]
