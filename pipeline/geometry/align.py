"""Similarity alignment of a scan onto the template: Umeyama on landmarks, then rigid ICP on surfaces.

Transforms are 4x4 matrices acting on column vectors; the upper-left block of a similarity is s*R.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> np.ndarray:
    """4x4 similarity T minimising sum |T(src) - dst|^2 (Umeyama 1991), never a reflection.

    Rows with NaN in either set are ignored; at least three non-collinear pairs must remain.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    src, dst = src[ok], dst[ok]
    if len(src) < 3:
        raise ValueError(f"need at least 3 landmark pairs, have {len(src)}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    if sig[1] < 1e-12 * max(sig[0], 1e-300):
        raise ValueError("the landmarks are collinear: the rotation is not determined")
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / (xs**2).sum() * len(src)) if with_scale else 1.0
    t = np.eye(4)
    t[:3, :3] = scale * rot
    t[:3, 3] = mu_d - scale * rot @ mu_s
    return t


def apply(t: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ t[:3, :3].T + t[:3, 3]


def apply_to_normals(t: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Normals under a similarity turn with its rotation only."""
    n = np.asarray(normals, np.float64) @ t[:3, :3].T
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)


def scale_of(t: np.ndarray) -> float:
    return float(np.cbrt(np.linalg.det(t[:3, :3])))


def _cloud(points: np.ndarray, normals: np.ndarray | None = None) -> o3d.geometry.PointCloud:
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    if normals is not None:
        pc.normals = o3d.utility.Vector3dVector(np.asarray(normals, np.float64))
    return pc


def icp(points: np.ndarray, target_points: np.ndarray, target_normals: np.ndarray,
        max_distance: float, iterations: int = 30) -> tuple[np.ndarray, float, float]:
    """Rigid point-to-plane ICP of `points` onto the target surface (open3d).

    Returns (4x4 rigid transform, fitness = fraction of points with a partner, RMSE of those pairs).
    Pairs farther than `max_distance` are ignored, so hair, neck or a missing chin do not pull.
    """
    result = o3d.pipelines.registration.registration_icp(
        _cloud(points), _cloud(target_points, target_normals), max_distance, np.eye(4),
        o3d.pipelines.registration.TransformationEstimationPointToPlane(),
        o3d.pipelines.registration.ICPConvergenceCriteria(relative_fitness=1e-7, relative_rmse=1e-7, max_iteration=iterations))
    return np.asarray(result.transformation, np.float64).copy(), float(result.fitness), float(result.inlier_rmse)
