"""The report of `facepipe inspect`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from facepipe.schemas.scan import ScanMeta
from facepipe.schemas.text import Printable


class InspectReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Printable
    format: str
    vertices: int
    faces: int
    landmarks: int
    landmark_source: str | None
    landmark_names: list[str]
    units: str
    bbox_min: tuple[float, float, float]
    bbox_max: tuple[float, float, float]
    normals: bool
    colors: bool
    uv: Literal["per-vertex", "per-corner"] | None
    texture_size: tuple[int, int] | None  # (width, height)
    grid_shape: tuple[int, int] | None  # (rows, cols) of range-image formats
    meta: ScanMeta
