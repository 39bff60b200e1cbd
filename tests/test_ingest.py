"""`facepipe ingest`: failure records, resume after a kill with identical bytes, reproducibility, stores."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
import zarr

from facepipe.pipeline.errors import CatalogError, FacepipeError
from facepipe.pipeline.faces.template import Template
from facepipe.pipeline.io import frgc
from facepipe.pipeline.io.sample_data import write_example_dataset
from facepipe.pipeline.runtime import store as store_mod
from facepipe.pipeline.runtime.store import FAILED, OK, PENDING, StoreError, open_group, read_status, verify_store
from facepipe.pipeline.stages.ingest import IngestError, run_ingest
from facepipe.schemas.store import RunOptions

REPO = Path(__file__).resolve().parents[1]
PATTERNS = ["BU-3DFE/**/*_F3D.wrl", "Bosphorus/**/*.bnt", "FRGC/**/*.abs"]


def write_catalog(folder: Path, name: str = "faces", patterns: list[str] = PATTERNS, landmarks: str = "file") -> Path:
    entry = {"format": "auto", "root": "data", "patterns": patterns, "landmarks": landmarks, "licence": "test", "obtain": "test"}
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "datasets": {name: entry}}))
    return path


def dome_abs() -> bytes:
    """An FRGC range grid of a smooth dome: readable, but no face to find."""
    rows, cols = 60, 80
    y, x = np.mgrid[rows - 1:-1:-1, 0:cols].astype(np.float64)
    x, y = (x - cols / 2) * 2.5, (y - rows / 2) * 2.5
    z = np.sqrt(np.clip(120.0**2 - x**2 - y**2, 0, None)) - 1100.0
    return frgc.write_abs(frgc.AbsGrid(np.ones((rows, cols), np.uint8), x, y, z))


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Example scans plus one unreadable file, one scan without a face, one duplicate and an empty folder."""
    folder = tmp_path_factory.mktemp("bad")
    data = folder / "data"
    write_example_dataset(data, subjects=2, seed=3)
    (data / "Bosphorus" / "bs009").mkdir(parents=True)
    (data / "Bosphorus" / "bs009" / "bs009_N_N_0.bnt").write_bytes(b"\x00\x01garbage")
    (data / "FRGC" / "nd1" / "Spring2003range" / "04300d300.abs").write_bytes(dome_abs())
    original = next((data / "BU-3DFE" / "F0001").glob("*NE00*_F3D.wrl"))
    copy_dir = data / "BU-3DFE" / "F0099"
    copy_dir.mkdir()
    for f in original.parent.glob(original.name.split(".")[0] + ".*"):
        shutil.copy(f, copy_dir / f.name.replace("F0001", "F0099"))
    (data / "BU-3DFE" / "F0100").mkdir()  # an empty subject folder
    write_catalog(folder)
    return folder


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    write_example_dataset(folder / "data", subjects=6, seed=11)
    write_catalog(folder)
    return folder


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference_store(clean_dataset: Path, face_template: Template) -> Path:
    """An uninterrupted ingest with a LocalCluster of 2 worker processes: what every other run must equal."""
    out = clean_dataset / "reference.zarr"
    report = run_ingest("faces", clean_dataset / "catalog.yaml", str(out), face_template, options=RunOptions(workers=2))
    assert report.store_status == {"ok": 30, "failed": 0, "pending": 0}, report.failures
    return out


