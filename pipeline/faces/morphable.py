"""Morphable face models: a mean mesh, identity and expression bases, named landmark vertices.

A face is `mean + identity_weights . identity + expression_weights . expression`, in mm, in the
project frame (+x the subject's left, +y up, +z out of the face). Landmarks are groups of vertices
whose mean is the landmark, because some (an eye centre) are not vertices of any face mesh.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from facepipe.pipeline.faces.landmark_sets import BOSPHORUS22, BOSPHORUS_FROM_IBUG, BU3DFE_FROM_IBUG, FIVE

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


def mouth_region(mean: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """Vertex ids of the mouth (for the Laplacian loss): within a third of the mouth width of the lip
    landmarks (iBUG 48-67), so the lips and what the jaw opens between them."""
    width = np.linalg.norm(lips[6] - lips[0])  # iBUG 54 - 48: the mouth corners
    d = np.linalg.norm(mean[:, None, :] - lips[None, :, :], axis=2).min(1)
    return np.flatnonzero(d < width / 3)


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
    out = np.full(len(BOSPHORUS22), -1, np.int64)
    for k, name in enumerate(BOSPHORUS22):
        if name in BOSPHORUS_FROM_IBUG and np.isfinite(ibug_points[BOSPHORUS_FROM_IBUG[name]]).all():
            out[k] = int(np.argmin(np.linalg.norm(mean - ibug_points[BOSPHORUS_FROM_IBUG[name]], axis=1)))
    return out


def ibug_regions(mean: np.ndarray, ibug_points: np.ndarray) -> dict[str, np.ndarray]:
    """The template regions of a model with an iBUG-68 markup (68 points, one per landmark)."""
    return {"mouth": mouth_region(mean, ibug_points[48:68]), "bu3dfe83": bu3dfe_from_ibug(mean, ibug_points),
            "bosphorus22": bosphorus_from_ibug(mean, ibug_points)}
