"""BU-3DFE: `_F3D.wrl` / `_RAW.wrl` VRML scans with `.bnd` 83-point landmarks, `.bmp` texture, `_RAW.pse`."""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.landmark_sets import BU83_NAMES
from facepipe.pipeline.geometry.scan import Landmarks, Scan
from facepipe.pipeline.io.text import parse_numbers, read_text
from facepipe.pipeline.io.vrml import read_vrml_scan
from facepipe.schemas.scan import ScanMeta

NAME = re.compile(r"^(?P<subject>[FM]\d{4})_(?P<expr>AN|DI|FE|HA|SA|SU|NE)(?P<level>\d{2})(?P<race>WH|BL|AE|AM|IN|LA)_(?P<kind>F3D|RAW)$")
EXPRESSIONS = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "SA": "sadness", "SU": "surprise", "NE": "neutral"}


def parse_name(path: str | PathLike[str]) -> dict[str, str | int | None]:
    """Subject, expression, intensity and race from a BU-3DFE file name; empty when it does not match."""
    m = NAME.match(Path(path).name.split(".")[0])
    if not m:
        return {}
    return {"subject": m["subject"], "expression": m["expr"], "intensity": int(m["level"]), "race": m["race"], "kind": m["kind"]}


def read_bnd(path: str | PathLike[str], n_vertices: int | None = None) -> Landmarks:
    """The 83 `<index> x y z` lines; any whitespace separates, a trailing empty line is allowed."""
    rows = [line.split() for line in read_text(path).splitlines() if line.strip()]
    if len(rows) != 83:
        raise ScanFormatError(path, f"a .bnd file has 83 landmark lines, found {len(rows)}")
    if any(len(r) != 4 for r in rows):
        bad = next(i for i, r in enumerate(rows) if len(r) != 4)
        raise ScanFormatError(path, f"line {bad + 1}: expected '<index> x y z', found {len(rows[bad])} fields")
    values = parse_numbers(" ".join(" ".join(r) for r in rows), path, "landmarks").reshape(83, 4)
    ids = values[:, 0]
    if np.any(ids != np.round(ids)) or ids.min() < 0:
        raise ScanFormatError(path, "landmark vertex indices must be non-negative integers")
    if n_vertices is not None and ids.max() >= n_vertices:
        raise ScanFormatError(path, f"landmark vertex index {int(ids.max())} is out of range for a scan of {n_vertices} vertices")
    if not np.isfinite(values[:, 1:]).all():
        raise ScanFormatError(path, "NaN/inf landmark coordinates")
    return Landmarks(BU83_NAMES, values[:, 1:].copy(), ids.astype(np.int64), source="bnd")


def write_bnd(ids: np.ndarray, points: np.ndarray, sep: Literal["tab", "space"] = "tab", trailing_blank: bool = False) -> bytes:
    """83 lines `<index> x y z` as the database ships them (tab- or space-separated)."""
    if len(ids) != 83 or np.shape(points) != (83, 3):
        raise ValueError("a .bnd file holds exactly 83 landmarks")
    s = "\t\t" if sep == "tab" else " "
    body = "".join(f"{int(i)}{s}{x:.4f}{s}{y:.4f}{s}{z:.4f}\n" for i, (x, y, z) in zip(ids, points))
    return (body + ("\n" if trailing_blank else "")).encode("ascii")


def read_pse(path: str | PathLike[str]) -> Landmarks:
    """`_RAW.pse`: 8 `<id> x y z` lines in the RAW scan's frame; lines starting with 'n' are pose normals."""
    rows = [line.split() for line in read_text(path).splitlines() if line.strip() and not line.lstrip().startswith("n")]
    if len(rows) != 8 or any(len(r) != 4 for r in rows):
        raise ScanFormatError(path, f"a .pse file has 8 '<id> x y z' lines besides the normals, found {len(rows)}")
    values = parse_numbers(" ".join(" ".join(r) for r in rows), path, "pose points").reshape(8, 4)
    if not np.isfinite(values).all():
        raise ScanFormatError(path, "NaN/inf pose points")
    names = tuple(f"pse_{int(i)}" for i in values[:, 0])
    return Landmarks(names, values[:, 1:].copy(), None, source="pse")


def write_pse(ids: np.ndarray, points: np.ndarray, normals: np.ndarray) -> bytes:
    lines = [f"n {a:.6f} {b:.6f} {c:.6f}" for a, b, c in normals]
    lines += [f"{int(i)} {x:.6f} {y:.6f} {z:.6f}" for i, (x, y, z) in zip(ids, points)]
    return ("\n".join(lines) + "\n").encode("ascii")


def read_bu3dfe(path: str | PathLike[str], texture: bool = True) -> Scan:
    """An F3D or RAW scan with its `.bnd` (F3D) or `.pse` (RAW) landmarks when present beside it."""
    p = Path(path)
    info = parse_name(p)
    meta = ScanMeta(format="bu3dfe", path=str(p), dataset="bu3dfe")
    if info:
        meta = ScanMeta(format="bu3dfe", path=str(p), dataset="bu3dfe", subject=str(info["subject"]),
                        expression=str(info["expression"]), intensity=int(info["intensity"] or 0),
                        extra={"race": str(info["race"]), "kind": str(info["kind"])})
    scan = read_vrml_scan(p, meta, texture)
    stem = p.name[: -len(".wrl")] if p.name.endswith(".wrl") else p.stem
    bnd, pse = p.with_name(stem + ".bnd"), p.with_name(stem + ".pse")
    if bnd.exists():
        return scan.with_landmarks(read_bnd(bnd, len(scan.vertices)))
    if pse.exists():
        return scan.with_landmarks(read_pse(pse))
    return scan
