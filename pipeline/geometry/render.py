"""Headless ray-cast rendering of a mesh (open3d RaycastingScene): images, depth, normals and hit maps.

Every pixel keeps the triangle it hit and its barycentric coordinates, so an image-space detection
can be lifted back onto the surface. No GPU, display or Vulkan is needed. The rays are built here
(not by open3d's `create_rays_pinhole`, whose image comes out rotated by 180 degrees), so that one
function maps pixels to rays for whole images and for single sub-pixel detections alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from scipy.spatial.transform import Rotation

from facepipe.pipeline.geometry.scan import Scan, triangle_normals


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera looking from `eye` at `center`; image row 0 is the top, `fov_deg` is horizontal."""

    eye: np.ndarray
    center: np.ndarray
    up: np.ndarray
    fov_deg: float
    width: int
    height: int

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(right, true up, forward) unit vectors of the image plane."""
        fwd = (self.center - self.eye) / np.linalg.norm(self.center - self.eye)
        right = np.cross(fwd, self.up)
        right /= np.linalg.norm(right)
        return right, np.cross(right, fwd), fwd

    @property
    def focal_px(self) -> float:
        return (self.width / 2) / np.tan(np.radians(self.fov_deg) / 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """Continuous pixel (col, row) of 3D points; pixel (c, r) covers [c, c+1) x [r, r+1)."""
        right, up, fwd = self.basis()
        rel = np.asarray(points, np.float64) - self.eye
        depth = rel @ fwd
        return np.stack([self.width / 2 + self.focal_px * (rel @ right) / depth,
                         self.height / 2 - self.focal_px * (rel @ up) / depth], -1)

    def rays(self, pixels: np.ndarray) -> np.ndarray:
        """(..., 6) origin and unit direction of the rays through continuous pixel positions (col, row)."""
        right, up, fwd = self.basis()
        px = np.asarray(pixels, np.float64)
        d = (fwd + ((px[..., :1] - self.width / 2) * right - (px[..., 1:2] - self.height / 2) * up) / self.focal_px)
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return np.concatenate([np.broadcast_to(self.eye, d.shape), d], -1)

    def pixel_rays(self) -> np.ndarray:
        """(H, W, 6) rays through the pixel centres."""
        rows, cols = np.mgrid[0 : self.height, 0 : self.width] + 0.5
        return self.rays(np.stack([cols, rows], -1))


@dataclass(frozen=True, eq=False)
class Hits:
    depth: np.ndarray  # (...) distance along the ray, inf where nothing was hit
    normals: np.ndarray  # (..., 3) unit geometric normals of the hit triangles
    triangle: np.ndarray  # (...) int64 hit triangle, -1 for a miss
    barycentric: np.ndarray  # (..., 2) open3d (u, v): point = (1-u-v) a + u b + v c
    rays: np.ndarray  # (..., 6) origin and direction

    @property
    def mask(self) -> np.ndarray:
        return self.triangle >= 0

    def points(self) -> np.ndarray:
        """(..., 3) hit points, NaN for misses."""
        pts = self.rays[..., :3] + self.rays[..., 3:] * np.where(self.mask, self.depth, 0.0)[..., None]
        return np.where(self.mask[..., None], pts, np.nan)

    def weights(self) -> np.ndarray:
        """(..., 3) barycentric weights of the hit triangle's three corners."""
        u, v = self.barycentric[..., 0], self.barycentric[..., 1]
        return np.stack([1 - u - v, u, v], -1)


class Raycaster:
    """One mesh's acceleration structure, built once and cast against many times (views, landmarks)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)),
                                 o3d.core.Tensor(np.asarray(faces, np.uint32)))

    def cast(self, rays: np.ndarray) -> Hits:
        rays = np.asarray(rays, np.float64)
        hit = self.scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
        tri = hit["primitive_ids"].numpy().astype(np.int64)
        tri[tri == np.iinfo(np.uint32).max] = -1
        return Hits(hit["t_hit"].numpy().astype(np.float64), hit["primitive_normals"].numpy().astype(np.float64),
                    tri, hit["primitive_uvs"].numpy().astype(np.float64), rays)

    def render(self, camera: Camera) -> Hits:
        return self.cast(camera.pixel_rays())


def render(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> Hits:
    return Raycaster(vertices, faces).render(camera)


def facing_direction(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted mean normal: where a single-view face scan looks (scanners see the front)."""
    n = triangle_normals(vertices, faces).sum(0)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """3x3 rotation about an axis."""
    k = np.asarray(axis, np.float64)
    return Rotation.from_rotvec(k / np.linalg.norm(k) * np.radians(degrees)).as_matrix()


