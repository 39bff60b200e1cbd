"""BJUT-3D (Cyberware scans). Two layouts are reported; no real file was available, so both are
enforced strictly as assumed here:

text:   `Vertex <id> X= <x> Y= <y> Z= <z>` lines (optionally `R= G= B=` 0-255 after them), then
        `Face <id> <a> <b> <c>` lines with 1-based vertex ids.
binary: little-endian int32 vertex count, int32 face count, float32 xyz per vertex, float32 rgb per
        vertex (0-255), then int32 triples of 0-based vertex ids.
"""

from __future__ import annotations

import re
import struct
from os import PathLike
from pathlib import Path

import numpy as np

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.scan import Scan, make_scan
from facepipe.pipeline.io.text import CUT_LINE, ends_mid_line, parse_numbers, read_bytes
from facepipe.schemas.scan import ScanMeta

_VERTEX = re.compile(r"^\s*Vertex\s+(\d+)\s+X=\s*(\S+)\s+Y=\s*(\S+)\s+Z=\s*(\S+)(?:\s+R=\s*(\S+)\s+G=\s*(\S+)\s+B=\s*(\S+))?\s*$")
_FACE = re.compile(r"^\s*Face\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")


def is_bjut_text(data: bytes) -> bool:
    return data.lstrip()[:6] == b"Vertex"


def parse_bjut_text(text: str, path: str | PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Vertex and Face lines; their ids must count up from 1, so a dropped or doubled line is an error."""
    verts, cols, faces = [], [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if m := _VERTEX.match(line):
            verts.append(m.group(2, 3, 4))
            if m.group(5) is not None:
                cols.append(m.group(5, 6, 7))
            ident, expected = int(m.group(1)), len(verts)
        elif m := _FACE.match(line):
            faces.append(m.group(2, 3, 4))
            ident, expected = int(m.group(1)), len(faces)
        else:
            raise ScanFormatError(path, f"line {n}: neither a 'Vertex ... X= Y= Z=' nor a 'Face id a b c' line")
        if ident != expected:
            raise ScanFormatError(path, f"line {n}: id {ident} where {expected} comes next (a line is missing or doubled)")
    if cols and len(cols) != len(verts):
        raise ScanFormatError(path, "some vertices have colours and others do not")
    v = parse_numbers(" ".join(" ".join(t) for t in verts), path, "vertex coordinates").reshape(-1, 3)
    f = parse_numbers(" ".join(" ".join(t) for t in faces), path, "face indices", np.int64).reshape(-1, 3) - 1
    c = parse_numbers(" ".join(" ".join(t) for t in cols), path, "colours").reshape(-1, 3) if cols else None
    return v, f, c


def write_bjut_text(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> bytes:
    lines = []
    for i, (x, y, z) in enumerate(vertices):
        col = "" if colors is None else " R= {} G= {} B= {}".format(*(int(k) for k in colors[i]))
        lines.append(f"Vertex {i + 1} X= {x:.6f} Y= {y:.6f} Z= {z:.6f}{col}")
    lines += [f"Face {i + 1} {a + 1} {b + 1} {c + 1}" for i, (a, b, c) in enumerate(faces)]
    return ("\n".join(lines) + "\n").encode("ascii")


def parse_bjut_binary(data: bytes, path: str | PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(data) < 8:
        raise ScanFormatError(path, "truncated BJUT-3D header")
    nv, nf = struct.unpack_from("<ii", data, 0)
    if nv <= 0 or nf <= 0:
        raise ScanFormatError(path, f"header says {nv} vertices and {nf} faces")
    need = 8 + nv * 24 + nf * 12
    if len(data) != need:
        raise ScanFormatError(path, f"header says {nv} vertices and {nf} faces ({need} bytes) but the file has {len(data)} bytes")
    xyz = np.frombuffer(data, "<f4", nv * 3, 8).reshape(nv, 3).astype(np.float64)
    rgb = np.frombuffer(data, "<f4", nv * 3, 8 + nv * 12).reshape(nv, 3)
    faces = np.frombuffer(data, "<i4", nf * 3, 8 + nv * 24).reshape(nf, 3).astype(np.int64)
    return xyz, faces, rgb


def write_bjut_binary(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray) -> bytes:
    return (struct.pack("<ii", len(vertices), len(faces)) + np.asarray(vertices, "<f4").tobytes()
            + np.asarray(colors, "<f4").tobytes() + np.asarray(faces, "<i4").tobytes())


def read_bjut(path: str | PathLike[str], texture: bool = True) -> Scan:
    p = Path(path)
    data = read_bytes(p)
    warnings: tuple[str, ...] = ()
    if is_bjut_text(data):
        v, f, c = parse_bjut_text(data.decode("latin-1"), p)
        warnings = (CUT_LINE,) if ends_mid_line(data) else ()
    else:
        v, f, c = parse_bjut_binary(data, p)
    if c is not None and ((c < 0).any() or (c > 255).any() or not np.isfinite(c).all()):
        raise ScanFormatError(p, "vertex colours must lie in 0..255")
    meta = ScanMeta(format="bjut3d", path=str(p), dataset="bjut3d", subject=p.stem)
    return make_scan(p, v, f, meta, colors=None if c is None else np.round(c).astype(np.uint8), warnings=warnings)