def test_bad_scans_are_failure_records_and_the_rest_lands(bad_dataset: Path, face_template: Template) -> None:
    out = bad_dataset / "bad.zarr"
    report = run_ingest("faces", bad_dataset / "catalog.yaml", str(out), face_template, options=RunOptions(workers=2, processes=False))
    assert report.samples == 13 and report.processed == 13 and report.not_written == 0
    assert report.store_status == {"ok": 10, "failed": 3, "pending": 0}
    assert report.failures_by_stage == {"duplicate": 1, "landmarks": 1, "read": 1}
    by_path = {f.path: f for f in report.failures}
    assert "garbage" not in by_path["Bosphorus/bs009/bs009_N_N_0.bnt"].reason
    assert "bs009_N_N_0.bnt" in by_path["Bosphorus/bs009/bs009_N_N_0.bnt"].reason
    assert by_path["BU-3DFE/F0099/F0099_NE00WH_F3D.wrl"].reason == "same file content as BU-3DFE/F0001/F0001_NE00WH_F3D.wrl"
    assert by_path["FRGC/nd1/Spring2003range/04300d300.abs"].stage == "landmarks"
    group = open_group(str(out))
    status = read_status(group)
    paths = list(group["source_path"][:])
    failed = {paths[i] for i in np.flatnonzero(status == FAILED)}
    assert failed == set(by_path)
    ok = np.flatnonzero(status == OK)
    points = group["points"][:]
    assert np.isfinite(points[ok]).all() and np.isnan(points[status == FAILED]).all()
    assert np.abs(points[ok]).max() <= 1.0 + 1e-6
    assert np.allclose(np.linalg.norm(group["normals"][int(ok[0])], axis=1), 1.0, atol=1e-5)
    assert str(group["failure_stage"][paths.index("Bosphorus/bs009/bs009_N_N_0.bnt")]) == "read"
    first = paths.index("BU-3DFE/F0001/F0001_NE00WH_F3D.wrl")
    assert str(group["subject"][first]) == "F0001" and str(group["expression"][first]) == "NE"
    quality = json.loads(str(group["quality"][first]))
    assert quality["landmark_source"] == "bnd" and "seconds" not in quality
    assert verify_store(str(out)).ok


def test_store_reads_with_plain_zarr_and_xarray(bad_dataset: Path, face_template: Template) -> None:
    out = bad_dataset / "bad.zarr"
    if not out.exists():
        run_ingest("faces", bad_dataset / "catalog.yaml", str(out), face_template, options=RunOptions(processes=False))
    group = zarr.open_group(str(out), mode="r")
    assert group["points"].chunks == (1, 29_495, 3) and group["points"].metadata.dimension_names == ("sample", "point", "xyz")
    assert group.attrs["plan"]["template_id"] == face_template.id
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(str(out), consolidated=False, mask_and_scale=False)
    assert ds["points"].dims == ("sample", "point", "xyz") and ds.sizes["sample"] == 13
    assert int((ds["status"] == OK).sum()) == 10


def test_empty_or_missing_dataset_is_a_clear_error(tmp_path: Path, face_template: Template) -> None:
    catalog = write_catalog(tmp_path)
    with pytest.raises(CatalogError, match="root .*data does not exist"):
        run_ingest("faces", catalog, str(tmp_path / "s.zarr"), face_template, options=RunOptions(processes=False))
    (tmp_path / "data" / "BU-3DFE").mkdir(parents=True)
    with pytest.raises(CatalogError, match=r"no scan under .*data matches \['BU-3DFE"):
        run_ingest("faces", catalog, str(tmp_path / "s.zarr"), face_template, options=RunOptions(processes=False))
    assert not (tmp_path / "s.zarr").exists()


def test_one_and_two_workers_write_identical_stores(clean_dataset: Path, reference_store: Path, face_template: Template) -> None:
    out = clean_dataset / "one.zarr"
    report = run_ingest("faces", clean_dataset / "catalog.yaml", str(out), face_template, options=RunOptions(workers=1))
    assert report.workers == 1
    assert report.manifest_digest == zarr.open_group(str(reference_store)).attrs["manifest"]["digest"]
    assert tree_bytes(out) == tree_bytes(reference_store)


