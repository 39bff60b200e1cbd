"""The optimisation baseline: the template registered to each scan by optimal-step non-rigid ICP.

trimesh's `nricp_amberg` (Amberg et al. 2007), guided by the five alignment landmarks, with a
stiffness schedule from stiff to loose; everything in the template frame, where the scan already is
after preprocessing, so learned and optimised correspondences are exported and evaluated alike.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import trimesh
from trimesh.registration import nricp_amberg


class Template(Protocol):
    """What registration needs of a template (`faces.template.Template` is one)."""

    vertices: np.ndarray  # (V, 3) template frame
    triangles: np.ndarray  # (F, 3)
    landmarks: np.ndarray  # (5, 3) the alignment landmarks

# (stiffness, landmark weight, normal weight, iterations): stiff and landmark-led first, then looser
STEPS = ((0.02, 10.0, 0.5, 10), (0.01, 5.0, 0.5, 10), (0.005, 2.5, 0.5, 10), (0.002, 0.0, 0.0, 10))


def landmark_vertices(template: Template) -> np.ndarray:
    """The template vertex nearest to each of its five alignment landmarks."""
    return np.linalg.norm(template.vertices[None] - template.landmarks[:, None], axis=2).argmin(1)


def landmark_offsets(template: Template) -> np.ndarray:
    """(5, 3) each landmark minus its nearest vertex: a face's landmarks are `face[ids] + offsets`.
    Not every landmark is a vertex (an eye centre lies about 5 mm behind the ICT face's eyelids), and
    pulling the vertex itself onto a scan's landmark would bend the face by that much."""
    return template.landmarks - template.vertices[landmark_vertices(template)]


def face_landmarks(face: np.ndarray, template: Template) -> np.ndarray:
    """(..., 5, 3) the five alignment landmarks of faces in the template's topology."""
    return face[..., landmark_vertices(template), :] + landmark_offsets(template)


def nicp(template: Template, points: np.ndarray, five: np.ndarray | None = None,
         steps: tuple[tuple[float, float, float, int], ...] = STEPS, distance_threshold: float = 0.1) -> np.ndarray:
    """(V, 3) template vertices registered onto the scan points (template frame)."""
    source = trimesh.Trimesh(template.vertices, template.triangles, process=False)
    target = trimesh.PointCloud(np.asarray(points, np.float64))
    use_landmarks = five is not None and np.isfinite(five).all()
    steps_used = steps if use_landmarks else tuple((ws, 0.0, wn, it) for ws, _, wn, it in steps)
    out = nricp_amberg(source, target, landmark_vertices(template) if use_landmarks else None,
                       np.asarray(five, np.float64) - landmark_offsets(template) if use_landmarks else None, steps=[list(s) for s in steps_used],
                       distance_threshold=distance_threshold, use_faces=False)
    return np.asarray(out, np.float64)
