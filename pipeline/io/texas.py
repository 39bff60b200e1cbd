"""Texas-3DFRD: registered `<stem>_Range.png` depth images and `<stem>_Portrait.png` colour images.

No real file was available to check against; the layout assumed here, and enforced strictly:
a single-channel 8- or 16-bit PNG, 0 = no data, larger values closer to the camera, 0.32 mm per
pixel in x and y and 0.32 mm per grey level in z (both configurable), the nose tip near the
image centre. Fiducials, where present, sit in `<stem>_Fiducials.txt`: 25 lines of `col row`
pixel coordinates (whitespace or comma separated).
"""

from __future__ import annotations

from dataclasses import replace
from os import PathLike
from pathlib import Path

import numpy as np

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.scan import Landmarks, Scan, grid_scan, valid_window
from facepipe.pipeline.io.image import read_image, write_image
from facepipe.pipeline.io.text import parse_numbers, read_text
from facepipe.schemas.scan import ScanMeta

RANGE_SUFFIX = "_Range.png"
PIXEL_MM = 0.32
N_FIDUCIALS = 25


def is_texas(path: str | PathLike[str]) -> bool:
    return Path(path).name.endswith(RANGE_SUFFIX)


def stem_of(path: str | PathLike[str]) -> str:
    name = Path(path).name
    if not name.endswith(RANGE_SUFFIX):
        raise ScanFormatError(path, f"a Texas-3DFRD range image is named '<stem>{RANGE_SUFFIX}'")
    return name[: -len(RANGE_SUFFIX)]


def read_fiducials(path: str | PathLike[str]) -> np.ndarray:
    values = parse_numbers(read_text(path), path, "fiducial coordinates")
    if values.size != 2 * N_FIDUCIALS:
        raise ScanFormatError(path, f"expected {N_FIDUCIALS} 'col row' pairs, found {values.size} numbers")
    if not np.isfinite(values).all():
        raise ScanFormatError(path, "NaN/inf fiducial coordinates")
    return values.reshape(N_FIDUCIALS, 2)


def write_fiducials(pixels: np.ndarray) -> bytes:
    return "".join(f"{c:.2f} {r:.2f}\n" for c, r in pixels).encode("ascii")


def write_range(path: str | PathLike[str], depth: np.ndarray) -> None:
    """Write a depth image (grey levels, 0 = no data) as 8-bit when it fits, else 16-bit."""
    write_image(path, depth.astype(np.uint8 if depth.max() < 256 else np.uint16))


def read_texas(path: str | PathLike[str], texture: bool = True, pixel_mm: float = PIXEL_MM, level_mm: float = PIXEL_MM) -> Scan:
    p = Path(path)
    stem = stem_of(p)
    image = read_image(p, mode="I")
    rows, cols = image.shape
    rs, cs = valid_window(image > 0)  # the coordinates are made only around the face, not for the background
    depth = image[rs, cs].astype(np.float64)
    r, c = np.mgrid[rs, cs]
    points = np.stack([(c - (cols - 1) / 2) * pixel_mm, ((rows - 1) / 2 - r) * pixel_mm, depth * level_mm], -1)
    uv = np.stack([(c + 0.5) / cols, 1.0 - (r + 0.5) / rows], -1)
    meta = ScanMeta(format="texas3d", path=str(p), dataset="texas3d", subject=stem.split("_")[0] or None, extra={"stem": stem})
    scan, vertex_of_pixel = grid_scan(p, points, depth > 0, rows_up=False, meta=meta, uv=uv, origin=(rs.start, cs.start),
                                      full_shape=(rows, cols))
    fid = p.with_name(stem + "_Fiducials.txt")
    if fid.exists():
        pix = read_fiducials(fid)
        cc, rr = np.round(pix[:, 0]).astype(int), np.round(pix[:, 1]).astype(int)
        if (cc < 0).any() or (cc >= cols).any() or (rr < 0).any() or (rr >= rows).any():
            raise ScanFormatError(fid, f"fiducial outside the {cols} x {rows} image")
        ids = vertex_of_pixel[rr * cols + cc]
        pts = np.where(ids[:, None] >= 0, scan.vertices[np.maximum(ids, 0)], np.nan)
        names = tuple(f"texas_{i + 1:02d}" for i in range(N_FIDUCIALS))
        scan = scan.with_landmarks(Landmarks(names, pts, ids, source="fiducials"))
    portrait = p.with_name(stem + "_Portrait.png")
    if texture and portrait.exists():
        scan = replace(scan, texture=read_image(portrait))
    return scan
