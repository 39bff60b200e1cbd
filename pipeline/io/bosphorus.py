"""Bosphorus: `.bnt` binary range grids with `.lm3` 3D / `.lm2` 2D landmarks and a `.png` texture."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.landmark_sets import BOSPHORUS_LABELS as LABELS
from facepipe.pipeline.geometry.scan import Landmarks, Scan, grid_scan
from facepipe.pipeline.io.image import read_image
from facepipe.pipeline.io.limits import read_limits
from facepipe.pipeline.io.text import parse_numbers, read_bytes, read_text
from facepipe.schemas.scan import ScanMeta

NAME = re.compile(r"^(?P<subject>bs\d{3})_(?P<category>[A-Z]+)_(?P<code>[A-Za-z0-9]+)_(?P<index>\d+)$")
LABEL_ORDER = tuple(label.capitalize() for label in LABELS)  # as the .lm3 files write them


@dataclass(eq=False)
class BntGrid:
    """The raw content of a `.bnt` file; row 0 of each plane is the bottom of the face."""

    zmin: float
    texture_name: str
    x: np.ndarray  # (rows, cols) float64, each
    y: np.ndarray
    z: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """Real files mark some invalid points in Z alone: the marker in any coordinate makes a point invalid."""
        return ~((self.x == self.zmin) | (self.y == self.zmin) | (self.z == self.zmin))


def parse_name(path: str | PathLike[str]) -> dict[str, str]:
    m = NAME.match(Path(path).name.split(".")[0])
    return m.groupdict() if m else {}


def parse_bnt(data: bytes, path: str | PathLike[str] = "<bnt>") -> BntGrid:
    """Little-endian header (u16 rows, u16 cols, f64 zmin, u16 L, name, u32 n) then 5 f64 planes.

    Every count is checked against the file size before anything is allocated.
    """
    if len(data) < 14:
        raise ScanFormatError(path, f"truncated .bnt header ({len(data)} bytes)")
    rows, cols, zmin, name_len = struct.unpack_from("<HHdH", data, 0)
    off = 14
    if rows == 0 or cols == 0:
        raise ScanFormatError(path, f".bnt grid is {rows} x {cols}: empty")
    if rows * cols > (cap := read_limits().max_grid_pixels):
        raise ScanFormatError(path, f"the header declares a {rows} x {cols} grid, more than the limit of {cap:,} pixels "
                              "(FACEPIPE_MAX_GRID_PIXELS raises it)")
    if off + name_len + 4 > len(data):
        raise ScanFormatError(path, f"texture-name length {name_len} runs past the end of the file")
    try:
        tex_name = data[off : off + name_len].decode("ascii")
    except UnicodeDecodeError:
        raise ScanFormatError(path, "texture name is not ASCII (not a .bnt file?)") from None
    off += name_len
    (n,) = struct.unpack_from("<I", data, off)
    off += 4
    if n != 5 * rows * cols:
        raise ScanFormatError(path, f"header says {n} values but a {rows} x {cols} grid needs {5 * rows * cols}")
    if len(data) - off != 8 * n:
        raise ScanFormatError(path, f"{len(data) - off} data bytes where {rows} x {cols} x 5 doubles need {8 * n} (truncated?)")
    planes = np.frombuffer(data, dtype="<f8", count=n, offset=off).reshape(5, rows, cols).astype(np.float64)
    x, y, z, u, v = planes
    grid = BntGrid(float(zmin), tex_name, x, y, z, u, v)
    xyz = np.stack([x, y, z], -1)[grid.valid]
    if not np.isfinite(xyz).all():
        raise ScanFormatError(path, "NaN/inf coordinates among the valid points")
    return grid


def write_bnt(grid: BntGrid) -> bytes:
    rows, cols = grid.x.shape
    name = grid.texture_name.encode("ascii")
    header = struct.pack("<HHdH", rows, cols, grid.zmin, len(name)) + name + struct.pack("<I", 5 * rows * cols)
    planes = np.stack([grid.x, grid.y, grid.z, grid.u, grid.v]).astype("<f8")
    return header + planes.tobytes()


def parse_lm3(text: str, path: str | PathLike[str] = "<lm3>") -> tuple[list[str], np.ndarray]:
    """Labels and (L, 3) points of a `# 3D Landmark File` (optional `*` info block, 22 or 24 points)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# 3D Landmark File"):
        raise ScanFormatError(path, "not a Bosphorus .lm3 file (first line must be '# 3D Landmark File')")
    i = 1
    if i < len(lines) and lines[i].strip() == "*":
        while i < len(lines) and lines[i].strip():
            i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    m = re.match(r"^\s*(\d+)\s+landmarks:?\s*$", lines[i] if i < len(lines) else "")
    if not m:
        raise ScanFormatError(path, f"line {i + 1}: expected '<N> landmarks:'")
    count = int(m.group(1))
    body = [ln for ln in lines[i + 1 :] if ln.strip()]
    if len(body) < 2 * count:
        raise ScanFormatError(path, f"header announces {count} landmarks but only {len(body) // 2} follow (truncated?)")
    labels = [body[2 * k].strip() for k in range(count)]
    pts = parse_numbers(" ".join(body[2 * k + 1] for k in range(count)), path, "landmark coordinates")
    if pts.size != 3 * count:
        raise ScanFormatError(path, f"{count} landmarks need {3 * count} coordinates, found {pts.size}")
    pts = pts.reshape(count, 3)
    if not np.isfinite(pts).all():
        k = int(np.flatnonzero(~np.isfinite(pts).all(axis=1))[0])
        raise ScanFormatError(path, f"landmark {labels[k]!r} has NaN/inf coordinates")
    return labels, pts


