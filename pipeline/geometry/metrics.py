"""Errors of a correspondence, in mm: dense vertex error, the five alignment landmarks, BU-3DFE regions.

Everything is computed in the template frame and divided by the similarity's scale, so errors are
in the scan's own millimetres whatever its size in the template frame.
"""

from __future__ import annotations

import numpy as np


def mm_errors(pred: np.ndarray, truth: np.ndarray, scale: float) -> np.ndarray:
    """Per-point Euclidean distance in mm of two template-frame point sets (scale: template units per mm)."""
    return np.linalg.norm(np.asarray(pred) - np.asarray(truth), axis=-1) / scale


def nme(pred: np.ndarray, truth: np.ndarray, eyes: np.ndarray) -> float:
    """Mean per-vertex error divided by the inter-ocular distance (same units; `eyes` (2, 3))."""
    return float(np.linalg.norm(pred - truth, axis=-1).mean() / np.linalg.norm(eyes[1] - eyes[0]))


def region_errors(errors_by_landmark: np.ndarray, available: np.ndarray,
                  regions: dict[str, list[int]]) -> dict[str, tuple[float, float, int]]:
    """(mean, std, count) per region (1-based landmark ids, e.g. `landmark_sets.BU3DFE_REGIONS`) over
    (N, L) landmark errors; `available` masks what was measured."""
    out = {}
    for name, ids in regions.items():
        cols = np.array(ids) - 1
        values = errors_by_landmark[:, cols][available[:, cols]]
        if len(values):
            out[name] = (float(values.mean()), float(values.std()), int(len(values)))
    return out


def roughness(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """Mean length of the uniform Laplacian (each vertex minus the mean of its neighbours), in the
    vertices' units: per-vertex noise raises it, a smooth surface keeps it at its curvature's level,
    so learned meshes can be held against NICP's on the same scan."""
    from scipy import sparse

    edges = np.unique(np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0)
    n = len(vertices)
    adjacency = sparse.coo_matrix((np.ones(2 * len(edges)), (edges.ravel(), edges[:, ::-1].ravel())), shape=(n, n)).tocsr()
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    used = degree > 0
    lap = vertices[used] - (adjacency @ vertices)[used] / degree[used, None]
    return float(np.linalg.norm(lap, axis=1).mean())
