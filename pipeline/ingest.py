"""`facepipe ingest`: one Dask task per scan, each writing its own chunks of the store.

The driver plans (which scans, which store), schedules what is not yet ok, and at the end marks
duplicates and writes the manifest. Tasks never talk to each other or to the driver's store handle,
so the same code runs on a LocalCluster of processes, on threads, or on a remote cluster that shares
the store (a network file system or an object store URL).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from facepipe.pipeline.catalog import get_entry, iter_scans, load_catalog, resolve_root
from facepipe.pipeline.errors import FacepipeError
from facepipe.pipeline.morphable import FIVE
from facepipe.pipeline.preprocess import Preprocessed, preprocess_file
from facepipe.pipeline.seeding import sample_rng
from facepipe.pipeline.store import (
    FAILED, OK, SampleWriter, create_store, facepipe_version, finalize, is_in_memory, open_group,
    plan_differences, plan_key, read_plan, read_status, samples_digest, scan_columns, store_state,
)
from facepipe.pipeline.template import Template
from facepipe.schemas.catalog import DatasetEntry
from facepipe.schemas.preprocess import PreprocessConfig, PreprocessFailure
from facepipe.schemas.store import FailureLine, IngestReport, Manifest, SampleOutcome, StorePlan

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


def list_samples(name: str, entry: DatasetEntry, base: str | PathLike[str], limit: int | None = None) -> tuple[Path, list[str]]:
    """The dataset root and its scans as ids relative to it, in the stable order the store uses."""
    root = resolve_root(name, entry, base)
    if not root.is_dir():
        raise IngestError(f"dataset {name!r}: root {root} does not exist (edit data_catalog.yaml or set "
                          f"FACEPIPE_{name.upper().replace('-', '_')}_ROOT)")
    ids = [p.relative_to(root).as_posix() for p in iter_scans(name, entry, base)]
    if not ids:
        raise IngestError(f"dataset {name!r}: no scan under {root} matches {entry.patterns}")
    return root, ids[:limit] if limit else ids


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
        values["source_sha256"] = file_sha256(path)
    except OSError as exc:
        result: Preprocessed | PreprocessFailure = PreprocessFailure(path=str(path), stage="read", reason=f"{path}: {exc}")
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
        quality = result.quality.model_dump(exclude={"seconds"})  # timings differ run to run: not in the store
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


def prepare_store(url: str, plan: StorePlan, sample_ids: Sequence[str], overwrite: bool) -> tuple[list[int], int]:
    """Create the store, or check that the one there has the same plan; return the samples still to do."""
    state = store_state(url)
    if state == "other":
        raise IngestError(f"{url} exists and is not a Zarr store: refusing to write over it (choose another --out)")
    if state == "store" and not overwrite:
        group = open_group(url, "r+")
        old = read_plan(group, url)
        if diffs := plan_differences(old, plan):
            raise IngestError(f"{url} was made with a different plan, so this run cannot resume into it:\n  "
                              + "\n  ".join(diffs) + "\nuse --overwrite to start it over, or --out for a new store")
        status = read_status(group)
        todo = [int(i) for i in np.flatnonzero(status != OK)]
        return todo, len(sample_ids) - len(todo)
    create_store(url, plan, sample_ids, scan_columns(plan.config.n_points, plan.landmark_names))
    return list(range(len(sample_ids))), 0


@contextmanager
def dask_client(workers: int, scheduler: str | None, processes: bool) -> Iterator[object]:
    """A client on an existing scheduler, or on a LocalCluster of single-threaded workers."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    import dask

    dashboard = ":0" if _has_bokeh() else None
    # Dask's default MALLOC_TRIM_THRESHOLD_ for workers turns off glibc's adaptive mmap threshold, and
    # every render buffer then costs an mmap/munmap: MediaPipe landmarks took 86 ms instead of 63.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=dashboard,
                         silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        yield client


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def dashboard_of(client: object) -> str | None:
    services = client.scheduler_info().get("services", {})  # type: ignore[attr-defined]
    return client.dashboard_link if "dashboard" in services else None  # type: ignore[attr-defined]


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
               limit: int | None = None, workers: int = 2, scheduler: str | None = None, processes: bool = True,
               overrides: dict[str, object] | None = None, overwrite: bool = False,
               on_start: Callable[[int, int, str | None], None] | None = None,
               on_sample: Callable[[SampleOutcome | None], None] | None = None) -> IngestReport:
    """Ingest a catalog dataset into the store at `out` (a path or fsspec URL), resuming what is there."""
    t_start = time.perf_counter()
    entry = get_entry(load_catalog(catalog), name)
    root, ids = list_samples(name, entry, Path(catalog).parent, limit)
    config = config_for(entry, overrides)
    plan = StorePlan(facepipe_version=facepipe_version(), dataset=name, format=entry.format, seed=seed, config=config,
                     template_id=template.id, template_name=template.name, landmark_names=FIVE, n_samples=len(ids),
                     samples_sha256=samples_digest(ids))
    todo, done_before = prepare_store(out, plan, ids, overwrite)
    if is_in_memory(out) and processes and not scheduler:
        processes = False  # a memory:// store lives in this process: its workers must be threads
    job = IngestJob(url=out, plan_key=plan_key(plan), dataset=name, root=str(root),
                    fmt=None if entry.format == "auto" else entry.format, seed=seed, config=config, template=template)
    outcomes: list[SampleOutcome] = []
    not_written: list[FailureLine] = []
    dashboard = None
    address = scheduler or f"LocalCluster({workers} {'processes' if processes else 'threads'})"
    t_work = time.perf_counter()
    if todo:
        from distributed import as_completed

        with dask_client(workers, scheduler, processes) as client:
            dashboard = dashboard_of(client)
            n_workers = len(client.scheduler_info()["workers"])  # type: ignore[attr-defined]
            workers = n_workers or workers
            if on_start:
                on_start(len(todo), done_before, dashboard)
            t_work = time.perf_counter()
            shipped = client.scatter(job, broadcast=True)  # type: ignore[attr-defined]
            futures = client.map(ingest_sample, [shipped] * len(todo), todo, [ids[i] for i in todo],  # type: ignore[attr-defined]
                                 pure=False)
            index_of = {f.key: i for f, i in zip(futures, todo, strict=True)}
            for future in as_completed(futures):
                i = index_of[future.key]
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - recorded per sample, reported at the end
                    outcome = _task_error(out, job.plan_key, i, ids[i], exc, not_written)
                if outcome is not None:
                    outcomes.append(outcome)
                if on_sample:
                    on_sample(outcome)
                future.release()
    elif on_start:
        on_start(0, done_before, None)
    duplicates = mark_duplicates(out, job.plan_key)
    work = time.perf_counter() - t_work
    manifest = finalize(open_group(out, "r+"), out)
    return _report(name, out, ids, done_before, outcomes, duplicates, not_written, manifest,
                   time.perf_counter() - t_start, work, workers, address, dashboard)


