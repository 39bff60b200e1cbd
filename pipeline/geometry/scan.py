"""The one scan type every reader returns, and the checks that make a bad file fail at read time."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from os import PathLike

import numpy as np

from facepipe.pipeline.errors import ScanFormatError
from facepipe.schemas.scan import ReadLimits, ScanMeta


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Named 3D landmarks in the scan's own frame; NaN rows are landmarks the file marks missing."""

    names: tuple[str, ...]
    points: np.ndarray  # (L, 3) float64
    vertex_ids: np.ndarray | None = None  # (L,) int64, -1 where the landmark is not a scan vertex
    source: str = ""  # which file kind they came from: 'bnd', 'lm3', 'pse', ...

    def __len__(self) -> int:
        return len(self.names)

    def get(self, name: str) -> np.ndarray:
        """The point named `name`; KeyError names the missing landmark."""
        try:
            return self.points[self.names.index(name)]
        except ValueError:
            raise KeyError(f"no landmark named {name!r} (have {len(self.names)} from {self.source!r})") from None


@dataclass(frozen=True, eq=False)
class Scan:
    """A triangle mesh in millimetres with whatever the file carried beside the geometry.

    UVs follow the VRML/OpenGL convention (v = 0 at the bottom of the image) whatever the file used.
    """

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    meta: ScanMeta
    normals: np.ndarray | None = None  # (V, 3) float64, per vertex
    colors: np.ndarray | None = None  # (V, 3) uint8, per vertex
    uv: np.ndarray | None = None  # (V, 2) float64, per vertex
    face_uv: np.ndarray | None = None  # (F, 3, 2) float64, per triangle corner
    texture: np.ndarray | None = None  # (H, W, 3) uint8
    landmarks: Landmarks | None = None
    grid_shape: tuple[int, int] | None = field(default=None)  # (rows, cols) for range-image scans
    warnings: tuple[str, ...] = ()  # what the reader doubted but could not prove wrong (a possibly cut last line)

    def with_landmarks(self, landmarks: Landmarks | None) -> Scan:
        return replace(self, landmarks=landmarks)


