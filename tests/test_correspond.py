"""Correspondence export (learned and NICP) and evaluation on constructed cases."""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from facepipe.models.correspond import Predictor, correspond, store_items
from facepipe.models.evaluate import evaluate
from facepipe.models.refine import RefineConfig
from facepipe.models.train import train
from facepipe.pipeline.errors import FacepipeError
from facepipe.pipeline.faces.landmark_sets import BU3DFE_REGIONS
from facepipe.pipeline.faces.procedural import default_template, procedural_model
from facepipe.pipeline.faces.template import template_selection
from facepipe.pipeline.geometry.align import scale_of
from facepipe.pipeline.geometry.metrics import region_errors
from facepipe.pipeline.geometry.nicp import face_landmarks, landmark_vertices, nicp
from facepipe.pipeline.io.registry import read_scan
from facepipe.pipeline.io.sample_data import write_example_dataset
from facepipe.pipeline.runtime.folders import FolderError
from facepipe.pipeline.runtime.sources import store_source
from facepipe.pipeline.runtime.store import open_group
from facepipe.pipeline.stages.ingest import run_ingest
from facepipe.pipeline.stages.synth import run_synth
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig
from facepipe.schemas.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("facepipe"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Example scans and synthetic faces, and a tiny network trained on them."""
    folder = tmp_path_factory.mktemp("corr")
    model = procedural_model()
    selection, _ = template_selection(model)
    run_synth(model, default_template(), selection, str(folder / "synth.zarr"),
              SynthConfig(model="procedural", model_id=model.id, identities=12, expressions=1, n_points=2048), options=RunOptions(processes=False))
    write_example_dataset(folder / "data" / "example", subjects=1)
    (folder / "catalog.yaml").write_text((REPO / "data_catalog.yaml").read_text())
    run_ingest("example", folder / "catalog.yaml", str(folder / "scans.zarr"), default_template(),
               overrides={"n_points": 2048}, options=RunOptions(processes=False))
    cfg = TrainConfig.model_validate({
        "synth": [str(folder / "synth.zarr")], "scans": [str(folder / "scans.zarr")], "identity_dim": 32, "expression_dim": 16,
        "hidden": 256, "input_points": 512, "batch_size": 8, "lr": 1e-3, "device": "cpu", "preview_samples": 0,
        "phases": [{"name": "identity", "synthetic_epochs": 25, "mixed_epochs": 3}, {"name": "joint", "synthetic_epochs": 3,
                                                                                    "mixed_epochs": 3}]})
    train(cfg, folder / "run", log=lambda _: None)
    return {"folder": folder, "run": folder / "run", "synth": folder / "synth.zarr", "scans": folder / "scans.zarr",
            "catalog": folder / "catalog.yaml"}


def test_exported_meshes_have_template_topology_land_on_the_scan_and_are_in_its_frame(trained: dict[str, Path],
                                                                                       tmp_path: Path) -> None:
    predictor = Predictor.load(trained["run"])
    template = predictor.template
    rows = correspond(store_source(str(trained["scans"])), template, tmp_path / "m", "learned", predictor, "ply", 4, True)
    assert len(rows) == 5 and all(r["output"] for r in rows)
    root = trained["folder"] / "data" / "example"
    for row in rows:
        mesh = trimesh.load(tmp_path / "m" / str(row["output"]), process=False)
        assert np.array_equal(np.asarray(mesh.faces), template.triangles) and len(mesh.vertices) == len(template.vertices)
        assert mesh.visual.vertex_colors.shape == (len(template.vertices), 4)
        raw = read_scan(root / str(row["source"]), texture=False)
        dist = cKDTree(raw.vertices).query(np.asarray(mesh.vertices))[0]  # the scan's own frame and mm
        assert np.median(dist) < 6.0, (row["source"], np.median(dist))
    with open(tmp_path / "m" / "index.csv") as f:
        index = list(csv.DictReader(f))
    assert [r["output"] for r in index] == [r["output"] for r in rows] and all(float(r["residual_mm"]) < 6.0 for r in index)
    assert index[0]["output"] == "BU-3DFE__F0001__F0001_HA04WH_F3D.ply"


def test_evaluation_reproduces_known_errors(trained: dict[str, Path], tmp_path: Path) -> None:
    """A method that returns the ground truth moved by 0.01 template units: the vertex error is 0.01 / scale mm."""
    template = default_template()
    group = open_group(str(trained["synth"]))
    truth = {str(p): group["vertices"][i].astype(np.float64) for i, p in enumerate(group["source_path"][:])}
    items = list(store_items(str(trained["synth"])))

    class Shifted:
        fingerprint = "shifted"

        def __init__(self) -> None:
            self.queue = [truth[it.source] for it in items]

        def predict(self, points: np.ndarray) -> np.ndarray:
            out, self.queue = np.stack(self.queue[: len(points)]), self.queue[len(points):]
            return out + np.array([0.01, 0.0, 0.0])

    report = evaluate(str(trained["synth"]), template, Shifted(), tmp_path / "e", trained["catalog"])  # type: ignore[arg-type]
    expected = np.mean([0.01 / scale_of(it.to_template) for it in items])
    assert report["vertex_mm"]["mean"] == pytest.approx(expected, rel=1e-6)  # type: ignore[index]
    assert (tmp_path / "e" / "heatmap.png").exists() and (tmp_path / "e" / "samples.csv").exists()
    errors = np.zeros((2, 83))
    errors[:, 16:26] = 2.0  # right brow, 1-based 17-26
    regions = region_errors(errors, np.ones((2, 83), bool), BU3DFE_REGIONS)
    assert regions["right brow"] == (2.0, 0.0, 20) and regions["nose"][0] == 0.0


def test_bu3dfe_regions_and_bosphorus_landmarks_come_from_the_raw_files(trained: dict[str, Path], tmp_path: Path) -> None:
    predictor = Predictor.load(trained["run"])
    report = evaluate(str(trained["scans"]), predictor.template, predictor, tmp_path / "e", trained["catalog"])
    regions = report["bu3dfe_regions_mm"]
    assert set(regions) == {"right eye lids", "left eye lids", "right brow", "left brow", "nose", "mouth", "right face",
                            "chin", "left face"}  # type: ignore[arg-type]
    assert regions["mouth"]["landmarks"] == 2 * 12  # type: ignore[index]  # the subject's two BU-3DFE scans
    assert 0.5 < report["bu3dfe_mean_over_regions_mm"] < 15.0 and (tmp_path / "e" / "regions.png").exists()
    assert len(report["bosphorus22_mm"]) == 22 and 0.5 < report["bosphorus22_mean_mm"] < 15.0  # from the two .lm3 files


def test_nicp_registers_the_template_to_a_face(trained: dict[str, Path]) -> None:
    template = default_template()
    group = open_group(str(trained["synth"]))
    points, five, truth = group["points"][2].astype(np.float64), group["landmarks"][2].astype(np.float64), group["vertices"][2]
    registered = nicp(template, points, five)
    before = np.linalg.norm(template.vertices - truth, axis=1).mean()
    after = np.linalg.norm(registered - truth, axis=1).mean()
    assert after < 0.85 * before and cKDTree(points).query(registered)[0].mean() < 0.01  # on the surface; vertices may slide


def test_correspond_command_with_nicp_and_failures(trained: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bs001_N_N_0.bnt"
    bad.write_bytes(b"\x00\x01")
    good = trained["folder"] / "data" / "example" / "FRGC" / "nd1" / "Spring2003range" / "04200d100.abs"
    run = subprocess.run([EXE, "correspond", "--method", "nicp", "--in", str(good), "--in", str(bad), "--out", "m"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "meshes     1 (nicp" in run.stdout and "failed" in run.stdout and "bs001_N_N_0.bnt" in run.stdout
    assert (tmp_path / "m" / "04200d100.ply").exists()
    missing = subprocess.run([EXE, "correspond", "--in", str(good), "--out", "m2"], cwd=tmp_path, capture_output=True, text=True)
    assert missing.returncode == 2 and "needs --checkpoint" in missing.stderr


def _surface_mm(raw_vertices: np.ndarray, raw_faces: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Distance of each vertex to the raw scan's surface (not just its vertices), through open3d."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(raw_vertices.astype(np.float32)), o3d.core.Tensor(raw_faces.astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(vertices.astype(np.float32))).numpy()


def test_refined_meshes_lie_on_the_scans_keep_the_topology_and_stay_smooth(trained: dict[str, Path], tmp_path: Path) -> None:
    from facepipe.models.refine import RefineConfig
    from facepipe.pipeline.geometry.metrics import roughness

    predictor = Predictor.load(trained["run"])
    template = predictor.template
    root = trained["folder"] / "data" / "example"
    plain = correspond(store_source(str(trained["scans"])), template, tmp_path / "net", "learned", predictor)
    rows = correspond(store_source(str(trained["scans"])), template, tmp_path / "ref", "learned", predictor,
                      refinement=RefineConfig())
    assert [r["method"] for r in rows] == ["learned+refine"] * 5
    first_nicp = correspond(store_source(str(trained["scans"]), 1), template, tmp_path / "nicp", "nicp")[0]
    for row, before in zip(rows, plain, strict=True):
        raw = read_scan(root / str(row["source"]), texture=False)
        mesh = trimesh.load(tmp_path / "ref" / str(row["output"]), process=False)
        assert np.array_equal(np.asarray(mesh.faces), template.triangles)
        net_mesh = trimesh.load(tmp_path / "net" / str(before["output"]), process=False)
        after_mm = np.median(_surface_mm(raw.vertices, raw.faces, np.asarray(mesh.vertices)))
        before_mm = np.median(_surface_mm(raw.vertices, raw.faces, np.asarray(net_mesh.vertices)))
        assert after_mm < 1.0 and after_mm < before_mm, (row["source"], before_mm, after_mm)
        assert float(row["residual_mm"]) < float(before["residual_mm"])
    nicp_mesh = trimesh.load(tmp_path / "nicp" / str(first_nicp["output"]), process=False)
    ours = trimesh.load(tmp_path / "ref" / str(rows[0]["output"]), process=False)
    ratio = roughness(np.asarray(ours.vertices), template.triangles) / roughness(np.asarray(nicp_mesh.vertices), template.triangles)
    assert ratio < 1.5, ratio


def test_refinement_recovers_a_face_the_decoders_can_make(trained: dict[str, Path]) -> None:
    """Target: a face decoded from known codes, sampled as a scan; from the encoder's guess, refinement
    must get most of the way back to it (vertex error, not just distance to the surface)."""
    import torch

    from facepipe.models.refine import RefineConfig, refine

    predictor = Predictor.load(trained["run"])
    net, template = predictor.net, predictor.template
    items = list(store_items(str(trained["synth"]), 2))
    with torch.no_grad():
        codes = net.encode(torch.as_tensor(np.stack([it.points for it in items]), dtype=torch.float32))
        target = net.decode(codes[0] * 1.3 + 0.2, codes[1] * 0.5).numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    scans = np.stack([trimesh.sample.sample_surface(trimesh.Trimesh(t, template.triangles, process=False), 4000,
                                                    seed=int(rng.integers(1 << 30)))[0] for t in target])
    start = predictor.predict(scans)
    before = np.linalg.norm(start - target, axis=-1).mean()
    # landmarks off the surface too, as the ICT face's eye centres lie 5 mm behind its eyelids
    sunk = dataclasses.replace(template, landmarks=template.landmarks - np.array([[0.0, 0.0, 0.05]] * 2 + [[0.0, 0.0, 0.0]] * 3))
    for frame in (template, sunk):
        fitted = refine(net, frame, scans, face_landmarks(target, frame), RefineConfig())
        after = np.linalg.norm(fitted - target, axis=-1).mean()
        assert after < 0.5 * before, (before, after)
        eyes = np.linalg.norm(fitted[:, landmark_vertices(frame)[:2]] - target[:, landmark_vertices(frame)[:2]], axis=-1)
        assert eyes.max() < 0.02, eyes  # the eyelid vertices are not dragged to the sunken landmarks (0.05)
    # landmarks 3 mm off, as MediaPipe's are: marked as detected, they pull less and the face stays nearer the truth
    wrong = face_landmarks(target, template) + np.array([0.03, 0.0, 0.0])
    errors = [np.linalg.norm(refine(net, template, scans, wrong, RefineConfig(), detected=flag) - target, axis=-1).mean()
              for flag in (None, np.ones(len(scans), bool))]
    assert errors[1] < errors[0], errors
    # a batch is refined as its scans are one by one (each against its own scan)
    alone = np.concatenate([refine(net, template, scans[k:k + 1], face_landmarks(target, template)[k:k + 1]) for k in range(2)])
    assert np.abs(alone - refine(net, template, scans, face_landmarks(target, template))).max() < 1e-4


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_one_or_two_workers_processes_or_threads_write_identical_folders(trained: dict[str, Path], tmp_path: Path) -> None:
    """Refinement runs one Dask task per scan; the meshes, rows and index do not depend on how."""
    predictor = Predictor.load(trained["run"])
    source = store_source(str(trained["scans"]))
    quick = RefineConfig(latent_steps=5, vertex_steps=5)
    runs = {"one": RunOptions(workers=1), "two": RunOptions(workers=2), "threads": RunOptions(workers=2, processes=False)}
    for name, options in runs.items():
        rows = correspond(source, predictor.template, tmp_path / name, "learned", predictor, refinement=quick, options=options)
        assert len(rows) == 5 and all(r["output"] and "seconds" in r for r in rows)
    reference = folder_bytes(tmp_path / "one")
    assert len([f for f in reference if f.endswith(".ply")]) == 5 and "index.csv" in reference and "plan.json" in reference
    assert folder_bytes(tmp_path / "two") == reference and folder_bytes(tmp_path / "threads") == reference
    again = correspond(source, predictor.template, tmp_path / "one", "learned", predictor, refinement=quick)
    assert all("seconds" not in r for r in again) and folder_bytes(tmp_path / "one") == reference  # nothing left to do
    with pytest.raises(FolderError, match="another run") as refused:
        correspond(source, predictor.template, tmp_path / "one", "nicp")
    assert refused.value.remedy == "overwrite"
    (tmp_path / "one" / "keep.txt").write_text("mine")
    rows = correspond(store_source(str(trained["scans"]), 1), predictor.template, tmp_path / "one", "learned", predictor,
                      options=RunOptions(overwrite=True))
    assert len(rows) == 1 and sorted(p.name for p in (tmp_path / "one").glob("*.ply")) == [str(rows[0]["output"])]
    assert (tmp_path / "one" / "keep.txt").read_text() == "mine"  # overwriting removes only what a run wrote


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_folder(trained: dict[str, Path], tmp_path: Path) -> None:
    args = [str(Path(sys.executable).with_name("facepipe")), "correspond", "--method", "nicp", "--in", str(trained["scans"]),
            "--limit", "4"]
    whole = subprocess.run([*args, "--out", str(tmp_path / "whole"), "--workers", "1"], capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    run = subprocess.Popen([*args, "--out", str(out), "--workers", "1"], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_at_kill = 0
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and run.poll() is None and done_at_kill < 2:
            done_at_kill = len(list((out / ".rows").glob("*.json"))) if (out / ".rows").is_dir() else 0
            time.sleep(0.02)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the driver and its workers, as a crash would
        run.wait()
    assert 1 <= done_at_kill < 4, f"the kill did not land mid-run ({done_at_kill} done)"
    rerun = subprocess.run([*args, "--out", str(out), "--workers", "2"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "were done before" in rerun.stdout
    assert folder_bytes(out) == folder_bytes(tmp_path / "whole")


def test_a_run_carries_its_template_wherever_it_is_copied(trained: dict[str, Path], tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(trained["run"], moved)
    state = torch.load(moved / "model.pt", weights_only=True)
    config = TrainConfig.model_validate_json(state["config"])
    state["config"] = config.model_copy(update={"template": str(tmp_path / "deleted.npz")}).model_dump_json()
    torch.save(state, moved / "model.pt")  # a run trained with a template file that is gone here
    predictor = Predictor.load(moved)
    assert predictor.template.id == state["template_id"] and (moved / "template.npz").is_file()
    rows = correspond(store_source(str(trained["scans"]), 2), predictor.template, tmp_path / "m", "learned", predictor)
    assert len(rows) == 2 and all(r["output"] for r in rows)
    del state["template"]  # a run from before runs carried their template: it names the file, which must exist
    torch.save(state, moved / "model.pt")
    with pytest.raises(FacepipeError, match="deleted.npz"):
        Predictor.load(moved)
    state["config"] = config.model_dump_json()  # ... or used the default template
    torch.save(state, moved / "model.pt")
    assert Predictor.load(moved).template.id == default_template().id
