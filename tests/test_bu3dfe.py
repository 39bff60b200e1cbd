from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.render import facing_direction
from facepipe.pipeline.io import bu3dfe, bu4dfe
from facepipe.pipeline.io.registry import detect_format, read_scan


def test_name_is_parsed() -> None:
    assert bu3dfe.parse_name("x/F0001_AN01WH_F3D.wrl") == {"subject": "F0001", "expression": "AN", "intensity": 1, "race": "WH", "kind": "F3D"}
    assert bu3dfe.parse_name("M0044_NE00LA_RAW.wrl")["kind"] == "RAW"
    assert bu3dfe.parse_name("face.wrl") == {}


def test_scan_with_landmarks_texture_and_mixed_polygons(bu3dfe_scan: Path) -> None:
    scan = read_scan(bu3dfe_scan)
    assert detect_format(bu3dfe_scan) == "bu3dfe"
    assert scan.meta.subject == "F0007" and scan.meta.expression == "HA" and scan.meta.intensity == 3
    assert scan.meta.extra["race"] == "AE"
    text = bu3dfe_scan.read_text()
    polys = text.split("coordIndex [")[1].split("]")[0].strip().splitlines()
    sizes = {len(p.split(",")) - 2 for p in polys}  # entries per line minus '-1' and the trailing ''
    assert sizes == {3, 4, 5}
    assert scan.texture is not None and scan.face_uv is not None
    lm = scan.landmarks
    assert lm is not None and len(lm) == 83 and lm.source == "bnd"
    assert np.allclose(scan.vertices[lm.vertex_ids], lm.points, atol=1e-4)  # .bnd points are vertices
    assert lm.names[0] == "bu01_right_eye_inner" and lm.names[75] == "bu76_chin_tip"
    assert facing_direction(scan.vertices, scan.faces)[2] > 0.9  # the face looks toward +z


@pytest.mark.parametrize("sep", ["tab", "space"])
@pytest.mark.parametrize("trailing", [False, True])
def test_bnd_variants_round_trip(tmp_path: Path, rng: np.random.Generator, sep: str, trailing: bool) -> None:
    ids = rng.integers(0, 5000, 83)
    pts = np.round(rng.normal(0, 40, (83, 3)), 4)
    path = tmp_path / "a.bnd"
    path.write_bytes(bu3dfe.write_bnd(ids, pts, sep=sep, trailing_blank=trailing))  # type: ignore[arg-type]
    lm = bu3dfe.read_bnd(path)
    assert np.array_equal(lm.vertex_ids, ids) and np.array_equal(lm.points, pts)
    assert bu3dfe.write_bnd(lm.vertex_ids, lm.points, sep=sep, trailing_blank=trailing) == path.read_bytes()  # type: ignore[arg-type]


def test_bnd_errors(tmp_path: Path) -> None:
    p = tmp_path / "b.bnd"
    p.write_text("0 1 2 3\n" * 82)
    with pytest.raises(ScanFormatError, match="83 landmark lines, found 82"):
        bu3dfe.read_bnd(p)
    p.write_text("0 1 2 3\n" * 82 + "5 1 2\n")
    with pytest.raises(ScanFormatError, match="line 83: expected"):
        bu3dfe.read_bnd(p)
    p.write_text("9999 1 2 3\n" * 83)
    with pytest.raises(ScanFormatError, match="out of range for a scan of 100 vertices"):
        bu3dfe.read_bnd(p, n_vertices=100)


def test_bnd_index_beyond_the_scan_fails_the_scan(bu3dfe_scan: Path) -> None:
    bnd = bu3dfe_scan.with_suffix(".bnd")
    lines = bnd.read_text().splitlines()
    lines[3] = "99999\t\t1.0\t2.0\t3.0"
    bnd.write_text("\n".join(lines) + "\n")
    with pytest.raises(ScanFormatError, match=r"F0007_HA03AE_F3D\.bnd: landmark vertex index 99999"):
        read_scan(bu3dfe_scan)


def test_raw_scan_uses_pse_points(tmp_path: Path, bu3dfe_scan: Path, rng: np.random.Generator) -> None:
    raw = tmp_path / "F0007_HA03AE_RAW.wrl"
    shutil.copy(bu3dfe_scan, raw)
    pts = np.round(rng.normal(0, 30, (8, 3)), 6)
    normals = np.eye(3)
    raw.with_suffix(".pse").write_bytes(bu3dfe.write_pse(np.arange(8), pts, normals))
    scan = read_scan(raw)
    assert scan.landmarks is not None and scan.landmarks.source == "pse"
    assert np.array_equal(scan.landmarks.points, pts) and scan.meta.extra["kind"] == "RAW"
    raw.with_suffix(".pse").write_text("n 0 0 1\n1 2 3 4\n")
    with pytest.raises(ScanFormatError, match="8 '<id> x y z' lines"):
        read_scan(raw)


def test_bu4dfe_frame_tree(tmp_path: Path, bu3dfe_scan: Path) -> None:
    frame = tmp_path / "BU4D" / "F001" / "Happy" / "012.wrl"
    frame.parent.mkdir(parents=True)
    shutil.copy(bu3dfe_scan, frame)
    shutil.copy(bu3dfe_scan.with_suffix(".bnd"), frame.with_suffix(".bnd"))
    assert bu4dfe.parse_path(frame) == {"subject": "F001", "expression": "Happy", "frame": "012"}
    assert detect_format(frame) == "bu4dfe"
    scan = read_scan(frame)
    assert scan.meta.format == "bu4dfe" and scan.meta.subject == "F001" and scan.meta.extra["frame"] == "012"
    assert scan.landmarks is not None and len(scan.landmarks) == 83
    assert scan.texture is None  # the frame's own texture (012.jpg) is not there; the VRML names another
