"""Settings of the simulated structured-light camera and of `facepipe render-rgbd`."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class SensorPreset(BaseModel):
    """A structured-light depth camera: IR camera plus a dot projector one baseline to its right."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    width: int = Field(ge=32)
    height: int = Field(ge=32)
    fov_deg: float = Field(gt=0, lt=180, description="horizontal field of view of camera and projector")
    baseline_mm: float = Field(gt=0)
    distance_mm: float = Field(gt=0, description="where the face is placed (typical use)")
    min_depth_mm: float = Field(gt=0, description="nearest depth the matcher searches")
    max_depth_mm: float = Field(gt=0)
    dot_density: float = Field(gt=0, lt=1, description="fraction of projector pixels that carry a dot")
    dot_sigma_px: float = Field(gt=0, description="dot size (Gaussian sigma) in projector pixels")
    pattern_seed: int = Field(description="the pattern is a fixed property of the device")
    blur_sigma_px: float = Field(ge=0, description="optics blur of the IR camera")
    noise_sigma: float = Field(ge=0, description="sensor noise, fraction of full scale")
    ambient: float = Field(ge=0, le=1, description="ambient IR, fraction of full scale")
    block_size: int = Field(ge=3, description="odd matching window (pixels)")
    depth_step_mm: float = Field(ge=0, description="output quantisation of depth (0: none)")
    disparity_precision_px: float = Field(gt=0, description="expected matching precision (sub-pixel), for the stated depth precision")

    def expected_precision_mm(self, depth_mm: float | None = None) -> float:
        """Depth precision from the disparity precision: dZ = Z^2 / (f b) * dd."""
        z = self.distance_mm if depth_mm is None else depth_mm
        focal = (self.width / 2) / math.tan(math.radians(self.fov_deg) / 2)
        return z * z / (focal * self.baseline_mm) * self.disparity_precision_px + self.depth_step_mm / 2


PRESETS: dict[str, SensorPreset] = {
    "phone": SensorPreset(name="phone", width=640, height=480, fov_deg=60.0, baseline_mm=25.0, distance_mm=300.0,
                          min_depth_mm=150.0, max_depth_mm=700.0, dot_density=0.12, dot_sigma_px=0.8, pattern_seed=2017,
                          blur_sigma_px=0.7, noise_sigma=0.02, ambient=0.05, block_size=7, depth_step_mm=0.25,
                          disparity_precision_px=0.3),
    "kinect": SensorPreset(name="kinect", width=640, height=480, fov_deg=57.0, baseline_mm=75.0, distance_mm=800.0,
                           min_depth_mm=500.0, max_depth_mm=2500.0, dot_density=0.08, dot_sigma_px=0.9, pattern_seed=2010,
                           blur_sigma_px=0.9, noise_sigma=0.03, ambient=0.1, block_size=9, depth_step_mm=1.0,
                           disparity_precision_px=0.3),
    "tiny": SensorPreset(name="tiny", width=160, height=120, fov_deg=30.0, baseline_mm=25.0, distance_mm=450.0,
                         min_depth_mm=300.0, max_depth_mm=800.0, dot_density=0.15, dot_sigma_px=0.7, pattern_seed=7,
                         blur_sigma_px=0.6, noise_sigma=0.02, ambient=0.05, block_size=5, depth_step_mm=0.5,
                         disparity_precision_px=0.3),
}


class RenderConfig(BaseModel):
    """Everything that changes an RGB-D sample; stores record it, and a change forbids resuming."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: SensorPreset
    views: int = Field(1, ge=1, description="random views per source sample")
    yaw_deg: tuple[float, float] = (-30.0, 30.0)
    pitch_deg: tuple[float, float] = (-15.0, 15.0)
    roll_deg: tuple[float, float] = (-10.0, 10.0)
    distance_jitter_mm: float = Field(30.0, ge=0, description="the face's distance varies by +- this")
    sh_strength: float = Field(0.5, ge=0, description="scale of the random spherical-harmonics lighting bands 1-2")


class Intrinsics(BaseModel):
    """A depth camera's intrinsics JSON, as `facepipe reconstruct` reads it beside a depth image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    cx: float
    cy: float
    width: int = Field(ge=1)
    height: int = Field(ge=1)

    def matrix(self) -> list[list[float]]:
        return [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]]
