"""What a sample store records about itself (group attributes) and what an ingest reports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from facepipe.schemas.preprocess import PreprocessConfig
from facepipe.schemas.rgbd import RenderConfig
from facepipe.schemas.synth import SynthConfig
from facepipe.schemas.text import Printable


class StorePlan(BaseModel):
    """Everything that decides a store's bytes. A rerun resumes only into a store with an equal plan.

    No timestamps, hosts or absolute paths: two runs of the same inputs must write the same attributes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["scans", "synth", "rgbd"] = "scans"
    facepipe_version: str
    dataset: str
    format: str = Field(description="reader name or 'auto'; for synth, the model kind")
    seed: int
    config: PreprocessConfig | SynthConfig | RenderConfig
    template_id: str
    template_name: str
    landmark_names: tuple[str, ...]
    n_samples: int = Field(ge=1)
    samples_sha256: str = Field(description="hash of the ordered sample ids (paths relative to the dataset root)")


class RunOptions(BaseModel):
    """How a store run is carried out, not what it writes: none of it is in the plan, so none of it
    changes a byte (any number of workers, processes or threads, gives the same store)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(2, ge=1, description="worker processes (or threads) of the local Dask cluster")
    scheduler: str | None = Field(None, description="address of an existing Dask scheduler instead")
    processes: bool = Field(True, description="False: threads (memory:// stores always use threads)")
    overwrite: bool = Field(False, description="start over in a store made with another plan")


class Manifest(BaseModel):
    """Content hashes of the decoded arrays (not of the compressed chunks), so a codec change keeps them."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["sha256"] = "sha256"
    arrays: dict[str, str] = Field(description="array name -> hash of its dtype, shape and C-order bytes")
    digest: str = Field(description="hash of the array hashes: one value to compare two stores by")
    ok: int
    failed: int
    pending: int


class SampleOutcome(BaseModel):
    """What one ingest task reports back to the driver (the store holds the data themselves)."""

    model_config = ConfigDict(extra="forbid")

    index: int
    path: Printable
    status: Literal["ok", "failed"]
    stage: str | None = None
    reason: Printable | None = None
    seconds: dict[str, float] = Field(default_factory=dict)


class FailureLine(BaseModel):
    path: Printable
    stage: str
    reason: Printable


class RunReport(BaseModel):
    """The end-of-run summary of a store run (ingest, synth, render-rgbd; what the CLI writes as its report): counts, failures by reason, time per stage."""

    dataset: str
    store: str
    samples: int
    done_before: int = Field(description="samples already ok in the store when the run started (resume)")
    processed: int = Field(description="samples this run did")
    ok: int = Field(description="of those, ok")
    failed: int = Field(description="of those, failure records (duplicates included)")
    not_written: int = Field(description="samples whose task could not write (full disk, lost connection): rerun resumes them")
    store_status: dict[str, int] = Field(description="ok / failed / pending over the whole store after the run")
    failures_by_stage: dict[str, int]
    failures: list[FailureLine]
    stage_seconds_mean: dict[str, float] = Field(description="mean wall time per processed sample and stage")
    wall_seconds: float = Field(description="the whole command: planning, cluster start, work, manifest")
    processing_seconds: float = Field(description="from the first task submitted to the last result")
    scans_per_second: float = Field(description="processed / processing_seconds")
    workers: int
    scheduler: str
    dashboard: str | None = None
    manifest_digest: str | None = None


class VerifyReport(BaseModel):
    store: str
    ok: bool
    expected: str
    actual: str
    mismatched_arrays: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
