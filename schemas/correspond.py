"""What decides a correspondence folder's bytes: a rerun resumes only into a folder with an equal plan."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CorrespondPlan(BaseModel):
    """No timings, hosts or absolute paths: the same inputs write the same plan (and the same meshes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    facepipe_version: str
    method: Literal["learned", "nicp"]
    refine: dict[str, object] | None = Field(description="the refinement's settings (learned), None: the network alone")
    model_sha256: str | None = Field(description="hash of the network's weights (learned)")
    template_id: str
    fmt: Literal["ply", "obj"]
    colour: bool
    batch: int | None = Field(description="scans per network call: it decides the bits of the network-only method")
    n_points: int = Field(description="points sampled from a raw scan preprocessed on the fly")
    faces: bool = Field(False, description="template-frame faces kept as .npy beside the meshes (evaluate)")
    n_samples: int
    samples_sha256: str = Field(description="hash of the ordered (source, output name) list")
