"""Texas-3DFRD, BJUT-3D, MICC and the generic formats (obj, ply, stl, off)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.relief import FaceParams
from facepipe.pipeline.geometry.render import facing_direction
from facepipe.pipeline.io import bjut, texas
from facepipe.pipeline.io.image import write_image
from facepipe.pipeline.io.registry import detect_format, read_scan
from facepipe.pipeline.io.sample_data import scanner_grid


def _range_image(rng: np.random.Generator, rows: int = 60, cols: int = 48) -> np.ndarray:
    pts, valid = scanner_grid(FaceParams(), rows, cols, 200.0 / rows, rng, noise_mm=0.0, holes=0)
    depth = np.where(valid, np.round((pts[..., 2] + 100.0) / texas.PIXEL_MM), 0)
    return np.clip(depth, 0, 65535).astype(np.uint16)


def test_texas_range_portrait_and_fiducials(tmp_path: Path, rng: np.random.Generator) -> None:
    depth = _range_image(rng)
    rng_path = tmp_path / "subj042_neutral_Range.png"
    texas.write_range(rng_path, depth)
    write_image(tmp_path / "subj042_neutral_Portrait.png", np.full(depth.shape + (3,), 128, np.uint8))
    fid = np.array([[24.0, 30.0]] * 25)
    fid[1] = [0.0, 0.0]  # on the background: a missing landmark
    (tmp_path / "subj042_neutral_Fiducials.txt").write_bytes(texas.write_fiducials(fid))
    assert detect_format(rng_path) == "texas3d"
    scan = read_scan(rng_path)
    assert len(scan.vertices) == int((depth > 0).sum())
    assert np.allclose(np.sort(scan.vertices[:, 2]), np.sort(depth[depth > 0] * texas.PIXEL_MM))
    assert facing_direction(scan.vertices, scan.faces)[2] > 0.9
    assert scan.texture is not None and scan.landmarks is not None and len(scan.landmarks) == 25
    assert np.isnan(scan.landmarks.points[1]).all() and scan.landmarks.vertex_ids[1] == -1
    assert np.allclose(scan.landmarks.points[0][:2], [(24 - 23.5) * 0.32, (29.5 - 30) * 0.32])
    (tmp_path / "subj042_neutral_Fiducials.txt").write_text("1 2\n3 4\n")
    with pytest.raises(ScanFormatError, match="expected 25 'col row' pairs"):
        read_scan(rng_path)


def test_texas_rejects_colour_range_images(tmp_path: Path) -> None:
    p = tmp_path / "x_Range.png"
    write_image(p, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ScanFormatError, match="single-channel"):
        read_scan(p)


def _mesh(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=50.0)
    return np.round(np.asarray(sphere.vertices, np.float32), 3).astype(np.float64), np.asarray(sphere.faces)


def test_bjut_text_and_binary(tmp_path: Path, rng: np.random.Generator) -> None:
    v, f = _mesh(rng)
    colours = rng.integers(0, 256, (len(v), 3))
    text = tmp_path / "p001.txt"
    text.write_bytes(bjut.write_bjut_text(v, f, colours))
    assert detect_format(text) == "bjut3d"
    scan = read_scan(text)
    assert np.allclose(scan.vertices, v) and np.array_equal(scan.faces, f) and np.array_equal(scan.colors, colours)
    binary = tmp_path / "p001.bin"
    binary.write_bytes(bjut.write_bjut_binary(v, f, colours))
    scan_b = read_scan(binary, "bjut3d")
    assert np.allclose(scan_b.vertices, v) and np.array_equal(scan_b.faces, f)
    binary.write_bytes(binary.read_bytes()[:-5])
    with pytest.raises(ScanFormatError, match="but the file has"):
        read_scan(binary, "bjut3d")
    text.write_text("Vertex 1 X= 1 Y= 2 Z= 3\nsomething else\n")
    with pytest.raises(ScanFormatError, match="line 2: neither"):
        read_scan(text)


@pytest.mark.parametrize("ext", ["obj", "ply", "stl", "off"])
def test_generic_formats_via_trimesh(tmp_path: Path, rng: np.random.Generator, ext: str) -> None:
    v, f = _mesh(rng)
    path = tmp_path / f"mesh.{ext}"
    trimesh.Trimesh(v, f, process=False).export(path)
    scan = read_scan(path)
    assert scan.meta.format == ext and len(scan.faces) == len(f)
    if ext != "stl":  # STL stores triangle soups; the others keep vertex order
        assert np.allclose(scan.vertices, v, atol=1e-3) and np.array_equal(scan.faces, f)


def test_generic_errors(tmp_path: Path) -> None:
    empty = tmp_path / "e.ply"
    empty.write_bytes(b"")
    with pytest.raises(ScanFormatError, match="empty"):
        read_scan(empty)
    junk = tmp_path / "j.ply"
    junk.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99999999\nproperty float x\nend_header\n\x00\x01")
    with pytest.raises(ScanFormatError, match="j.ply"):
        read_scan(junk)
    (tmp_path / "nothing.xyz").write_text("1 2 3\n")
    with pytest.raises(ScanFormatError, match="unknown scan format"):
        read_scan(tmp_path / "nothing.xyz")
    with pytest.raises(ScanFormatError, match="file not found"):
        read_scan(tmp_path / "gone.obj")


def test_micc_tree(tmp_path: Path, rng: np.random.Generator) -> None:
    v, f = _mesh(rng)
    path = tmp_path / "subject_07" / "Model" / "frontal1" / "obj" / "110920150452.obj"
    path.parent.mkdir(parents=True)
    trimesh.Trimesh(v, f, process=False).export(path)
    assert detect_format(path) == "micc"
    scan = read_scan(path)
    assert scan.meta.subject == "subject_07" and scan.meta.extra["capture"] == "frontal1"
