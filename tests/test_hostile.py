"""Each case of a user's worst day, in its exact layout: bad files never stored as good, bounded
memory, no lost outputs, no traceback, resume after a kill during creation, one writer per store."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import trimesh
import yaml
import zarr
from PIL import Image

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.relief import FaceParams
from facepipe.pipeline.faces.template import Template
from facepipe.pipeline.io import bjut, bosphorus, texas
from facepipe.pipeline.io.registry import read_scan
from facepipe.pipeline.io.sample_data import bosphorus_files, bu3dfe_files, write_example_dataset, write_files
from facepipe.pipeline.io.text import CUT_LINE
from facepipe.pipeline.runtime.lock import StoreLockedError, lock_path, store_lock
from facepipe.pipeline.runtime.naming import file_relatives, output_names
from facepipe.pipeline.runtime.seeding import sample_rng
from facepipe.pipeline.runtime.store import FAILED, OK, open_group, read_status
from facepipe.pipeline.stages.ingest import run_ingest
from facepipe.pipeline.stages.preprocess import Preprocessed, preprocess, sample_problem
from facepipe.schemas.preprocess import PreprocessConfig
from facepipe.schemas.store import RunOptions

REPO = Path(__file__).resolve().parents[1]
FACEPIPE = [sys.executable, "-m", "facepipe.cli.app"]


def facepipe(*args: str | bytes, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FACEPIPE, *args], capture_output=True, text=True, errors="backslashreplace", cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=300)


def wrl_text(path: Path) -> str:
    return path.read_text(encoding="latin-1")


@pytest.fixture
def wrl(tmp_path: Path) -> Path:
    write_files(tmp_path, bu3dfe_files(FaceParams(), np.random.default_rng(3), "F0003_NE00WH_F3D", spacing=4.0))
    (tmp_path / "F0003_NE00WH_F3D.bnd").unlink()
    return tmp_path / "F0003_NE00WH_F3D.wrl"


# ------------------------------------------------------------------ 1. outputs never overwrite each other

def test_output_names_are_unique_for_bu4dfe_trees_and_clashing_stems() -> None:
    bu4dfe = [f"F001/{e}/000.wrl" for e in ("Angry", "Happy", "Sad")] + ["F002/Angry/000.wrl"]
    names = output_names(bu4dfe)
    assert names == ["F001__Angry__000", "F001__Happy__000", "F001__Sad__000", "F002__Angry__000"]
    clash = ["x/y__z.wrl", "x__y/z.wrl", "a.b.wrl", "a.b.obj", "A.wrl", "a.wrl"]
    made = output_names(clash)
    assert len({n.lower() for n in made}) == len(made)
    assert made == output_names(clash)  # stable: the same inputs give the same names
    assert output_names(["a/b.wrl"])[0] == output_names(["a/b.wrl", "c.wrl"])[0]  # no hash unless needed
    paths = [Path("/d/a/F0001_NE00WH_F3D.wrl"), Path("/d/b/F0001_NE00WH_F3D.wrl")]
    assert output_names(file_relatives(paths)) == ["a__F0001_NE00WH_F3D", "b__F0001_NE00WH_F3D"]
    assert output_names(file_relatives([Path("/d/a/x.wrl"), Path("/e/y.abs.gz")])) == ["x", "y"]


@pytest.mark.slow
def test_correspond_writes_one_mesh_per_input_for_same_named_files(tmp_path: Path) -> None:
    """Two inputs a/X.wrl and b/X.wrl: two meshes, two distinct rows in index.csv."""
    for sub, seed in (("a", 1), ("b", 2)):
        write_files(tmp_path / sub, bu3dfe_files(FaceParams(), np.random.default_rng(seed), "F0001_NE00WH_F3D", spacing=4.0))
    out = tmp_path / "meshes"
    run = facepipe("correspond", "--method", "nicp", "--in", str(tmp_path / "a" / "F0001_NE00WH_F3D.wrl"),
                   "--in", str(tmp_path / "b" / "F0001_NE00WH_F3D.wrl"), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.glob("*.ply")) == ["a__F0001_NE00WH_F3D.ply", "b__F0001_NE00WH_F3D.ply"]
    rows = (out / "index.csv").read_text().splitlines()[1:]
    assert len({r.split(",")[1] for r in rows}) == 2


# ------------------------------------------------------------------ 2. bad scans are never stored as ok

def test_vrml_with_zero_scale_is_a_read_error(wrl: Path) -> None:
    text = wrl_text(wrl).replace("Transform {\n", "Transform {\n  scale 0 0 0\n", 1)
    wrl.write_text(text, encoding="latin-1")
    with pytest.raises(ScanFormatError, match=r"F0003_NE00WH_F3D\.wrl: the surface spans only 0 mm"):
        read_scan(wrl)


def test_degenerate_samples_are_caught_before_the_store() -> None:
    pts = np.zeros((100, 3))
    assert "not unit" in sample_problem(pts, np.zeros((100, 3)), 1.0)  # type: ignore[operator]
    assert "span only" in sample_problem(pts, np.tile([0, 0, 1.0], (100, 1)), 1.0)  # type: ignore[operator]
    assert "outside" in sample_problem(pts + 2, np.tile([0, 0, 1.0], (100, 1)), 1.0)  # type: ignore[operator]
    good = np.random.default_rng(0).uniform(-0.5, 0.5, (100, 3))
    assert sample_problem(good, np.tile([0, 0, 1.0], (100, 1)), 1.0) is None


def _sphere_file(tmp_path: Path, kind: str) -> tuple[Path, bytes]:
    mesh = trimesh.creation.icosphere(3, radius=80.0)
    if kind == "ply":
        data = trimesh.exchange.ply.export_ply(mesh, encoding="ascii")
    elif kind == "off":
        data = mesh.export(file_type="off").encode()
    elif kind == "obj":
        data = mesh.export(file_type="obj").encode()
    else:
        data = bjut.write_bjut_text(mesh.vertices, mesh.faces)
    path = tmp_path / ("scan.txt" if kind == "bjut" else f"scan.{kind}")
    return path, data


@pytest.mark.parametrize("kind", ["ply", "off"])
def test_text_meshes_cut_short_are_errors_where_a_count_says_so(tmp_path: Path, kind: str) -> None:
    path, data = _sphere_file(tmp_path, kind)
    path.write_bytes(data[: int(len(data) * 0.99)])
    with pytest.raises(ScanFormatError, match=rf"scan\.{kind}: .*declares .*(truncated\?)"):
        read_scan(path)


@pytest.mark.parametrize("kind", ["obj", "bjut"])
def test_text_meshes_cut_mid_line_carry_a_warning(tmp_path: Path, kind: str) -> None:
    path, data = _sphere_file(tmp_path, kind)
    fmt = "bjut3d" if kind == "bjut" else None
    path.write_bytes(data)
    assert read_scan(path, fmt).warnings == ()
    whole = data.rstrip()
    assert whole[-2:].isdigit()
    path.write_bytes(whole[:-1])  # inside the last line's last number: a real, wrong triangle, only the newline is missing
    assert CUT_LINE in read_scan(path, fmt).warnings


def test_bjut_text_with_a_dropped_line_is_an_error(tmp_path: Path) -> None:
    mesh = trimesh.creation.icosphere(2, radius=80.0)
    lines = bjut.write_bjut_text(mesh.vertices, mesh.faces).decode().splitlines()
    del lines[5]
    path = tmp_path / "scan.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ScanFormatError, match="line 6: id 7 where 6 comes next"):
        read_scan(path, "bjut3d")


def test_warnings_reach_the_quality_record(tmp_path: Path, face_template: Template) -> None:
    write_files(tmp_path, bu3dfe_files(FaceParams(), np.random.default_rng(1), "F0001_NE00WH_F3D", spacing=3.0))
    scan = replace(read_scan(tmp_path / "F0001_NE00WH_F3D.wrl"), warnings=(CUT_LINE,))
    result = preprocess(scan, face_template, PreprocessConfig(n_points=2000), sample_rng(0, "t", "face"))
    assert isinstance(result, Preprocessed), result
    assert result.quality.warnings == [CUT_LINE]


# ------------------------------------------------------------------ 3. a real Bosphorus file marks invalid points in Z only

def test_bosphorus_marker_in_z_only_makes_the_point_invalid(tmp_path: Path) -> None:
    write_files(tmp_path, bosphorus_files(FaceParams(), np.random.default_rng(6), "bs012_E_HAPPY_0", spacing=2.5))
    path = tmp_path / "bs012_E_HAPPY_0.bnt"
    grid = bosphorus.parse_bnt(path.read_bytes(), path)
    valid = np.argwhere(grid.valid)
    r, c = valid[len(valid) // 2]
    grid.z[r, c] = grid.zmin  # X and Y keep real values, as in the public sample file
    path.write_bytes(bosphorus.write_bnt(grid))
    scan = read_scan(path)
    assert len(scan.vertices) == len(valid) - 1
    assert scan.vertices[:, 2].min() > -1e3


# ------------------------------------------------------------------ 4. small files, bounded memory

def _peak_rss_mb(code: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run `code` in a fresh interpreter; its own peak RSS (os.wait4) and what it printed."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, out
    return usage.ru_maxrss / 1024, out


BASELINE = "from facepipe.pipeline.io.registry import read_scan\nprint('ok')"


def _read_in_child(path: Path, fmt: str | None = None) -> str:
    return (f"from facepipe.pipeline.io.registry import read_scan\nfrom facepipe.pipeline.errors import ScanFormatError\n"
            f"try:\n    s = read_scan({str(path)!r}, {fmt!r})\n    print('read', len(s.vertices))\n"
            f"except ScanFormatError as e:\n    print('error', e)")


@pytest.mark.slow
def test_huge_declared_sizes_cost_no_memory(tmp_path: Path) -> None:
    base, _ = _peak_rss_mb(BASELINE)
    big = tmp_path / "bomb_Range.png"  # 6000 x 6000, zero background: about 35 kB on disk
    depth = np.zeros((6000, 6000), np.uint16)
    depth[2900:3100, 2900:3100] = 2000 + np.arange(200, dtype=np.uint16)[None, :]
    Image.fromarray(depth).save(big, optimize=True)
    assert big.stat().st_size < 200_000
    peak, out = _peak_rss_mb(_read_in_child(big))
    assert "error" in out and "6000 x 6000 pixels, more than the range-image limit" in out and "bomb_Range.png" in out
    assert peak - base < 150, (peak, base)
    # allowed by a raised limit, the empty background still costs nothing beyond the decoded image (72 MB)
    peak, out = _peak_rss_mb(_read_in_child(big), {"FACEPIPE_MAX_GRID_PIXELS": "40000000"})
    assert out.startswith("read 40000"), out
    assert peak - base < 450, (peak, base)
    bomb = tmp_path / "04200d100.abs.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as fh:
        fh.write(b"480 rows\n640 columns\npixels (flag X Y Z):\n")
        for _ in range(200):
            fh.write(b"0 " * 500_000)
    assert bomb.stat().st_size < 1_000_000
    peak, out = _peak_rss_mb(_read_in_child(bomb), {"FACEPIPE_MAX_DECOMPRESSED_MB": "50"})
    assert "inflates to more than 50 MB" in out and "04200d100.abs.gz" in out
    assert peak - base < 200, (peak, base)


def test_truncated_gzip_and_file_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "02463d452.abs.gz"
    path.write_bytes(gzip.compress(b"48 rows\n" * 1000)[:-30])
    with pytest.raises(ScanFormatError, match="02463d452.abs.gz: broken gzip stream"):
        read_scan(path)
    path.write_bytes(b"x" * 3_000_000)
    os.environ["FACEPIPE_MAX_FILE_MB"] = "1"
    try:
        with pytest.raises(ScanFormatError, match=r"3 MB is larger than the 1 MB read limit"):
            read_scan(path)
    finally:
        del os.environ["FACEPIPE_MAX_FILE_MB"]


def test_a_texas_range_image_with_a_wide_empty_background_reads_the_face_only(tmp_path: Path) -> None:
    depth = np.zeros((900, 1200), np.uint16)
    yy, xx = np.mgrid[0:120, 0:100]
    depth[400:520, 500:600] = (400 - 0.02 * ((yy - 60) ** 2 + (xx - 50) ** 2)).astype(np.uint16)
    path = tmp_path / "0001_Range.png"
    texas.write_range(path, depth)
    pix = np.array([[550, 460]] * texas.N_FIDUCIALS, float)
    (tmp_path / "0001_Fiducials.txt").write_bytes(texas.write_fiducials(pix))
    scan = read_scan(path)
    assert len(scan.vertices) == 120 * 100 and scan.grid_shape == (900, 1200)
    assert np.allclose(scan.landmarks.points[0][:2], [(550 - 599.5) * texas.PIXEL_MM, (449.5 - 460) * texas.PIXEL_MM])  # type: ignore[union-attr]


# ------------------------------------------------------------------ 5. clear errors, never a traceback

NESTED = "#VRML V2.0 utf8\n" + "Group { children [ " * 3000 + "]}" * 3000 + "\n"


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda t: t.replace("Transform {\n", "Transform {\n  rotation 0 1\n", 1), r"Transform\.rotation needs 4 finite numbers"),
        (lambda t: t.replace("Transform {\n", "Transform {\n  translation 1 two 3\n", 1), r"Transform\.translation needs 3"),
        (lambda t: t.replace("Transform {\n", "Transform {\n  translation one two three\n", 1), r"line 5: expected '\{', found 'two'"),
        (lambda t: t.replace("Transform {\n", "Transform {\n  scale 1 nan 1\n", 1), r"Transform\.scale needs 3 finite"),
        (lambda t: t + "Viewpoint { position 0 here 1 }\n", r"Viewpoint\.position needs 3"),
        (lambda t: re.sub(r"coord Coordinate \{\s*point \[", "coord [1 2 3] foo Coordinate { point [", t, count=1),
         r"IndexedFaceSet\.coord must be a Coordinate node"),
        (lambda t: NESTED, "nested deeper than 64"),
    ],
)
def test_hostile_vrml_values_are_clear_errors(wrl: Path, edit, problem: str) -> None:  # type: ignore[no-untyped-def]
    wrl.write_text(edit(wrl_text(wrl)), encoding="latin-1")
    with pytest.raises(ScanFormatError, match=problem) as info:
        read_scan(wrl)
    assert str(wrl) in str(info.value)


def test_exponential_def_use_is_bounded(tmp_path: Path) -> None:
    """A 2 kB file whose DEF/USE chain would repeat one shape 2^40 times."""
    shape = "DEF S0 Shape { geometry IndexedFaceSet { coord Coordinate { point [0 0 0, 100 0 0, 0 100 0] } coordIndex [0 1 2 -1] } }\n"
    levels = "".join(f"DEF S{i + 1} Group {{ children [ USE S{i} USE S{i} ] }}\n" for i in range(40))
    path = tmp_path / "bomb.wrl"
    path.write_text("#VRML V2.0 utf8\n" + shape + levels)
    with pytest.raises(ScanFormatError, match="expands to more than 100,000 nodes through DEF/USE"):
        read_scan(path)


def test_non_finite_lm3_is_an_error_naming_the_landmark_file(bosphorus_scan: Path) -> None:
    lm3 = bosphorus_scan.with_suffix(".lm3")
    lines = lm3.read_text().splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "nose tip")
    lines[k + 1] = "nan 1.0 inf"
    lm3.write_text("\n".join(lines) + "\n")
    with pytest.raises(ScanFormatError, match=r"bs012_E_HAPPY_0\.lm3: landmark 'Nose tip' has NaN/inf"):
        read_scan(bosphorus_scan)


def test_fifo_and_folders_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "F0001_NE00WH_F3D.wrl"
    os.mkfifo(fifo)
    with pytest.raises(ScanFormatError, match="is a FIFO, not a regular file"):
        read_scan(fifo)
    plain = tmp_path / "scan.txt"
    os.mkfifo(plain)  # detection by content must not open it either
    with pytest.raises(ScanFormatError, match="is a FIFO"):
        read_scan(plain)


@pytest.mark.slow
def test_cli_never_shows_a_traceback(tmp_path: Path, wrl: Path) -> None:
    odd = os.fsencode(tmp_path) + b"/F0003_NE00WH_F3D_\xff\xfe.wrl"  # not UTF-8
    shutil.copy(wrl, odd)
    inspect = facepipe("inspect", odd, "--json")
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["path"].endswith("F3D_\\xff\\xfe.wrl")
    pre = facepipe("preprocess", odd, "--points", "500", "--landmarks", "annotations")
    assert pre.returncode == 1 and "\\xff\\xfe" in pre.stdout and "Traceback" not in pre.stderr
    broken = os.fsencode(tmp_path) + b"/bs000_N_N_0_\xff.bnt"
    Path(os.fsdecode(broken)).write_bytes(b"\x01\x00")
    bad = facepipe("inspect", broken, "--json")
    assert bad.returncode == 2 and "bs000_N_N_0_\\xff.bnt: truncated .bnt header" in bad.stderr
    # a Zarr v2 store whose filter is a pickle: refused, and nothing decoded
    v2 = tmp_path / "v2.zarr"
    v2.mkdir()
    (v2 / ".zgroup").write_text('{"zarr_format": 2}')
    (v2 / ".zattrs").write_text("{}")
    (v2 / "status").mkdir()
    (v2 / "status" / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [1], "chunks": [1], "dtype": "|O", "compressor": None, "fill_value": 0,
        "order": "C", "filters": [{"id": "pickle", "protocol": 5}]}))
    ver = facepipe("verify", str(v2))
    assert ver.returncode == 2 and "not a facepipe store" in ver.stderr and "Traceback" not in ver.stderr
    fifo = tmp_path / "pipe.wrl"
    os.mkfifo(fifo)
    run = facepipe("inspect", str(fifo))
    assert run.returncode == 2 and "is a FIFO, not a regular file" in run.stderr


# ------------------------------------------------------------------ 6. resume after a kill during creation, one writer

def _catalog(folder: Path) -> Path:
    entry = {"format": "auto", "root": "data", "patterns": ["BU-3DFE/**/*_F3D.wrl", "Bosphorus/**/*.bnt", "FRGC/**/*.abs",
                                                            "other/**/*"],
             "landmarks": "file", "licence": "test", "obtain": "test"}
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "datasets": {"faces": entry}}))
    return path


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    write_example_dataset(folder / "data", subjects=1, seed=5)
    _catalog(folder)
    return folder


def test_a_kill_during_store_creation_resumes_without_overwrite(small_dataset: Path, face_template: Template,
                                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = str(tmp_path / "s.zarr")
    real = zarr.Group.create_array
    calls = {"n": 0}

    def dies_on_the_fourth(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as a kill would stop it: mid-way, nothing cleaned up
        return real(self, *args, **kwargs)

    monkeypatch.setattr(zarr.Group, "create_array", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        run_ingest("faces", small_dataset / "catalog.yaml", out, face_template, options=RunOptions(workers=1, processes=False))
    monkeypatch.setattr(zarr.Group, "create_array", real)
    assert open_group(out).attrs.get("creating") is True
    report = run_ingest("faces", small_dataset / "catalog.yaml", out, face_template, options=RunOptions(workers=1, processes=False))
    assert report.store_status["ok"] == 5 and not Path(lock_path(out)).exists()
    clean = run_ingest("faces", small_dataset / "catalog.yaml", str(tmp_path / "clean.zarr"), face_template, options=RunOptions(workers=1, processes=False))
    assert report.manifest_digest == clean.manifest_digest


def test_one_writer_per_store(small_dataset: Path, face_template: Template, tmp_path: Path) -> None:
    out = str(tmp_path / "s.zarr")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import psutil

        holder = {"host": socket.gethostname(), "pid": sleeper.pid, "started": psutil.Process(sleeper.pid).create_time(),
                  "since": "now", "command": "facepipe ingest faces"}
        Path(lock_path(out)).write_text(json.dumps(holder))
        with pytest.raises(StoreLockedError, match=rf"being written by another run: pid {sleeper.pid} on "):
            run_ingest("faces", small_dataset / "catalog.yaml", out, face_template, options=RunOptions(workers=1, processes=False))
        assert not Path(out).exists()  # refused before anything was written
    finally:
        sleeper.kill()
        sleeper.wait()
    # the holder is gone (killed -9): its lock is taken over and removed at the end
    report = run_ingest("faces", small_dataset / "catalog.yaml", out, face_template, options=RunOptions(workers=1, processes=False))
    assert report.store_status["ok"] == 5 and not Path(lock_path(out)).exists()
    # a lock from another host cannot be checked: refused, saying what to do
    Path(lock_path(out)).write_text(json.dumps(holder | {"host": "elsewhere", "pid": 1}))
    with pytest.raises(StoreLockedError, match="if that process is gone, delete"):
        with store_lock(out):
            pass
    Path(lock_path(out)).unlink()
    with store_lock(out), pytest.raises(StoreLockedError):  # the same process twice: also refused
        with store_lock(out):
            pass


def test_hostile_files_in_a_dataset_cost_only_themselves(small_dataset: Path, face_template: Template, tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    shutil.copytree(small_dataset / "data", folder / "data")
    _catalog(folder)
    other = folder / "data" / "other"
    other.mkdir()
    good = next((folder / "data" / "BU-3DFE").rglob("*NE00*_F3D.wrl"))
    text = good.read_text(encoding="latin-1")
    (other / "flat.wrl").write_text(text.replace("Transform {\n", "Transform {\n  scale 0 0 0\n", 1), encoding="latin-1")
    os.mkfifo(other / "fifo.wrl")
    cut = trimesh.exchange.ply.export_ply(trimesh.creation.icosphere(2, radius=80.0), encoding="ascii")
    (other / "cut.ply").write_bytes(cut[: int(len(cut) * 0.99)])
    (other / "nested.wrl").write_text(NESTED)
    report = run_ingest("faces", folder / "catalog.yaml", str(tmp_path / "s.zarr"), face_template, options=RunOptions(workers=1, processes=False))
    assert report.store_status == {"ok": 5, "failed": 4, "pending": 0}
    reasons = {Path(f.path).name: (f.stage, f.reason) for f in report.failures}
    assert reasons["flat.wrl"][0] == "read" and "spans only 0 mm" in reasons["flat.wrl"][1]
    assert "FIFO" in reasons["fifo.wrl"][1] and "truncated" in reasons["cut.ply"][1] and "nested" in reasons["nested.wrl"][1]
    group = open_group(str(tmp_path / "s.zarr"))
    status = read_status(group)
    assert (status == OK).sum() == 5 and (status == FAILED).sum() == 4
    for i in np.flatnonzero(status == OK):
        n = np.linalg.norm(group["normals"][int(i)], axis=1)
        assert np.allclose(n, 1, atol=1e-3) and np.ptp(group["points"][int(i)], axis=0).max() > 0.5


def test_struct_header_lengths_are_checked(tmp_path: Path) -> None:
    """A BJUT binary header that promises more than the file holds."""
    path = tmp_path / "scan.bin"
    path.write_bytes(struct.pack("<ii", 10**8, 10**8) + b"\x00" * 64)
    with pytest.raises(ScanFormatError, match=r"scan\.bin: header says 100000000 vertices"):
        read_scan(path, "bjut3d")
