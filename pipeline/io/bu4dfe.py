"""BU-4DFE: per-frame VRML scans `<root>/F001/Angry/000.wrl` with `000.jpg` and optional `000.bnd`."""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

from facepipe.pipeline.geometry.scan import Scan
from facepipe.pipeline.io.bu3dfe import read_bnd
from facepipe.pipeline.io.vrml import read_vrml_scan
from facepipe.schemas.scan import ScanMeta

EXPRESSIONS = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise")
SUBJECT = re.compile(r"^[FM]\d{3}$")


def parse_path(path: str | PathLike[str]) -> dict[str, str]:
    """Subject, expression and frame from `.../F001/Angry/000.wrl`; empty when the tree does not match."""
    p = Path(path)
    if len(p.parts) < 3 or not SUBJECT.match(p.parent.parent.name) or p.parent.name not in EXPRESSIONS:
        return {}
    return {"subject": p.parent.parent.name, "expression": p.parent.name, "frame": p.stem}


def is_bu4dfe(path: str | PathLike[str]) -> bool:
    return Path(path).suffix.lower() == ".wrl" and bool(parse_path(path))


def read_bu4dfe(path: str | PathLike[str], texture: bool = True) -> Scan:
    p = Path(path)
    info = parse_path(p)
    meta = ScanMeta(format="bu4dfe", path=str(p), dataset="bu4dfe", subject=info.get("subject"),
                    expression=info.get("expression"), extra={"frame": info["frame"]} if info else {})
    scan = read_vrml_scan(p, meta, texture)
    bnd = p.with_suffix(".bnd")
    return scan.with_landmarks(read_bnd(bnd, len(scan.vertices))) if bnd.exists() else scan