def framing_camera(vertices: np.ndarray, faces: np.ndarray, width: int = 256, height: int = 256,
                   fov_deg: float = 25.0, yaw: float = 0.0, roll: float = 0.0, margin: float = 1.15,
                   direction: np.ndarray | None = None) -> Camera:
    """A camera in front of the face, upright, with the whole mesh in view.

    "In front" is the facing direction; "up" is the scan's +y made orthogonal to it (every database
    stores faces roughly upright; `roll` covers the rest). `yaw` turns the camera about the up axis.
    """
    view = facing_direction(vertices, faces) if direction is None else direction / np.linalg.norm(direction)
    up = np.array([0.0, 1.0, 0.0]) - view[1] * view
    if np.linalg.norm(up) < 1e-6:  # looking straight along y: take z as up
        up = np.array([0.0, 0.0, 1.0]) - view[2] * view
    up /= np.linalg.norm(up)
    view = rotation(up, yaw) @ view
    up = rotation(view, roll) @ up
    right = np.cross(up, view)  # camera-right, seen from the eye that looks along -view
    center = vertices.mean(0)
    rel = vertices - center
    half_w, half_h = np.abs(rel @ right).max(), np.abs(rel @ up).max()
    front = (rel @ view).max()
    tan = np.tan(np.radians(fov_deg) / 2)
    dist = max(half_w, half_h * width / height) * margin / tan + front
    return Camera(center + view * dist, center, up, fov_deg, width, height)


def frontal_camera(vertices: np.ndarray, width: int = 320, height: int = 400, fov_deg: float = 30.0) -> Camera:
    """A camera on +z framing the whole bounding box (faces look toward +z in every database frame)."""
    lo, hi = vertices.min(0), vertices.max(0)
    center = (lo + hi) / 2
    half = max((hi[0] - lo[0]) / 2 * height / width, (hi[1] - lo[1]) / 2) * 1.1
    dist = half / np.tan(np.radians(fov_deg) / 2) + (hi[2] - center[2])
    return Camera(center + np.array([0.0, 0.0, dist]), center, np.array([0.0, 1.0, 0.0]), fov_deg, width, height)


def surface_colors(scan: Scan, hits: Hits) -> np.ndarray | None:
    """(..., 3) float colour of the scan's texture or vertex colours at each hit; None when it has neither."""
    tri = np.maximum(hits.triangle, 0)
    w = hits.weights()
    if scan.texture is not None and (scan.uv is not None or scan.face_uv is not None):
        corners = scan.face_uv[tri] if scan.face_uv is not None else scan.uv[scan.faces[tri]]
        uv = (w[..., None] * corners).sum(-2)
        th, tw = scan.texture.shape[:2]
        col = np.clip((uv[..., 0] * tw).astype(np.int64), 0, tw - 1)
        row = np.clip(((1 - uv[..., 1]) * th).astype(np.int64), 0, th - 1)
        return scan.texture[row, col].astype(np.float64)
    if scan.colors is not None:
        return (w[..., None] * scan.colors[scan.faces[tri]].astype(np.float64)).sum(-2)
    return None


def camera_light(camera: Camera, direction: tuple[float, float, float]) -> np.ndarray:
    """A world-frame direction toward a light given in camera terms (right, up, toward the camera)."""
    right, up, fwd = camera.basis()
    d = direction[0] * right + direction[1] * up - direction[2] * fwd
    return d / np.linalg.norm(d)


def shade(r: Hits, light: np.ndarray | None = None, albedo: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 Lambertian shading, two-sided, dark background; the default light is a headlight."""
    direction = r.rays[..., 3:]
    light = -direction if light is None else np.broadcast_to(light / np.linalg.norm(light), direction.shape)
    lambert = np.abs((r.normals * light).sum(-1))
    base = np.full(r.depth.shape + (3,), 200.0) if albedo is None else albedo.astype(np.float64)
    ambient = 0.15 if albedo is None else 0.6  # a texture carries its own shading: light it gently
    img = base * (ambient + (1 - ambient) * lambert[..., None])
    img[~r.mask] = 40.0
    return np.clip(img, 0, 255).astype(np.uint8)


def image_of(scan: Scan, hits: Hits, light: np.ndarray | None = None, use_texture: bool = True) -> np.ndarray:
    """The scan as a camera would see it: its texture where it has one, else grey Lambertian shading."""
    return shade(hits, light, surface_colors(scan, hits) if use_texture else None)
