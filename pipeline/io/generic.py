"""Generic meshes (.obj, .ply, .stl, .off) through trimesh, in the file's own vertex order."""

from __future__ import annotations

import io
from os import PathLike
from pathlib import Path

import numpy as np
import trimesh

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.io.text import read_bytes
from facepipe.pipeline.scan import Scan, make_scan
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
    return loaded


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
    return make_scan(path, np.asarray(mesh.vertices), np.asarray(mesh.faces), meta, **kw)


def read_generic(path: str | PathLike[str], texture: bool = True) -> Scan:
    p = Path(path)
    return scan_from_trimesh(load_trimesh(p), p, ScanMeta(format=p.suffix.lower().lstrip("."), path=str(p)), texture)
