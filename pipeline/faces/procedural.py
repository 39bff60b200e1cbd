"""The procedural face model: facepipe's own morphable model, licence-free and built on the fly.

The mean is the analytic face of the example data (head ellipsoid, eye sockets, brows, nose,
lips, chin; mm) on a regular grid, with the lips split by a slit so that opening the jaw opens a
mouth hole, as in real models and scans. Identity is a Gaussian-process deformation model:
smooth multi-scale squared-exponential kernels (50, 20 and 8 mm), bilaterally symmetric (the x
displacement is odd under the mirror x -> -x, y and z are even), as Nystrom eigenmodes scaled to
unit-variance weights. Expressions are analytic offset fields named as in ARKit/ICT-FaceKit
(`_L` = the subject's left, +x).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from facepipe.pipeline.faces.landmark_sets import BOSPHORUS22
from facepipe.pipeline.faces.morphable import MorphableModel
from facepipe.pipeline.faces.relief import CORNER, MOUTH_Y, FaceParams, FaceSurface, bu83_positions, bump, face_depth, landmark_positions
from facepipe.pipeline.faces.template import Template, template_from_model
from facepipe.pipeline.geometry.render import Raycaster, facing_direction

KERNELS_MM = ((50.0, 4.0), (20.0, 2.0), (8.0, 0.6))  # (length scale, standard deviation) of each kernel
EXPRESSIONS = ("jawOpen", "mouthSmile_L", "mouthSmile_R", "browInnerUp", "browDown", "mouthPucker",
               "eyeBlink_L", "eyeBlink_R", "cheekPuff", "mouthLeft", "mouthRight")


def face_grid(spacing: float = 2.5, p: FaceParams = FaceParams()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(V, 3) mean vertices, (F, 3) triangles, (V,) True for the lower-lip copies of the slit vertices.

    A row of the grid lies on the mouth line; its vertices between the lip corners are duplicated,
    and the triangles below the line use the copies, so the lips are two sheets that meet.
    """
    half_cols = int(p.width / spacing)
    xs = np.arange(-half_cols, half_cols + 1) * spacing  # odd count: x = 0 is a column, the grid is mirror-symmetric
    ys = MOUTH_Y + np.arange(int((p.height - MOUTH_Y) / spacing), -int((p.height + MOUTH_Y) / spacing) - 1, -1) * spacing
    x, y = np.meshgrid(xs, ys)  # row 0 at the top
    z, inside = face_depth(x, y, p)
    rows, cols = x.shape
    ids = np.full((rows, cols), -1)
    ids[inside] = np.arange(inside.sum())
    verts = np.stack([x[inside], y[inside], z[inside]], 1)
    mouth_row = int(np.flatnonzero(np.isclose(ys, MOUTH_Y))[0])
    slit = inside[mouth_row] & (np.abs(xs) < CORNER - spacing / 2)
    copies = np.full(cols, -1)
    copies[slit] = len(verts) + np.arange(slit.sum())
    verts = np.concatenate([verts, verts[ids[mouth_row, slit]]])
    lower = np.zeros(len(verts), bool)
    lower[copies[slit]] = True
    tris = []
    for r in range(rows - 1):
        top = ids[r].copy()
        if r == mouth_row:  # the quads just below the mouth line hang on the lower-lip copies
            top[slit] = copies[slit]
        a, b, c, d = top[:-1], top[1:], ids[r + 1, 1:], ids[r + 1, :-1]
        ok = (a >= 0) & (b >= 0) & (c >= 0) & (d >= 0)
        tris += [np.stack([a[ok], d[ok], c[ok]], 1), np.stack([a[ok], c[ok], b[ok]], 1)]
    faces = np.concatenate(tris).astype(np.int64)
    if facing_direction(verts, faces)[2] < 0:
        faces = faces[:, ::-1]
    return verts, faces, lower


