"""Running one Dask task per sample into a store: the part `ingest` and `synth` share.

Tasks write their own chunks and return a small `SampleOutcome`; the driver only schedules,
counts and reports. Worker processes import the task function by module path, so an external
cluster needs facepipe installed and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from facepipe.pipeline.runtime.lock import store_lock
from facepipe.pipeline.runtime.store import FAILED, Column, SampleWriter, finalize, is_in_memory, open_group, plan_key, prepare_store
from facepipe.schemas.store import FailureLine, Manifest, RunOptions, RunReport, SampleOutcome, StorePlan

OnStart = Callable[[int, int, str | None], None]
OnSample = Callable[[SampleOutcome | None], None]


@contextmanager
def dask_client(workers: int, scheduler: str | None, processes: bool) -> Iterator[Any]:
    """A client on an existing scheduler, or on a LocalCluster of single-threaded workers."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    import dask

    # Dask's default MALLOC_TRIM_THRESHOLD_ for workers turns off glibc's adaptive mmap threshold, and
    # every render buffer then costs an mmap/munmap: MediaPipe landmarks took 86 ms instead of 63.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=":0",
                         silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        yield client



@dataclass
class TaskRun:
    outcomes: list[SampleOutcome] = field(default_factory=list)
    not_written: list[FailureLine] = field(default_factory=list)
    dashboard: str | None = None
    workers: int = 0
    scheduler: str = ""
    seconds: float = 0.0  # first task submitted to last result


RecordFailure = Callable[[Any, int, str], None]  # (job, index, reason): a sample whose worker kept dying


def store_failure(job: Any, index: int, reason: str) -> None:
    """A store job's failure record: the sample's status becomes failed, with the reason."""
    SampleWriter(job.url, job.plan_key).write(index, {"failure_stage": "internal", "failure_reason": reason}, FAILED)


def run_tasks(task: Callable[..., SampleOutcome], job: Any, todo: Sequence[int], ids: Sequence[str], options: RunOptions, *,
              done_before: int, on_start: OnStart | None = None, on_sample: OnSample | None = None,
              record_failure: RecordFailure = store_failure) -> TaskRun:
    """`task(job, index, sample_id)` for every index in `todo`; `job` (with `url`) is shipped once."""
    workers, scheduler, processes = options.workers, options.scheduler, options.processes
    if is_in_memory(job.url) and not scheduler:
        processes = False  # a memory:// store lives in this process: its workers must be threads
    run = TaskRun(workers=workers, scheduler=scheduler or f"LocalCluster({workers} {'processes' if processes else 'threads'})")
    if not todo:
        if on_start:
            on_start(0, done_before, None)
        return run
    from distributed import as_completed

    with dask_client(workers, scheduler, processes) as client:
        services = client.scheduler_info().get("services", {})
        run.dashboard = client.dashboard_link if "dashboard" in services else None
        run.workers = len(client.scheduler_info()["workers"]) or workers
        if on_start:
            on_start(len(todo), done_before, run.dashboard)
        t0 = time.perf_counter()
        shipped = client.scatter(job, broadcast=True)
        futures = client.map(task, [shipped] * len(todo), list(todo), [ids[i] for i in todo], pure=False)
        index_of = {f.key: i for f, i in zip(futures, todo, strict=True)}
        for future in as_completed(futures):
            i = index_of[future.key]
            try:
                outcome: SampleOutcome | None = future.result()
            except Exception as exc:  # noqa: BLE001 - recorded per sample, reported at the end
                outcome = _task_error(job, i, ids[i], exc, run.not_written, record_failure)
            if outcome is not None:
                run.outcomes.append(outcome)
            if on_sample:
                on_sample(outcome)
            future.release()
        run.seconds = time.perf_counter() - t0
    return run


def _task_error(job: Any, index: int, sample_id: str, exc: BaseException, not_written: list[FailureLine],
                record_failure: RecordFailure) -> SampleOutcome | None:
    """A worker that died on a sample (crash, out of memory) several times makes it a failure record;
    any other task error (full disk, lost store) leaves the sample pending for a rerun."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        reason = f"{sample_id}: the worker processing this sample died repeatedly (a crash or out of memory)"
        record_failure(job, index, reason)
        return SampleOutcome(index=index, path=sample_id, status="failed", stage="internal", reason=reason)
    not_written.append(FailureLine(path=sample_id, stage="write", reason=f"{type(exc).__name__}: {exc}"))
    return None


def run_store_job(task: Callable[..., SampleOutcome], make_job: Callable[[str], Any], plan: StorePlan, ids: Sequence[str],
                  columns: Sequence[Column], out: str, options: RunOptions, *, on_start: OnStart | None = None,
                  on_sample: OnSample | None = None,
                  constants: dict[str, tuple[Any, tuple[str, ...]]] | None = None,
                  after: Callable[[str, str], list[FailureLine]] | None = None,
                  extra_attrs: dict[str, object] | None = None) -> RunReport:
    """The whole life of a store run, shared by ingest, synth and render-rgbd: take the store's lock,
    create or resume the store, one task per sample still to do, `after(url, plan_key)` (ingest marks
    duplicates there), the manifest, the report. `make_job(plan_key)` builds what every task gets."""
    t_start = time.perf_counter()
    with store_lock(out):
        todo, done_before = prepare_store(out, plan, ids, columns, options.overwrite, constants, extra_attrs)
        key = plan_key(plan)
        run = run_tasks(task, make_job(key), todo, ids, options, done_before=done_before, on_start=on_start,
                        on_sample=on_sample)
        extra = after(out, key) if after else []
        manifest = finalize(open_group(out, "r+"), out)
    return run_report(plan.dataset, out, ids, done_before, run, manifest, time.perf_counter() - t_start, extra)


def run_report(dataset: str, url: str, ids: Sequence[str], done_before: int, run: TaskRun, manifest: Manifest,
               wall: float, extra_failures: Sequence[FailureLine] = ()) -> RunReport:
    """The summary of a run; `extra_failures` are ok outcomes turned into failures afterwards (duplicates)."""
    turned = {d.path for d in extra_failures}
    failures = [FailureLine(path=o.path, stage=o.stage or "", reason=o.reason or "") for o in run.outcomes if o.status == "failed"]
    failures += list(extra_failures)
    stage_totals: Counter[str] = Counter()
    for o in run.outcomes:
        stage_totals.update(o.seconds)
    n = max(len(run.outcomes), 1)
    return RunReport(
        dataset=dataset, store=url, samples=len(ids), done_before=done_before, processed=len(run.outcomes),
        ok=sum(o.status == "ok" and o.path not in turned for o in run.outcomes), failed=len(failures),
        not_written=len(run.not_written),
        store_status={"ok": manifest.ok, "failed": manifest.failed, "pending": manifest.pending},
        failures_by_stage=dict(sorted(Counter(f.stage for f in failures).items())),
        failures=sorted(failures + run.not_written, key=lambda f: f.path),
        stage_seconds_mean={k: v / n for k, v in stage_totals.items()}, wall_seconds=wall, processing_seconds=run.seconds,
        scans_per_second=len(run.outcomes) / run.seconds if run.seconds > 0 else 0.0, workers=run.workers,
        scheduler=run.scheduler, dashboard=run.dashboard, manifest_digest=manifest.digest)
