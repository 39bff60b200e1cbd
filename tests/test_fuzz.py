"""The fuzz suite: corrupted copies of a valid file of every reader, each of which must end as a
scan that passes the checks or as facepipe's own error naming the file, quickly and in bounded
memory. Truncations, zeroed and random blocks, forged header counts, NaN/inf, deep nesting, wrong
field values, names that are not UTF-8, corrupted side files, then hypothesis byte flips."""

from __future__ import annotations

import gzip
import os
import re
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facepipe.pipeline.errors import ScanFormatError, printable
from facepipe.pipeline.faces.relief import FaceParams
from facepipe.pipeline.io import bjut, texas
from facepipe.pipeline.io.registry import read_scan
from facepipe.pipeline.io.sample_data import bosphorus_files, bu3dfe_files, frgc_files, write_files
from facepipe.pipeline.io.vrml import VrmlDocument, parse_vrml, write_vrml
from facepipe.schemas.scan import ReadLimits

SECONDS_PER_READ = 10.0  # generous for 2 busy cores; a valid file of these sizes reads in tens of ms
LIMITS = ReadLimits()


def _sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(2, radius=90.0)


def _make(folder: Path, kind: str) -> tuple[Path, str | None]:
    """A small valid file of `kind` (with its side files) in `folder`; returns the scan and the reader to name."""
    rng = np.random.default_rng(11)
    if kind == "bu3dfe":
        write_files(folder, bu3dfe_files(FaceParams(), rng, "F0001_NE00WH_F3D", spacing=6.0))
        return folder / "F0001_NE00WH_F3D.wrl", None
    if kind == "bu4dfe":
        files = bu3dfe_files(FaceParams(), rng, "000", spacing=6.0)
        write_files(folder / "F001" / "Angry", {k: v for k, v in files.items() if not k.endswith(".bmp")})
        return folder / "F001" / "Angry" / "000.wrl", None
    if kind == "vrml-polyworks":
        doc = parse_vrml(bu3dfe_files(FaceParams(), rng, "x", spacing=6.0)["x.wrl"].decode())
        fs = doc.face_sets[0]
        fs.normals, fs.colors = np.tile([0, 0, 1.0], (len(fs.coords), 1)), np.full((len(fs.coords), 3), 0.5)
        fs.tex_coords = fs.tex_index = None
        (folder / "scan.wrl").write_bytes(write_vrml(VrmlDocument([fs]), "polyworks"))
        return folder / "scan.wrl", None
    if kind == "bosphorus":
        write_files(folder, bosphorus_files(FaceParams(), rng, "bs001_E_HAPPY_0", spacing=4.0))
        return folder / "bs001_E_HAPPY_0.bnt", None
    if kind in ("frgc", "frgc-gz"):
        write_files(folder, frgc_files(FaceParams(), rng, "02463d452", rows=30, cols=40))
        path = folder / "02463d452.abs"
        if kind == "frgc-gz":
            path.with_suffix(".abs.gz").write_bytes(gzip.compress(path.read_bytes(), mtime=0))
            path.unlink()
            return folder / "02463d452.abs.gz", None
        return path, None
    if kind == "texas":
        yy, xx = np.mgrid[0:60, 0:50]
        depth = np.zeros((80, 70), np.uint16)
        depth[10:70, 10:60] = (300 - 0.05 * ((yy - 30) ** 2 + (xx - 25) ** 2)).astype(np.uint16)
        texas.write_range(folder / "0001_Range.png", depth)
        (folder / "0001_Fiducials.txt").write_bytes(texas.write_fiducials(np.tile([35.0, 40.0], (texas.N_FIDUCIALS, 1))))
        return folder / "0001_Range.png", None
    mesh = _sphere()
    if kind == "micc":
        path = folder / "subject_01" / "Model" / "frontal1" / "obj" / "20100101.obj"
        path.parent.mkdir(parents=True)
        path.write_text(mesh.export(file_type="obj"))
        return path, None
    if kind == "bjut-text":
        (folder / "scan.txt").write_bytes(bjut.write_bjut_text(mesh.vertices, mesh.faces, np.full((len(mesh.vertices), 3), 200)))
        return folder / "scan.txt", "bjut3d"
    if kind == "bjut-binary":
        (folder / "scan.bin").write_bytes(bjut.write_bjut_binary(mesh.vertices, mesh.faces, np.full((len(mesh.vertices), 3), 200.0)))
        return folder / "scan.bin", "bjut3d"
    if kind == "ply-ascii":
        (folder / "scan.ply").write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding="ascii"))
        return folder / "scan.ply", None
    if kind == "ply-binary":
        (folder / "scan.ply").write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding="binary"))
        return folder / "scan.ply", None
    if kind in ("obj", "off"):
        (folder / f"scan.{kind}").write_text(mesh.export(file_type=kind))
        return folder / f"scan.{kind}", None
    if kind == "stl":
        (folder / "scan.stl").write_bytes(mesh.export(file_type="stl"))
        return folder / "scan.stl", None
    raise ValueError(kind)