def write_lm3(labels: list[str], points: np.ndarray, info: list[str] | None = None) -> bytes:
    out = ["# 3D Landmark File"]
    if info is not None:
        out += ["*", *info]
    out += ["", f"{len(labels)} landmarks:"]
    for label, (x, y, z) in zip(labels, points):
        out += [label, f"{x:.6f} {y:.6f} {z:.6f}"]
    return ("\n".join(out) + "\n").encode("ascii")


def parse_lm2(text: str, path: str | PathLike[str] = "<lm2>") -> tuple[list[str], np.ndarray]:
    """Labels and (L, 2) pixel coordinates of a `# 2D Landmark File`."""
    lines = [ln.strip() for ln in text.splitlines()]
    if not lines or not lines[0].startswith("# 2D Landmark File"):
        raise ScanFormatError(path, "not a Bosphorus .lm2 file (first line must be '# 2D Landmark File')")
    try:
        count = int(next(ln for ln in lines[1:] if ln).split()[0])
        lab = lines.index("Labels:")
        coords = next(k for k, ln in enumerate(lines) if ln.startswith("2D Image coordinates"))
    except (StopIteration, ValueError):
        raise ScanFormatError(path, "missing landmark count, 'Labels:' or '2D Image coordinates:' section") from None
    labels = [ln for ln in lines[lab + 1 : coords] if ln]
    pts = parse_numbers(" ".join(lines[coords + 1 :]), path, "2D coordinates")
    if len(labels) != count or pts.size != 2 * count:
        raise ScanFormatError(path, f"announces {count} landmarks, has {len(labels)} labels and {pts.size // 2} points")
    return labels, pts.reshape(count, 2)


def write_lm2(labels: list[str], pixels: np.ndarray) -> bytes:
    out = ["# 2D Landmark File", "", f"{len(labels)} landmarks", "", "Labels:", *labels, "", "2D Image coordinates:"]
    out += [f"{x:.6f} {y:.6f}" for x, y in pixels]
    return ("\n".join(out) + "\n").encode("ascii")


def canonical_name(label: str) -> str:
    """Subject-frame name of a Bosphorus label; unknown labels keep a slug of their own text."""
    key = " ".join(label.lower().split())
    return LABELS.get(key, re.sub(r"[^a-z0-9]+", "_", key).strip("_"))


def read_bosphorus(path: str | PathLike[str], texture: bool = True) -> Scan:
    """A `.bnt` scan as a mesh, with `.lm3` landmarks (snapped to their vertices) and `.png` texture."""
    p = Path(path)
    grid = parse_bnt(read_bytes(p), p)
    info = parse_name(p)
    meta = ScanMeta(
        format="bosphorus", path=str(p), dataset="bosphorus", subject=info.get("subject"),
        expression=f"{info['category']}_{info['code']}" if info else None,
        extra={"category": info["category"], "index": info["index"], "texture": grid.texture_name} if info else {"texture": grid.texture_name},
    )
    points = np.stack([grid.x, grid.y, grid.z], -1)
    uv = np.stack([grid.u, 1.0 - grid.v], -1)  # file: top-left origin; Scan: bottom-left
    scan, _ = grid_scan(p, points, grid.valid, rows_up=True, meta=meta, uv=uv)
    lm3 = p.with_suffix(".lm3")
    if lm3.exists():
        labels, pts = parse_lm3(read_text(lm3), lm3)
        ids = _nearest_vertex(scan.vertices, pts)
        scan = scan.with_landmarks(Landmarks(tuple(canonical_name(x) for x in labels), pts, ids, source="lm3"))
    png = p.with_suffix(".png")
    if texture and png.exists():
        scan = replace(scan, texture=read_image(png))
    return scan


def _nearest_vertex(vertices: np.ndarray, points: np.ndarray) -> np.ndarray:
    return cKDTree(vertices).query(points)[1].astype(np.int64)
