"""The built-in procedural model: structure, symmetric smooth identities, a mouth that opens, and
renders that MediaPipe takes for faces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from facepipe.pipeline.faces.landmark_sets import FIVE
from facepipe.pipeline.faces.morphable import MorphableModel
from facepipe.pipeline.faces.procedural import EXPRESSIONS, MOUTH_Y, procedural_model, procedural_surface
from facepipe.pipeline.faces.template import load_template, template_from_model
from facepipe.pipeline.geometry.render import Raycaster
from facepipe.pipeline.geometry.scan import Scan
from facepipe.pipeline.io.face_models import load_model
from facepipe.pipeline.stages.preprocess import Preprocessed, preprocess
from facepipe.schemas.preprocess import PreprocessConfig
from facepipe.schemas.scan import ScanMeta
from facepipe.schemas.store import RunOptions


@pytest.fixture(scope="module")
def model() -> MorphableModel:
    return load_model("procedural")


def test_structure_landmarks_and_template_regions(model: MorphableModel, tmp_path: Path) -> None:
    assert model is procedural_model() and model.id == procedural_model().id  # built once, deterministic
    assert model.identity.shape == (60, len(model.mean), 3) and model.expression.shape == (len(EXPRESSIONS), len(model.mean), 3)
    assert model.expression_names == EXPRESSIONS and "mouthSmile_L" in EXPRESSIONS
    five = model.landmark_points(model.mean)
    assert five[0, 0] < 0 < five[1, 0] and five[2, 2] == model.mean[:, 2].max().round(6) or five[2, 2] > five[0, 2] + 10
    assert five[3, 0] < 0 < five[4, 0] and abs(five[3, 1] - MOUTH_Y) < 1.5
    extent = model.mean.max(0) - model.mean.min(0)
    assert 130 < extent[0] < 160 and 170 < extent[1] < 210  # mm: a face's width and height
    t = template_from_model(model)
    assert len(t.regions["bu3dfe83"]) == 83 and (t.regions["bu3dfe83"] >= 0).all()
    mouth = t.vertices[t.regions["mouth"]]
    assert len(mouth) > 50 and np.abs(mouth[:, 1] - t.landmarks[3:, 1].mean()).max() < 0.2
    t.save(tmp_path / "t.npz")
    back = load_template(tmp_path / "t.npz")
    assert back.id == t.id and np.array_equal(back.regions["mouth"], t.regions["mouth"])


def test_identity_modes_are_mirror_symmetric_smooth_and_ordered(model: MorphableModel) -> None:
    mirrored = model.mean * np.array([-1.0, 1.0, 1.0])
    dist, j = cKDTree(model.mean).query(mirrored)
    assert dist.max() < 1e-9
    assert np.allclose(model.identity[:, j] * np.array([-1.0, 1.0, 1.0]), model.identity, atol=1e-5)
    size = np.linalg.norm(model.identity, axis=2).mean(1)
    assert size[0] > 2.0 and size[-1] < 0.5 and size[:5].mean() > 5 * size[-5:].mean()  # mm, strongest first
    e = np.unique(np.sort(model.triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0)
    step = np.linalg.norm(model.identity[:3][:, e[:, 0]] - model.identity[:3][:, e[:, 1]], axis=2).max()
    assert step < 0.5  # mm between neighbours 2.5 mm apart: smooth


def test_the_lips_meet_at_rest_and_the_jaw_opens_a_mouth_hole(model: MorphableModel) -> None:
    ray = np.array([[0.0, MOUTH_Y - 1.0, 200.0, 0.0, 0.0, -1.0]])
    closed = Raycaster(model.mean, model.triangles).cast(ray)
    assert closed.mask.all()
    open_w = np.zeros(len(EXPRESSIONS))
    open_w[EXPRESSIONS.index("jawOpen")] = 1.0
    opened = model.shape(None, open_w)
    assert not Raycaster(opened, model.triangles).cast(ray).mask.any()
    chin = int(np.argmin(model.mean[:, 1]))
    assert opened[chin, 1] < model.mean[chin, 1] - 5.0


def test_mediapipe_finds_the_faces_of_the_model(model: MorphableModel) -> None:
    template = template_from_model(model)
    rng = np.random.default_rng(2026)
    errors, found = [], 0
    for k in range(8):
        w = np.zeros(len(EXPRESSIONS))
        if k % 2:
            w[rng.choice(len(EXPRESSIONS), 2, replace=False)] = rng.uniform(0.3, 1.0, 2)
        v = model.shape(rng.normal(size=len(model.identity)), w)
        scan = Scan(v, model.triangles, ScanMeta(format="procedural", path=f"face{k}"))
        out = preprocess(scan, template, PreprocessConfig(landmarks="mediapipe", n_points=500), np.random.default_rng(k))
        if isinstance(out, Preprocessed):
            found += 1
            true = model.landmark_points(v, FIVE)
            errors.append(np.linalg.norm(out.landmarks - (true - template.center_mm) / template.unit_mm, axis=1).mean())
    assert found >= 7, f"MediaPipe found {found} of 8 faces"  # about 92% on shaded renders (24-face check)
    assert np.mean(errors) < 0.12  # template units (about 10 mm): the right places, not just "a face"


def test_synth_uses_the_procedural_model_by_default(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("facepipe"))
    run = subprocess.run([exe, "synth", "--identities", "2", "--expressions", "1", "--points", "2000", "--threads",
                          "--out", "s.zarr", "--preview", "p.png"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "synth-procedural -> s.zarr" in run.stdout and (tmp_path / "p.png").stat().st_size > 1000
    bad = subprocess.run([exe, "synth", "--model-path", "x.npz"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "built in: it takes no model file" in bad.stderr and "--model-path" in bad.stderr


def happy_weights() -> np.ndarray:
    w = np.zeros(len(EXPRESSIONS))
    w[[EXPRESSIONS.index("mouthSmile_L"), EXPRESSIONS.index("mouthSmile_R")]] = 1.0
    w[EXPRESSIONS.index("jawOpen")] = 0.5
    return w


def test_the_example_dataset_is_made_of_procedural_faces(tmp_path: Path, model: MorphableModel) -> None:
    from facepipe.pipeline.io.registry import read_scan
    from facepipe.pipeline.io.sample_data import EXAMPLE_IDENTITY_SIGMA, write_example_dataset

    write_example_dataset(tmp_path, subjects=1, seed=5)
    identity = np.random.default_rng([5, 0]).normal(0.0, EXAMPLE_IDENTITY_SIGMA, len(model.identity))
    face = model.shape(identity)
    neutral = read_scan(tmp_path / "BU-3DFE" / "F0001" / "F0001_NE00WH_F3D.wrl")
    bnd = neutral.landmarks.points
    assert np.abs(bnd[:, :2] - face[model.regions["bu3dfe83"], :2]).max() < 2.0  # snapped to the 2 mm scan grid
    dist, _ = cKDTree(face).query(neutral.vertices)
    other, _ = cKDTree(model.mean).query(neutral.vertices)
    assert np.median(dist) < 1.77 < np.median(other)  # on this subject's face: within half a 2.5 mm grid cell of its vertices
    happy = read_scan(tmp_path / "BU-3DFE" / "F0001" / "F0001_HA04WH_F3D.wrl")
    ys = np.linspace(-55.0, -25.0, 301)
    _, on_face = procedural_surface(model, identity, happy_weights()).depth(np.zeros_like(ys), ys)
    hole = ys[~on_face]
    assert 4.0 < hole.max() - hole.min() < 12.0  # the jaw opened the lips by about 7 mm
    centre = np.array([0.0, (hole.max() + hole.min()) / 2])
    assert np.linalg.norm(happy.vertices[:, :2] - centre, axis=1).min() > 2.0  # and the scan has the hole


def test_loop_operator_matches_the_loop_rules(model: MorphableModel) -> None:
    import trimesh

    from facepipe.pipeline.geometry.resample import loop_operator

    sphere = trimesh.creation.icosphere(2)  # closed: identical to trimesh's Loop subdivision
    s, f = loop_operator(sphere.faces, len(sphere.vertices))
    ref_v, ref_f = trimesh.remesh.subdivide_loop(sphere.vertices, sphere.faces, iterations=1)
    dist, match = cKDTree(ref_v).query(s @ sphere.vertices)
    assert dist.max() < 1e-12 and {tuple(sorted(t)) for t in match[f].tolist()} == {tuple(sorted(t)) for t in ref_f.tolist()}
    v, tri = model.mean, model.triangles  # open, with a slit: the boundary rules
    s, f = loop_operator(tri, len(v))
    assert np.allclose(np.asarray(s.sum(1)).ravel(), 1.0) and len(f) == 4 * len(tri)
    edges, counts = np.unique(np.sort(tri[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0, return_counts=True)
    refined = s @ v
    b = edges[counts == 1][0]
    mid = np.flatnonzero((s[:, b[0]].toarray().ravel() == 0.5) & (s[:, b[1]].toarray().ravel() == 0.5))
    assert len(mid) == 1 and np.allclose(refined[mid[0]], v[b].mean(0))
    nbrs = np.concatenate([edges[counts == 1][edges[counts == 1][:, 0] == b[0], 1], edges[counts == 1][edges[counts == 1][:, 1] == b[0], 0]])
    assert np.allclose(refined[b[0]], 0.75 * v[b[0]] + 0.125 * v[nbrs].sum(0))


def test_a_refined_template_keeps_ground_truth_exact(model: MorphableModel, tmp_path: Path) -> None:
    from facepipe.pipeline.faces.template import template_selection

    t = template_from_model(model, target_vertices=10_000)
    selection, f = template_selection(model, target_vertices=10_000)
    assert len(t.vertices) == selection.size >= 10_000 and np.array_equal(t.triangles, f)
    assert len(t.regions["mouth"]) > 3 * len(template_from_model(model).regions["mouth"])
    from facepipe.pipeline.geometry.align import apply
    from facepipe.pipeline.runtime.store import open_group
    from facepipe.pipeline.stages.synth import run_synth
    from facepipe.schemas.synth import SynthConfig

    cfg = SynthConfig(model="procedural", model_id=model.id, identities=1, expressions=1, n_points=500, template_vertices=10_000)
    run_synth(model, t, selection, str(tmp_path / "s.zarr"), cfg, options=RunOptions(processes=False))
    g = open_group(str(tmp_path / "s.zarr"))
    shape = model.shape(g["identity_weights"][1].astype(np.float64), g["expression_weights"][1].astype(np.float64))
    assert g["vertices"].shape == (2, selection.size, 3)
    assert np.allclose(g["vertices"][1], apply(g["to_template"][1], selection(shape)), atol=1e-5)
    exe = str(Path(sys.executable).with_name("facepipe"))
    run = subprocess.run([exe, "template", "t.npz", "--target-vertices", "10000"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0 and f"vertices   {selection.size}" in run.stdout and t.id in run.stdout
    assert load_template(tmp_path / "t.npz").id == t.id
