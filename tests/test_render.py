from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from facepipe.pipeline.geometry.render import Camera, frontal_camera, render, shade
from facepipe.pipeline.io.registry import read_scan


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


def test_framing_finds_the_face_of_a_turned_scan_and_shows_its_texture(bu3dfe_scan: Path) -> None:
    from scipy.spatial.transform import Rotation

    from facepipe.pipeline.geometry.render import Raycaster, framing_camera, image_of

    scan = read_scan(bu3dfe_scan)
    lm = scan.landmarks
    assert lm is not None and scan.texture is not None
    rot = Rotation.from_euler("y", 70, degrees=True).as_matrix()  # turned to look along +x
    turned = replace(scan, vertices=scan.vertices @ rot.T)
    cam = framing_camera(turned.vertices, turned.faces, 128, 128)
    assert np.dot(cam.eye - cam.center, rot @ np.array([0.0, 0.0, 1.0])) > 0.9 * np.linalg.norm(cam.eye - cam.center)
    (c_r, row_r), (c_l, row_l), (_, row_chin) = cam.project(
        np.stack([lm.get(n) for n in ("bu01_right_eye_inner", "bu09_left_eye_inner", "bu76_chin_tip")]) @ rot.T)
    assert c_r < c_l and row_r < row_chin and abs(row_r - row_l) < 2
    hits = Raycaster(turned.vertices, turned.faces).render(cam)
    img = image_of(turned, hits)
    plain = image_of(turned, hits, use_texture=False)
    assert img.shape == (128, 128, 3) and hits.mask.mean() > 0.3
    # the texture is skin-coloured (red above blue); plain shading is grey
    assert img[hits.mask, 0].mean() > img[hits.mask, 2].mean() + 20
    assert np.abs(plain[hits.mask, 0].astype(int) - plain[hits.mask, 2]).max() <= 1


def test_rays_through_projected_points_hit_those_points(bu3dfe_scan: Path) -> None:
    from facepipe.pipeline.geometry.render import Raycaster

    scan = read_scan(bu3dfe_scan)
    cam = frontal_camera(scan.vertices, 100, 120)
    caster = Raycaster(scan.vertices, scan.faces)
    center = scan.vertices[np.argmax(scan.vertices[:, 2])]  # the nose tip: visible from the front
    hits = caster.cast(cam.rays(cam.project(center[None])))
    assert hits.mask.all() and np.linalg.norm(hits.points()[0] - center) < 1e-3
