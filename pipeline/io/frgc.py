"""FRGC v2.0: `.abs` / `.abs.gz` ASCII range grids (Minolta Vivid, 640x480) with a `.ppm` texture."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

import numpy as np

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.scan import Scan, grid_scan
from facepipe.pipeline.io.image import read_image
from facepipe.pipeline.io.limits import read_limits
from facepipe.pipeline.io.text import parse_numbers, read_text
from facepipe.schemas.scan import ScanMeta

NAME = re.compile(r"^(?P<subject>\d{5})d(?P<sequence>\d+)$")
INVALID = -999999.0


@dataclass(eq=False)
class AbsGrid:
    flags: np.ndarray  # (rows, cols) uint8, 1 = valid
    x: np.ndarray  # (rows, cols) float64; row 0 is the top of the image
    y: np.ndarray
    z: np.ndarray


def parse_name(path: str | PathLike[str]) -> dict[str, str]:
    name = Path(path).name
    m = NAME.match(name.split(".")[0])
    return m.groupdict() if m else {}


def parse_abs(text: str, path: str | PathLike[str] = "<abs>") -> AbsGrid:
    """`N rows`, `M columns`, `pixels (flag X Y Z):`, then four lines of rows*cols values each."""
    head = text.split("\n", 3)
    if len(head) < 4:
        raise ScanFormatError(path, "truncated .abs header")
    m_rows = re.match(r"^\s*(\d+)\s+rows\s*$", head[0])
    m_cols = re.match(r"^\s*(\d+)\s+columns\s*$", head[1])
    if not m_rows or not m_cols or not head[2].strip().startswith("pixels"):
        raise ScanFormatError(path, "not an .abs file: expected 'N rows', 'M columns', 'pixels (flag X Y Z):'")
    rows, cols = int(m_rows.group(1)), int(m_cols.group(1))
    n = rows * cols
    cap = read_limits().max_grid_pixels
    if n == 0:
        raise ScanFormatError(path, f"the header declares an empty {rows} x {cols} grid")
    if n > cap:
        raise ScanFormatError(path, f"the header declares a {rows} x {cols} grid, more than the limit of {cap:,} pixels "
                              "(FACEPIPE_MAX_GRID_PIXELS raises it)")
    if len(head[3]) < 4 * n * 2 - 4:  # every value needs at least one digit and one separator
        raise ScanFormatError(path, f"{rows} x {cols} grid needs 4 x {n} values but the file is only {len(text)} characters (truncated?)")
    lines = [ln for ln in head[3].split("\n") if ln.strip()]
    if len(lines) != 4:
        raise ScanFormatError(path, f"expected 4 data lines (flags, X, Y, Z), found {len(lines)}")
    planes = []
    for what, line in zip(("flags", "X", "Y", "Z"), lines):
        values = parse_numbers(line, path, f"{what} line")
        if values.size != n:
            raise ScanFormatError(path, f"{what} line has {values.size} values, expected {rows} x {cols} = {n}")
        planes.append(values.reshape(rows, cols))
    flags = planes[0]
    if not np.isin(flags, (0, 1)).all():
        raise ScanFormatError(path, "flags must be 0 or 1")
    return AbsGrid(flags.astype(np.uint8), planes[1], planes[2], planes[3])


def write_abs(grid: AbsGrid) -> bytes:
    rows, cols = grid.flags.shape
    out = [f"{rows} rows", f"{cols} columns", "pixels (flag X Y Z):"]
    out.append(" ".join(str(int(f)) for f in grid.flags.ravel()))
    for plane in (grid.x, grid.y, grid.z):
        out.append(" ".join(f"{v:.6f}" for v in plane.ravel().tolist()))
    return ("\n".join(out) + "\n").encode("ascii")


def texture_path(path: str | PathLike[str]) -> Path | None:
    """The texture is usually the next sequence number (`02463d453.ppm` for `02463d452.abs`)."""
    p = Path(path)
    info = parse_name(p)
    candidates = []
    if info:
        width = len(info["sequence"])
        candidates.append(p.with_name(f"{info['subject']}d{int(info['sequence']) + 1:0{width}d}.ppm"))
    candidates.append(p.with_name(p.name.split(".")[0] + ".ppm"))
    return next((c for c in candidates if c.exists()), None)


def read_frgc(path: str | PathLike[str], texture: bool = True) -> Scan:
    p = Path(path)
    grid = parse_abs(read_text(p), p)
    points = np.stack([grid.x, grid.y, grid.z], -1)
    valid = grid.flags.astype(bool) & ~(points == INVALID).any(axis=-1)  # the marker in any coordinate: no point
    if not np.isfinite(points[valid]).all():
        raise ScanFormatError(p, "NaN/inf coordinates among the flagged points")
    info = parse_name(p)
    meta = ScanMeta(format="frgc", path=str(p), dataset="frgc", subject=info.get("subject"),
                    extra={"sequence": info["sequence"]} if info else {})
    rows, cols = valid.shape
    r, c = np.mgrid[0:rows, 0:cols]
    uv = np.stack([(c + 0.5) / cols, 1.0 - (r + 0.5) / rows], -1)  # pixel centres, bottom-left origin
    scan, _ = grid_scan(p, points, valid, rows_up=False, meta=meta, uv=uv)
    tex = texture_path(p) if texture else None
    return replace(scan, texture=read_image(tex)) if tex else scan
