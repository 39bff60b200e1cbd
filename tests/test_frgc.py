from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.render import facing_direction
from facepipe.pipeline.io import frgc
from facepipe.pipeline.io.registry import detect_format, read_scan


def test_abs_scan_with_next_sequence_texture(frgc_scan: Path) -> None:
    assert (frgc_scan.parent / "02463d453.ppm").exists()
    scan = read_scan(frgc_scan)
    assert detect_format(frgc_scan) == "frgc"
    assert scan.meta.subject == "02463" and scan.meta.extra["sequence"] == "452"
    assert scan.texture is not None and scan.texture.shape[:2] == (48, 64)
    assert scan.vertices[:, 2].max() < -900  # scanner frame: about a metre in front, z negative
    assert facing_direction(scan.vertices, scan.faces)[2] > 0.9
    grid = frgc.parse_abs(frgc_scan.read_text())
    assert len(scan.vertices) == int(grid.flags.sum())
    # point i is texture pixel (i // cols, i % cols): the first vertex's uv is its pixel centre
    first = int(np.argmax(grid.flags.ravel()))
    r, c = divmod(first, 64)
    assert np.allclose(scan.uv[0], [(c + 0.5) / 64, 1 - (r + 0.5) / 48])


def test_abs_round_trip_and_gzip(frgc_scan: Path, tmp_path: Path) -> None:
    data = frgc_scan.read_bytes()
    grid = frgc.parse_abs(data.decode())
    assert frgc.write_abs(grid) == data
    gz = tmp_path / "gz" / "02463d452.abs.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(data))
    assert detect_format(gz) == "frgc"
    assert np.array_equal(read_scan(gz).vertices, read_scan(frgc_scan).vertices)


def test_row_zero_is_the_top(frgc_scan: Path) -> None:
    grid = frgc.parse_abs(frgc_scan.read_text())
    ys = np.where(grid.flags == 1, grid.y, np.nan)
    assert np.nanmean(ys[:16]) > np.nanmean(ys[-16:])


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda t: t.replace("48 rows", "48 lines"), "not an .abs file"),
        (lambda t: t.replace("48 rows", "480000 rows"), "480000 x 64 grid, more than the limit"),
        (lambda t: t.replace("48 rows", "4800 rows"), "truncated"),
        (lambda t: t.replace("64 columns", "65 columns"), "expected 48 x 65"),
        (lambda t: t.rsplit("\n", 2)[0] + "\n", "expected 4 data lines"),
        (lambda t: t.replace("pixels (flag X Y Z):\n0", "pixels (flag X Y Z):\n2", 1), "flags must be 0 or 1"),
        (lambda t: t[: len(t) // 2], "4 data lines|truncated"),
        (lambda t: "", "empty"),
    ],
)
def test_bad_abs(frgc_scan: Path, mutate, problem: str) -> None:  # type: ignore[no-untyped-def]
    frgc_scan.write_text(mutate(frgc_scan.read_text()))
    with pytest.raises(ScanFormatError, match=problem) as info:
        read_scan(frgc_scan)
    assert "02463d452.abs" in str(info.value)


def test_invalid_marker_in_one_coordinate_makes_the_point_invalid(frgc_scan: Path) -> None:
    """A point flagged valid whose X, Y or Z alone holds -999999 is no point (real files do this)."""
    grid = frgc.parse_abs(frgc_scan.read_text())
    before = len(read_scan(frgc_scan).vertices)
    valid = np.argwhere(grid.flags == 1)
    (r1, c1), (r2, c2) = valid[0], valid[len(valid) // 2]
    grid.z[r1, c1] = frgc.INVALID  # flagged valid, marker in Z only
    grid.flags[0, 0], grid.x[0, 0] = 1, frgc.INVALID  # an invalid pixel flagged valid, marker in X only
    grid.y[r2, c2] = frgc.INVALID
    frgc_scan.write_bytes(frgc.write_abs(grid))
    scan = read_scan(frgc_scan)
    assert len(scan.vertices) == before - 2
    assert (np.abs(scan.vertices) < 1e5).all()
