"""The embedded example dataset: faces written in the real database layouts, with scanner-like
noise and holes.

The writers take any `FaceSurface`: the analytic relief (head ellipsoid, nose, eye sockets,
brows, lips, chin; `FaceParams`), which tests use for its exactly known landmark positions, or a
face of the procedural model (`procedural.procedural_surface`), which the example dataset uses.
Units are mm, +x toward the subject's left, +y up, +z toward the viewer. No download, no licence.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from facepipe.pipeline.faces.relief import FaceParams, FaceSurface, as_surface, bump
from facepipe.pipeline.geometry.scan import grid_faces
from facepipe.pipeline.io import bosphorus, bu3dfe, frgc
from facepipe.pipeline.io.vrml import FaceSet, VrmlDocument, Viewpoint, write_vrml

EXAMPLE_IDENTITY_SIGMA = 0.8  # example subjects a little nearer the mean than N(0, 1): every one is found by MediaPipe


def scanner_grid(p: FaceParams | FaceSurface, rows: int, cols: int, spacing: float, rng: np.random.Generator,
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
            dark = np.maximum(dark, 0.8 * bump(x, y, cx, cy, 7, 3.5))
        if name.endswith("brow_middle"):
            dark = np.maximum(dark, 0.6 * bump(x, y, cx, cy, 14, 2.5))
    mouth_x, mouth_y = named["mouth_left"][0], (named["mouth_left"][1] + named["mouth_right"][1]) / 2
    lips = 0.5 * bump(x, y, 0, mouth_y, 0.8 * mouth_x, 5)
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
    pts, valid = scanner_grid(p, rows, cols, spacing, rng)
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
    pts, valid = scanner_grid(p, rows, cols, spacing, rng)
    pts, valid = pts[::-1], valid[::-1]  # .bnt row 0 is the bottom of the face
    zmin = -1e9
    u = np.tile((np.arange(cols) + 0.5) / cols, (rows, 1))
    v = np.tile(((rows - 1 - np.arange(rows)) + 0.5)[:, None] / rows, (1, cols))
    planes = [np.where(valid, pts[..., k], zmin) for k in range(3)]
    grid = bosphorus.BntGrid(zmin, f"{stem}.png", planes[0], planes[1], planes[2], u, v)
    verts = pts[valid]
    lm = p.landmarks
    labels = [n for n in bosphorus.LABEL_ORDER if bosphorus.LABELS[n.lower()] in lm]  # a real .lm3 lists only the marks it has
    xy = np.array([lm[bosphorus.LABELS[label.lower()]] for label in labels])
    ids = snap(xy, verts)
    texture = skin_texture(rows * 2, cols * 2, p, cols * spacing, rows * spacing)
    return {f"{stem}.bnt": bosphorus.write_bnt(grid), f"{stem}.lm3": bosphorus.write_lm3(labels, verts[ids]), f"{stem}.png": _encode(texture, "PNG")}


def frgc_files(p: FaceParams | FaceSurface, rng: np.random.Generator, stem: str, rows: int = 120, cols: int = 160) -> dict[str, bytes]:
    """An `.abs` grid in the scanner frame (face ~1 m away, z negative) and its next-number `.ppm`."""
    p = as_surface(p)
    spacing = 2.1 * p.height / rows
    pts, valid = scanner_grid(p, rows, cols, spacing, rng)
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
    from facepipe.pipeline.faces.procedural import EXPRESSIONS, procedural_model, procedural_surface

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
