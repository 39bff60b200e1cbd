"""ICT-FaceKit's original `FaceXModel/` folder: OBJ morph targets in centimetres.

Layout: `generic_neutral_mesh.obj` (quads), `identity000.obj`.. (one full mesh per identity mode,
for weights ~ N(0, 1)), one OBJ per expression named in `vertex_indices.json` under `expressions`
(ARKit names, weights in [0, 1]), and in that JSON `idx_to_landmark_verts`: the 68 iBUG landmark
vertex ids. Every OBJ has the neutral's vertices in the same order; a mode is its mesh minus the
neutral. The model is kept to the face area (the first 9,409 vertices, as in the compact npz) and
templates cut from it use the narrow face (the first 6,706: no ears, no neck).
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.landmark_sets import IBUG68_FIVE
from facepipe.pipeline.faces.morphable import MorphableModel, ibug_regions

CM_TO_MM = 10.0
FACE_AREA = 9409
NARROW_FACE = 6706


def read_obj(path: Path, faces: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Vertices in file order and fan-triangulated faces of an OBJ, positions only.

    Not trimesh: it splits vertices along texture seams, and morph targets must keep the file's
    vertex numbering exactly.
    """
    try:
        text = path.read_text(encoding="ascii", errors="replace").splitlines()
        v = np.array([ln.split()[1:4] for ln in text if ln.startswith("v ")], dtype=np.float64)
        tris: list[list[int]] = []
        if faces:
            for ln in text:
                if ln.startswith("f "):
                    ids = [int(tok.split("/")[0]) for tok in ln.split()[1:]]
                    ids = [i - 1 if i > 0 else len(v) + i for i in ids]
                    tris += [[ids[0], ids[k], ids[k + 1]] for k in range(1, len(ids) - 1)]
    except (OSError, ValueError, IndexError) as exc:
        raise ScanFormatError(path, f"unreadable OBJ ({exc})") from None
    if v.ndim != 2 or len(v) == 0 or v.shape[1] != 3:
        raise ScanFormatError(path, "an OBJ without vertices")
    return v, np.array(tris, np.int64).reshape(-1, 3)


def load_ict_folder(path: str | PathLike[str]) -> MorphableModel:
    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    index_path = folder / "vertex_indices.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        names, ibug = list(index["expressions"]), np.array(index["idx_to_landmark_verts"], np.int64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ScanFormatError(index_path, f"needs 'expressions' and 'idx_to_landmark_verts' ({type(exc).__name__}: {exc})") from None
    neutral, faces = read_obj(folder / "generic_neutral_mesh.obj")
    n = min(FACE_AREA, len(neutral))
    faces = faces[(faces < n).all(1)]
    if len(ibug) != 68 or ibug.max() >= n:
        raise ScanFormatError(index_path, f"idx_to_landmark_verts must be 68 vertex ids of the face area (< {n})")

    def modes(paths: list[Path]) -> np.ndarray:
        out = np.empty((len(paths), n, 3), np.float32)
        for k, p in enumerate(paths):
            v, _ = read_obj(p, faces=False)
            if len(v) != len(neutral):
                raise ScanFormatError(p, f"{len(v)} vertices, the neutral mesh has {len(neutral)}")
            out[k] = (v[:n] - neutral[:n]) * CM_TO_MM
        return out

    identity_paths = sorted(folder.glob("identity[0-9][0-9][0-9].obj"))
    if not identity_paths:
        raise ScanFormatError(folder, "no identity###.obj files")
    missing = [name for name in names if not (folder / f"{name}.obj").exists()]
    if missing:
        raise ScanFormatError(folder, f"expression meshes missing: {', '.join(missing[:5])}")
    landmarks = {name: ibug[ids] for name, ids in IBUG68_FIVE.items()} | {f"ibug{k:02d}": ibug[k:k + 1] for k in range(68)}
    mean = neutral[:n] * CM_TO_MM
    return MorphableModel("ict", mean, faces, modes(identity_paths), modes([folder / f"{m}.obj" for m in names]),
                          tuple(names), landmarks, min(NARROW_FACE, n), "ICT-FaceKit: MIT licence (see its LICENSE)",
                          regions=ibug_regions(mean, mean[ibug]))


def load_ict_npz(path: str | PathLike[str]) -> MorphableModel:
    """The compact ICT-FaceKit face-area npz (centimetres) as a model in mm."""
    p = Path(path)
    try:
        d = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ScanFormatError(p, f"not a readable npz file ({exc})") from None
    need = {"neutral", "triangles", "identity", "expression", "landmarks_ibug68"}
    if missing := need - set(d.files):
        raise ScanFormatError(p, f"an ICT-FaceKit npz needs arrays {sorted(need)}; missing {sorted(missing)}")
    scale = {"cm": 10.0, "mm": 1.0, "m": 1000.0}[str(d["units"])] if "units" in d.files else 10.0
    mean = d["neutral"].astype(np.float64) * scale
    tri = d["triangles"].astype(np.int64)
    if mean.ndim != 2 or mean.shape[1] != 3 or tri.min() < 0 or tri.max() >= len(mean):
        raise ScanFormatError(p, f"neutral {mean.shape} and triangles (max id {tri.max()}) do not fit")
    ibug = d["landmarks_ibug68"].astype(np.int64)
    landmarks = {name: ibug[ids] for name, ids in IBUG68_FIVE.items()}
    landmarks |= {f"ibug{k:02d}": ibug[k : k + 1] for k in range(len(ibug))}
    n_face = int(d["narrow_face_vertex_count"]) if "narrow_face_vertex_count" in d.files else None
    return MorphableModel("ict", mean, tri, (d["identity"] * scale).astype(np.float32),
                          (d["expression"] * scale).astype(np.float32),
                          tuple(str(n) for n in d["expression_names"]) if "expression_names" in d.files else (),
                          landmarks, n_face, str(d["license"]) if "license" in d.files else "",
                          regions=ibug_regions(mean, mean[ibug]))
