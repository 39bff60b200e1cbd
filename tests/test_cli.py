"""The console script as a user runs it: a real subprocess, real exit codes, real stderr."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def facepipe(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("facepipe")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_inspect_json_and_png(tmp_path: Path, example_dir: Path) -> None:
    scan = next((example_dir / "Bosphorus").rglob("*.bnt"))
    png = tmp_path / "p.png"
    run = facepipe("inspect", str(scan), "--json", "--png", str(png))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["format"] == "bosphorus" and report["landmarks"] == 22 and report["units"] == "mm"
    assert report["vertices"] > 1000 and report["faces"] > 1000
    assert all(lo < hi for lo, hi in zip(report["bbox_min"], report["bbox_max"]))
    img = np.asarray(Image.open(png))
    assert img.shape == (600, 480, 3) and img.std() > 10


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bs000_N_N_0.bnt"
    bad.write_bytes(b"\x00\x01\x02")
    run = facepipe("inspect", str(bad))
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {bad}: truncated .bnt header (3 bytes)"
    assert "Traceback" not in run.stderr
    debug = facepipe("--debug", "inspect", str(bad))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_catalog_commands_and_sample_data(tmp_path: Path) -> None:
    shutil.copy(REPO / "data_catalog.yaml", tmp_path)
    made = facepipe("sample-data", "data/example", "--subjects", "1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    listed = facepipe("catalog", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "example" in listed.stdout and "bu3dfe" in listed.stdout
    check = facepipe("catalog", "check", "example", "--json", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["files"] == 5 and json.loads(check.stdout)["readable"] == 5
    missing = facepipe("catalog", "check", "frgc", cwd=tmp_path, )
    assert missing.returncode == 1 and "MISSING" in missing.stdout
    unknown = facepipe("catalog", "check", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "no dataset 'nope'" in unknown.stderr


def test_preprocess_writes_points_and_reports_failures(tmp_path: Path, example_dir: Path) -> None:
    scan = next((example_dir / "BU-3DFE").rglob("*_F3D.wrl"))
    ply = tmp_path / "points.ply"
    run = facepipe("preprocess", str(scan), "--points", "3000", "--out", str(ply), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["quality"]["landmark_source"] == "bnd" and report["quality"]["landmark_residual_mm"] < 8
    assert np.array(report["to_template"]).shape == (4, 4)
    header = ply.read_bytes()[:400].decode("ascii", "replace")
    assert "element vertex 3000" in header and "property double nx" in header
    flat = tmp_path / "flat.obj"
    flat.write_text("v 0 0 0\nv 100 0 0\nv 0 100 0\nf 1 2 3\n")  # 100 mm: a plausible size, but no face
    run = facepipe("preprocess", str(flat), "--landmarks", "annotations")
    assert run.returncode == 1 and "failed at landmarks" in run.stdout
    run = facepipe("preprocess", str(scan), "--sampling", "everywhere")
    assert run.returncode == 2 and "sampling" in run.stderr


def test_ingest_command_summary_report_and_config(tmp_path: Path) -> None:
    shutil.copy(REPO / "data_catalog.yaml", tmp_path)
    assert facepipe("sample-data", "data/example", "--subjects", "1", cwd=tmp_path).returncode == 0
    (tmp_path / "settings.yaml").write_text("n_points: 2000\nsampling: area\n")
    run = facepipe("ingest", "example", "--threads", "--config", "settings.yaml", "--report", "rep.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "example -> out/example/scans.zarr" in run.stdout and "samples    5 (ok 5, failed 0, pending 0)" in run.stdout
    assert "samples/s" in run.stdout and "landmarks" in run.stdout
    report = json.loads((tmp_path / "rep.json").read_text())
    assert report["store_status"] == {"ok": 5, "failed": 0, "pending": 0} and report["processed"] == 5
    assert set(report["stage_seconds_mean"]) >= {"read", "landmarks", "resample", "write"}
    again = facepipe("ingest", "example", "--threads", "--config", "settings.yaml", cwd=tmp_path)
    assert again.returncode == 0 and "5 samples already ok, 0 to do" in again.stderr
    other = facepipe("ingest", "example", "--threads", cwd=tmp_path)
    assert other.returncode == 2 and "config.n_points: 2000 -> 29495" in other.stderr and "Traceback" not in other.stderr
    verified = facepipe("verify", "out/example/scans.zarr", cwd=tmp_path)
    assert verified.returncode == 0 and "OK" in verified.stdout
    (tmp_path / "bad.yaml").write_text("n_pointz: 3\n")
    bad = facepipe("ingest", "example", "--config", "bad.yaml", "--out", "o2.zarr", cwd=tmp_path)
    assert bad.returncode == 2 and "n_pointz" in bad.stderr and "Extra inputs are not permitted" in bad.stderr


@pytest.mark.slow
def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    """The README's main command, in a scratch folder, with this environment's facepipe."""
    import os

    env = os.environ | {"FACEPIPE": str(Path(sys.executable).with_name("facepipe")), "FACEPIPE_DEMO_DIR": str(tmp_path)}
    run = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "demo done" in run.stdout
    meshes = sorted((tmp_path / "out" / "demo" / "meshes").glob("*.ply"))
    assert len(meshes) == 20 and (tmp_path / "out" / "demo" / "meshes" / "index.csv").exists()
    report = json.loads((tmp_path / "out" / "demo" / "eval" / "report.json").read_text())
    assert report["samples"] == 20 and "bu3dfe_regions_mm" in report
    assert (tmp_path / "out" / "demo" / "run" / "losses.png").exists()
    assert len(list((tmp_path / "out" / "demo" / "reconstructed").glob("*.ply"))) == 24  # faces from depth frames
    frames = json.loads((tmp_path / "out" / "demo" / "eval-rgbd" / "report.json").read_text())["branches"]
    assert set(frames) == {"depth/sensor", "depth/clean"} and frames["depth/sensor"]["frames"] == 8