KINDS = ["bu3dfe", "bu4dfe", "vrml-polyworks", "bosphorus", "frgc", "frgc-gz", "texas", "micc", "bjut-text", "bjut-binary",
         "ply-ascii", "ply-binary", "obj", "off", "stl"]
SIDE_FILES = {"bu3dfe": (".bnd", ".bmp"), "bu4dfe": (".bnd",), "bosphorus": (".lm3", ".png"), "frgc": (".ppm",),
              "texas": ("_Fiducials.txt",)}


def expect_scan_or_clear_error(path: Path, fmt: str | None, names: tuple[str, ...]) -> str:
    """The contract: a Scan that passes every check, or a ScanFormatError that names the file."""
    t0 = time.perf_counter()
    try:
        scan = read_scan(path, fmt)
    except ScanFormatError as exc:
        assert any(printable(n) in str(exc) for n in names), f"error does not name the file: {exc}"
        outcome = "error"
    else:
        assert np.isfinite(scan.vertices).all() and scan.faces.min() >= 0 and scan.faces.max() < len(scan.vertices)
        extent = np.ptp(scan.vertices[np.unique(scan.faces)], axis=0).max()
        assert LIMITS.min_extent_mm <= extent <= LIMITS.max_extent_mm
        if scan.normals is not None:
            assert np.isfinite(scan.normals).all()
        outcome = "scan"
    assert time.perf_counter() - t0 < SECONDS_PER_READ, f"{path.name} took {time.perf_counter() - t0:.1f} s"
    return outcome


def _numbers_at(data: bytes) -> list[re.Match[bytes]]:
    return list(re.finditer(rb"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?(?![\w.])", data))


