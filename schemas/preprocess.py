"""Configuration and per-scan records of single-scan preprocessing (read, landmark, align, crop, resample)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from facepipe.schemas.text import Printable


class PreprocessConfig(BaseModel):
    """Everything that changes a preprocessed sample; stores record it, and a change forbids resuming."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_points: int = Field(29_495, ge=1, description="points sampled per scan (the template's vertex count in the paper)")
    sampling: Literal["area", "vertices"] = Field(
        "area", description="area-uniform on the surface, or a random subset of the (subdivided) vertices as in the paper")
    subdivide: Literal["auto", "always", "never"] = Field(
        "auto", description="loop-subdivide meshes with fewer vertices than points: auto = only for vertex sampling")
    landmarks: Literal["auto", "annotations", "mediapipe"] = Field(
        "auto", description="auto: the database's landmark file when it has the five, else MediaPipe")
    render_size: int = Field(384, ge=64, le=2048, description="square render size in pixels for MediaPipe")
    min_confidence: float = Field(0.6, ge=0, le=1, description="a detection below this is a failure")
    accept_confidence: float = Field(0.5, ge=0, le=1, description="stop trying further views at this confidence")
    use_texture: bool = Field(True, description="render the texture for MediaPipe where the scan has one")
    max_landmark_residual: float = Field(
        0.2, gt=0, description="a failure when the five, after the similarity, lie farther from the template's on "
        "average than this fraction of its eye distance: a detection that is not a face")
    icp: bool = Field(False, description="refine the landmark similarity by rigid point-to-plane ICP")
    icp_max_distance_mm: float = Field(5.0, gt=0, description="pairs farther apart than this are ignored")
    icp_iterations: int = Field(30, ge=1)
    icp_min_fitness: float = Field(0.3, ge=0, le=1, description="keep the landmark alignment when ICP pairs fewer points")
    crop_box: float = Field(1.0, gt=0, description="keep |x|, |y|, |z| <= crop_box in the template frame")
    crop_radius: float | None = Field(None, gt=0, description="also keep only points this close to the nose tip (template units)")
    min_points_after_crop: int = Field(200, ge=3, description="fewer surviving vertices is a failure")
    max_subdivisions: int = Field(4, ge=0, le=6)


class QualityRecord(BaseModel):
    """How one scan went through preprocessing, for reports and for filtering bad samples later."""

    model_config = ConfigDict(extra="forbid")

    landmark_source: str
    landmark_confidence: float
    landmark_view: str = ""
    landmark_residual_mm: float = Field(description="mean distance of the five to the template's after the similarity")
    landmark_residual_icp_mm: float | None = Field(None, description="the same after ICP (None: ICP off or rejected)")
    icp_fitness: float | None = None
    icp_rmse_mm: float | None = None
    scale: float = Field(description="template units per scan unit")
    vertices_before_crop: int
    vertices_after_crop: int
    triangles_after_crop: int
    subdivision_levels: int
    seconds: dict[str, float] = Field(default_factory=dict, description="wall time per stage")
    warnings: list[str] = Field(default_factory=list, description="what the reader doubted, e.g. a possibly cut last line")


class PreprocessFailure(BaseModel):
    """A scan that could not be preprocessed: recorded, so that a batch goes on without it."""

    model_config = ConfigDict(extra="forbid")

    path: Printable
    stage: Literal["read", "landmarks", "align", "crop", "resample", "check", "duplicate", "internal"]
    reason: Printable
