"""Generic meshes (.obj, .ply, .stl, .off) through trimesh, in the file's own vertex order."""

from __future__ import annotations

import io
from os import PathLike
from pathlib import Path

import numpy as np
import trimesh

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.scan import Scan, make_scan
from facepipe.pipeline.io.text import CUT_LINE, ends_mid_line, read_bytes
from facepipe.schemas.scan import ScanMeta

EXTENSIONS = (".obj", ".ply", ".stl", ".off")


def load_trimesh(path: str | PathLike[str]) -> trimesh.Trimesh:
    """One Trimesh from a file, scenes concatenated; process=False keeps vertex order and count."""
    p = Path(path)
    kind = p.suffix.lower().lstrip(".")
    if f".{kind}" not in EXTENSIONS:
        raise ScanFormatError(p, f"unknown mesh extension {p.suffix!r} (known: {', '.join(EXTENSIONS)})")
    data = read_bytes(p)
    if not data.strip():
        raise ScanFormatError(p, "the file is empty")
    declared = declared_counts(data, kind, p)
    try:
        loaded = trimesh.load(io.BytesIO(data), file_type=kind, process=False, maintain_order=True,
                              resolver=trimesh.resolvers.FilePathResolver(str(p.parent)) if p.parent.exists() else None)
    except Exception as exc:  # trimesh raises many unrelated types on broken input
        raise ScanFormatError(p, f"unreadable {kind.upper()}: {type(exc).__name__}: {exc}") from None
    if isinstance(loaded, trimesh.Scene):
        meshes = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)] if loaded.geometry else []
        if not meshes:
            raise ScanFormatError(p, "the file holds no triangle mesh")
        loaded = trimesh.util.concatenate(meshes)
    if not isinstance(loaded, trimesh.Trimesh):
        raise ScanFormatError(p, f"the file holds a {type(loaded).__name__}, not a triangle mesh")
    if declared is not None and len(loaded.vertices) != declared[0]:
        raise ScanFormatError(p, f"the header declares {declared[0]} vertices but {len(loaded.vertices)} were read")
    return loaded


def declared_counts(data: bytes, kind: str, path: str | PathLike[str]) -> tuple[int, int] | None:
    """(vertices, faces) a PLY or OFF header declares, after checking that a text body holds that many lines.

    trimesh reads a text PLY or OFF cut short without a word (the cut last line even becomes a
    wrong triangle); the declared counts are the only evidence of the cut, so they are enforced.
    """
    if kind == "ply":
        head, sep, body = data.partition(b"end_header")
        if not sep or not head.startswith(b"ply"):
            return None  # trimesh reports what is wrong with it
        lines = head.decode("latin-1").splitlines()
        counts = {parts[1]: int(parts[2]) for parts in (ln.split() for ln in lines)
                  if len(parts) == 3 and parts[0] == "element" and parts[2].isdigit()}
        if any("format ascii" in ln for ln in lines):
            _check_lines(body.partition(b"\n")[2], sum(counts.values()), path, "PLY")
        return counts.get("vertex", 0), counts.get("face", 0)
    if kind == "off":
        rows = [ln.split() for ln in data.decode("latin-1").splitlines()]
        rows = [r for r in rows if r and not r[0].startswith("#")]
        first = rows[0] if rows else []
        if not first or not first[0].endswith("OFF"):
            return None
        header = first[1:] if len(first) > 1 else (rows[1] if len(rows) > 1 else [])
        if len(header) < 2 or not all(t.isdigit() for t in header[:2]):
            raise ScanFormatError(path, "OFF header without '<vertices> <faces> <edges>' counts")
        nv, nf = int(header[0]), int(header[1])
        have = len(rows) - (1 if len(first) > 1 else 2)
        if have < nv + nf:
            raise ScanFormatError(path, f"the header declares {nv} vertices and {nf} faces ({nv + nf} lines) but only "
                                  f"{have} follow (truncated?)")
        return nv, nf
    return None


def _check_lines(body: bytes, expected: int, path: str | PathLike[str], what: str) -> None:
    have = sum(1 for ln in body.splitlines() if ln.strip())
    if have < expected:
        raise ScanFormatError(path, f"the {what} header declares {expected} element lines but only {have} follow (truncated?)")


def scan_from_trimesh(mesh: trimesh.Trimesh, path: str | PathLike[str], meta: ScanMeta, texture: bool = True) -> Scan:
    """Geometry plus what the file carried: normals and colours per vertex, UVs and texture image."""
    kw: dict[str, object] = {}
    if "vertex_normals" in mesh._cache and len(mesh._cache["vertex_normals"]) == len(mesh.vertices):
        kw["normals"] = np.asarray(mesh._cache["vertex_normals"], np.float64)
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind == "vertex":
        kw["colors"] = np.asarray(visual.vertex_colors)[:, :3].astype(np.uint8)
    elif isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None and len(visual.uv) == len(mesh.vertices):
        kw["uv"] = np.asarray(visual.uv, np.float64)
        image = getattr(visual.material, "image", None) or getattr(visual.material, "baseColorTexture", None)
        if texture and image is not None:
            kw["texture"] = np.asarray(image.convert("RGB"))
    return make_scan(path, np.asarray(mesh.vertices), np.asarray(mesh.faces), meta, warnings=text_warnings(path), **kw)


def text_warnings(path: str | PathLike[str]) -> tuple[str, ...]:
    """A text mesh whose last line has no newline may be cut there, and no count in it says so."""
    p = Path(path)
    if p.suffix.lower() not in (".obj", ".ply", ".off"):
        return ()
    with p.open("rb") as fh:
        if p.suffix.lower() == ".ply" and b"format ascii" not in fh.read(512):
            return ()
        fh.seek(max(0, p.stat().st_size - 64))
        return (CUT_LINE,) if ends_mid_line(fh.read()) else ()


def read_generic(path: str | PathLike[str], texture: bool = True) -> Scan:
    p = Path(path)
    return scan_from_trimesh(load_trimesh(p), p, ScanMeta(format=p.suffix.lower().lstrip("."), path=str(p)), texture)


def write_point_cloud(path: str | PathLike[str], points: np.ndarray, normals: np.ndarray) -> Path:
    """Points with normals as a PLY (binary, what point-cloud viewers and open3d read)."""
    import open3d as o3d

    out = Path(path)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    cloud.normals = o3d.utility.Vector3dVector(np.asarray(normals, np.float64))
    out.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(out), cloud):
        raise ScanFormatError(out, "could not write the point cloud")
    return out