def corruptions(data: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    """Named corrupted copies of one file's bytes."""
    n = len(data)
    out: dict[str, bytes] = {}
    for frac in (0.0, 0.01, 0.1, 0.5, 0.9, 0.99):
        out[f"truncated at {frac:.0%}"] = data[: int(n * frac)]
    out["last byte missing"] = data[:-1]
    for where in (0.0, 0.5, 0.97):
        a = int(n * where)
        out[f"zeros at {where:.0%}"] = data[:a] + bytes(min(64, n - a)) + data[a + 64:]
        out[f"random at {where:.0%}"] = data[:a] + rng.integers(0, 256, min(64, n - a), dtype=np.uint8).tobytes() + data[a + 64:]
    ints = list(re.finditer(rb"(?<![\w.-])\d+(?![\w.])", data[:400]))
    if ints:  # a text header count (rows, vertices, landmarks, ...) forged up and down
        m = ints[0]
        out["first count x1000"] = data[: m.start()] + str(int(m.group()) * 1000 + 7).encode() + data[m.end():]
        out["first count zero"] = data[: m.start()] + b"0" + data[m.end():]
    else:  # a binary header: forge its first words
        out["header 0xff"] = b"\xff" * 8 + data[8:]
        out["header small"] = b"\x02\x00\x02\x00" + data[4:]
    floats = _numbers_at(data)
    for token in (b"nan", b"inf", b"-1e400", b"1e308"):
        if floats:
            m = floats[len(floats) // 2]
            out[f"number -> {token.decode()}"] = data[: m.start()] + token + data[m.end():]
    if not floats and n > 64:  # binary floats: NaN and inf bit patterns in the middle of the data
        mid = (n // 2) // 8 * 8
        out["binary nan"] = data[:mid] + np.array([np.nan] * 4).tobytes() + data[mid + 32:]
        out["binary inf"] = data[:mid] + np.array([np.inf] * 4, "<f4").tobytes() + data[mid + 16:]
    if data.startswith(b"#VRML"):
        head, _, rest = data.partition(b"\n")
        out["nested 200 deep"] = head + b"\n" + b"Group { children [ " * 200 + rest + b" ] }" * 200
        out["huge index"] = re.sub(rb"coordIndex \[\s*(\d+)", rb"coordIndex [ 999999999", data, count=1)
        out["negative index"] = re.sub(rb"coordIndex \[\s*(\d+)", rb"coordIndex [ -7", data, count=1)
        out["coord as a list"] = re.sub(rb"coord Coordinate \{", b"coord [ 1 2 3 ] Coordinate {", data, count=1)
        out["rotation 0 1"] = re.sub(rb"(Transform|Shape) \{", rb"Transform { rotation 0 1 children [ \1 {", data, count=1)
    if data.startswith(b"ply") or data.startswith(b"OFF"):
        out["face index past the end"] = re.sub(rb"\n3 (\d+) ", b"\n3 99999 ", data, count=1)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_corrupted_copies_end_as_a_scan_or_a_clear_error(tmp_path: Path, kind: str) -> None:
    path, fmt = _make(tmp_path, kind)
    assert expect_scan_or_clear_error(path, fmt, (path.name,)) == "scan"  # the valid file itself reads
    data = path.read_bytes()
    outcomes = {}
    for label, bad in corruptions(data, np.random.default_rng(len(data))).items():
        path.write_bytes(bad)
        outcomes[label] = expect_scan_or_clear_error(path, fmt, (path.name,))
    path.write_bytes(data)
    assert outcomes["truncated at 0%"] == "error" and outcomes["truncated at 50%"] == "error"
    for suffix in SIDE_FILES.get(kind.split("-")[0], ()):
        side = next(p for p in path.parent.iterdir() if p.name.endswith(suffix))
        original = side.read_bytes()
        for label, bad in corruptions(original, np.random.default_rng(7)).items():
            side.write_bytes(bad)
            expect_scan_or_clear_error(path, fmt, (path.name, side.name))
        side.write_bytes(original)


@pytest.mark.parametrize("kind", ["bu3dfe", "bosphorus", "frgc", "obj", "bjut-text"])
def test_names_that_are_not_utf8(tmp_path: Path, kind: str) -> None:
    path, fmt = _make(tmp_path, kind)
    odd = Path(os.fsdecode(os.fsencode(path.parent) + b"/\xff\xfe" + os.fsencode(path.name)))
    shutil.move(path, odd)
    for side in path.parent.glob(path.name.split(".")[0] + ".*"):
        shutil.move(side, os.fsdecode(os.fsencode(side.parent) + b"/\xff\xfe" + os.fsencode(side.name)))
    assert expect_scan_or_clear_error(odd, fmt, (odd.name,)) in ("scan", "error")
    odd.write_bytes(odd.read_bytes()[:40])
    assert expect_scan_or_clear_error(odd, fmt, (odd.name,)) == "error"


FLIPS = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8)


def _flip(data: bytes, flips: list[tuple[float, int]]) -> bytes:
    buf = bytearray(data)
    for where, value in flips:
        buf[int(where * len(buf))] = value
    return bytes(buf)


def _fuzz_kind(kind: str) -> Callable[..., None]:
    @settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(flips=FLIPS)
    def run(tmp_path_factory: pytest.TempPathFactory, flips: list[tuple[float, int]]) -> None:
        folder = tmp_path_factory.mktemp(kind)
        path, fmt = _make(folder, kind)
        path.write_bytes(_flip(path.read_bytes(), flips))
        expect_scan_or_clear_error(path, fmt, (path.name,))

    return run


@pytest.mark.parametrize("kind", KINDS)
def test_hypothesis_byte_flips(tmp_path_factory: pytest.TempPathFactory, kind: str) -> None:
    _fuzz_kind(kind)(tmp_path_factory)


def test_the_fuzz_suite_stayed_in_bounded_memory() -> None:
    """Runs after the cases above in this module: the whole process never held more than this."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert peak_mb < 3000, f"peak RSS {peak_mb:.0f} MB"
