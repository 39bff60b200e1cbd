from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.render import facing_direction
from facepipe.pipeline.io import bosphorus
from facepipe.pipeline.io.registry import read_scan


def test_scan_landmarks_coincide_with_vertices(bosphorus_scan: Path) -> None:
    scan = read_scan(bosphorus_scan)
    assert scan.meta.subject == "bs012" and scan.meta.expression == "E_HAPPY" and scan.meta.extra["category"] == "E"
    lm = scan.landmarks
    assert lm is not None and lm.source == "lm3" and len(lm) == 22
    assert np.abs(scan.vertices[lm.vertex_ids] - lm.points).max() < 1e-5
    # Bosphorus "left" is the subject's right: the subject's right eye lies at -x
    assert lm.get("right_eye_outer")[0] < lm.get("right_eye_inner")[0] < 0 < lm.get("left_eye_inner")[0]
    assert lm.get("nose_tip")[2] == lm.points[:, 2].max()
    assert facing_direction(scan.vertices, scan.faces)[2] > 0.9
    assert scan.texture is not None and scan.uv is not None and scan.grid_shape is not None


def test_row_zero_is_the_bottom(bosphorus_scan: Path) -> None:
    grid = bosphorus.parse_bnt(bosphorus_scan.read_bytes())
    ys = np.where(grid.valid, grid.y, np.nan)
    assert np.nanmean(ys[: len(ys) // 3]) < np.nanmean(ys[-len(ys) // 3 :])
    scan = read_scan(bosphorus_scan)
    # file V runs from the top of the texture; the scan's v runs from the bottom
    assert np.allclose(scan.uv[:, 1], 1 - grid.v[grid.valid])


def test_bnt_round_trip_is_byte_exact(bosphorus_scan: Path) -> None:
    data = bosphorus_scan.read_bytes()
    grid = bosphorus.parse_bnt(data)
    assert bosphorus.write_bnt(grid) == data
    assert grid.texture_name == "bs012_E_HAPPY_0.png" and grid.zmin == -1e9


def _header(rows: int, cols: int, n: int, name: bytes = b"t.png") -> bytes:
    return struct.pack("<HHdH", rows, cols, -1e9, len(name)) + name + struct.pack("<I", n)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x01\x00", "truncated .bnt header"),
        (_header(0, 5, 0), "empty"),
        (_header(60000, 60000, 5 * 60000 * 60000 % 2**32), "header declares a 60000 x 60000 grid"),  # a forged giant grid
        (_header(2, 2, 20) + b"\x00" * 40, r"need 160 \(truncated\?\)"),
        (struct.pack("<HHdH", 2, 2, -1e9, 5000) + b"abc", "runs past the end"),
    ],
)
def test_bad_bnt(tmp_path: Path, data: bytes, problem: str) -> None:
    p = tmp_path / "bs000_N_N_0.bnt"
    p.write_bytes(data)
    with pytest.raises(ScanFormatError, match=problem):
        read_scan(p)


def test_bnt_with_no_valid_point(tmp_path: Path) -> None:
    p = tmp_path / "bs000_N_N_0.bnt"
    full = np.full((2, 3), -1e9)
    p.write_bytes(bosphorus.write_bnt(bosphorus.BntGrid(-1e9, "t.png", full, full, full, full * 0, full * 0)))
    with pytest.raises(ScanFormatError, match="no valid point"):
        read_scan(p)


def test_lm3_variants(rng: np.random.Generator) -> None:
    labels = list(bosphorus.LABEL_ORDER) + ["Left ear lobe", "Right ear lobe"]
    pts = np.round(rng.normal(0, 30, (24, 3)), 6)
    for info in (None, ["Landmarked by: someone", "Date: 2008"]):
        data = bosphorus.write_lm3(labels, pts, info)
        got_labels, got = bosphorus.parse_lm3(data.decode())
        assert got_labels == labels and np.array_equal(got, pts)
        assert bosphorus.write_lm3(got_labels, got, info) == data
    assert bosphorus.canonical_name("Left ear lobe") == "left_ear_lobe"
    assert bosphorus.canonical_name("Outer LEFT eye corner") == "right_eye_outer"
    with pytest.raises(ScanFormatError, match="announces 24 landmarks but only 23"):
        bosphorus.parse_lm3(data.decode().rsplit("\n", 3)[0])
    with pytest.raises(ScanFormatError, match="first line"):
        bosphorus.parse_lm3("hello")


def test_lm2_round_trip(rng: np.random.Generator) -> None:
    labels = list(bosphorus.LABEL_ORDER)
    pix = np.round(rng.uniform(0, 1000, (22, 2)), 6)
    data = bosphorus.write_lm2(labels, pix)
    got_labels, got = bosphorus.parse_lm2(data.decode())
    assert got_labels == labels and np.array_equal(got, pix) and bosphorus.write_lm2(got_labels, got) == data
    with pytest.raises(ScanFormatError, match="announces 22 landmarks"):
        bosphorus.parse_lm2(data.decode().replace("Chin middle\n", ""))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_random_bnt_bytes_fail_cleanly(data: bytes) -> None:
    try:
        bosphorus.parse_bnt(data, "fuzz.bnt")
    except ScanFormatError:
        pass


def test_a_face_with_fewer_marks_writes_an_lm3_of_those_it_has(tmp_path: Path, rng: np.random.Generator) -> None:
    """A morphable model without brow landmarks (the ICT face) still writes a readable Bosphorus scan, as a
    real .lm3 that lists fewer than 22 marks."""
    from dataclasses import replace

    from facepipe.pipeline.faces.relief import FaceParams, as_surface
    from facepipe.pipeline.io.sample_data import bosphorus_files, write_files

    full = as_surface(FaceParams())
    surface = replace(full, landmarks={k: v for k, v in full.landmarks.items() if "brow" not in k})
    write_files(tmp_path, bosphorus_files(surface, rng, "bs001_N_N_0"))
    lm = read_scan(tmp_path / "bs001_N_N_0.bnt").landmarks
    assert lm is not None and 0 < len(lm) < 22 and not any("brow" in name for name in lm.names)
