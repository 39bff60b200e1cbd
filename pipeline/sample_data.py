"""The embedded example dataset: faces written in the real database layouts, with scanner-like
noise and holes.

The writers take any `FaceSurface`: the analytic relief (head ellipsoid, nose, eye sockets,
brows, lips, chin; `FaceParams`), which tests use for its exactly known landmark positions, or a
face of the procedural model (`procedural.procedural_surface`), which the example dataset uses.
Units are mm, +x toward the subject's left, +y up, +z toward the viewer. No download, no licence.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facepipe.pipeline.io import bosphorus, bu3dfe, frgc
from facepipe.pipeline.io.vrml import FaceSet, VrmlDocument, Viewpoint, write_vrml
from facepipe.pipeline.morphable import FIVE
from facepipe.pipeline.scan import compact, grid_faces


EXAMPLE_IDENTITY_SIGMA = 0.8  # example subjects a little nearer the mean than N(0, 1): every one is found by MediaPipe


@dataclass(frozen=True)
class FaceParams:
    """One synthetic subject/expression: proportions in mm and a smile/open-mouth amount in [0, 1]."""

    width: float = 75.0
    height: float = 100.0
    nose: float = 1.0
    eye_gap: float = 32.0
    smile: float = 0.0
    mouth_open: float = 0.0

    @staticmethod
    def random(rng: np.random.Generator, smile: float = 0.0, mouth_open: float = 0.0) -> FaceParams:
        return FaceParams(width=float(rng.uniform(68, 82)), height=float(rng.uniform(92, 108)),
                          nose=float(rng.uniform(0.8, 1.2)), eye_gap=float(rng.uniform(29, 35)),
                          smile=smile, mouth_open=mouth_open)


def _g(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-((x - cx) ** 2) / (2 * sx**2) - ((y - cy) ** 2) / (2 * sy**2))


def face_depth(x: np.ndarray, y: np.ndarray, p: FaceParams = FaceParams()) -> tuple[np.ndarray, np.ndarray]:
    """Depth z (mm) of the face relief at (x, y) and the mask of points on the face."""
    r2 = (x / p.width) ** 2 + (y / p.height) ** 2
    inside = r2 < 0.92
    z = 90.0 * np.sqrt(np.clip(1 - r2, 0, None)) - 90.0
    ridge = 1.0 / (1.0 + np.exp(-(y + 2.0) / 3.0)) * 1.0 / (1.0 + np.exp((y - 38.0) / 4.0))
    z = z + p.nose * (18.0 * np.exp(-(x**2) / (2 * 7.0**2)) * ridge + 9.0 * _g(x, y, 0, -2, 9, 7))
    mouth_y = -38.0
    corner = 25.0 + 4.0 * p.smile
    for s in (-1.0, 1.0):
        z = z - 10.0 * _g(x, y, s * p.eye_gap, 35, 13, 8) + 5.0 * _g(x, y, s * p.eye_gap, 53, 18, 4.5)
        z = z + 4.0 * p.smile * _g(x, y, s * corner, mouth_y + 4 * p.smile, 5, 5)
    lips = 6.0 * _g(x, y, 0, mouth_y, corner * 0.8, 7) - 2.5 * _g(x, y, 0, mouth_y, corner * 0.9, 1.2)
    z = z + lips + 6.0 * _g(x, y, 0, -75, 18, 12)
    if p.mouth_open > 0:  # an open mouth is a hole in the scan, as with real scanners
        inside &= ~(((x / (corner * 0.8)) ** 2 + ((y - mouth_y) / (6.0 * p.mouth_open)) ** 2) < 1.0)
    return z, inside


def landmark_positions(p: FaceParams = FaceParams()) -> dict[str, tuple[float, float]]:
    """(x, y) of named landmarks on the relief, in the subject frame ('right' = subject's right = -x)."""
    e, c = p.eye_gap, 25.0 + 4.0 * p.smile
    pts: dict[str, tuple[float, float]] = {"nose_tip": (0.0, -2.0), "chin_middle": (0.0, -75.0),
                                           "upper_lip_outer_middle": (0.0, -32.0), "lower_lip_outer_middle": (0.0, -45.0),
                                           "upper_lip_inner_middle": (0.0, -36.5), "lower_lip_inner_middle": (0.0, -40.0)}
    for side, s in (("right", -1.0), ("left", 1.0)):
        pts |= {f"{side}_eye_inner": (s * (e - 15), 35.0), f"{side}_eye_outer": (s * (e + 15), 35.0),
                f"{side}_eye_centre": (s * e, 35.0), f"{side}_brow_inner": (s * (e - 17), 53.0),
                f"{side}_brow_middle": (s * e, 55.0), f"{side}_brow_outer": (s * (e + 18), 52.0),
                f"nose_saddle_{side}": (s * 8.0, 30.0), f"nose_ala_{side}": (s * 16.0, -6.0),
                f"mouth_{side}": (s * c, -38.0 + 4 * p.smile)}
    return pts


def bu83_positions(p: FaceParams = FaceParams()) -> np.ndarray:
    """(83, 2) positions following the BU-3DFE numbering of FORMATS.md."""
    lm = landmark_positions(p)
    out = np.zeros((83, 2))
    theta = np.arange(8) * np.pi / 4  # 0 inner corner, 1-3 upper lid, 4 outer corner, 5-7 lower lid
    for base, side, s in ((0, "right", -1.0), (8, "left", 1.0)):
        cx, cy = lm[f"{side}_eye_centre"]
        out[base : base + 8] = np.stack([cx - s * 15 * np.cos(theta), cy + 6 * np.sin(theta)], 1)
        brow = np.linspace(lm[f"{side}_brow_inner"][0], lm[f"{side}_brow_outer"][0], 5)
        out[16 + (base // 8) * 10 : 21 + (base // 8) * 10] = np.stack([brow, np.full(5, 55.0)], 1)
        out[21 + (base // 8) * 10 : 26 + (base // 8) * 10] = np.stack([brow, np.full(5, 51.0)], 1)
    a = np.linspace(0.15 * np.pi, 0.85 * np.pi, 12)
    out[36:48] = np.stack([18 * np.cos(a) * -1, 28 * np.sin(a) - 30], 1)
    c = lm["mouth_left"][0]
    a = np.linspace(0, 2 * np.pi, 13)[:-1]
    out[48:60] = np.stack([-c * np.cos(a), -38 + 7 * np.sin(a)], 1)
    a = np.linspace(0, 2 * np.pi, 9)[:-1]
    out[60:68] = np.stack([-0.8 * c * np.cos(a), -38 + 2 * np.sin(a)], 1)
    a = np.linspace(np.pi * 1.05, np.pi * 1.95, 15)
    out[68:83] = np.stack([0.9 * p.width * np.cos(a), 0.9 * p.height * np.sin(a) + 10], 1)
    return out


def relief_face(p: FaceParams = FaceParams(), spacing: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The analytic face as a clean mesh (mm) and its exact five alignment landmarks (FIVE order)."""
    rows, cols = int(2 * p.height / spacing), int(2 * p.width / spacing)
    x, y = np.meshgrid((np.arange(cols) - (cols - 1) / 2) * spacing, ((rows - 1) / 2 - np.arange(rows)) * spacing)
    z, inside = face_depth(x, y, p)
    pts = np.stack([x, y, z], -1)
    v, f, _ = compact(pts.reshape(-1, 3), grid_faces(inside, pts, rows_up=False))
    lm = landmark_positions(p)
    xy = np.array([lm[n] for n in FIVE])
    five = np.column_stack([xy, face_depth(xy[:, 0], xy[:, 1], p)[0]])
    return v, f, five


@dataclass(frozen=True)
class FaceSurface:
    """What the layout writers need of a face: its depth over (x, y), where its landmarks lie, its size."""

    depth: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # (x, y) -> (z, on the face)
    landmarks: dict[str, tuple[float, float]]  # (x, y) of the landmark_positions names
    bu83: np.ndarray  # (83, 2) BU-3DFE landmark positions
    width: float  # half-widths (mm) of the face ellipse
    height: float


def as_surface(face: FaceParams | FaceSurface) -> FaceSurface:
    if isinstance(face, FaceSurface):
        return face
    return FaceSurface(lambda x, y: face_depth(x, y, face), landmark_positions(face), bu83_positions(face), face.width, face.height)


def face_grid(p: FaceParams | FaceSurface, rows: int, cols: int, spacing: float, rng: np.random.Generator,
              noise_mm: float = 0.05, holes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols, 3) points, row 0 at the top, and the valid mask, with sensor noise and holes."""
    face = as_surface(p)
    xs = (np.arange(cols) - (cols - 1) / 2) * spacing
    ys = ((rows - 1) / 2 - np.arange(rows)) * spacing
    x, y = np.meshgrid(xs, ys)
    z, valid = face.depth(x, y)
    z = np.where(valid, z + rng.normal(0, noise_mm, z.shape), 0.0)
    for _ in range(holes):  # dropouts away from the landmarks' core, as on hair or specular skin
        cx, cy = rng.uniform(-0.8, 0.8) * face.width, rng.uniform(0.55, 0.9) * face.height * rng.choice([-1, 1])
        valid &= (x - cx) ** 2 + (y - cy) ** 2 > rng.uniform(3, 8) ** 2
    return np.stack([x, y, z], -1), valid


def skin_texture(rows: int, cols: int, p: FaceParams | FaceSurface, width_mm: float, height_mm: float) -> np.ndarray:
    """A plain texture with darker brows, eyes and lips, so renders and previews read as a face."""
    x, y = np.meshgrid(np.linspace(-width_mm / 2, width_mm / 2, cols), np.linspace(height_mm / 2, -height_mm / 2, rows))
    dark = np.zeros_like(x)
    named = as_surface(p).landmarks
    for name, (cx, cy) in named.items():
        if name.endswith("eye_centre"):
            dark = np.maximum(dark, 0.8 * _g(x, y, cx, cy, 7, 3.5))
        if name.endswith("brow_middle"):
            dark = np.maximum(dark, 0.6 * _g(x, y, cx, cy, 14, 2.5))
    mouth_x, mouth_y = named["mouth_left"][0], (named["mouth_left"][1] + named["mouth_right"][1]) / 2
    lips = 0.5 * _g(x, y, 0, mouth_y, 0.8 * mouth_x, 5)
    skin = np.array([224.0, 180.0, 150.0])
    img = skin * (1 - dark[..., None]) + np.array([150.0, 60.0, 60.0]) * lips[..., None] - skin * lips[..., None] * 0.3
    return np.clip(img, 0, 255).astype(np.uint8)


def snap(points2d: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Index of the vertex nearest in (x, y) to each 2D landmark position."""
    d = ((vertices[None, :, :2] - points2d[:, None, :]) ** 2).sum(-1)
    return d.argmin(axis=1)


def bu3dfe_files(p: FaceParams | FaceSurface, rng: np.random.Generator, stem: str, spacing: float = 2.0) -> dict[str, bytes]:
    """`_F3D.wrl`, `_F3D.bnd` and `_F3D.bmp` of one scan; some triangle pairs become quads, one a pentagon."""
    p = as_surface(p)
    rows, cols = int(2.1 * p.height / spacing), int(2.1 * p.width / spacing)
    pts, valid = face_grid(p, rows, cols, spacing, rng)
    pts = np.round(pts, 6)
    tris = grid_faces(valid, pts, rows_up=False)
    used = np.unique(tris)
    remap = np.full(rows * cols, -1)
    remap[used] = np.arange(len(used))
    verts = pts.reshape(-1, 3)[used]
    tris = remap[tris]
    # merge the two triangles of every 20th full cell into one quad, as the Tricorder files mix them
    polys: list[list[int]] = [list(t) for t in tris]
    cells = _quads(remap.reshape(rows, cols))[::20]
    merged = [[int(a), int(b), int(d), int(c)] for a, b, c, d in cells]
    halves = {frozenset(t) for a, b, c, d in cells.tolist() for t in ((a, b, c), (b, d, c))}
    polys = [t for t in polys if frozenset(t) not in halves] + merged
    if len(merged) >= 2:  # and one pentagon: a quad plus the apex of a neighbouring triangle
        q = merged[0]
        apex = next((t for t in polys if len(t) == 3 and q[1] in t and q[2] in t), None)
        if apex is not None:
            extra = next(v for v in apex if v not in q)
            polys.remove(apex)
            polys[polys.index(q)] = [q[0], q[1], extra, q[2], q[3]]
    coord_index = np.array([i for poly in polys for i in (*poly, -1)], np.int64)
    n_corners = int((coord_index >= 0).sum())
    tex_index = coord_index.copy()
    tex_index[coord_index >= 0] = np.arange(n_corners)
    width_mm, height_mm = cols * spacing, rows * spacing
    uv_vertex = np.stack([verts[:, 0] / width_mm + 0.5, verts[:, 1] / height_mm + 0.5], 1)
    tex_coords = np.round(uv_vertex[coord_index[coord_index >= 0]], 6)
    doc = VrmlDocument([FaceSet(verts, coord_index, tex_coords, tex_index, texture_url=f"{stem}.bmp")],
                       ["facepipe example scan in the BU-3DFE F3D layout"],
                       [Viewpoint("Front", (0.0, 0.0, 500.0)), Viewpoint("Left", (500.0, 0.0, 0.0), (0.0, 1.0, 0.0, 1.5708))])
    ids = snap(p.bu83, verts)
    texture = skin_texture(256, int(256 * width_mm / height_mm), p, width_mm, height_mm)
    return {f"{stem}.wrl": write_vrml(doc), f"{stem}.bnd": bu3dfe.write_bnd(ids, verts[ids]), f"{stem}.bmp": _encode(texture, "BMP")}


def _quads(remap: np.ndarray) -> np.ndarray:
    """(a, b, c, d) vertex ids of grid cells whose four corners are all mesh vertices."""
    a, b, c, d = remap[:-1, :-1], remap[:-1, 1:], remap[1:, :-1], remap[1:, 1:]
    cells = np.stack([a, b, c, d], -1).reshape(-1, 4)
    return cells[(cells >= 0).all(1)]


def bosphorus_files(p: FaceParams | FaceSurface, rng: np.random.Generator, stem: str, spacing: float = 0.9) -> dict[str, bytes]:
    p = as_surface(p)
    rows, cols = int(2.1 * p.height / spacing), int(2.1 * p.width / spacing)
    pts, valid = face_grid(p, rows, cols, spacing, rng)
    pts, valid = pts[::-1], valid[::-1]  # .bnt row 0 is the bottom of the face
    zmin = -1e9
    u = np.tile((np.arange(cols) + 0.5) / cols, (rows, 1))
    v = np.tile(((rows - 1 - np.arange(rows)) + 0.5)[:, None] / rows, (1, cols))
    planes = [np.where(valid, pts[..., k], zmin) for k in range(3)]
    grid = bosphorus.BntGrid(zmin, f"{stem}.png", planes[0], planes[1], planes[2], u, v)
    verts = pts[valid]
    lm = p.landmarks
    labels = list(bosphorus.LABEL_ORDER)
    xy = np.array([lm[bosphorus.LABELS[label.lower()]] for label in labels])
    ids = snap(xy, verts)
    texture = skin_texture(rows * 2, cols * 2, p, cols * spacing, rows * spacing)
    return {f"{stem}.bnt": bosphorus.write_bnt(grid), f"{stem}.lm3": bosphorus.write_lm3(labels, verts[ids]), f"{stem}.png": _encode(texture, "PNG")}


def frgc_files(p: FaceParams | FaceSurface, rng: np.random.Generator, stem: str, rows: int = 120, cols: int = 160) -> dict[str, bytes]:
    """An `.abs` grid in the scanner frame (face ~1 m away, z negative) and its next-number `.ppm`."""
    p = as_surface(p)
    spacing = 2.1 * p.height / rows
    pts, valid = face_grid(p, rows, cols, spacing, rng)
    pts = pts + np.array([0.0, 0.0, -1000.0])
    flags = valid.astype(np.uint8)
    planes = [np.where(valid, np.round(pts[..., k], 6), frgc.INVALID) for k in range(3)]
    grid = frgc.AbsGrid(flags, *planes)
    info = frgc.parse_name(stem + ".abs")
    tex_stem = f"{info['subject']}d{int(info['sequence']) + 1:0{len(info['sequence'])}d}" if info else stem
    texture = skin_texture(rows, cols, p, cols * spacing, rows * spacing)
    return {f"{stem}.abs": frgc.write_abs(grid), f"{tex_stem}.ppm": _encode(texture, "PPM")}


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def write_files(out: Path, files: dict[str, bytes]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (out / name).write_bytes(data)
        paths.append(out / name)
    return paths


def write_example_dataset(out: str | Path, subjects: int = 4, seed: int = 0) -> list[Path]:
    """A small multi-database example of procedural-model faces: per subject a neutral and a happy
    BU-3DFE scan, two Bosphorus scans and one FRGC scan, each in its database's folder layout."""
    from facepipe.pipeline.procedural import EXPRESSIONS, procedural_model, procedural_surface

    model = procedural_model()
    happy_w = np.zeros(len(EXPRESSIONS))
    happy_w[[EXPRESSIONS.index(n) for n in ("mouthSmile_L", "mouthSmile_R")]] = 1.0
    happy_w[EXPRESSIONS.index("jawOpen")] = 0.5
    out = Path(out)
    written: list[Path] = []
    for s in range(subjects):
        rng = np.random.default_rng([seed, s])
        identity = rng.normal(0.0, EXAMPLE_IDENTITY_SIGMA, len(model.identity))
        neutral, happy = procedural_surface(model, identity, None), procedural_surface(model, identity, happy_w)
        sid = f"F{s + 1:04d}" if s % 2 == 0 else f"M{s + 1:04d}"
        written += write_files(out / "BU-3DFE" / sid, bu3dfe_files(neutral, rng, f"{sid}_NE00WH_F3D"))
        written += write_files(out / "BU-3DFE" / sid, bu3dfe_files(happy, rng, f"{sid}_HA04WH_F3D"))
        bs = f"bs{s:03d}"
        written += write_files(out / "Bosphorus" / bs, bosphorus_files(neutral, rng, f"{bs}_N_N_0"))
        written += write_files(out / "Bosphorus" / bs, bosphorus_files(happy, rng, f"{bs}_E_HAPPY_0"))
        written += write_files(out / "FRGC" / "nd1" / "Spring2003range", frgc_files(neutral, rng, f"{4200 + s:05d}d{100 + 2 * s}"))
    return written
