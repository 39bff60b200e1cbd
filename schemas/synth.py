"""Settings of `facepipe synth`: how many faces, how their weights are drawn, how raw they look."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SynthConfig(BaseModel):
    """Everything that changes a synthetic sample; stores record it, and a change forbids resuming."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="model kind: procedural, ict, bfm2009, flame")
    model_id: str = Field(description="content hash of the model's mean and bases")
    identities: int = Field(ge=1)
    expressions: int = Field(ge=0, description="random expressions per identity, besides the neutral face")
    n_points: int = Field(29_495, ge=1)
    sampling: Literal["area", "vertices"] = "area"
    identity_components: int | None = Field(None, ge=1, description="use only the first K identity modes")
    identity_sigma: float = Field(1.0, gt=0, description="identity weights ~ N(0, sigma^2) (model bases are unit-variance)")
    expression_active: tuple[int, int] = Field((1, 6), description="how many expression modes an expression mixes (min, max)")
    expression_max: float = Field(1.0, gt=0, description="blendshape expression weights ~ U(0, max)")
    expression_sigma: float = Field(1.0, gt=0, description="PCA expression weights (BFM/3DDFA, FLAME) ~ N(0, sigma^2)")
    noise_mm: float = Field(0.0, ge=0, description="scanner noise: Gaussian displacement along the normal, per point")
    holes: int = Field(0, ge=0, description="holes cut per face (missing data, as in structured-light scans)")
    hole_radius_mm: float = Field(6.0, gt=0)
    missing_side: float = Field(0.0, ge=0, le=1, description="probability that one side of the face is cut away (self-occlusion)")
    crop_box: float = Field(1.0, gt=0, description="keep points with |x|, |y|, |z| <= crop_box in the template frame")
    template_vertices: int | None = Field(None, ge=1, description="Loop-subdivide the template (and the ground truth) to at least this many vertices")
