from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
from scipy.spatial.transform import Rotation

from facepipe.pipeline.faces.landmark_sets import FIVE
from facepipe.pipeline.faces.relief import face_depth, FaceParams, landmark_positions, relief_face
from facepipe.pipeline.faces.template import Template
from facepipe.pipeline.geometry.align import apply
from facepipe.pipeline.geometry.crop import crop_mesh, region_mask
from facepipe.pipeline.geometry.landmarks import five_from_annotations
from facepipe.pipeline.geometry.resample import sample_points, subdivide_to, vertex_normals
from facepipe.pipeline.geometry.scan import Landmarks, Scan
from facepipe.pipeline.io.registry import read_scan
from facepipe.pipeline.runtime.seeding import sample_rng, sample_seed
from facepipe.pipeline.stages.preprocess import Preprocessed, preprocess, preprocess_file
from facepipe.schemas.preprocess import PreprocessConfig, PreprocessFailure
from facepipe.schemas.scan import ScanMeta


def distance_to_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def moved_scan(template: Template, t: np.ndarray) -> Scan:
    """The template, back in mm, moved by `t`, annotated with its exact five landmarks."""
    mm = template.vertices * template.unit_mm + template.center_mm
    five = template.landmarks * template.unit_mm + template.center_mm
    lm = Landmarks(FIVE, apply(t, five), source="test")
    return Scan(apply(t, mm), template.triangles, ScanMeta(format="test", path="moved.obj"), landmarks=lm)


def test_a_face_moved_by_a_known_similarity_is_aligned_back(face_template: Template) -> None:
    t = np.eye(4)
    t[:3, :3] = 1.7 * Rotation.from_euler("xyz", [20, -35, 170], degrees=True).as_matrix()
    t[:3, 3] = [300.0, -40.0, 1200.0]
    scan = moved_scan(face_template, t)
    out = preprocess(scan, face_template, PreprocessConfig(landmarks="annotations", n_points=2000), np.random.default_rng(0))
    assert isinstance(out, Preprocessed)
    # raw -> template composed with template(mm) -> raw is the template's own mm -> unit map
    mm_to_unit = np.diag([1 / face_template.unit_mm] * 3 + [1.0])
    mm_to_unit[:3, 3] = -face_template.center_mm / face_template.unit_mm
    assert np.abs(out.to_template @ t - mm_to_unit).max() < 1e-4
    assert np.abs(out.landmarks - face_template.landmarks).max() < 1e-4
    assert out.quality.landmark_residual_mm < 1e-4
    assert out.quality.scale == pytest.approx(1 / (1.7 * face_template.unit_mm))
    assert distance_to_mesh(out.points, face_template.vertices, face_template.triangles).max() < 1e-5


def test_a_sparse_mesh_ends_with_exactly_n_points_on_its_surface(face_template: Template) -> None:
    v, f, five = relief_face(spacing=9.0)  # a few hundred vertices
    scan = Scan(v, f, ScanMeta(format="test", path="sparse.obj"), landmarks=Landmarks(FIVE, five, source="test"))
    for sampling in ("area", "vertices"):
        cfg = PreprocessConfig(landmarks="annotations", sampling=sampling, min_points_after_crop=50)  # 29,495 points
        out = preprocess(scan, face_template, cfg, np.random.default_rng(1))
        assert isinstance(out, Preprocessed), out
        assert out.points.shape == (29_495, 3) and out.normals.shape == (29_495, 3) and out.points.dtype == np.float32
        assert np.allclose(np.linalg.norm(out.normals, axis=1), 1.0, atol=1e-5)
        assert (np.abs(out.points) <= 1.0).all()
        moved = apply(out.to_template, v)
        if sampling == "area":  # exactly on the scan's triangles
            assert out.quality.subdivision_levels == 0
            assert distance_to_mesh(out.points, moved, f).max() < 1e-5
        else:  # on the loop-subdivided surface, which stays close to the coarse one
            assert out.quality.subdivision_levels >= 2
            sv, sf, _ = subdivide_to(moved, f, 29_495)
            assert distance_to_mesh(out.points, sv, sf).max() < 1e-5
            assert len(np.unique(out.points, axis=0)) == 29_495  # distinct vertices, no repeats
        assert (out.normals[:, 2] > 0).mean() > 0.9  # facing the viewer


def test_sampling_is_deterministic_from_the_sample_seed(face_template: Template) -> None:
    v, f = face_template.vertices, face_template.triangles
    a = sample_points(v, f, 3000, sample_rng(7, "bu3dfe", "F0001_NE00WH_F3D"))
    b = sample_points(v, f, 3000, sample_rng(7, "bu3dfe", "F0001_NE00WH_F3D"))
    c = sample_points(v, f, 3000, sample_rng(7, "bu3dfe", "F0002_NE00WH_F3D"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert sample_seed(7, "a", "b") != sample_seed(7, "ab", "") and sample_seed(1, "a", "b") != sample_seed(2, "a", "b")


def test_area_sampling_is_uniform_over_the_surface() -> None:
    v = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [3, 0, 0], [3, 1, 0]])
    f = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]])  # a unit square and a 2x1 rectangle
    pts, nrm = sample_points(v, f, 30000, np.random.default_rng(2))
    assert (pts[:, 0] > 1).mean() == pytest.approx(2 / 3, abs=0.01)
    assert np.allclose(nrm, [0, 0, 1])
    assert vertex_normals(v, f)[0] @ [0, 0, 1] == pytest.approx(1.0)


