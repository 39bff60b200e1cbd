"""A simulated structured-light depth camera, as in phones' front depth cameras and the Kinect v1.

A projector one baseline to the right of the IR camera casts a fixed pseudo-random dot pattern.
The IR camera sees the dots on the surface wherever both it and the projector see the point (ray
casting both ways, so the projector's shadows - beside the nose - carry no pattern), dimmed with
distance and incidence, plus ambient light, optics blur and sensor noise, quantised to 8 bits.
Depth is then recovered as the device does: semi-global matching of the captured image against
the reference pattern (OpenCV's StereoSGBM; the pair is rectified by construction), disparity to
depth, quantised. Holes, speckle, sub-pixel "pixel locking" and edge artefacts come from the
matcher itself, not from a noise model.

Camera space and intrinsics follow OpenCV: x right, y down, z forward (mm); pixel centres at
integer coordinates.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from facepipe.pipeline.geometry.render import Camera, Hits, Raycaster
from facepipe.schemas.rgbd import SensorPreset


def dot_pattern(preset: SensorPreset) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the projector's fixed pattern (a property of the device, not of a sample)."""
    rng = np.random.default_rng(preset.pattern_seed)
    dots = (rng.random((preset.height, preset.width)) < preset.dot_density).astype(np.float32)
    pattern = cv2.GaussianBlur(dots, (0, 0), preset.dot_sigma_px)
    return np.clip(pattern / np.percentile(pattern[pattern > 0], 90), 0.0, 1.0)  # dots near full brightness


def intrinsics(camera: Camera) -> np.ndarray:
    """(3, 3) OpenCV camera matrix (pixel centres at integers, so the principal point is W/2 - 0.5)."""
    f = camera.focal_px
    return np.array([[f, 0.0, camera.width / 2 - 0.5], [0.0, f, camera.height / 2 - 0.5], [0.0, 0.0, 1.0]])


def world_to_camera(camera: Camera) -> np.ndarray:
    """(4, 4) from the world frame to OpenCV camera space."""
    right, up, fwd = camera.basis()
    rot = np.stack([right, -up, fwd])
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, -rot @ camera.eye
    return out


def depth_to_xyz(depth: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera-space points of a depth image (z along the optical axis); NaN where depth is."""
    h, w = depth.shape
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    z = depth.astype(np.float64)
    return np.stack([(cols - k[0, 2]) * z / k[0, 0], (rows - k[1, 2]) * z / k[1, 1], z], -1)


def xyz_to_depth(xyz: np.ndarray, k: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Splat camera-space points into a depth image (nearest point per pixel), NaN where none lands."""
    pts = xyz.reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(1) & (pts[:, 2] > 0)]
    cols = np.rint(pts[:, 0] / pts[:, 2] * k[0, 0] + k[0, 2]).astype(np.int64)
    rows = np.rint(pts[:, 1] / pts[:, 2] * k[1, 1] + k[1, 2]).astype(np.int64)
    inside = (cols >= 0) & (cols < shape[1]) & (rows >= 0) & (rows < shape[0])
    depth = np.full(shape, np.inf)
    np.minimum.at(depth, (rows[inside], cols[inside]), pts[inside, 2])
    depth[np.isinf(depth)] = np.nan
    return depth


@dataclass(frozen=True)
class Capture:
    ir: np.ndarray  # (H, W) uint8, what the IR camera saw
    depth: np.ndarray  # (H, W) float32 mm, recovered by matching; NaN = hole
    depth_clean: np.ndarray  # (H, W) float32 mm, the true depth; NaN = no surface
    lit: np.ndarray  # (H, W) bool, surface seen by both camera and projector