def _task_error(url: str, key: str, index: int, sample_id: str, exc: BaseException,
                not_written: list[FailureLine]) -> SampleOutcome | None:
    """A worker that died on a scan (crash, out of memory) several times makes that scan a failure record;
    any other task error (full disk, lost store) leaves the sample pending for a rerun."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        reason = f"{sample_id}: the worker processing this scan died repeatedly (a crash or out of memory)"
        SampleWriter(url, key).write(index, {"failure_stage": "internal", "failure_reason": reason}, FAILED)
        return SampleOutcome(index=index, path=sample_id, status="failed", stage="internal", reason=reason)
    not_written.append(FailureLine(path=sample_id, stage="write", reason=f"{type(exc).__name__}: {exc}"))
    return None


def _report(name: str, out: str, ids: Sequence[str], done_before: int, outcomes: Sequence[SampleOutcome],
            duplicates: Sequence[FailureLine], not_written: Sequence[FailureLine], manifest: Manifest, wall: float,
            work: float, workers: int, scheduler: str, dashboard: str | None) -> IngestReport:
    dup_paths = {d.path for d in duplicates}
    failures = [FailureLine(path=o.path, stage=o.stage or "", reason=o.reason or "") for o in outcomes if o.status == "failed"]
    failures += list(duplicates)
    ok = sum(o.status == "ok" and o.path not in dup_paths for o in outcomes)
    stage_totals: Counter[str] = Counter()
    for o in outcomes:
        stage_totals.update(o.seconds)
    n = max(len(outcomes), 1)
    return IngestReport(
        dataset=name, store=out, samples=len(ids), done_before=done_before, processed=len(outcomes), ok=ok,
        failed=len(failures), not_written=len(not_written),
        store_status={"ok": manifest.ok, "failed": manifest.failed, "pending": manifest.pending},
        failures_by_stage=dict(sorted(Counter(f.stage for f in failures).items())),
        failures=sorted(failures + list(not_written), key=lambda f: f.path),
        stage_seconds_mean={k: v / n for k, v in stage_totals.items()}, wall_seconds=wall, processing_seconds=work,
        scans_per_second=len(outcomes) / work if work > 0 else 0.0, workers=workers, scheduler=scheduler,
        dashboard=dashboard, manifest_digest=manifest.digest)
