"""The data catalog (`data_catalog.yaml`): which datasets exist, where they live, how to read them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LandmarkSource = Literal["file", "mediapipe", "none"]


class DatasetEntry(BaseModel):
    """One database on the user's disk."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field(description="reader name, or 'auto' to detect per file")
    root: str = Field(description="folder; '${VAR}' and '~' expand, FACEPIPE_<NAME>_ROOT overrides")
    patterns: list[str] = Field(min_length=1, description="glob patterns relative to root")
    siblings: list[str] = Field(default_factory=list, description="files expected beside each scan, '{stem}' = scan name without extension")
    exclude: list[str] = Field(default_factory=list, description="glob patterns (on the file name) to skip")
    landmarks: LandmarkSource = "file"
    units: Literal["mm"] = "mm"
    licence: str = Field(description="the terms the data come under")
    obtain: str = Field(description="where users request or download it")
    description: str = ""

    @field_validator("patterns", "siblings", "exclude")
    @classmethod
    def _relative(cls, values: list[str]) -> list[str]:
        for v in values:
            if v.startswith("/"):
                raise ValueError(f"{v!r} must be relative to the dataset root")
        return values


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    datasets: dict[str, DatasetEntry]

    @field_validator("datasets")
    @classmethod
    def _names(cls, datasets: dict[str, DatasetEntry]) -> dict[str, DatasetEntry]:
        for name in datasets:
            if not name.replace("_", "").replace("-", "").isalnum() or not name[0].isalpha():
                raise ValueError(f"dataset name {name!r}: use letters, digits, '-' and '_', starting with a letter")
        return datasets


class CheckReport(BaseModel):
    """What `facepipe catalog check` found."""

    dataset: str
    root: str
    root_exists: bool
    files: int
    readable: int | None = Field(description="None when files were not opened")
    missing_siblings: dict[str, list[str]] = Field(default_factory=dict, description="scan -> missing sibling names")
    unreadable: dict[str, str] = Field(default_factory=dict, description="scan -> reason")

    @property
    def ok(self) -> bool:
        return self.root_exists and self.files > 0 and not self.missing_siblings and not self.unreadable
