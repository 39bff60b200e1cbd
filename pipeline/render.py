"""Headless ray-cast rendering of a mesh (open3d RaycastingScene): depth, normals and hit maps.

Every pixel keeps the triangle it hit and its barycentric coordinates, so an image-space detection
can be lifted back onto the surface. No GPU, display or Vulkan is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera looking from `eye` at `center`; image row 0 is the top."""

    eye: np.ndarray
    center: np.ndarray
    up: np.ndarray
    fov_deg: float
    width: int
    height: int

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel (col, row) of 3D points, row 0 at the top; matches `render`'s rays."""
        fwd = (self.center - self.eye) / np.linalg.norm(self.center - self.eye)
        right = np.cross(fwd, self.up)
        right /= np.linalg.norm(right)
        true_up = np.cross(right, fwd)
        rel = np.asarray(points, np.float64) - self.eye
        depth = rel @ fwd
        focal = self.focal_px
        return np.stack([self.width / 2 + focal * (rel @ right) / depth, self.height / 2 - focal * (rel @ true_up) / depth], 1)

    @property
    def focal_px(self) -> float:
        """open3d's fov_deg is the horizontal field of view."""
        return (self.width / 2) / np.tan(np.radians(self.fov_deg) / 2)


@dataclass(frozen=True, eq=False)
class Render:
    depth: np.ndarray  # (H, W) distance along the ray, inf where nothing was hit
    normals: np.ndarray  # (H, W, 3) unit surface normals of the hit triangles
    triangle: np.ndarray  # (H, W) int64 hit triangle, -1 for background
    barycentric: np.ndarray  # (H, W, 2) open3d (u, v): point = (1-u-v) a + u b + v c
    rays: np.ndarray  # (H, W, 6) origin and direction

    @property
    def mask(self) -> np.ndarray:
        return self.triangle >= 0

    def points(self) -> np.ndarray:
        """(H, W, 3) hit points (NaN on background)."""
        pts = self.rays[..., :3] + self.rays[..., 3:] * self.depth[..., None]
        return np.where(self.mask[..., None], pts, np.nan)


def frontal_camera(vertices: np.ndarray, width: int = 320, height: int = 400, fov_deg: float = 30.0) -> Camera:
    """A camera on +z framing the whole bounding box (faces look toward +z in every database frame)."""
    lo, hi = vertices.min(0), vertices.max(0)
    center = (lo + hi) / 2
    half = max((hi[0] - lo[0]) / 2 * height / width, (hi[1] - lo[1]) / 2) * 1.1
    dist = half / np.tan(np.radians(fov_deg) / 2) + (hi[2] - center[2])
    return Camera(center + np.array([0.0, 0.0, dist]), center, np.array([0.0, 1.0, 0.0]), fov_deg, width, height)


def render(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> Render:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)), o3d.core.Tensor(np.asarray(faces, np.uint32)))
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        fov_deg=camera.fov_deg, center=camera.center.tolist(), eye=camera.eye.tolist(), up=camera.up.tolist(),
        width_px=camera.width, height_px=camera.height)
    hit = scene.cast_rays(rays)
    # open3d's pinhole image is rotated by 180 degrees (row 0 at the bottom, columns running toward
    # the camera's left); flipping both axes gives a true image, row 0 on top and no mirroring
    flip = lambda a: np.ascontiguousarray(a.numpy()[::-1, ::-1])  # noqa: E731
    tri = flip(hit["primitive_ids"]).astype(np.int64)
    tri[tri == np.iinfo(np.uint32).max] = -1
    return Render(flip(hit["t_hit"]).astype(np.float64), flip(hit["primitive_normals"]).astype(np.float64), tri,
                  flip(hit["primitive_uvs"]).astype(np.float64), flip(rays).astype(np.float64))


def shade(r: Render, light: np.ndarray | None = None, albedo: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 Lambertian shading with a headlight-ish light; two-sided, grey background."""
    direction = r.rays[..., 3:]
    light = -direction if light is None else np.broadcast_to(light / np.linalg.norm(light), direction.shape)
    lambert = np.abs((r.normals * light).sum(-1))
    base = np.full(r.depth.shape + (3,), 200.0) if albedo is None else albedo.astype(np.float64)
    img = base * (0.15 + 0.85 * lambert[..., None])
    img[~r.mask] = 40.0
    return np.clip(img, 0, 255).astype(np.uint8)
