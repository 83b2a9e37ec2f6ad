"""Headless OpenGL rendering of the ego front camera (moderngl, EGL; Mesa's llvmpipe on a CPU).

Per frame: RGB uint8 ``[H, W, 3]``, semantic labels uint8 ``[H, W]`` (ids in ``LABELS``) and metric
depth float32 ``[H, W]`` (metres along the optical axis; sky = ``camera.far``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vavam.world import shaders
from vavam.world.camera import Camera
from vavam.world.meshes import LABELS, town_mesh, vehicle_meshes
from vavam.world.town import Town

__all__ = ["LABELS", "Frame", "Renderer", "create_context"]

_VERTEX_FORMAT = ("3f 3f 3f 2f 2f", "in_pos", "in_normal", "in_colour", "in_uv", "in_info")


@dataclass
class Frame:
    """One rendered camera frame."""

    rgb: np.ndarray  # [H, W, 3] uint8
    label: np.ndarray  # [H, W] uint8
    depth: np.ndarray  # [H, W] float32, metres


def create_context():
    """A standalone moderngl context on EGL (headless)."""
    import moderngl

    try:
        return moderngl.create_context(standalone=True, backend="egl")
    except Exception as err:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "could not create a headless OpenGL context through EGL; install Mesa's EGL "
            "(Debian: apt-get install libegl1 libgl1-mesa-dri) and the moderngl package"
        ) from err


def _mat(m: np.ndarray) -> bytes:
    return np.asarray(m, dtype=np.float32).T.tobytes()  # GLSL matrices are column-major


def _chunked(mesh: np.ndarray, cell: float = 40.0) -> tuple[np.ndarray, list]:
    """Reorder triangles into spatial chunks; returns the mesh and ``(first, count, box corners [8, 3])``
    per chunk, chunk 0 holding the ground plane (the first two triangles)."""
    ground, rest = mesh[:6], mesh[6:]
    tri = rest.reshape(-1, 3, rest.shape[1])
    centre = tri[:, :, :2].mean(axis=1)
    key = np.floor(centre / cell).astype(np.int64)
    key = key[:, 0] * 100003 + key[:, 1]
    order = np.argsort(key, kind="stable")
    tri, key = tri[order], key[order]
    bounds = np.flatnonzero(np.diff(key)) + 1
    chunks = [(0, 6, None)]
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(tri)]])
    for a, b in zip(starts, ends):
        p = tri[a:b, :, :3].reshape(-1, 3)
        lo, hi = p.min(0), p.max(0)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        chunks.append((6 + 3 * int(a), 3 * int(b - a), corners.astype(np.float64)))
    return np.concatenate([ground, tri.reshape(-1, rest.shape[1])]), chunks


def _set(prog, **values) -> None:
    """Set uniforms that the compiled program kept (unused ones are optimised away)."""
    for name, value in values.items():
        if name in prog:
            prog[name].value = value


class Renderer:
    """Renders a town and vehicle boxes from the ego front camera.

    Args:
        town: what to draw (static geometry is uploaded once).
        camera: image size and intrinsics; ``Camera()`` is 288x512.
        ctx: a moderngl context to share (default: a new EGL context).
    """

    def __init__(self, town: Town, camera: Camera = Camera(), ctx=None):
        import moderngl

        self.town, self.camera = town, camera
        self._own_ctx = ctx is None
        self.ctx = ctx or create_context()
        ctx = self.ctx
        self.static_prog = ctx.program(vertex_shader=shaders.STATIC_VERT, fragment_shader=shaders.COMMON_FRAG)
        self.vehicle_prog = ctx.program(vertex_shader=shaders.VEHICLE_VERT, fragment_shader=shaders.COMMON_FRAG)
        self.sky_prog = ctx.program(vertex_shader=shaders.SKY_VERT, fragment_shader=shaders.SKY_FRAG)
        mesh, chunks = _chunked(town_mesh(town))
        self.chunk_ranges = np.array([(f, n) for f, n, _ in chunks[1:]], dtype=np.int64)
        self.chunk_corners = np.stack([c for _, _, c in chunks[1:]])
        self.static_vbo = ctx.buffer(mesh.tobytes())
        self.static_vao = ctx.vertex_array(self.static_prog, [(self.static_vbo, *_VERTEX_FORMAT)], skip_errors=True)
        self.vehicle_vaos = {}
        self.instance_vbos = {}
        self.vehicle_vbos = {}
        for kind, m in vehicle_meshes().items():
            vbo = self.vehicle_vbos[kind] = ctx.buffer(m.tobytes())
            inst = ctx.buffer(reserve=16 * 9 * 4, dynamic=True)
            self.instance_vbos[kind] = inst
            self.vehicle_vaos[kind] = ctx.vertex_array(
                self.vehicle_prog,
                [(vbo, *_VERTEX_FORMAT), (inst, "3f 3f 3f/i", "i_pose", "i_size", "i_colour")],
                skip_errors=True,
            )
        tri = np.array([[-1, -1], [3, -1], [-1, 3]], dtype=np.float32)
        self.sky_vbo = ctx.buffer(tri.tobytes())
        self.sky_vao = ctx.vertex_array(self.sky_prog, [(self.sky_vbo, "2f", "in_ndc")])
        h, w = camera.height, camera.width
        # the attachments are GL objects of their own: releasing the framebuffer does not free them
        self.attachments = [
            ctx.renderbuffer((w, h), components=4),
            ctx.renderbuffer((w, h), components=2, dtype="f4"),
            ctx.depth_renderbuffer((w, h)),
        ]
        self.fbo = ctx.framebuffer(color_attachments=self.attachments[:2], depth_attachment=self.attachments[2])
        st = town.style
        for prog in (self.static_prog, self.vehicle_prog):
            _set(
                prog,
                sun_dir=st.sun_dir,
                sun_colour=st.sun_colour,
                ambient=st.ambient,
                fog_colour=tuple(float(c) for c in st.sky_horizon),
                fog_density=st.fog_density,
                window_colour=st.window,
            )
            prog["proj"].write(_mat(camera.projection()))
        _set(
            self.sky_prog,
            zenith=st.sky_zenith,
            horizon=st.sky_horizon,
            sun_dir=st.sun_dir,
            sun_colour=st.sun_colour,
            far=camera.far,
        )
        self._moderngl = moderngl

    def render(self, ego_to_world: np.ndarray, boxes: np.ndarray | None = None) -> Frame:
        """Render the view from an ego pose (4x4 ego-to-world) with vehicle ``boxes`` ``[N, >= 9]``
        (x, y, yaw, length, width, height, r, g, b; world frame; taller than 2.1 m -> van/truck/bus look).

        Returns a :class:`Frame`: rgb ``[H, W, 3]`` uint8, label ``[H, W]`` uint8, depth ``[H, W]`` float32.
        Raises ``ValueError`` for a pose that is not a finite 4x4 matrix or boxes of another shape / non-finite.
        """
        mgl, ctx, cam = self._moderngl, self.ctx, self.camera
        pose = np.asarray(ego_to_world, dtype=np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise ValueError(f"ego_to_world must be a finite 4x4 matrix, got shape {pose.shape}")
        b = None if boxes is None else np.asarray(boxes, dtype=np.float64)
        if b is not None and b.size == 0:
            b = None
        if b is not None and (b.ndim != 2 or b.shape[1] < 9):
            raise ValueError(
                f"boxes must be [N, >= 9] (x, y, yaw, length, width, height, r, g, b), got shape {b.shape}"
            )
        if b is not None and not np.isfinite(b[:, :9]).all():
            rows = np.flatnonzero(~np.isfinite(b[:, :9]).all(axis=1)).tolist()
            raise ValueError(f"boxes must be finite; rows {rows} are not")
        world_to_cam = cam.world_to_cam(pose)
        self.fbo.use()
        self.fbo.clear(0.0, 0.0, 0.0, 1.0, depth=1.0)
        ctx.depth_func = "<"
        # sky: NDC -> camera ray -> world direction
        p = cam.projection()
        a = np.array([[1 / p[0, 0], 0, -p[0, 2] / p[0, 0]], [0, 1 / p[1, 1], -p[1, 2] / p[1, 1]], [0, 0, 1]])
        m = np.zeros((4, 4))
        m[:3, :3] = np.linalg.inv(world_to_cam)[:3, :3] @ a
        self.sky_prog["inv_proj_rot"].write(_mat(m))
        ctx.enable(mgl.DEPTH_TEST)
        view = _mat(world_to_cam)
        self.static_prog["view"].write(view)
        for first, count in self._visible_chunks(world_to_cam):  # near to far: early depth rejection
            self.static_vao.render(mgl.TRIANGLES, vertices=count, first=first)
        if b is not None:
            self.vehicle_prog["view"].write(view)
            boxy = b[:, 5] > 2.1
            for kind, sel in (("car", ~boxy), ("boxy", boxy)):
                if not sel.any():
                    continue
                inst = b[sel][:, :9].astype(np.float32)
                buf = self.instance_vbos[kind]
                if buf.size < inst.nbytes:
                    buf.orphan(inst.nbytes * 2)
                buf.write(inst.tobytes())
                self.vehicle_vaos[kind].render(mgl.TRIANGLES, instances=len(inst))
        self.sky_vao.render(mgl.TRIANGLES)  # last, at the far plane: only uncovered pixels are shaded
        h, w = cam.height, cam.width
        rgb = np.frombuffer(self.fbo.read(components=3, attachment=0), dtype=np.uint8).reshape(h, w, 3)[::-1]
        aux = np.frombuffer(self.fbo.read(components=2, attachment=1, dtype="f4"), dtype=np.float32).reshape(h, w, 2)[
            ::-1
        ]
        return Frame(
            rgb=np.ascontiguousarray(rgb),
            label=np.rint(aux[..., 1]).astype(np.uint8),
            depth=np.ascontiguousarray(aux[..., 0]),
        )

    def _visible_chunks(self, world_to_cam: np.ndarray) -> list[tuple[int, int]]:
        """(first vertex, vertex count) of the chunks whose bounding box meets the view frustum,
        nearest first (the ground plane, chunk 0, always and last)."""
        k, cam = self.camera.intrinsics, self.camera
        c = self.chunk_corners @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]  # [C, 8, 3]
        z = c[..., 2]
        zc = np.maximum(z, 1e-3)
        u = k[0, 0] * c[..., 0] / zc + k[0, 2]
        v = k[1, 1] * c[..., 1] / zc + k[1, 2]
        front = (z > 1e-3).all(axis=1)
        outside = front & ((u < 0).all(1) | (u > cam.width).all(1) | (v < 0).all(1) | (v > cam.height).all(1))
        keep = ~((z < cam.near).all(axis=1) | outside)
        dist = np.linalg.norm(c, axis=2).min(axis=1)
        idx = np.flatnonzero(keep)
        idx = idx[np.argsort(dist[idx], kind="stable")]
        return [(int(self.chunk_ranges[i, 0]), int(self.chunk_ranges[i, 1])) for i in idx] + [(0, 6)]

    def release(self) -> None:
        """Free the GL objects of this renderer (a context it created itself too)."""
        objs = [
            self.fbo,
            *self.attachments,
            self.static_vao,
            self.static_vbo,
            self.sky_vao,
            self.sky_vbo,
            *self.vehicle_vaos.values(),
            *self.vehicle_vbos.values(),
            *self.instance_vbos.values(),
            self.static_prog,
            self.vehicle_prog,
            self.sky_prog,
        ]
        for obj in objs:
            obj.release()
        if self._own_ctx:
            self.ctx.release()
