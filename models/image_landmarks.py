"""MediaPipe's face-mesh landmarks on RGB frames, and the template vertices they mark.

The fit to an image (reconstruct's RGB branch) needs points whose place on the face it knows: the
shading alone lets the face shrink inside its outline. MediaPipe's face mesh gives 468 image points
(its 10 iris points need eyes, which face-area models lack). Where each one lies on our template
is learnt where the truth is known, from train-encoder's frames: the ray through a landmark meets
the true face (template topology) nearest some vertex; a landmark's vertex is the one nearest the
median of those over the frames, and landmarks that wander from frame to frame (the face-contour
points slide with the view, some sit where the face area ends) are left out.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from facepipe.pipeline.geometry.landmarks import MediaPipe
from facepipe.pipeline.geometry.render import Raycaster

MESH_POINTS = 468


def detect(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """(468, 2) landmark positions (col, row; OpenCV pixel centres at integers) in a `width x height`
    resize of the image, found on the image at its own size; NaN when no face is found."""
    found = MediaPipe.shared().detect(np.ascontiguousarray(rgb))
    if found is None:
        return np.full((MESH_POINTS, 2), np.nan)
    px = found[0][:MESH_POINTS]
    h, w = rgb.shape[:2]
    return np.stack([px[:, 0] * width / w - 0.5, px[:, 1] * height / h - 0.5], -1)  # MediaPipe: x in [0, 1] over the width


def rays(pixels: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(L, 6) rays from the camera centre through OpenCV pixel positions."""
    d = np.stack([(pixels[:, 0] - k[0, 2]) / k[0, 0], (pixels[:, 1] - k[1, 2]) / k[1, 1], np.ones(len(pixels))], -1)
    return np.concatenate([np.zeros_like(d), d / np.linalg.norm(d, axis=-1, keepdims=True)], -1)


def learn_embedding(landmarks: np.ndarray, k: np.ndarray, truth: np.ndarray, template_vertices: np.ndarray, triangles: np.ndarray,
                    unit_mm: float, max_spread_mm: float = 3.0, min_share: float = 0.5) -> np.ndarray:
    """(468,) the template vertex each landmark marks, -1 for those left out. `landmarks` (N, 468, 2)
    pixels and `k` (N, 3, 3) of frames whose true faces (camera space) are `truth` (N, V, 3); a
    landmark is kept when its ray meets the face in at least `min_share` of the frames and its
    vertices lie within `max_spread_mm` (median, on the template) of their median."""
    ids = np.full(landmarks.shape[:2], -1, np.int64)
    for i, (px, kk, face) in enumerate(zip(landmarks, k, truth, strict=True)):
        ok = np.isfinite(px).all(-1)
        if not ok.any():
            continue
        hits = Raycaster(face, triangles).cast(rays(px[ok], kk))
        near = cKDTree(face).query(np.nan_to_num(hits.points()))[1]
        ids[i, np.flatnonzero(ok)] = np.where(hits.mask, near, -1)
    tree = cKDTree(template_vertices)
    out = np.full(landmarks.shape[1], -1, np.int64)
    for j in range(landmarks.shape[1]):
        seen = ids[:, j][ids[:, j] >= 0]
        if len(seen) < max(1, min_share * len(ids)):
            continue
        points = template_vertices[seen]
        centre = tree.query(np.median(points, 0))[1]
        if np.median(np.linalg.norm(points - template_vertices[centre], axis=-1)) * unit_mm <= max_spread_mm:
            out[j] = centre
    return out
