from __future__ import annotations

import numpy as np
import pytest

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.scan import compact, fan_corners, grid_faces, grid_scan, make_scan
from facepipe.schemas.scan import ScanMeta

META = ScanMeta(format="test", path="x")


def test_fan_triangulates_mixed_polygons() -> None:
    index = np.array([0, 1, 2, -1, 3, 4, 5, 6, -1, 7, 8, 9, 10, 11, -1])
    tris = index[fan_corners(index)]
    assert tris.tolist() == [[0, 1, 2], [3, 4, 5], [3, 5, 6], [7, 8, 9], [7, 9, 10], [7, 10, 11]]


def test_fan_accepts_missing_last_terminator_and_drops_degenerate() -> None:
    index = np.array([0, 1, -1, 2, 3, 4])
    assert index[fan_corners(index)].tolist() == [[2, 3, 4]]


def test_make_scan_rejects_bad_geometry() -> None:
    v = np.zeros((3, 3))
    with pytest.raises(ScanFormatError, match="x: .*no vertices"):
        make_scan("x", np.zeros((0, 3)), np.zeros((0, 3)), META)
    with pytest.raises(ScanFormatError, match="NaN/inf"):
        make_scan("x", np.array([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]]), [[0, 1, 2]], META)
    with pytest.raises(ScanFormatError, match=r"face indices must lie in \[0, 2\]"):
        make_scan("x", v, [[0, 1, 3]], META)
    with pytest.raises(ScanFormatError, match="no faces"):
        make_scan("x", v, np.zeros((0, 3)), META)
    with pytest.raises(ScanFormatError, match="normals must be"):
        make_scan("x", v, [[0, 1, 2]], META, normals=np.zeros((2, 3)))


def _plane(rows: int, cols: int) -> np.ndarray:
    r, c = np.mgrid[0:rows, 0:cols]
    return np.stack([c * 1.0, r * 1.0, np.zeros((rows, cols))], -1)


def test_grid_faces_skip_invalid_points_and_face_the_viewer() -> None:
    pts = _plane(4, 5)
    valid = np.ones((4, 5), bool)
    valid[1, 2] = False
    tris = grid_faces(valid, pts, rows_up=True)
    flat = np.arange(20).reshape(4, 5)
    assert flat[1, 2] not in tris
    assert len(tris) == 2 * 3 * 4 - 6  # the invalid interior point removes its six triangles
    a, b, c = (pts.reshape(-1, 3)[tris[:, i]] for i in range(3))
    assert (np.cross(b - a, c - a)[:, 2] > 0).all()
    tris_down = grid_faces(valid, pts[::-1], rows_up=False)
    a, b, c = (pts[::-1].reshape(-1, 3)[tris_down[:, i]] for i in range(3))
    assert (np.cross(b - a, c - a)[:, 2] > 0).all()


def test_grid_faces_break_at_depth_jumps() -> None:
    pts = _plane(4, 6)
    pts[:, 3:, 2] = 50.0  # a 50 mm step between columns 2 and 3
    tris = grid_faces(np.ones((4, 6), bool), pts, rows_up=True)
    cols = tris % 6
    assert not ((cols.min(1) <= 2) & (cols.max(1) >= 3)).any()
    assert len(tris) == 2 * 3 * 4  # both flat sides are kept


def test_grid_scan_maps_pixels_to_vertices() -> None:
    pts = _plane(3, 3)
    valid = np.ones((3, 3), bool)
    valid[0, 0] = False
    scan, vertex_of_pixel = grid_scan("g", pts, valid, True, META)
    assert len(scan.vertices) == 8 and vertex_of_pixel[0] == -1
    assert np.array_equal(scan.vertices[vertex_of_pixel[4]], pts[1, 1])
    with pytest.raises(ScanFormatError, match="no valid point"):
        grid_scan("g", pts, np.zeros((3, 3), bool), True, META)


def test_compact_drops_unused_vertices() -> None:
    v = np.arange(15, dtype=float).reshape(5, 3)
    nv, nf, kept = compact(v, np.array([[0, 2, 4]]))
    assert kept.tolist() == [0, 2, 4] and nf.tolist() == [[0, 1, 2]] and np.array_equal(nv, v[[0, 2, 4]])
