from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.landmark_sets import FIVE
from facepipe.pipeline.faces.template import Template, load_template, template_from_model
from facepipe.pipeline.io.ict import load_ict_npz


def write_ict_like_npz(path: Path, rng: np.random.Generator) -> np.ndarray:
    """A tiny model in the layout of ICT-FaceKit's compact npz (cm, 68 iBUG ids, face-area counts)."""
    grid = np.stack(np.meshgrid(np.linspace(-8, 8, 12), np.linspace(-10, 10, 14)), -1).reshape(-1, 2)
    neutral = np.column_stack([grid, 10 - 0.05 * (grid**2).sum(1)]).astype(np.float32)
    idx = np.arange(168).reshape(14, 12)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)
    np.savez(path, neutral=neutral, triangles=tris, identity=rng.normal(0, 0.1, (4, 168, 3)).astype(np.float32),
             expression=rng.normal(0, 0.1, (3, 168, 3)).astype(np.float32),
             expression_names=np.array(["jawOpen", "mouthSmile_L", "mouthSmile_R"]),
             landmarks_ibug68=rng.choice(120, 68, replace=False).astype(np.int32),
             narrow_face_vertex_count=np.array(120, np.int32), narrow_face_triangle_count=np.array(100, np.int32),
             units=np.array("cm"), license=np.array("MIT (test)"), source=np.array("test"))
    return neutral


def test_ict_npz_loads_in_mm_with_the_five_landmark_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    neutral = write_ict_like_npz(tmp_path / "ict.npz", rng)
    m = load_ict_npz(tmp_path / "ict.npz")
    assert np.allclose(m.mean, neutral * 10.0)
    assert m.expression_names[0] == "jawOpen" and m.face_vertices == 120 and m.license.startswith("MIT")
    ibug = np.load(tmp_path / "ict.npz")["landmarks_ibug68"]
    five = m.landmark_points(m.mean)
    assert np.allclose(five[0], m.mean[ibug[36:42]].mean(0)) and np.allclose(five[2], m.mean[ibug[30]])
    w = np.array([0.5, -1.0])
    assert np.allclose(m.shape(w, np.array([1.0])), m.mean + 0.5 * m.identity[0] - m.identity[1] + m.expression[0], atol=1e-5)


def test_bad_model_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(ScanFormatError, match="x.npz"):
        load_ict_npz(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", neutral=np.zeros((3, 3)))
    with pytest.raises(ScanFormatError, match="missing.*identity"):
        load_ict_npz(tmp_path / "y.npz")


def test_template_fits_the_unit_cube_and_round_trips_with_its_id(tmp_path: Path) -> None:
    write_ict_like_npz(tmp_path / "ict.npz", np.random.default_rng(1))
    t = template_from_model(load_ict_npz(tmp_path / "ict.npz"))
    assert np.abs(t.vertices).max() == pytest.approx(1.0) and len(t.vertices) == 120
    assert t.landmarks.shape == (len(FIVE), 3)
    assert t.edges().shape[1] == 2 and len(t.edges()) == len({tuple(e) for e in t.edges().tolist()})
    t.save(tmp_path / "t.npz")
    back = load_template(tmp_path / "t.npz")
    assert back.id == t.id and np.array_equal(back.vertices, t.vertices) and back.unit_mm == t.unit_mm
    d = dict(np.load(tmp_path / "t.npz"))
    d["vertices"] = d["vertices"] * 1.01
    np.savez(tmp_path / "bad.npz", **d)
    with pytest.raises(ScanFormatError, match="does not match its recorded id"):
        load_template(tmp_path / "bad.npz")
    assert Template(t.name, t.vertices * 0.5, t.triangles, t.landmarks, t.unit_mm, t.center_mm).id != t.id