def make_scan(path: str | PathLike[str], vertices: np.ndarray, faces: np.ndarray, meta: ScanMeta, **kw: object) -> Scan:
    """Build a Scan after checking everything a later stage would trip on; errors name `path`."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ScanFormatError(path, f"vertices must be (V, 3), got shape {v.shape}")
    if len(v) == 0:
        raise ScanFormatError(path, "the mesh has no vertices")
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        raise ScanFormatError(path, f"{int(bad.sum())} vertices have NaN/inf coordinates (first: vertex {int(np.argmax(bad))})")
    if f.size == 0:
        f = f.reshape(0, 3)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ScanFormatError(path, f"faces must be (F, 3) triangles, got shape {f.shape}")
    if len(f) == 0:
        raise ScanFormatError(path, "the mesh has no faces")
    if f.min() < 0 or f.max() >= len(v):
        raise ScanFormatError(path, f"face indices must lie in [0, {len(v) - 1}], found {int(f.min())}..{int(f.max())}")
    for name, per, width in (("normals", len(v), 3), ("colors", len(v), 3), ("uv", len(v), 2)):
        arr = kw.get(name)
        if arr is not None and np.shape(arr) != (per, width):
            raise ScanFormatError(path, f"{name} must be ({per}, {width}), got {np.shape(arr)}")
    face_uv = kw.get("face_uv")
    if face_uv is not None and np.shape(face_uv) != (len(f), 3, 2):
        raise ScanFormatError(path, f"face_uv must be ({len(f)}, 3, 2), got {np.shape(face_uv)}")
    lms = kw.get("landmarks")
    if isinstance(lms, Landmarks) and lms.vertex_ids is not None:
        ids = lms.vertex_ids[lms.vertex_ids >= 0]
        if ids.size and ids.max() >= len(v):
            raise ScanFormatError(path, f"landmark vertex index {int(ids.max())} is out of range for {len(v)} vertices")
    return Scan(vertices=v, faces=f, meta=meta, **kw)  # type: ignore[arg-type]


def check_scan(scan: Scan, limits: ReadLimits) -> Scan:
    """Checks of the whole mesh that no single field shows: a size plausible for a face in mm, some
    surface at all, usable normals and texture coordinates. A file's optional extras that are broken
    are dropped with a warning; a mesh that cannot be a face is an error naming the file."""
    path = scan.meta.path
    used = np.unique(scan.faces)
    v = scan.vertices[used]
    extent = float((v.max(axis=0) - v.min(axis=0)).max())
    if extent < limits.min_extent_mm:
        raise ScanFormatError(path, f"the surface spans only {extent:.3g} mm: degenerate, or not in millimetres "
                              f"(a face spans 100-300 mm; FACEPIPE_MIN_EXTENT_MM lowers the limit of {limits.min_extent_mm:g})")
    if extent > limits.max_extent_mm:
        raise ScanFormatError(path, f"the surface spans {extent:.3g} mm: not a face scan in millimetres "
                              f"(FACEPIPE_MAX_EXTENT_MM raises the limit of {limits.max_extent_mm:g})")
    area = 0.5 * float(np.linalg.norm(triangle_normals(scan.vertices, scan.faces), axis=1).sum())
    if area <= 1e-6 * extent**2:
        raise ScanFormatError(path, f"the triangles have no area ({area:.3g} mm^2 in all): a degenerate mesh")
    if scan.landmarks is not None and np.isinf(scan.landmarks.points).any():
        raise ScanFormatError(path, f"infinite landmark coordinates (from {scan.landmarks.source or 'the landmark file'})")
    changes: dict[str, object] = {}
    notes = list(scan.warnings)
    if scan.normals is not None:
        length = np.linalg.norm(scan.normals, axis=1)
        bad = ~np.isfinite(length) | (length < 1e-6)
        if bad.any():
            changes["normals"] = None
            notes.append(f"{int(bad.sum())} of the file's vertex normals are zero or NaN: its normals are ignored")
    for name in ("uv", "face_uv"):
        values = getattr(scan, name)
        if values is not None and not np.isfinite(values).all():
            changes |= {"uv": None, "face_uv": None, "texture": None}
            notes.append("NaN/inf texture coordinates: the texture is ignored")
            break
    if not changes:
        return scan
    return replace(scan, warnings=tuple(notes), **changes)  # type: ignore[arg-type]


def polygon_offsets(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of every polygon in a VRML-style index list where -1 ends a polygon."""
    index = np.asarray(index, dtype=np.int64)
    ends = np.flatnonzero(index == -1)
    if index.size and index[-1] != -1:  # the last polygon may omit its terminator
        ends = np.append(ends, index.size)
    starts = np.concatenate(([0], ends[:-1] + 1)) if ends.size else np.zeros(0, np.int64)
    return starts, ends - starts


def fan_corners(index: np.ndarray) -> np.ndarray:
    """Positions (into `index`) of the three corners of each fan triangle of each polygon.

    Returned as (T, 3) positions so that coordinate and texture indices triangulate identically.
    Polygons with fewer than three corners are dropped.
    """
    starts, lengths = polygon_offsets(index)
    keep = lengths >= 3
    starts, lengths = starts[keep], lengths[keep]
    n_tri = lengths - 2
    first = np.repeat(starts, n_tri)
    # k runs 1..n-2 inside each polygon: the fan triangle (0, k, k+1)
    k = np.arange(n_tri.sum()) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri) + 1
    return np.stack([first, first + k, first + k + 1], axis=1)


