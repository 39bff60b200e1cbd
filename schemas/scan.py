"""Metadata of one raw scan, as parsed from its file name and header."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ScanMeta(BaseModel):
    """What a reader knows about a scan besides its geometry; every field is JSON-serialisable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(description="reader that produced the scan, e.g. 'bu3dfe'")
    path: str = Field(description="the file the geometry came from")
    dataset: str | None = None
    subject: str | None = None
    expression: str | None = Field(default=None, description="database expression code, e.g. 'HA', 'HAPPY'")
    intensity: int | None = Field(default=None, description="expression intensity where the database grades it")
    units: str = "mm"
    extra: dict[str, str] = Field(default_factory=dict, description="format-specific fields (race, session, ...)")
