"""What a scan file is: a JSON-able summary and a shaded preview image."""

from __future__ import annotations

import numpy as np

from facepipe.pipeline.geometry.render import frontal_camera, render, shade
from facepipe.pipeline.geometry.scan import Scan
from facepipe.schemas.inspect import InspectReport


def describe(scan: Scan) -> InspectReport:
    lm = scan.landmarks
    lo, hi = scan.vertices.min(0), scan.vertices.max(0)
    return InspectReport(
        path=scan.meta.path, format=scan.meta.format, vertices=len(scan.vertices), faces=len(scan.faces),
        landmarks=len(lm) if lm else 0, landmark_source=lm.source if lm else None,
        landmark_names=list(lm.names) if lm else [], units=scan.meta.units,
        bbox_min=tuple(float(x) for x in lo), bbox_max=tuple(float(x) for x in hi),  # type: ignore[arg-type]
        normals=scan.normals is not None, colors=scan.colors is not None,
        uv="per-vertex" if scan.uv is not None else "per-corner" if scan.face_uv is not None else None,
        texture_size=(scan.texture.shape[1], scan.texture.shape[0]) if scan.texture is not None else None,
        grid_shape=scan.grid_shape, meta=scan.meta,
    )


def preview(scan: Scan, width: int = 480, height: int = 600) -> np.ndarray:
    """Lambertian render from the front with the file's landmarks drawn as red dots."""
    cam = frontal_camera(scan.vertices, width, height)
    img = shade(render(scan.vertices, scan.faces, cam))
    if scan.landmarks is not None:
        pts = scan.landmarks.points[np.isfinite(scan.landmarks.points).all(1)]
        for col, row in cam.project(pts):
            r0, c0 = int(round(row)), int(round(col))
            img[max(r0 - 2, 0) : r0 + 3, max(c0 - 2, 0) : c0 + 3] = (230, 30, 30)
    return img

