"""Metadata of one raw scan, as parsed from its file name and header."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from facepipe.schemas.text import Printable


class ScanMeta(BaseModel):
    """What a reader knows about a scan besides its geometry; every field is JSON-serialisable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(description="reader that produced the scan, e.g. 'bu3dfe'")
    path: Printable = Field(description="the file the geometry came from")
    dataset: str | None = None
    subject: str | None = None
    expression: str | None = Field(default=None, description="database expression code, e.g. 'HA', 'HAPPY'")
    intensity: int | None = Field(default=None, description="expression intensity where the database grades it")
    units: str = "mm"
    extra: dict[str, str] = Field(default_factory=dict, description="format-specific fields (race, session, ...)")


class ReadLimits(BaseModel):
    """Bounds a reader checks against a file's declared sizes before it allocates anything.

    A 35 kB PNG can declare 6000 x 6000 pixels and a 1 MB gzip can inflate to gigabytes: without
    these bounds one such file takes down a worker. Each field can be set by the environment
    variable FACEPIPE_<FIELD> (e.g. FACEPIPE_MAX_GRID_PIXELS=16000000), which Dask workers inherit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_file_mb: float = Field(1024.0, gt=0, description="largest scan or side file read")
    max_decompressed_mb: float = Field(512.0, gt=0, description="largest size a .gz file may inflate to")
    max_grid_pixels: int = Field(4_000_000, ge=1, description="largest range image or scanner grid (FRGC has 307,200)")
    max_image_pixels: int = Field(64_000_000, ge=1, description="largest texture or photo")
    max_vertices: int = Field(20_000_000, ge=1, description="most vertices a mesh file may hold, all its parts together")
    max_nesting: int = Field(64, ge=1, description="deepest node nesting of a VRML file")
    max_nodes: int = Field(100_000, ge=1, description="most VRML nodes visited, DEF/USE repeats counted (real scans: tens)")
    min_extent_mm: float = Field(10.0, ge=0, description="a scan smaller than this on every axis is not a face in mm")
    max_extent_mm: float = Field(3000.0, gt=0, description="a scan larger than this on some axis is not a face in mm")
