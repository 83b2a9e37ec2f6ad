"""Triangle meshes of a town (static, world frame) and of unit vehicles (instanced by the renderer).

Vertex layout (13 float32): position xyz, normal xyz, colour rgb, uv (metres along a face, height),
label id, texture mode. Texture modes select procedural detail in the fragment shader.
"""

from __future__ import annotations

import numpy as np

from vavam.world.geometry import Polyline, box_corners
from vavam.world.town import Town

# semantic labels
LABELS = {
    0: "sky",
    1: "road",
    2: "lane_marking",
    3: "sidewalk",
    4: "building",
    5: "vegetation",
    6: "vehicle",
    7: "terrain",
    8: "pole",
}
LABEL_IDS = {name: i for i, name in LABELS.items()}
# texture modes
PLAIN, ASPHALT, WINDOWS, TILES, GRASS, FOLIAGE = 0, 1, 2, 3, 4, 5

FLOATS_PER_VERTEX = 13
KERB = 0.15  # sidewalk height, metres
UP = (0.0, 0.0, 1.0)


class MeshBuilder:
    """Accumulates triangles; ``array()`` returns ``[V, 13]`` float32."""

    def __init__(self):
        self.parts: list[np.ndarray] = []

    def triangles(self, pos: np.ndarray, normal, colour, uv: np.ndarray | None, label: int, tex: int) -> None:
        """Add triangles from ``pos [3k, 3]`` with one normal (or ``[3k, 3]`` normals)."""
        n = len(pos)
        v = np.empty((n, FLOATS_PER_VERTEX), dtype=np.float32)
        v[:, 0:3] = pos
        v[:, 3:6] = normal
        v[:, 6:9] = colour
        v[:, 9:11] = 0.0 if uv is None else uv
        v[:, 11] = label
        v[:, 12] = tex
        self.parts.append(v)

    def quads(self, corners: np.ndarray, normal, colour, label: int, tex: int, uv: np.ndarray | None = None) -> None:
        """Add quads ``[k, 4, 3]`` (corners in order), each as two triangles; ``uv`` is ``[k, 4, 2]``."""
        idx = np.array([0, 1, 2, 0, 2, 3])
        pos = corners[:, idx].reshape(-1, 3)
        nrm = normal if np.ndim(normal) == 1 else np.repeat(np.asarray(normal), 6, axis=0)
        self.triangles(pos, nrm, colour, None if uv is None else uv[:, idx].reshape(-1, 2), label, tex)

    def ribbon(self, line: Polyline, left: float, right: float, z: float, colour, label: int, tex: int) -> None:
        """A flat strip along ``line`` between lateral offsets ``right < left`` at height ``z``."""
        nrm = line.normals()
        a, b = line.points + left * nrm, line.points + right * nrm
        c = np.stack([b[:-1], b[1:], a[1:], a[:-1]], axis=1)
        corners = np.concatenate([c, np.full(c.shape[:2] + (1,), z)], axis=2)
        self.quads(corners, UP, colour, label, tex)

    def wall(
        self,
        p0: np.ndarray,
        p1: np.ndarray,
        z0: float,
        z1: float,
        colour,
        label: int,
        tex: int,
        u0: np.ndarray | float = 0.0,
    ) -> None:
        """Vertical quads from segments ``p0 -> p1`` (``[k, 2]``), normal to the right of the direction."""
        d = p1 - p0
        length = np.linalg.norm(d, axis=1)
        nrm = np.stack([d[:, 1], -d[:, 0], np.zeros(len(d))], axis=1) / np.maximum(length, 1e-9)[:, None]
        k = len(p0)
        corners = np.stack(
            [
                np.concatenate([p0, np.full((k, 1), z0)], 1),
                np.concatenate([p1, np.full((k, 1), z0)], 1),
                np.concatenate([p1, np.full((k, 1), z1)], 1),
                np.concatenate([p0, np.full((k, 1), z1)], 1),
            ],
            axis=1,
        )
        u0 = np.broadcast_to(np.asarray(u0, dtype=np.float64), (k,))
        uv = np.stack(
            [
                np.stack([u0, np.full(k, z0)], 1),
                np.stack([u0 + length, np.full(k, z0)], 1),
                np.stack([u0 + length, np.full(k, z1)], 1),
                np.stack([u0, np.full(k, z1)], 1),
            ],
            axis=1,
        )
        self.quads(corners, nrm, colour, label, tex, uv)

    def box(self, x, y, yaw, length, width, z0, z1, colour, label: int, tex: int, top_colour=None, top_tex=None):
        """An oriented box: four walls and a top."""
        c = box_corners(x, y, yaw, length, width)  # [4, 2], clockwise from front-left
        order = c[::-1]  # counter-clockwise, so that wall normals (right of each edge) point outwards
        self.wall(order, np.roll(order, -1, axis=0), z0, z1, colour, label, tex)
        top = np.concatenate([c, np.full((4, 1), z1)], axis=1)[None, ::-1]
        self.quads(top, UP, colour if top_colour is None else top_colour, label, tex if top_tex is None else top_tex)

    def array(self) -> np.ndarray:
        if not self.parts:
            return np.zeros((0, FLOATS_PER_VERTEX), dtype=np.float32)
        return np.concatenate(self.parts).astype(np.float32)