def test_crop_keeps_whole_triangles_inside_the_box_and_radius() -> None:
    v, f, _ = relief_face(spacing=4.0)
    v = v / 60.0
    keep = region_mask(v, 1.0, center=np.zeros(3), radius=0.8)
    cv, cf, kept = crop_mesh(v, f, keep)
    assert len(cv) < len(v) and (np.abs(cv) <= 1).all() and (np.linalg.norm(cv, axis=1) <= 0.8).all()
    assert np.array_equal(cv, v[kept]) and cf.max() == len(cv) - 1
    whole = {tuple(t) for t in kept[cf].tolist()}
    assert whole == {tuple(t) for t in f[keep[f].all(1)].tolist()}


def test_annotations_map_to_the_five(example_dir: Path) -> None:
    for path in sorted(example_dir.glob("BU-3DFE/*/*NE00*.wrl")) + sorted(example_dir.glob("Bosphorus/*/*_N_N_0.bnt")):
        scan = read_scan(path)
        assert scan.landmarks is not None
        five = five_from_annotations(scan.landmarks, scan.vertices)
        assert five is not None and five.source in ("bnd", "lm3") and five.confidence == 1.0
        # eyes are the mean of the contour (BU-3DFE) or of the two corners (Bosphorus); BU-3DFE has
        # no nose tip, found as the most protruding vertex: in front of the eyes and mouth
        assert five.points[0, 0] < -20 and five.points[1, 0] > 20 and abs(five.points[0, 1] - 35) < 3
        assert five.points[3, 0] < -15 and five.points[4, 0] > 15
        assert abs(five.points[2, 0]) < 4 and five.points[2, 2] > five.points[[0, 1, 3, 4], 2].max() + 5
    lm = Landmarks(("right_eye_inner", "right_eye_outer", "left_eye_inner", "nose_tip", "mouth_right", "mouth_left"),
                   np.zeros((6, 3)), source="lm3")
    assert five_from_annotations(lm, np.zeros((1, 3))) is None  # no left outer corner: no left eye


def test_mediapipe_finds_the_five_on_a_scan_without_landmarks(frgc_scan: Path, face_template: Template) -> None:
    from facepipe.pipeline.geometry.landmarks import MediaPipe, detect_five

    p = FaceParams()
    truth = {n: np.array([*xy, face_depth(np.array(xy[0]), np.array(xy[1]), p)[0]]) for n, xy in landmark_positions(p).items()}
    scan = read_scan(frgc_scan)
    base = scan.vertices.mean(0)
    for angle in (0.0, 40.0, 90.0, 150.0):  # tilted scans and one nearly upside down are found by rolled views
        rot = Rotation.from_euler("z", angle, degrees=True).as_matrix()
        turned = replace(scan, vertices=(scan.vertices - base) @ rot.T)
        found = detect_five(turned, MediaPipe.shared(), face_template.landmarks, surface=face_template.vertices)
        assert found is not None and found.source == "mediapipe" and found.confidence > 0.5
        back = found.points @ rot + base - np.array([0.0, 0.0, -1000.0])
        for k, name in enumerate(FIVE):
            assert np.linalg.norm(back[k] - truth[name]) < 10.0, (angle, name, back[k], truth[name])
    out = preprocess(scan, face_template, PreprocessConfig(n_points=1000), np.random.default_rng(0))
    assert isinstance(out, Preprocessed) and out.quality.landmark_source == "mediapipe"
    assert out.quality.landmark_residual_mm < 6.0


def test_a_scan_without_a_face_is_a_failure_record(tmp_path: Path, face_template: Template) -> None:
    sphere = o3d.geometry.TriangleMesh.create_sphere(radius=80.0, resolution=30)
    scan = Scan(np.asarray(sphere.vertices), np.asarray(sphere.triangles, np.int64), ScanMeta(format="test", path="ball.ply"))
    out = preprocess(scan, face_template, PreprocessConfig(), np.random.default_rng(0))
    assert isinstance(out, PreprocessFailure) and out.stage == "landmarks" and out.path == "ball.ply", out
    out = preprocess(scan, face_template, PreprocessConfig(landmarks="annotations"), np.random.default_rng(0))
    assert isinstance(out, PreprocessFailure) and "landmark file" in out.reason
    bad = tmp_path / "F0001_NE00WH_F3D.wrl"
    bad.write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 1 2 ] } } }\n")
    out = preprocess_file(bad, face_template, PreprocessConfig(), np.random.default_rng(0))
    assert isinstance(out, PreprocessFailure) and out.stage == "read" and str(bad) in out.reason


def test_a_scan_away_from_its_landmarks_fails_at_the_crop(face_template: Template) -> None:
    v, f, five = relief_face(spacing=4.0)
    scan = Scan(v + np.array([0.0, 0.0, 500.0]), f, ScanMeta(format="test", path="off.obj"), landmarks=Landmarks(FIVE, five, source="test"))
    out = preprocess(scan, face_template, PreprocessConfig(landmarks="annotations"), np.random.default_rng(0))
    assert isinstance(out, PreprocessFailure) and out.stage == "crop" and "inside the template region" in out.reason


def test_five_points_that_are_not_a_face_layout_are_refused(face_template: Template) -> None:
    v, f, five = relief_face(spacing=4.0)
    swapped = five[[0, 3, 2, 1, 4]]  # the left eye and the right mouth corner exchanged
    scan = Scan(v, f, ScanMeta(format="test", path="swap.obj"), landmarks=Landmarks(FIVE, swapped, source="test"))
    out = preprocess(scan, face_template, PreprocessConfig(landmarks="annotations"), np.random.default_rng(0))
    assert isinstance(out, PreprocessFailure) and out.stage == "landmarks" and "not laid out like a face" in out.reason
