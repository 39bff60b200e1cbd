"""Cropping an aligned scan to the template's region, keeping the triangles that survive whole."""

from __future__ import annotations

import numpy as np

from facepipe.pipeline.geometry.scan import compact


def region_mask(points: np.ndarray, box: float = 1.0, center: np.ndarray | None = None,
                radius: float | None = None) -> np.ndarray:
    """Points inside the cube [-box, box]^3 and, when `radius` is set, within it of `center` (the nose tip)."""
    keep = (np.abs(points) <= box).all(1)
    if radius is not None and center is not None and np.isfinite(center).all():
        keep &= ((points - center) ** 2).sum(1) <= radius**2
    return keep


def crop_mesh(vertices: np.ndarray, faces: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles whose three corners are kept, and only the vertices they use.

    Returns (vertices, faces, old index of each kept vertex).
    """
    f = faces[keep[faces].all(1)]
    return compact(vertices, f)
