"""`facepipe ingest`: one Dask task per scan, each writing its own chunks of the store.

The driver plans (which scans, which store), schedules what is not yet ok, and at the end marks
duplicates and writes the manifest. Tasks never talk to each other or to the driver's store handle,
so the same code runs on a LocalCluster of processes, on threads, or on a remote cluster that shares
the store (a network file system or an object store URL).
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from facepipe.pipeline.errors import FacepipeError, ScanFormatError
from facepipe.pipeline.faces.landmark_sets import FIVE
from facepipe.pipeline.faces.template import Template, template_record
from facepipe.pipeline.io.catalog import get_entry, list_samples, load_catalog
from facepipe.pipeline.io.text import check_regular
from facepipe.pipeline.runtime.jobs import OnSample, OnStart, run_store_job
from facepipe.pipeline.runtime.seeding import sample_rng
from facepipe.pipeline.runtime.store import (
    FAILED, OK, SampleWriter, facepipe_version, open_group, read_status, samples_digest, scan_columns,
)
from facepipe.pipeline.stages.preprocess import Preprocessed, preprocess_file
from facepipe.schemas.catalog import DatasetEntry
from facepipe.schemas.preprocess import PreprocessConfig, PreprocessFailure
from facepipe.schemas.store import FailureLine, RunOptions, RunReport, SampleOutcome, StorePlan

CATALOG_LANDMARKS = {"file": "auto", "mediapipe": "mediapipe", "none": "mediapipe"}


class IngestError(FacepipeError):
    """An ingest that cannot start: empty dataset, a store made with another plan, ..."""


@dataclass(frozen=True)
class IngestJob:
    """Everything a task needs, shipped once to every worker."""

    url: str
    plan_key: str
    dataset: str
    root: str
    fmt: str | None
    seed: int
    config: PreprocessConfig
    template: Template


def config_for(entry: DatasetEntry, overrides: dict[str, object] | None = None) -> PreprocessConfig:
    """The catalog's landmark source decides the default; a config file's values win."""
    base: dict[str, object] = {"landmarks": CATALOG_LANDMARKS[entry.landmarks]}
    try:
        return PreprocessConfig.model_validate(base | (overrides or {}))
    except ValueError as exc:
        raise IngestError(f"invalid preprocessing config: {exc}") from None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def ingest_sample(job: IngestJob, index: int, sample_id: str) -> SampleOutcome:
    """The task: hash, read, preprocess, write the sample's chunks, then its status.

    A bad scan becomes a failure record; an unexpected exception in preprocessing too (with its
    type), so one odd file never stops a batch. A failure to write propagates: the sample stays
    pending and a rerun does it.
    """
    path = Path(job.root) / sample_id
    t0 = time.perf_counter()
    values: dict[str, object] = {}
    seconds: dict[str, float] = {}
    try:
        check_regular(path)  # a FIFO would block the hash below forever
        values["source_sha256"] = file_sha256(path)
    except ScanFormatError as exc:
        result: Preprocessed | PreprocessFailure = PreprocessFailure(path=str(path), stage="read", reason=str(exc))
    except OSError as exc:
        result = PreprocessFailure(path=str(path), stage="read", reason=f"{path}: {exc}")
    else:
        seconds["hash"] = time.perf_counter() - t0
        rng = sample_rng(job.seed, job.dataset, sample_id)
        try:
            result = preprocess_file(path, job.template, job.config, rng, job.fmt)
        except Exception as exc:  # noqa: BLE001 - a bug or a library crash on one scan must not end the batch
            where = traceback.extract_tb(exc.__traceback__)[-1]
            result = PreprocessFailure(path=str(path), stage="internal",
                                       reason=f"{path}: {type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})")
    if isinstance(result, Preprocessed):
        seconds = result.quality.seconds | seconds
        # timings differ run to run: not in the store; no warnings, no key (the bytes of clean stores stay as they were)
        quality = result.quality.model_dump(exclude={"seconds"} | ({"warnings"} if not result.quality.warnings else set()))
        values |= {"points": result.points, "normals": result.normals, "landmarks": result.landmarks,
                   "to_template": result.to_template, "quality": json.dumps(quality, sort_keys=True, separators=(",", ":"))}
        if result.meta is not None:
            values |= {"subject": result.meta.subject, "expression": result.meta.expression, "intensity": result.meta.intensity}
        status = OK
    else:
        values |= {"failure_stage": result.stage, "failure_reason": result.reason}
        status = FAILED
    t1 = time.perf_counter()
    SampleWriter(job.url, job.plan_key).write(index, values, status)
    seconds["write"] = time.perf_counter() - t1
    if isinstance(result, Preprocessed):
        return SampleOutcome(index=index, path=sample_id, status="ok", seconds=seconds)
    return SampleOutcome(index=index, path=sample_id, status="failed", stage=result.stage, reason=result.reason, seconds=seconds)


def mark_duplicates(url: str, key: str) -> list[FailureLine]:
    """Later ok samples with the same file content as an earlier one become failures (the first is kept)."""
    group = open_group(url, "r")
    status = read_status(group)
    ok = np.flatnonzero(status == OK)
    if len(ok) < 2:
        return []
    sha = [str(s) for s in group["source_sha256"][:]]
    paths = [str(p) for p in group["source_path"][:]]
    first: dict[str, int] = {}
    dups: list[tuple[int, int]] = []
    for i in ok.tolist():
        if sha[i] in first:
            dups.append((i, first[sha[i]]))
        else:
            first[sha[i]] = i
    writer = SampleWriter(url, key)
    lines = []
    for i, j in dups:
        reason = f"same file content as {paths[j]}"
        writer.write(i, {"source_sha256": sha[i], "failure_stage": "duplicate", "failure_reason": reason}, FAILED)
        lines.append(FailureLine(path=paths[i], stage="duplicate", reason=reason))
    return lines


def run_ingest(name: str, catalog: str | PathLike[str], out: str, template: Template, *, seed: int = 0,
               limit: int | None = None, overrides: dict[str, object] | None = None, options: RunOptions = RunOptions(),
               on_start: OnStart | None = None, on_sample: OnSample | None = None) -> RunReport:
    """Ingest a catalog dataset into the store at `out` (a path or fsspec URL), resuming what is there."""
    entry = get_entry(load_catalog(catalog), name)
    root, ids = list_samples(name, entry, Path(catalog).parent, limit)
    config = config_for(entry, overrides)
    plan = StorePlan(facepipe_version=facepipe_version(), dataset=name, format=entry.format, seed=seed, config=config,
                     template_id=template.id, template_name=template.name, landmark_names=FIVE, n_samples=len(ids),
                     samples_sha256=samples_digest(ids))
    def make_job(key: str) -> IngestJob:
        return IngestJob(url=out, plan_key=key, dataset=name, root=str(root), fmt=None if entry.format == "auto" else entry.format,
                         seed=seed, config=config, template=template)

    return run_store_job(ingest_sample, make_job, plan, ids, scan_columns(config.n_points, FIVE), out, options,
                         on_start=on_start, on_sample=on_sample, after=mark_duplicates,
                         extra_attrs={"template": template_record(template)})