class StructuredLight:
    """One device: its pattern and matcher are built once and used for every capture."""

    def __init__(self, preset: SensorPreset) -> None:
        self.preset = preset
        self.pattern = dot_pattern(preset)
        self.reference = np.clip((self.pattern * (1 - preset.ambient) + preset.ambient) * 255, 0, 255).astype(np.uint8)
        focal = (preset.width / 2) / np.tan(np.radians(preset.fov_deg) / 2)
        self.fb = focal * preset.baseline_mm
        self.min_disp = int(np.floor(self.fb / preset.max_depth_mm))
        self.num_disp = int(np.ceil((self.fb / preset.min_depth_mm - self.min_disp) / 16)) * 16
        self._local = threading.local()

    @property
    def matcher(self) -> cv2.StereoSGBM:
        """One matcher per thread: SGBM keeps its work buffers in the object, so threads sharing one
        (render-rgbd --threads) corrupt each other's disparities."""
        if not hasattr(self._local, "matcher"):
            area = self.preset.block_size**2
            self._local.matcher = cv2.StereoSGBM.create(
                minDisparity=self.min_disp, numDisparities=self.num_disp, blockSize=self.preset.block_size, P1=8 * area,
                P2=32 * area, disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=100, speckleRange=2)
        return self._local.matcher

    def has_pattern(self, ir8: np.ndarray) -> np.ndarray:
        """Where the matching window saw dots, not just noise: devices drop matches without signal
        (far background, projector shadows) instead of trusting what the matcher makes of noise."""
        size = (self.preset.block_size, self.preset.block_size)
        img = ir8.astype(np.float32)
        local_var = cv2.blur(img * img, size) - cv2.blur(img, size) ** 2
        return local_var > (2.5 * self.preset.noise_sigma * 255) ** 2

    def camera(self, eye: np.ndarray, center: np.ndarray, up: np.ndarray) -> Camera:
        p = self.preset
        return Camera(np.asarray(eye, np.float64), np.asarray(center, np.float64), np.asarray(up, np.float64), p.fov_deg,
                      p.width, p.height)

    def capture(self, caster: Raycaster, camera: Camera, rng: np.random.Generator, hits: Hits | None = None) -> Capture:
        """One frame; `hits` is the camera's render when the caller has it already (for the RGB image)."""
        p = self.preset
        hits = caster.render(camera) if hits is None else hits
        right, up, fwd = camera.basis()
        points = hits.points()
        clean = np.where(hits.mask, (points - camera.eye) @ fwd, np.nan)
        projector = Camera(camera.eye + right * p.baseline_mm, camera.center + right * p.baseline_mm, up, p.fov_deg,
                           p.width, p.height)
        to_point = np.where(hits.mask[..., None], points - projector.eye, fwd)
        dist = np.linalg.norm(to_point, axis=-1)
        rays = np.concatenate([np.broadcast_to(projector.eye, to_point.shape), to_point / dist[..., None]], -1)
        seen = caster.cast(rays.reshape(-1, 6))
        lit = hits.mask & (np.abs(seen.depth.reshape(dist.shape) - dist) < 1e-3 * dist + 0.05)
        uv = projector.project(np.where(hits.mask[..., None], points, camera.center).reshape(-1, 3)).reshape(*dist.shape, 2)
        sampled = cv2.remap(self.pattern, (uv[..., 0] - 0.5).astype(np.float32), (uv[..., 1] - 0.5).astype(np.float32),
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        incidence = np.abs((hits.normals * (to_point / dist[..., None])).sum(-1))
        falloff = (p.distance_mm / np.maximum(dist, 1.0)) ** 2
        signal = np.where(lit, sampled * np.clip(incidence * falloff, 0, 1.5), 0.0)
        ir = signal * (1 - p.ambient) + p.ambient * hits.mask
        if p.blur_sigma_px:
            ir = cv2.GaussianBlur(ir.astype(np.float32), (0, 0), p.blur_sigma_px)
        ir = ir + rng.normal(0.0, p.noise_sigma, ir.shape)
        ir8 = np.clip(ir * 255, 0, 255).astype(np.uint8)
        disparity = self.matcher.compute(ir8, self.reference).astype(np.float32) / 16.0
        valid = (disparity > self.min_disp) & self.has_pattern(ir8)
        depth = np.where(valid, self.fb / np.where(valid, disparity, 1.0), np.nan)
        if p.depth_step_mm:
            depth = np.round(depth / p.depth_step_mm) * p.depth_step_mm
        return Capture(ir8, depth.astype(np.float32), clean.astype(np.float32), lit)


def mesh_depth(vertices: np.ndarray, triangles: np.ndarray, k: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) depth (mm along the optical axis) of a camera-space mesh seen through OpenCV intrinsics
    `k`, NaN where no triangle is hit: what a perfect sensor would see of a reconstruction."""
    h, w = shape
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    d = np.stack([(cols - k[0, 2]) / k[0, 0], (rows - k[1, 2]) / k[1, 1], np.ones_like(cols)], -1)
    unit = d / np.linalg.norm(d, axis=-1, keepdims=True)
    hits = Raycaster(vertices, triangles).cast(np.concatenate([np.zeros_like(unit), unit], -1))
    return np.where(hits.mask, hits.depth * unit[..., 2], np.nan).astype(np.float32)


def colorize(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W, 3) uint8 turbo colour map of a depth image; holes black."""
    scaled = np.clip((np.nan_to_num(depth, nan=hi) - lo) / max(hi - lo, 1e-6), 0, 1)
    img = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    return np.where(np.isfinite(depth)[..., None], img, 0).astype(np.uint8)
