from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.pipeline.io.registry import read_scan
from facepipe.pipeline.render import Camera, frontal_camera, render, shade


def test_hit_maps_project_back_to_their_pixels(bu3dfe_scan: Path) -> None:
    scan = read_scan(bu3dfe_scan)
    for cam in (frontal_camera(scan.vertices, 160, 200),
                Camera(np.array([250.0, 80.0, 300.0]), scan.vertices.mean(0), np.array([0.0, 1.0, 0.0]), 40.0, 120, 150)):
        r = render(scan.vertices, scan.faces, cam)
        rows, cols = np.nonzero(r.mask)
        assert len(rows) > 1000
        assert np.abs(cam.project(r.points()[rows, cols]) - np.stack([cols + 0.5, rows + 0.5], 1)).max() < 1e-3
        # barycentrics rebuild the hit point from the triangle's corners
        tri = scan.faces[r.triangle[rows, cols]]
        u, v = r.barycentric[rows, cols].T
        rebuilt = ((1 - u - v)[:, None] * scan.vertices[tri[:, 0]] + u[:, None] * scan.vertices[tri[:, 1]]
                   + v[:, None] * scan.vertices[tri[:, 2]])
        assert np.abs(rebuilt - r.points()[rows, cols]).max() < 1e-2


def test_frontal_render_is_upright_and_not_mirrored(bu3dfe_scan: Path) -> None:
    scan = read_scan(bu3dfe_scan)
    cam = frontal_camera(scan.vertices, 160, 200)
    lm = scan.landmarks
    assert lm is not None
    eye_r, eye_l, chin = (lm.get(n) for n in ("bu01_right_eye_inner", "bu09_left_eye_inner", "bu76_chin_tip"))
    (c_r, row_r), (c_l, _), (_, row_chin) = cam.project(np.stack([eye_r, eye_l, chin]))
    assert row_r < row_chin  # eyes above the chin: row 0 is the top
    assert c_r < c_l  # a camera facing the subject sees their right eye on the image's left
    img = shade(render(scan.vertices, scan.faces, cam))
    assert img.dtype == np.uint8 and img.shape == (200, 160, 3)