def test_kill_9_mid_run_then_resume_gives_identical_bytes(clean_dataset: Path, reference_store: Path) -> None:
    out = clean_dataset / "killed.zarr"
    args = [str(Path(sys.executable).with_name("facepipe")), "ingest", "faces", "--catalog", "catalog.yaml", "--out", str(out)]
    run = subprocess.Popen([*args, "--workers", "1"], cwd=clean_dataset, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok_at_kill = 0
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and run.poll() is None:
            if (out / "status" / "zarr.json").exists():
                ok_at_kill = int((read_status(zarr.open_group(str(out), mode="r")) == OK).sum())
                if ok_at_kill >= 4:
                    break
            time.sleep(0.02)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the driver and its worker processes, as a crash would
        run.wait()
    assert 4 <= ok_at_kill < 30, f"the kill did not land mid-run ({ok_at_kill} ok)"
    interrupted = verify_store(str(out))
    assert not interrupted.ok and "has not finished" in interrupted.problems[0]
    resumed = subprocess.run([*args, "--workers", "2"], cwd=clean_dataset, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "samples already ok" in resumed.stderr
    verified = subprocess.run([args[0], "verify", str(out)], capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout
    assert tree_bytes(out) == tree_bytes(reference_store)


def test_a_changed_config_refuses_to_resume(bad_dataset: Path, face_template: Template, tmp_path: Path) -> None:
    catalog = bad_dataset / "catalog.yaml"
    out = str(tmp_path / "s.zarr")
    run_ingest("faces", catalog, out, face_template, limit=2, overrides={"n_points": 500}, options=RunOptions(processes=False))
    with pytest.raises(StoreError, match=r"(?s)different plan.*config\.n_points: 500 -> 600") as plan_changed:
        run_ingest("faces", catalog, out, face_template, limit=2, overrides={"n_points": 600}, options=RunOptions(processes=False))
    assert plan_changed.value.remedy == "overwrite"  # the CLI names the flag
    with pytest.raises(StoreError, match="seed: 0 -> 1"):
        run_ingest("faces", catalog, out, face_template, limit=2, seed=1, overrides={"n_points": 500}, options=RunOptions(processes=False))
    with pytest.raises(StoreError, match="list of scan files differs"):
        run_ingest("faces", catalog, out, face_template, limit=3, overrides={"n_points": 500}, options=RunOptions(processes=False))
    report = run_ingest("faces", catalog, out, face_template, limit=2, overrides={"n_points": 600}, options=RunOptions(processes=False, overwrite=True))
    assert report.done_before == 0 and open_group(out)["points"].shape == (2, 600, 3)
    again = run_ingest("faces", catalog, out, face_template, limit=2, overrides={"n_points": 600}, options=RunOptions(processes=False))
    assert again.done_before == 2 and again.processed == 0
    with pytest.raises(IngestError, match="invalid preprocessing config"):
        run_ingest("faces", catalog, out, face_template, overrides={"n_points": -1}, options=RunOptions(processes=False))
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="exists and is not a Zarr store: refusing"):
            run_ingest("faces", catalog, str(mine), face_template, limit=2, options=RunOptions(processes=False, overwrite=overwrite))
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_failed_write_leaves_the_sample_pending_and_a_rerun_completes(
        clean_dataset: Path, reference_store: Path, face_template: Template, monkeypatch: pytest.MonkeyPatch) -> None:
    out = clean_dataset / "full.zarr"
    real_write = store_mod.SampleWriter.write

    def disk_full_for_sample_3(self: store_mod.SampleWriter, index: int, values: dict, status: int) -> None:
        if index == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, index, values, status)

    monkeypatch.setattr(store_mod.SampleWriter, "write", disk_full_for_sample_3)
    report = run_ingest("faces", clean_dataset / "catalog.yaml", str(out), face_template, options=RunOptions(processes=False))
    assert report.not_written == 1 and report.store_status == {"ok": 29, "failed": 0, "pending": 1}
    assert [f.stage for f in report.failures] == ["write"] and "No space left" in report.failures[0].reason
    assert read_status(open_group(str(out)))[3] == PENDING
    monkeypatch.setattr(store_mod.SampleWriter, "write", real_write)
    rerun = run_ingest("faces", clean_dataset / "catalog.yaml", str(out), face_template, options=RunOptions(processes=False))
    assert rerun.done_before == 29 and rerun.processed == 1 and rerun.not_written == 0
    assert tree_bytes(out) == tree_bytes(reference_store)


def test_memory_store_dataset_and_dataloader(clean_dataset: Path, face_template: Template) -> None:
    torch = pytest.importorskip("torch")
    from facepipe.models.store_dataset import StoreDataset

    url = "memory://facepipe-test/scans.zarr"
    report = run_ingest("faces", clean_dataset / "catalog.yaml", url, face_template, limit=6, options=RunOptions(workers=2))
    assert report.store_status["ok"] == 6 and report.scheduler.endswith("threads)")
    assert verify_store(url).ok
    ds = StoreDataset(url)
    item = ds[5]
    assert item["points"].shape == (29_495, 3) and item["points"].dtype == torch.float32 and int(item["index"]) == 5
    assert torch.allclose(item["to_template"], torch.from_numpy(open_group(url)["to_template"][5]))
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(KeyError, match="no array 'vertices'"):
        StoreDataset(url, arrays=("vertices",))


def test_dataloader_workers_read_a_local_store(reference_store: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from facepipe.models.store_dataset import StoreDataset

    ds = StoreDataset(str(reference_store), arrays=("points", "landmarks"))
    seen = []
    for batch in DataLoader(ds, batch_size=8, num_workers=2):
        assert batch["points"].shape[1:] == (29_495, 3) and batch["landmarks"].shape[1:] == (5, 3)
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(30))
    direct = open_group(str(reference_store))["points"][17]
    assert torch.equal(ds[17]["points"], torch.from_numpy(direct))


def test_an_existing_scheduler_runs_the_tasks(clean_dataset: Path, reference_store: Path, face_template: Template,
                                              tmp_path: Path) -> None:
    from distributed import LocalCluster

    out = tmp_path / "remote.zarr"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        report = run_ingest("faces", clean_dataset / "catalog.yaml", str(out), face_template, limit=5, options=RunOptions(scheduler=cluster.scheduler_address))
    assert report.scheduler == cluster.scheduler_address and report.store_status["ok"] == 5
    reference = open_group(str(reference_store))
    assert np.array_equal(open_group(str(out))["points"][:5], reference["points"][:5])


def test_verify_finds_a_changed_sample(clean_dataset: Path, reference_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy.zarr"
    shutil.copytree(reference_store, out)
    assert verify_store(str(out)).ok
    points = zarr.open_group(str(out), mode="r+")["points"]
    changed = points[4]
    changed[0, 0] += 1e-3
    points[4] = changed
    report = verify_store(str(out))
    assert not report.ok and report.mismatched_arrays == ["points"]
    cli = subprocess.run([str(Path(sys.executable).with_name("facepipe")), "verify", str(out)], capture_output=True, text=True)
    assert cli.returncode == 1 and "array points: content differs" in cli.stdout
    with pytest.raises(FacepipeError, match="not a facepipe store"):
        verify_store(str(tmp_path / "nothing.zarr"))


def test_kill_9_of_a_worker_mid_run_still_gives_identical_bytes(clean_dataset: Path, reference_store: Path,
                                                                 face_template: Template) -> None:
    import threading

    from distributed import Client, LocalCluster

    out = clean_dataset / "worker-killed.zarr"
    killed: list[int] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())

        def kill_one_worker_once_samples_land() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if (out / "status" / "zarr.json").exists() and (read_status(zarr.open_group(str(out), mode="r")) == OK).sum() >= 3:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
                time.sleep(0.02)

        killer = threading.Thread(target=kill_one_worker_once_samples_land)
        killer.start()
        report = run_ingest("faces", clean_dataset / "catalog.yaml", str(out), face_template, options=RunOptions(scheduler=cluster.scheduler_address))
        killer.join()
    assert killed, "no worker was killed"
    assert report.store_status == {"ok": 30, "failed": 0, "pending": 0} and report.not_written == 0
    assert tree_bytes(out) == tree_bytes(reference_store)


def test_a_scan_that_keeps_killing_its_worker_becomes_a_failure_record(
        clean_dataset: Path, face_template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask gives up on a task after its worker died `allowed-failures` times and raises KilledWorker."""
    from distributed import KilledWorker

    from facepipe.pipeline.stages import ingest

    real = ingest.ingest_sample

    def crashes_on_sample_2(job: ingest.IngestJob, index: int, sample_id: str) -> object:
        if index == 2:
            raise KilledWorker(task="ingest_sample-2", last_worker=SimpleNamespace(address="tcp://127.0.0.1:1"), allowed_failures=3)
        return real(job, index, sample_id)

    monkeypatch.setattr(ingest, "ingest_sample", crashes_on_sample_2)  # the driver maps the module's function
    out = tmp_path / "crash.zarr"
    report = ingest.run_ingest("faces", clean_dataset / "catalog.yaml", str(out), face_template, limit=4, options=RunOptions(processes=False))
    assert report.store_status == {"ok": 3, "failed": 1, "pending": 0} and report.not_written == 0, report.failures
    assert report.failures[0].stage == "internal" and "died repeatedly" in report.failures[0].reason
    group = open_group(str(out))
    assert read_status(group)[2] == FAILED and "died repeatedly" in str(group["failure_reason"][2])
