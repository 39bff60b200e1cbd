"""MediaPipe's landmarks on the template: learnt from frames whose true faces are known."""

from __future__ import annotations

import numpy as np

from facepipe.models.image_landmarks import MESH_POINTS, detect, learn_embedding
from facepipe.pipeline.faces.procedural import default_template


def _view(degrees: float) -> np.ndarray:
    """Template frame (y up, facing +z) to camera (OpenCV: y down, z forward), turned about y."""
    a = np.radians(degrees)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return np.diag([1.0, -1.0, -1.0]) @ turn


def test_the_landmarks_that_mark_one_vertex_are_found_and_the_wandering_ones_left_out() -> None:
    """Frames of one face from 5 views: landmarks 0-29 are the projections of fixed vertices (half a
    pixel of noise), 30-39 of a different vertex in every frame (a contour point sliding with the
    view), 40-49 were found in one frame only, the rest never."""
    tpl = default_template()
    rng = np.random.default_rng(0)
    k = np.array([[500.0, 0, 159.5], [0, 500.0, 119.5], [0, 0, 1]])
    front = tpl.vertices[:, 2] > np.quantile(tpl.vertices[:, 2], 0.5)  # the front half: seen from every view
    fixed = rng.choice(np.flatnonzero(front), 30, replace=False)
    truths, marks = [], []
    for i, deg in enumerate((-10.0, -5.0, 0.0, 5.0, 10.0)):
        face = tpl.vertices * tpl.unit_mm @ _view(deg).T + np.array([0.0, 0.0, 600.0])
        ids = np.full(MESH_POINTS, -1)
        ids[:30] = fixed
        ids[30:40] = rng.choice(np.flatnonzero(front), 10, replace=False)
        if i == 0:
            ids[40:50] = fixed[:10]
        px = np.full((MESH_POINTS, 2), np.nan)
        p = face[ids[ids >= 0]]
        px[ids >= 0] = np.stack([k[0, 0] * p[:, 0] / p[:, 2] + k[0, 2], k[1, 1] * p[:, 1] / p[:, 2] + k[1, 2]], -1)
        truths.append(face)
        marks.append(px + rng.normal(0, 0.5, px.shape))
    got = learn_embedding(np.stack(marks), np.stack([k] * 5), np.stack(truths), tpl.vertices, tpl.triangles, tpl.unit_mm)
    spread = np.linalg.norm(tpl.vertices[got[:30]] - tpl.vertices[fixed], axis=-1) * tpl.unit_mm
    assert (got[:30] >= 0).all() and spread.max() < 1.5, spread
    assert (got[30:] == -1).all()


def test_no_face_gives_no_landmarks() -> None:
    found = detect(np.zeros((120, 160, 3), np.uint8), 80, 60)
    assert found.shape == (MESH_POINTS, 2) and np.isnan(found).all()
