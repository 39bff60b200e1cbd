"""MICC Florence: 3dMD models `subject_XX/Model/<capture>/{obj,vrml}/<timestamp>.{obj,wrl}`, in mm."""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

from facepipe.pipeline.geometry.scan import Scan
from facepipe.pipeline.io.generic import load_trimesh, scan_from_trimesh
from facepipe.pipeline.io.vrml import document_to_scan, read_vrml
from facepipe.schemas.scan import ScanMeta

SUBJECT = re.compile(r"^subject_(\d+)$")


def parse_path(path: str | PathLike[str]) -> dict[str, str]:
    """Subject and capture (frontal1, frontal2, sidel, sider) from the MICC folder tree."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if SUBJECT.match(part) and i + 2 < len(parts) and parts[i + 1] == "Model":
            return {"subject": part, "capture": parts[i + 2], "timestamp": Path(path).stem}
    return {}


def is_micc(path: str | PathLike[str]) -> bool:
    return bool(parse_path(path))


def read_micc(path: str | PathLike[str], texture: bool = True) -> Scan:
    p = Path(path)
    info = parse_path(p)
    meta = ScanMeta(format="micc", path=str(p), dataset="micc", subject=info.get("subject"),
                    extra={"capture": info["capture"], "timestamp": info["timestamp"]} if info else {})
    if p.suffix.lower() == ".wrl":
        return document_to_scan(read_vrml(p), p, meta)[0]
    return scan_from_trimesh(load_trimesh(p), p, meta, texture)