def grid_faces(valid: np.ndarray, points: np.ndarray, rows_up: bool, max_edge_factor: float = 4.0) -> np.ndarray:
    """Triangulate a range image: two triangles per cell of four valid pixels, none across a depth jump.

    `points` is (R, C, 3), `valid` (R, C). Triangles index the flattened grid (r * C + c) and face
    the viewer (+z) when `rows_up` says which way image rows run in space. An edge longer than
    `max_edge_factor` times the median valid neighbour spacing marks a jump and drops its triangle.
    """
    rows, cols = valid.shape
    if rows < 2 or cols < 2:
        return np.zeros((0, 3), np.int64)
    idx = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    a, b = idx[:-1, :-1], idx[:-1, 1:]  # (r, c), (r, c+1)
    c, d = idx[1:, :-1], idx[1:, 1:]  # (r+1, c), (r+1, c+1)
    va = valid.ravel()
    # (a, b, c) and (b, d, c) are counter-clockwise seen from +z when row r+1 lies above row r
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    tris = tris[va[tris].all(axis=1)]
    if not rows_up:
        tris = tris[:, [0, 2, 1]]
    if len(tris) == 0:
        return tris
    p = points.reshape(-1, 3)
    horiz = valid[:, :-1] & valid[:, 1:]
    spacing = np.linalg.norm(points[:, 1:] - points[:, :-1], axis=-1)[horiz]
    if spacing.size == 0:
        return np.zeros((0, 3), np.int64)
    limit = max_edge_factor * float(np.median(spacing))
    e = np.stack([np.linalg.norm(p[tris[:, i]] - p[tris[:, (i + 1) % 3]], axis=1) for i in range(3)], axis=1)
    return tris[(e <= limit).all(axis=1)]


def triangle_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) unnormalised triangle normals, each as long as twice its triangle's area."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return np.cross(b - a, c - a)


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop vertices no face uses; returns (vertices, faces, old index of each kept vertex)."""
    used = np.zeros(len(vertices), bool)
    used[faces.ravel()] = True
    kept = np.flatnonzero(used)
    remap = np.full(len(vertices), -1, np.int64)
    remap[kept] = np.arange(len(kept))
    return vertices[kept], remap[faces], kept


def valid_window(valid: np.ndarray) -> tuple[slice, slice]:
    """The smallest row and column range holding every valid pixel (the whole grid when none is)."""
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if rows.size == 0:
        return slice(0, valid.shape[0]), slice(0, valid.shape[1])
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def grid_scan(
    path: str | PathLike[str],
    points: np.ndarray,
    valid: np.ndarray,
    rows_up: bool,
    meta: ScanMeta,
    uv: np.ndarray | None = None,
    max_edge_factor: float = 4.0,
    origin: tuple[int, int] = (0, 0),
    full_shape: tuple[int, int] | None = None,
    **kw: object,
) -> tuple[Scan, np.ndarray]:
    """A mesh from a range image: valid pixels become vertices (in row-major order), cells become triangles.

    Returns the scan and, for every grid pixel, its vertex index (-1 where invalid), so that side
    files that name pixels (landmarks, textures) can be mapped onto the mesh. The arrays may be a
    window of a larger grid (`full_shape`, the window starting at `origin`); either way only the
    window around the valid pixels is meshed, so a wide empty background costs no memory.
    """
    if not valid.any():
        raise ScanFormatError(path, "the range image has no valid point")
    full_shape = full_shape or valid.shape
    rs, cs = valid_window(valid)
    points, valid = points[rs, cs], valid[rs, cs]
    uv = None if uv is None else uv[rs, cs]
    r0, c0 = origin[0] + rs.start, origin[1] + cs.start
    faces = grid_faces(valid, points, rows_up, max_edge_factor)
    n = int(valid.sum())
    local = np.full(valid.shape, -1, np.int64)
    local[valid] = np.arange(n)
    vertex_of_pixel = np.full(full_shape, -1, np.int64)
    vertex_of_pixel[r0 : r0 + valid.shape[0], c0 : c0 + valid.shape[1]] = local
    vertices = points[valid]
    vuv = None if uv is None else uv[valid]
    scan = make_scan(path, vertices, local.ravel()[faces], meta, uv=vuv, grid_shape=tuple(full_shape), **kw)
    return scan, vertex_of_pixel.ravel()
