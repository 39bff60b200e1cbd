"""Morphable face models: a mean mesh, identity and expression bases, named landmark vertices.

A face is `mean + identity_weights . identity + expression_weights . expression`, in mm, in the
project frame (+x the subject's left, +y up, +z out of the face). Landmarks are groups of vertices
whose mean is the landmark, because some (an eye centre) are not vertices of any face mesh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from os import PathLike
from pathlib import Path

import numpy as np

from facepipe.pipeline.errors import ScanFormatError

FIVE = ("right_eye_centre", "left_eye_centre", "nose_tip", "mouth_right", "mouth_left")


@dataclass(frozen=True, eq=False)
class MorphableModel:
    name: str
    mean: np.ndarray  # (V, 3) float64, mm
    triangles: np.ndarray  # (F, 3) int64
    identity: np.ndarray  # (Ki, V, 3) float32 offsets in mm; weights ~ N(0, 1)
    expression: np.ndarray  # (Ke, V, 3) float32 offsets in mm
    expression_names: tuple[str, ...] = ()
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)  # name -> vertex ids averaged
    face_vertices: int | None = None  # the first n vertices form the face region (None: all)
    license: str = ""
    regions: dict[str, np.ndarray] = field(default_factory=dict)  # name -> vertex ids ('face', 'mouth', 'bu3dfe83' in order)
    landmark_weights: dict[str, np.ndarray] = field(default_factory=dict)  # name -> weights of its vertex group (barycentric)
    expression_kind: str = "blendshape"  # 'blendshape': weights in [0, 1], a few at a time; 'pca': all ~ N(0, 1)

    def shape(self, identity: np.ndarray | None = None, expression: np.ndarray | None = None) -> np.ndarray:
        """(V, 3) vertices in mm for the given weights (missing weights are zero)."""
        v = self.mean.copy()
        if identity is not None:
            v += np.tensordot(np.asarray(identity, np.float64), self.identity[: len(identity)], 1)
        if expression is not None:
            v += np.tensordot(np.asarray(expression, np.float64), self.expression[: len(expression)], 1)
        return v

    @cached_property
    def id(self) -> str:
        """Content hash of the geometry and bases: a store records it, so a changed model file is noticed."""
        h = hashlib.sha256()
        for a in (self.mean, self.triangles, self.identity, self.expression):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def landmark_points(self, vertices: np.ndarray, names: tuple[str, ...] = FIVE) -> np.ndarray:
        """(L, 3) landmarks of a face of this model (weighted where the model embeds them barycentrically)."""
        return np.stack([np.average(vertices[self.landmarks[n]], axis=0, weights=self.landmark_weights.get(n)) for n in names])


# 0-based iBUG-68 ids: 36-41 the subject's right eye, 42-47 the left, 30 the nose tip, 48/54 mouth corners
IBUG68_FIVE = {"right_eye_centre": list(range(36, 42)), "left_eye_centre": list(range(42, 48)),
               "nose_tip": [30], "mouth_right": [48], "mouth_left": [54]}


def mouth_region(mean: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """Vertex ids of the mouth (for the Laplacian loss): within a third of the mouth width of the lip
    landmarks (iBUG 48-67), so the lips and what the jaw opens between them."""
    width = np.linalg.norm(lips[6] - lips[0])  # iBUG 54 - 48: the mouth corners
    d = np.linalg.norm(mean[:, None, :] - lips[None, :, :], axis=2).min(1)
    return np.flatnonzero(d < width / 3)


# BU-3DFE landmark (0-based) -> the iBUG-68 points (0-based) it matches, averaged: eye corners and lids,
# alae, mouth corners and lip middles, chin tip. Brows, nose ridge and contour are defined differently.
BU3DFE_FROM_IBUG = {0: [39], 1: [38], 2: [37, 38], 3: [37], 4: [36], 5: [41], 6: [40, 41], 7: [40],
                    8: [42], 9: [43], 10: [43, 44], 11: [44], 12: [45], 13: [46], 14: [46, 47], 15: [47],
                    39: [31], 44: [35], 48: [48], 51: [51], 54: [54], 57: [57], 75: [8]}


# Bosphorus landmark name -> iBUG-68 point (0-based); the nose saddle points have no iBUG counterpart
BOSPHORUS_FROM_IBUG = {"right_brow_outer": 17, "right_brow_middle": 19, "right_brow_inner": 21, "left_brow_inner": 22,
                       "left_brow_middle": 24, "left_brow_outer": 26, "right_eye_outer": 36, "right_eye_inner": 39,
                       "left_eye_inner": 42, "left_eye_outer": 45, "nose_ala_right": 31, "nose_tip": 30, "nose_ala_left": 35,
                       "mouth_right": 48, "upper_lip_outer_middle": 51, "mouth_left": 54, "upper_lip_inner_middle": 62,
                       "lower_lip_inner_middle": 66, "lower_lip_outer_middle": 57, "chin_middle": 8}


def bu3dfe_from_ibug(mean: np.ndarray, ibug_points: np.ndarray) -> np.ndarray:
    """(83,) vertex ids for the BU-3DFE landmarks an iBUG-68 markup determines, -1 for the others."""
    out = np.full(83, -1, np.int64)
    for bu, ids in BU3DFE_FROM_IBUG.items():
        target = ibug_points[ids].mean(0)
        if np.isfinite(target).all():  # FLAME, for one, has no jaw-line (chin) landmark
            out[bu] = int(np.argmin(np.linalg.norm(mean - target, axis=1)))
    return out


def bosphorus_from_ibug(mean: np.ndarray, ibug_points: np.ndarray) -> np.ndarray:
    """(22,) vertex ids for the Bosphorus landmarks (file order) that iBUG-68 determines, -1 for the others."""
    from facepipe.pipeline.evaluation import BOSPHORUS22

    out = np.full(len(BOSPHORUS22), -1, np.int64)
    for k, name in enumerate(BOSPHORUS22):
        if name in BOSPHORUS_FROM_IBUG and np.isfinite(ibug_points[BOSPHORUS_FROM_IBUG[name]]).all():
            out[k] = int(np.argmin(np.linalg.norm(mean - ibug_points[BOSPHORUS_FROM_IBUG[name]], axis=1)))
    return out


def ibug_regions(mean: np.ndarray, ibug_points: np.ndarray) -> dict[str, np.ndarray]:
    """The template regions of a model with an iBUG-68 markup (68 points, one per landmark)."""
    return {"mouth": mouth_region(mean, ibug_points[48:68]), "bu3dfe83": bu3dfe_from_ibug(mean, ibug_points),
            "bosphorus22": bosphorus_from_ibug(mean, ibug_points)}


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


def _loaders() -> dict[str, Callable[[str | PathLike[str]], MorphableModel]]:
    from facepipe.pipeline.io.bfm import load_bfm2009
    from facepipe.pipeline.io.flame import load_flame
    from facepipe.pipeline.io.ict import load_ict_folder

    def load_ict(path: str | PathLike[str]) -> MorphableModel:
        return load_ict_npz(path) if Path(path).suffix == ".npz" else load_ict_folder(path)

    return {"ict": load_ict, "bfm2009": load_bfm2009, "flame": load_flame}


MODEL_FILES = ("ict", "bfm2009", "flame")
MODEL_KINDS = ("procedural", *MODEL_FILES)


def load_model(kind: str, path: str | PathLike[str] | None = None) -> MorphableModel:
    """A model by kind: the built-in procedural one, or a file of one of the loaders; errors name what is wrong."""
    if kind == "procedural":
        if path is not None:
            raise ScanFormatError(str(path), "the procedural model is built in: it takes no --model-path")
        from facepipe.pipeline.procedural import procedural_model

        return procedural_model()
    if kind not in MODEL_FILES:
        raise ScanFormatError(str(path or kind), f"unknown model kind {kind!r} (have: {', '.join(MODEL_KINDS)})")
    if path is None:
        raise ScanFormatError(kind, f"the {kind} model needs --model-path (its file on your disk)")
    return _loaders()[kind](path)
