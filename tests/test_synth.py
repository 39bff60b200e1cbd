"""`facepipe synth`: ground truth that reproduces the model, reproducible stores, scan-like degradation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.morphable import MorphableModel
from facepipe.pipeline.faces.template import Template, template_from_model, template_selection
from facepipe.pipeline.geometry.align import apply
from facepipe.pipeline.io.face_models import load_model
from facepipe.pipeline.io.ict import load_ict_npz
from facepipe.pipeline.runtime.store import OK, StoreError, open_group, read_status, verify_store
from facepipe.pipeline.stages.synth import draw_weights, run_synth, sample_ids, synth_face
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig


@pytest.fixture(scope="module")
def model(face_model_npz: Path) -> MorphableModel:
    return load_ict_npz(face_model_npz)


@pytest.fixture(scope="module")
def template(model: MorphableModel) -> Template:
    return template_from_model(model)


def config(model: MorphableModel, **kw: object) -> SynthConfig:
    return SynthConfig.model_validate({"model": "ict", "model_id": model.id, "identities": 3, "expressions": 2,
                                       "n_points": 4000} | kw)


def test_ground_truth_vertices_reproduce_the_model_exactly(model: MorphableModel, template: Template, tmp_path: Path) -> None:
    selection, _ = template_selection(model)
    out = str(tmp_path / "synth.zarr")
    report = run_synth(model, template, selection, out, config(model), options=RunOptions(processes=False))
    assert report.store_status == {"ok": 9, "failed": 0, "pending": 0}
    g = open_group(out)
    assert list(g["source_path"][:]) == sample_ids(3, 2)
    assert np.array_equal(g["template_triangles"][:], template.triangles)
    id_w, ex_w = g["identity_weights"][:], g["expression_weights"][:]
    for i in range(9):
        shape_mm = model.shape(id_w[i].astype(np.float64), ex_w[i].astype(np.float64))
        t = g["to_template"][i]
        assert np.allclose(g["vertices"][i], apply(t, selection(shape_mm)), atol=1e-6)
        assert np.allclose(apply(np.linalg.inv(t), g["vertices"][i].astype(np.float64)), selection(shape_mm), atol=1e-3)  # mm
        assert np.allclose(g["landmarks"][i], apply(t, model.landmark_points(shape_mm)), atol=1e-6)
    assert np.array_equal(id_w[0], id_w[1]) and np.array_equal(id_w[0], id_w[2]) and not np.array_equal(id_w[0], id_w[3])
    assert not ex_w[0].any() and ex_w[1].any() and str(g["expression"][0]) == "neutral"
    assert str(g["expression"][1]) in {"jawOpen", "mouthSmile_L", "jawOpen+mouthSmile_L"} and str(g["subject"][4]) == "id00001"
    pts, nrm = g["points"][:], g["normals"][:]
    assert pts.shape == (9, 4000, 3) and np.abs(pts).max() <= 1.0 + 1e-6
    assert np.allclose(np.linalg.norm(nrm, axis=2), 1.0, atol=1e-5) and (nrm[..., 2].mean(1) > 0.5).all()
    assert verify_store(out).ok


def test_same_bytes_with_threads_or_processes_and_resume(model: MorphableModel, template: Template, tmp_path: Path) -> None:
    selection, _ = template_selection(model)
    cfg = config(model, holes=2, noise_mm=0.2)
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    run_synth(model, template, selection, str(a), cfg, options=RunOptions(workers=1, processes=False))
    run_synth(model, template, selection, str(b), cfg, options=RunOptions(workers=2, processes=True))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    again = run_synth(model, template, selection, str(a), cfg, options=RunOptions(processes=False))
    assert again.done_before == 9 and again.processed == 0
    with pytest.raises(StoreError, match=r"config\.holes: 2 -> 3"):
        run_synth(model, template, selection, str(a), config(model, holes=3, noise_mm=0.2), options=RunOptions(processes=False))


def test_noise_moves_points_along_their_normals_by_the_given_mm(model: MorphableModel, template: Template) -> None:
    selection, _ = template_selection(model)
    id_w, ex_w = draw_weights(model, config(model), 0, "synth-ict", "id00000_e01")
    clean = synth_face(model, template, selection, id_w, ex_w, config(model), np.random.default_rng(3))
    noisy = synth_face(model, template, selection, id_w, ex_w, config(model, noise_mm=0.5), np.random.default_rng(3))
    d = (noisy.points - clean.points).astype(np.float64)
    along = (d * clean.normals).sum(1)
    assert np.allclose(d, along[:, None] * clean.normals, atol=1e-5)
    mm = along / np.linalg.norm(clean.to_template[:3, 0])  # template units -> mm
    assert mm.std() == pytest.approx(0.5, rel=0.1) and abs(mm.mean()) < 0.05


def test_holes_and_a_missing_side_remove_surface(model: MorphableModel, template: Template) -> None:
    selection, _ = template_selection(model)
    w = draw_weights(model, config(model), 0, "synth-ict", "id00000_e00")
    full = synth_face(model, template, selection, *w, config(model), np.random.default_rng(4))
    cut = synth_face(model, template, selection, *w, config(model, missing_side=1.0), np.random.default_rng(4))
    assert full.points[:, 0].min() < -0.75 and full.points[:, 0].max() > 0.75
    assert cut.points[:, 0].max() < 0.7 or cut.points[:, 0].min() > -0.7  # cut at 0.25..0.6, whole triangles
    holed = synth_face(model, template, selection, *w, config(model, holes=6, hole_radius_mm=15.0), np.random.default_rng(4))
    gaps = lambda pts: np.linalg.norm(full.vertices[:, None, :2] - pts[None, ::4, :2], axis=2).min(1)  # noqa: E731
    assert (gaps(holed.points) > 0.05).sum() > (gaps(full.points) > 0.05).sum() + 10
    assert np.array_equal(holed.vertices, full.vertices)  # the ground truth is never degraded


def test_synth_command_preview_and_dataset(face_model_npz: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from facepipe.models.store_dataset import StoreDataset

    exe = str(Path(sys.executable).with_name("facepipe"))
    run = subprocess.run([exe, "synth", "--model", "ict", "--model-path", str(face_model_npz), "--identities", "2",
                          "--expressions", "1", "--points", "3000", "--threads", "--out", "s.zarr", "--preview", "p.png",
                          "--holes", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "synth-ict -> s.zarr" in run.stdout and "samples    4 (ok 4, failed 0, pending 0)" in run.stdout
    img = np.asarray(Image.open(tmp_path / "p.png"))
    assert img.shape == (192, 4 * 192, 3) and img.std() > 10
    ds = StoreDataset(str(tmp_path / "s.zarr"), arrays=("points", "vertices"))
    assert len(ds) == 4 and ds[3]["vertices"].shape == (832, 3) and ds[3]["points"].dtype == torch.float32
    assert (read_status(zarr.open_group(str(tmp_path / "s.zarr"), mode="r")) == OK).all()
    missing = subprocess.run([exe, "synth", "--model", "ict", "--identities", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 2 and "needs its model file" in missing.stderr and "--model-path" in missing.stderr
    with pytest.raises(ScanFormatError, match="unknown model kind 'nope'"):
        load_model("nope", face_model_npz)