def _rect(b: MeshBuilder, x0, y0, x1, y1, z, colour, label, tex):
    b.quads(np.array([[[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]]), UP, colour, label, tex)


def _dashes(line: Polyline, dash: float = 3.0, gap: float = 6.0) -> list[Polyline]:
    out, s = [], 2.0
    while s + dash < line.length - 2.0:
        out.append(line.slice(s, s + dash))
        s += dash + gap
    return out


def _unit_sphere() -> np.ndarray:
    """Triangles of a once-subdivided octahedron: ``[96, 3]`` points on the unit sphere."""
    v = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
    faces = [(v[i], v[(i + 1) % 4], v[t]) for t in (4, 5) for i in range(4)]
    tris = []
    for a, b, c in faces:
        ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
        tris += [(a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca)]
    p = np.array(tris).reshape(-1, 3)
    return p / np.linalg.norm(p, axis=1, keepdims=True)


SPHERE = _unit_sphere()


def town_mesh(town: Town) -> np.ndarray:
    """All static geometry of ``town`` as ``[V, 13]`` float32 triangles (world frame)."""
    st, net = town.style, town.network
    b = MeshBuilder()
    x0, y0, x1, y1 = town.bounds
    _rect(b, x0 - 1500, y0 - 1500, x1 + 1500, y1 + 1500, -0.03, st.grass, LABEL_IDS["terrain"], GRASS)
    sw = net.config.sidewalk
    road, side, mark = LABEL_IDS["road"], LABEL_IDS["sidewalk"], LABEL_IDS["lane_marking"]
    for r in net.roads:
        hw = r.half_width
        b.ribbon(r.centre, hw, -hw, 0.0, st.asphalt, road, ASPHALT)
        for sgn in (1.0, -1.0):
            b.ribbon(
                r.centre,
                sgn * (hw + sw) if sgn > 0 else -hw,
                hw if sgn > 0 else -(hw + sw),
                KERB,
                st.sidewalk,
                side,
                TILES,
            )
            edge = r.centre.offset(sgn * hw).points
            p0, p1 = (edge[:-1], edge[1:]) if sgn > 0 else (edge[1:][::-1], edge[:-1][::-1])
            b.wall(p0, p1, 0.0, KERB, st.kerb, side, PLAIN)
    for n in net.nodes:
        cx, cy = n.xy
        hx, hy = n.half_x, n.half_y
        wx, wy = hy - sw, hx - sw  # half-widths of x roads and y roads
        _rect(b, cx - wy, cy - wx, cx + wy, cy + wx, 0.0, st.asphalt, road, ASPHALT)
        for arm, (ax0, ay0, ax1, ay1) in {
            "E": (wy, -wx, hx, wx),
            "W": (-hx, -wx, -wy, wx),
            "N": (-wy, wx, wy, hy),
            "S": (-wy, -hy, wy, -wx),
        }.items():
            on = arm in n.arms
            _rect(
                b,
                cx + ax0,
                cy + ay0,
                cx + ax1,
                cy + ay1,
                0.0 if on else KERB,
                st.asphalt if on else st.sidewalk,
                road if on else side,
                ASPHALT if on else TILES,
            )
        for sx in (1, -1):
            for sy in (1, -1):
                _rect(b, cx + sx * wy, cy + sy * wx, cx + sx * hx, cy + sy * hy, KERB, st.sidewalk, side, TILES)
        # kerb faces around the asphalt cross: along both sides of open arms, across closed ones
        for arm, (ux, uy) in {"E": (1.0, 0.0), "N": (0.0, 1.0), "W": (-1.0, 0.0), "S": (0.0, -1.0)}.items():
            u, v = np.array([ux, uy]), np.array([-uy, ux])
            inner, outer, half = (wy, hx, wx) if arm in "EW" else (wx, hy, wy)
            if arm in n.arms:
                segs = [(outer * u - half * v, inner * u - half * v), (inner * u + half * v, outer * u + half * v)]
            else:
                segs = [(inner * u + half * v, inner * u - half * v)]
            for q0, q1 in segs:
                b.wall((n.xy + q0)[None], (n.xy + q1)[None], 0.0, KERB, st.kerb, side, PLAIN)
    for line, style, colour_name in town.markings:
        colour = st.marking_yellow if colour_name == "yellow" else st.marking_white
        if style == "dashed":
            for d in _dashes(line):
                b.ribbon(d, 0.07, -0.07, 0.012, colour, mark, PLAIN)
        elif style == "stop":
            b.ribbon(line, 0.25, -0.25, 0.012, colour, mark, PLAIN)
        elif colour_name == "yellow":
            for off in (0.12, -0.12):
                b.ribbon(line, off + 0.06, off - 0.06, 0.012, colour, mark, PLAIN)
        else:
            b.ribbon(line, 0.07, -0.07, 0.012, colour, mark, PLAIN)
    sc = town.scenery
    for x, y, yaw, length, width, height, pal in sc.buildings:
        b.box(
            x,
            y,
            yaw,
            length,
            width,
            0.0,
            height,
            st.building_palette[int(pal)],
            LABEL_IDS["building"],
            WINDOWS,
            top_colour=st.roof,
            top_tex=PLAIN,
        )
    veg = LABEL_IDS["vegetation"]
    for x, y, r, h, kind in sc.trees:
        b.box(x, y, 0.0, 0.35, 0.35, 0.0, h * 0.55, st.trunk, veg, PLAIN)
        if kind > 0.5:  # conifer: a cone
            k = 8
            ang = np.linspace(0, 2 * np.pi, k + 1)
            ring = np.stack([x + r * np.cos(ang), y + r * np.sin(ang), np.full(k + 1, h * 0.3)], 1)
            apex = np.array([x, y, h * 1.15])
            tri = np.stack([ring[:-1], ring[1:], np.repeat(apex[None], k, 0)], 1)
            nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
            b.triangles(tri.reshape(-1, 3), np.repeat(nrm, 3, 0), st.foliage, None, veg, FOLIAGE)
        else:
            centre = np.array([x, y, h * 0.55 + r * 0.7])
            pos = SPHERE * np.array([r, r, r * 0.85]) + centre
            b.triangles(pos, SPHERE, st.foliage, None, veg, FOLIAGE)
    pole = LABEL_IDS["pole"]
    for x, y, yaw in sc.poles:
        b.box(x, y, 0.0, 0.18, 0.18, 0.0, 7.0, st.pole, pole, PLAIN)
        ax, ay = x + 1.0 * np.cos(yaw), y + 1.0 * np.sin(yaw)
        b.box(ax, ay, yaw, 2.0, 0.12, 6.85, 7.0, st.pole, pole, PLAIN)
    return b.array()


def vehicle_meshes() -> dict[str, np.ndarray]:
    """Unit vehicle meshes (x in [-0.5, 0.5] forward, y in [-0.5, 0.5], z in [0, 1]) for instancing.

    Vertex colour channels hold fixed colours (glass, tyres, lights); the texture-mode slot holds the
    *tint*: 1 = take the instance's paint colour, 0 = keep the vertex colour.
    """
    glass, tyre = (0.10, 0.12, 0.15), (0.05, 0.05, 0.05)
    head, tail = (0.95, 0.93, 0.85), (0.75, 0.05, 0.05)
    veh = LABEL_IDS["vehicle"]
    out = {}
    for kind in ("car", "boxy"):
        b = MeshBuilder()

        def add(x, y, l, w, z0, z1, colour, tint, b=b):
            start = len(b.parts)
            b.box(x, y, 0.0, l, w, z0, z1, colour, veh, 0)
            for p in b.parts[start:]:
                p[:, 12] = tint

        for wx in (0.32, -0.32):
            for wy in (0.44, -0.44):
                add(wx, wy, 0.16, 0.12, 0.0, 0.3 if kind == "car" else 0.22, tyre, 0.0)
        if kind == "car":
            add(0.0, 0.0, 1.0, 1.0, 0.16, 0.55, (1, 1, 1), 1.0)
            add(-0.05, 0.0, 0.5, 0.88, 0.55, 0.97, glass, 0.0)
            add(-0.05, 0.0, 0.44, 0.86, 0.97, 1.0, (1, 1, 1), 1.0)  # roof
            zl = (0.38, 0.48)
        else:
            add(0.0, 0.0, 1.0, 1.0, 0.12, 1.0, (1, 1, 1), 1.0)
            add(0.0, 0.0, 0.92, 1.01, 0.6, 0.85, glass, 0.0)  # side window band
            add(0.0, 0.0, 1.01, 0.86, 0.55, 0.88, glass, 0.0)  # windscreen and rear window
            zl = (0.2, 0.3)
        for sy in (0.33, -0.33):
            add(0.5, sy, 0.02, 0.2, zl[0], zl[1], head, 0.0)
            add(-0.5, sy, 0.02, 0.2, zl[0], zl[1], tail, 0.0)
        out[kind] = b.array()
    return out