def expression_offsets(v: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """(len(EXPRESSIONS), V, 3) offsets in mm at full strength (weight 1)."""
    x, y = v[:, 0], v[:, 1]
    # what the jaw carries: everything below the mouth line (the lower lip copies included), fading
    # out toward the jaw's sides; the step inside the lips blends into a smooth ramp past the corners
    step = ((y < MOUTH_Y - 1e-6) | lower).astype(np.float64)
    ramp = 1.0 / (1.0 + np.exp(-(MOUTH_Y - y) / 3.0))
    t = np.clip((np.abs(x) - (CORNER - 6.0)) / 10.0, 0.0, 1.0)
    jaw = ((1 - t) * step + t * ramp) * np.exp(-(x**2) / (2 * 40.0**2))
    out = np.zeros((len(EXPRESSIONS), len(v), 3))

    def put(name: str, dx: np.ndarray | float, dy: np.ndarray | float, dz: np.ndarray | float) -> None:
        out[EXPRESSIONS.index(name)] += np.stack(np.broadcast_arrays(dx, dy, dz), 1)

    put("jawOpen", 0.0, -14.0 * jaw, -5.0 * jaw)
    for name, s in (("mouthSmile_L", 1.0), ("mouthSmile_R", -1.0)):
        corner, cheek = bump(x, y, s * CORNER, MOUTH_Y, 10, 8), bump(x, y, s * 32, -15, 15, 10)
        put(name, 3.0 * s * corner, 5.0 * corner + 2.0 * cheek, -2.0 * corner + 2.0 * cheek)
    brows = bump(x, y, 32, 53, 20, 10) + bump(x, y, -32, 53, 20, 10)
    put("browInnerUp", 0.0, 6.0 * brows + 2.0 * bump(x, y, 0, 70, 40, 20), 0.0)
    inner = bump(x, y, 20, 50, 12, 8) + bump(x, y, -20, 50, 12, 8)
    put("browDown", -3.0 * np.sign(x) * inner, -4.0 * inner, 1.0 * inner)
    lips = bump(x, y, 0, MOUTH_Y, 22, 10)
    put("mouthPucker", -0.35 * x * lips, 0.0, 7.0 * lips)
    for name, s in (("eyeBlink_L", 1.0), ("eyeBlink_R", -1.0)):
        lid = bump(x, y, s * 32, 35, 12, 6)
        put(name, 0.0, -1.0 * lid, 6.0 * lid)
    cheeks = bump(x, y, 35, -25, 14, 14), bump(x, y, -35, -25, 14, 14)
    put("cheekPuff", 3.0 * (cheeks[0] - cheeks[1]), 0.0, 6.0 * (cheeks[0] + cheeks[1]))
    sideways = bump(x, y, 0, MOUTH_Y, 30, 14)
    put("mouthLeft", 6.0 * sideways, 0.0, 0.0)
    put("mouthRight", -6.0 * sideways, 0.0, 0.0)
    return out


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return sum(sd**2 * np.exp(-d2 / (2 * ls**2)) for ls, sd in KERNELS_MM)


def identity_modes(v: np.ndarray, count: int, stride: int = 3) -> np.ndarray:
    """(count, V, 3) Nystrom eigenmodes of the symmetric GP deformation model, strongest first."""
    xy = v[:, :2]
    grid_step = np.diff(np.unique(v[:, 0]))[0]
    col = np.round(xy[:, 0] / grid_step).astype(int)
    row = np.round((xy[:, 1] - MOUTH_Y) / grid_step).astype(int)
    z = np.unique(xy[(col % stride == 0) & (row % stride == 0)], axis=0)  # mirror-symmetric inducing points
    mirror = z * np.array([-1.0, 1.0])
    modes: list[tuple[float, int, np.ndarray]] = []
    for parity, axes in ((-1.0, (0,)), (1.0, (1, 2))):  # x odd; y, z even under the mirror
        kzz = 0.5 * (_kernel(z, z) + parity * _kernel(z, mirror))
        kxz = 0.5 * (_kernel(xy, z) + parity * _kernel(xy, mirror))
        lam, u = np.linalg.eigh(kzz)
        keep = lam > lam.max() * 1e-6
        basis = kxz @ (u[:, keep] / np.sqrt(lam[keep]))
        modes += [(float(lk), axis, basis[:, j]) for j, lk in enumerate(lam[keep]) for axis in axes]
    modes.sort(key=lambda m: -m[0])
    out = np.zeros((count, len(v), 3))
    for i, (_, axis, values) in enumerate(modes[:count]):
        out[i, :, axis] = values
    return out


@cache
def procedural_model(spacing: float = 2.5, identity_count: int = 60) -> MorphableModel:
    """The embedded default model; the same arguments give the same model (cached per process)."""
    v, f, lower = face_grid(spacing)
    upper = ~lower

    def nearest(px: float, py: float) -> int:
        d = (v[:, 0] - px) ** 2 + (v[:, 1] - py) ** 2 + np.where(upper, 0.0, 1e-3)  # the upper sheet on ties
        return int(np.argmin(d))

    named = landmark_positions()
    landmarks = {name: np.array([nearest(*xy)]) for name, xy in named.items()}  # FIVE among them
    bu = np.array([nearest(px, py) for px, py in bu83_positions()])
    landmarks |= {f"bu3dfe{k:02d}": bu[k : k + 1] for k in range(83)}
    mouth = np.flatnonzero((v[:, 0] / (CORNER + 8)) ** 2 + ((v[:, 1] - MOUTH_Y) / 14.0) ** 2 < 1.0)
    return MorphableModel(
        "procedural", v, f, identity_modes(v, identity_count).astype(np.float32),
        expression_offsets(v, lower).astype(np.float32), EXPRESSIONS, landmarks, None,
        "Apache-2.0: generated by facepipe, no data from any face model or database",
        regions={"mouth": mouth, "bu3dfe83": bu, "bosphorus22": np.array([landmarks[n][0] for n in BOSPHORUS22])})


@cache
def default_template() -> Template:
    """The template every command uses unless told otherwise: the procedural model's mean face."""
    return template_from_model(procedural_model())


def procedural_surface(model: MorphableModel, identity: np.ndarray | None, expression: np.ndarray | None) -> FaceSurface:
    """A face of the model as the example-data writers see it: depth by casting rays along -z (an open
    mouth is a hole), landmarks where the model's landmark vertices moved to."""
    v = model.shape(identity, expression)
    caster = Raycaster(v, model.triangles)
    top = float(v[:, 2].max()) + 50.0

    def depth(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rays = np.stack(np.broadcast_arrays(x, y, top, 0.0, 0.0, -1.0), -1).reshape(-1, 6)
        hits = caster.cast(rays)
        return (top - np.where(hits.mask, hits.depth, 0.0)).reshape(np.shape(x)), hits.mask.reshape(np.shape(x))

    names = [n for n in landmark_positions() if n in model.landmarks]
    landmarks = {n: (float(v[model.landmarks[n][0], 0]), float(v[model.landmarks[n][0], 1])) for n in names}
    half = (v.max(0) - v.min(0)) / 2 / np.sqrt(0.92)  # the analytic face's ellipse reaches r^2 = 0.92
    return FaceSurface(depth, landmarks, v[model.regions["bu3dfe83"], :2], float(half[0]), float(half[1]))
