"""RGB-D encoders: shapes and modalities, a tiny run that learns, exact resume, reconstruct, bad files, evaluate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image
from scipy.spatial import cKDTree

from facepipe.models import train_encoder as te
from facepipe.models.encoder import FRONTAL, FaceEncoder, posed, rotation_6d
from facepipe.models.evaluate_frames import evaluate_frames
from facepipe.models.frames import read_frames
from facepipe.models.reconstruct import EncoderPredictor, ReconstructError, reconstruct
from facepipe.models.train import train
from facepipe.models.train_encoder import train_encoder
from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.procedural import default_template, procedural_model
from facepipe.pipeline.faces.template import template_selection
from facepipe.pipeline.geometry.align import scale_of, umeyama
from facepipe.pipeline.geometry.depth_sensor import depth_to_xyz, mesh_depth
from facepipe.pipeline.io.frame_files import frame_files, read_depth, read_frame
from facepipe.pipeline.runtime.sources import store_source
from facepipe.pipeline.stages.rgbd import run_render_rgbd
from facepipe.pipeline.stages.synth import run_synth
from facepipe.schemas.encoder import EncoderConfig, encoder_config
from facepipe.schemas.rgbd import PRESETS, RenderConfig
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig
from facepipe.schemas.train import TrainConfig

EXE = str(Path(sys.executable).with_name("facepipe"))
QUIET = {"log": lambda _: None}


def tiny(face: Path, rgbd: str, **kw: object) -> EncoderConfig:
    correction = {"denoiser": {"steps": 60, "crop": 32, "frames": 50}}  # the tiny preset learns none: a short one, to test it
    return encoder_config({"checkpoint": str(face), "rgbd": [rgbd], "epochs": 12, "preview_samples": 2} | correction | kw, "tiny")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """A face run trained on procedural faces, those faces through the tiny depth camera, and a tiny
    depth encoder trained on them."""
    folder = tmp_path_factory.mktemp("enc")
    model = procedural_model()
    selection, _ = template_selection(model)
    synth = str(folder / "synth.zarr")
    run_synth(model, default_template(), selection, synth,
              SynthConfig(model="procedural", model_id=model.id, identities=10, expressions=2, n_points=1024),
              options=RunOptions(processes=False))
    face = folder / "face"
    train(TrainConfig.model_validate({
        "synth": [synth], "identity_dim": 16, "expression_dim": 8, "hidden": 64, "input_points": 256, "batch_size": 4,
        "lr": 1e-3, "device": "cpu", "preview_samples": 0,
        "phases": [{"name": "identity", "synthetic_epochs": 3, "mixed_epochs": 0},
                   {"name": "expression", "synthetic_epochs": 2, "mixed_epochs": 0},
                   {"name": "joint", "synthetic_epochs": 1, "mixed_epochs": 0}]}), face, **QUIET)
    rgbd = str(folder / "rgbd.zarr")
    run_render_rgbd(store_source(synth), rgbd, RenderConfig(preset=PRESETS["tiny"]), options=RunOptions(processes=False))
    history = train_encoder(tiny(face, rgbd), folder / "encoder", **QUIET)
    return {"folder": folder, "synth": synth, "face": face, "rgbd": rgbd, "encoder": folder / "encoder", "history": history}


def test_branches_give_codes_pose_and_light_and_start_at_the_mean_frontal_face() -> None:
    net = FaceEncoder(("rgbd", "depth", "rgb"), identity_dim=7, expression_dim=5, shared_stages=2).eval()
    net.code_mean.copy_(torch.arange(12.0))
    x = {"rgbd": torch.randn(2, 6, 64, 80), "depth": torch.randn(2, 3, 64, 80), "rgb": torch.randn(2, 3, 64, 80)}
    with torch.no_grad():
        out = net(x)
    assert set(out) == {"rgbd", "depth", "rgb"}
    for m, o in out.items():
        assert o["identity_code"].shape == (2, 7) and o["expression_code"].shape == (2, 5)
        assert torch.equal(torch.cat([o["identity_code"], o["expression_code"]], 1), torch.arange(12.0).expand(2, -1))
        assert torch.allclose(o["rotation"], FRONTAL.expand(2, 3, 3), atol=1e-6)
        assert torch.allclose(o["offset_mm"], torch.zeros(2, 3)) and torch.allclose(o["scale_mm"], torch.full((2,), 100.0))
        assert ("albedo" in o) == (m == "rgb") and ("sh" in o) == (m == "rgb")
    assert out["rgb"]["sh"].shape == (2, 9, 3)
    assert net.shared[0] is not None and len(net.stems) == 3  # one stem each, shared early stages
    with pytest.raises(RuntimeError):
        net.branch(torch.randn(1, 3, 64, 80), "rgbd")  # 6 channels: RGB + XYZ
    r = rotation_6d(torch.randn(16, 6))
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(16), atol=1e-5)
    face = torch.randn(2, 10, 3)
    placed = posed(face, out["depth"], torch.tensor([[0.0, 0.0, 400.0]] * 2))
    assert torch.allclose(placed[..., 2], 400.0 - 100.0 * face[..., 2], atol=1e-4)  # the face looks at the camera


def test_a_tiny_encoder_lowers_its_error_and_writes_its_run(setup: dict) -> None:
    history = setup["history"]
    first, last = history[0], history[-1]
    assert last["depth_vertex"] < 0.5 * first["depth_vertex"] and last["loss"] < first["loss"]
    run = setup["encoder"]
    for name in ("config.json", "metrics.jsonl", "losses.png", "predictions.png", "model.pt", "checkpoints/last.pt",
                 "denoiser.jsonl"):
        assert (run / name).exists(), name
    state = torch.load(run / "model.pt", weights_only=True)
    assert set(state) == {"encoder", "config", "decoders", "landmarks", "denoiser"}  # self-contained: the decoders travel with it


def test_resume_is_exact(setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny(setup["face"], setup["rgbd"], epochs=4)
    full = train_encoder(cfg, tmp_path / "full", **QUIET)
    real = te.EncoderRun.epoch

    def interrupted(self: te.EncoderRun, epoch: int) -> dict[str, float]:
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(te.EncoderRun, "epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_encoder(cfg, tmp_path / "cut", **QUIET)
    monkeypatch.setattr(te.EncoderRun, "epoch", real)
    resumed = train_encoder(cfg, tmp_path / "cut", resume=True, **QUIET)
    assert [h["loss"] for h in resumed] == [h["loss"] for h in full]
    a, b = (torch.load(tmp_path / run / "model.pt", weights_only=True) for run in ("full", "cut"))
    for part in ("encoder", "denoiser"):  # the depth correction, learnt after the epochs, too
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])


def test_reconstructed_meshes_lie_on_the_clean_depth_of_their_frames(setup: dict, tmp_path: Path) -> None:
    import trimesh

    predictor = EncoderPredictor.load(setup["encoder"], "cpu")
    rows = reconstruct(setup["rgbd"], predictor, tmp_path / "meshes")  # fitted to the depth after the encoder
    assert len(rows) == 30 and all(r["output"] and not r["error"] for r in rows)
    g = zarr.open_group(setup["rgbd"], mode="r")
    frames = read_frames(setup["rgbd"], predictor.config.width, predictor.config.height, limit=6)
    alone = predictor.predict(frames.rgb, frames.xyz, "depth")
    fitted, encoder_only = [], []
    for i, r in enumerate(rows[:6]):
        mesh = trimesh.load(tmp_path / "meshes" / str(r["output"]), process=False)
        assert np.array_equal(mesh.faces, predictor.face.template.triangles)
        clean, k = g["depth_clean"][i], g["intrinsics"][i]
        for vertices, gaps in ((np.asarray(mesh.vertices), fitted), (alone[i], encoder_only)):
            seen = mesh_depth(vertices, mesh.faces, k, clean.shape)
            both = np.isfinite(seen) & np.isfinite(clean)
            assert both.sum() > 0.5 * np.isfinite(clean).sum()  # the mesh covers the face where the camera sees it
            gaps.append(np.median(np.abs(seen[both] - clean[both])))
    assert np.median(fitted) < 4.0 and np.median(fitted) < np.median(encoder_only)
    index = (tmp_path / "meshes" / "index.csv").read_text()
    again = reconstruct(setup["rgbd"], predictor, tmp_path / "meshes")  # a rerun resumes: nothing to do, same index
    assert (tmp_path / "meshes" / "index.csv").read_text() == index and len(again) == 30
    with pytest.raises(ReconstructError, match="has the depth branch"):
        reconstruct(setup["rgbd"], predictor, tmp_path / "other", modality="rgb")


def test_refinement_to_the_depth_takes_the_faces_closer_to_the_truth(setup: dict) -> None:
    """The Chamfer fit places the face; the scans' refinement, in the face's frame, then fits its shape."""
    from facepipe.models.evaluate_frames import fitted_errors
    from facepipe.schemas.encoder import FitConfig

    predictor = EncoderPredictor.load(setup["encoder"], "cpu")
    frames = read_frames(setup["rgbd"], predictor.config.width, predictor.config.height, clean_input=True, limit=8,
                         fit_count=FitConfig().refine_points)
    truth = frames.truth.astype(np.float64)

    def error(fit: FitConfig, points: np.ndarray | None = frames.points) -> float:
        pred = predictor.predict(frames.rgb, frames.xyz, "depth", fit, points)
        assert pred.shape == truth.shape and np.isfinite(pred).all()
        return float(np.mean([fitted_errors(p, t).mean() for p, t in zip(pred, truth, strict=True)]))

    placed, refined = error(FitConfig(refine=False)), error(FitConfig())
    assert refined < 0.9 * placed, (placed, refined)
    assert error(FitConfig(), None) < 0.9 * placed  # from the input-size XYZ alone
    assert error(FitConfig(damping_start=0.0, pair_start_mm=2.0)) < 0.9 * placed  # undamped, from near pairs
    assert error(FitConfig(surface_steps=2)) < placed  # the per-vertex heights too


def _near_truth(predictor: EncoderPredictor, truth: np.ndarray, shift_mm: float, degrees: float) -> dict[str, torch.Tensor]:
    """An RGB head's output for the mean face laid onto each true face by a similarity, then moved
    `shift_mm` and turned `degrees`: where a fit to the image starts, a few mm off."""
    enc, n = predictor.encoder, len(truth)
    mean = enc.code_mean[None]
    with torch.no_grad():
        face = predictor.face.net.decode(mean[:, :enc.identity_dim], mean[:, enc.identity_dim:])[0].numpy().astype(np.float64)
    a = np.radians(degrees)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rot, scale, offset = [], [], []
    for t in truth:
        m = umeyama(face, t)
        s = scale_of(m)
        rot.append(turn @ m[:3, :3] / s)
        scale.append(s)
        offset.append(m[:3, 3] + np.array([shift_mm, -shift_mm, 0.0]))
    f32 = {"dtype": torch.float32}
    return {"z": torch.zeros(n, len(mean[0])), "rotation": torch.as_tensor(np.stack(rot), **f32),
            "scale_mm": torch.as_tensor(scale, **f32), "offset_mm": torch.as_tensor(np.stack(offset), **f32),
            "albedo": torch.full((n, 3), 0.65), "sh": torch.tensor([2.6, 0.0, 0.6, 0, 0, 0, 0, 0, 0])[None, :, None].repeat(n, 1, 3)}


def test_the_fit_to_the_image_takes_the_faces_closer_to_the_truth(setup: dict) -> None:
    """Faces shaded by SH light (render-rgbd's): from the mean face 5 mm and 4 degrees off, the fit of
    codes, pose and light to the image and to landmarks (here the projections of 40 true vertices,
    where MediaPipe's would be) brings the faces nearer their truth, in camera space; frames without
    landmarks keep the encoder's face."""
    from facepipe.models.image_landmarks import MESH_POINTS
    from facepipe.models.reconstruct import fit_to_image
    from facepipe.schemas.encoder import FitConfig

    predictor = EncoderPredictor.load(setup["encoder"], "cpu")
    frames = read_frames(setup["rgbd"], 160, 120, limit=6)  # the tiny camera's own size
    truth = frames.truth.astype(np.float64)
    out = _near_truth(predictor, truth, 5.0, 4.0)
    anchor = torch.zeros(len(truth), 3)
    marked = np.random.default_rng(0).choice(truth.shape[1], 40, replace=False)
    predictor.landmarks = np.full(MESH_POINTS, -1)
    predictor.landmarks[5:45] = marked
    seen = truth[:, marked]
    pixels = np.full((len(truth), MESH_POINTS, 2), np.nan)
    pixels[:, 5:45] = np.stack([frames.k[:, None, 0, 0] * seen[..., 0] / seen[..., 2] + frames.k[:, None, 0, 2],
                                frames.k[:, None, 1, 1] * seen[..., 1] / seen[..., 2] + frames.k[:, None, 1, 2]], -1)
    pixels[0, 5:10] = np.nan  # landmarks not found

    def error(steps: int, landmarks: np.ndarray | None) -> float:
        placed = fit_to_image(predictor, out, anchor, frames.rgb, frames.k, FitConfig(image_steps=steps), landmarks)
        return float(np.linalg.norm(placed.camera().numpy() - truth, axis=-1).mean())

    start, fitted, shading = error(0, pixels), error(FitConfig().image_steps, pixels), error(FitConfig().image_steps, None)
    assert start > 5.0 and fitted < 0.7 * start and shading == start, (start, fitted, shading)


def test_an_rgb_encoder_places_mediapipe_landmarks_and_its_photos_are_fitted(setup: dict, tmp_path: Path) -> None:
    """train-encoder's RGB branch learns where MediaPipe's landmarks lie on the template (procedural
    faces: the points wander more than on real ones, hence the wide spread); reconstruct reads plain
    photos without intrinsics (a 60-degree view), finds their landmarks and fits the faces to them."""
    import trimesh

    from facepipe.models.image_landmarks import detect

    train_encoder(tiny(setup["face"], setup["rgbd"], modalities=["rgb"], epochs=1, landmark_spread_mm=30.0), tmp_path / "rgb", **QUIET)
    predictor = EncoderPredictor.load(tmp_path / "rgb", "cpu")
    assert predictor.landmarks.shape == (468,) and predictor.has_landmarks
    assert (predictor.landmarks < len(predictor.face.template.vertices)).all()
    g = zarr.open_group(setup["rgbd"], mode="r")
    faces = [i for i in range(g["rgb"].shape[0]) if np.isfinite(detect(g["rgb"][i], 80, 64)).all()][:3]  # MediaPipe finds these
    photos = []
    for n, i in enumerate(faces):
        Image.fromarray(g["rgb"][i]).save(tmp_path / f"p{n}.png")
        photos.append(tmp_path / f"p{n}.png")
    (tmp_path / "p2.json").write_text(json.dumps({"fx": 100, "fy": 100, "cx": 80, "cy": 60, "width": 200, "height": 120}))
    files = frame_files(photos, rgb_only=True)
    rows = reconstruct(files, predictor, tmp_path / "fitted", modality="rgb")
    plain = reconstruct(files, predictor, tmp_path / "plain", modality="rgb", fit=None)
    assert [bool(r["error"]) for r in rows] == [False, False, True] and "its intrinsics say 200x120" in str(rows[2]["error"])
    moved = [np.abs(trimesh.load(tmp_path / "fitted" / f"p{i}.ply", process=False).vertices
                    - trimesh.load(tmp_path / "plain" / f"p{i}.ply", process=False).vertices).max() for i in range(2)]
    assert [bool(r["error"]) for r in plain] == [False, False, True] and min(moved) > 0.1, moved


def test_the_fit_reads_the_depth_at_its_own_size_the_same_points_in_any_batch(setup: dict) -> None:
    """The tiny camera's 160 x 120 depth under an encoder of 80 x 64: the fit's points are the depth's
    own pixels, more of them than the input has, and each frame's subset does not depend on what is read with it."""
    g = zarr.open_group(setup["rgbd"], mode="r")
    frames = read_frames(setup["rgbd"], 80, 64, fit_count=2000, limit=3)
    assert frames.points is not None and frames.points.shape == (3, 2000, 3)
    for i in range(3):
        pixels = depth_to_xyz(g["depth"][i], g["intrinsics"][i]).reshape(-1, 3)
        pixels = pixels[np.isfinite(pixels).all(1)]
        assert len(pixels) > np.isfinite(frames.xyz[i]).all(-1).sum()
        assert cKDTree(pixels).query(frames.points[i])[0].max() < 1e-3  # each one a pixel of the full depth
        assert len(np.unique(frames.points[i], axis=0)) == min(len(pixels), 2000)  # without replacement while enough
    later = read_frames(setup["rgbd"], 80, 64, fit_count=2000, limit=2)
    assert np.array_equal(later.points, frames.points[:2])
    assert read_frames(setup["rgbd"], 80, 64, limit=1).points is None


def test_the_fit_reads_sensor_depth_through_the_learnt_correction_and_clean_depth_as_it_is(setup: dict) -> None:
    """The run's correction moves the fit's points along their pixels' rays (no point invented or
    dropped); clean depth, `denoise=False` and runs without a correction read the depth as it is."""
    from facepipe.schemas.encoder import FitConfig

    predictor = EncoderPredictor.load(setup["encoder"], "cpu")
    assert predictor.denoiser is not None and predictor.correction(FitConfig()) is not None
    assert predictor.correction(FitConfig(denoise=False)) is None and predictor.correction(FitConfig(), clean_input=True) is None
    assert predictor.correction(None) is None
    plain = read_frames(setup["rgbd"], 80, 64, fit_count=500, limit=3)
    read = read_frames(setup["rgbd"], 80, 64, fit_count=500, limit=3, correct=predictor.correction(FitConfig()))
    ray = lambda p: p[..., :2] / p[..., 2:]  # noqa: E731 - the pixel a point lies on
    assert np.allclose(ray(read.points), ray(plain.points), atol=1e-6) and not np.allclose(read.points, plain.points)
    assert np.abs(read.points[..., 2] - plain.points[..., 2]).max() < 20.0
    bare = EncoderPredictor.load(setup["encoder"], "cpu")
    bare.denoiser = None
    assert bare.correction(FitConfig()) is None and bare.fingerprint != predictor.fingerprint
    # the refinement's scan-to-face term follows the depth's bias too: only on clean or corrected depth
    weight = FitConfig().scan_weight
    assert weight > 0 and predictor.depth_fit(FitConfig()).scan_weight == weight  # type: ignore[union-attr]
    assert predictor.depth_fit(FitConfig(), clean_input=True).scan_weight == weight  # type: ignore[union-attr]
    assert predictor.depth_fit(FitConfig(denoise=False)).scan_weight == 0  # type: ignore[union-attr]
    assert bare.depth_fit(FitConfig()).scan_weight == 0 and bare.depth_fit(FitConfig(), clean_input=True).scan_weight == weight  # type: ignore[union-attr]
    assert predictor.depth_fit(None) is None


def test_an_encoder_run_of_other_settings_is_a_clear_error(setup: dict, tmp_path: Path) -> None:
    from facepipe.models.run_files import load_state, save_atomic

    state = load_state(setup["encoder"] / "model.pt")
    config = json.loads(str(state["config"]))
    config["weights"]["unknown_term"] = 1.0  # a field a later version might add
    save_atomic(state | {"config": json.dumps(config)}, tmp_path / "model.pt")
    with pytest.raises(ReconstructError, match=r"model.pt: its encoder settings are not this facepipe's.*unknown_term"):
        EncoderPredictor.load(tmp_path / "model.pt", "cpu")


def _capture(folder: Path, g: zarr.Group, i: int, stem: str, npy: bool = False) -> Path:
    depth, k = g["depth"][i], g["intrinsics"][i]
    h, w = depth.shape
    (folder / f"{stem}.json").write_text(json.dumps({"fx": k[0, 0], "fy": k[1, 1], "cx": k[0, 2], "cy": k[1, 2], "width": w, "height": h}))
    if npy:
        np.save(folder / f"{stem}.npy", (np.nan_to_num(depth, nan=0.0) / 1000.0).astype(np.float32))
        return folder / f"{stem}.npy"
    Image.fromarray(np.rint(np.nan_to_num(depth, nan=0.0)).astype(np.uint16)).save(folder / f"{stem}.png")
    Image.fromarray(g["rgb"][i]).save(folder / f"{stem}.rgb.png")
    return folder / f"{stem}.png"


def test_capture_files_png_and_npy_read_alike_and_bad_files_fail_alone(setup: dict, tmp_path: Path) -> None:
    g = zarr.open_group(setup["rgbd"], mode="r")
    png, npy = _capture(tmp_path, g, 0, "a"), _capture(tmp_path, g, 1, "b", npy=True)
    a = read_frame(frame_files([png], False)[0], need_rgb=True)
    assert a.rgb is not None and a.rgb.shape == (*a.depth.shape, 3)
    assert np.nanmax(np.abs(a.depth - g["depth"][0])) <= 0.5 and np.array_equal(np.isfinite(a.depth), np.isfinite(g["depth"][0]))
    b = read_depth(npy)
    assert np.nanmax(np.abs(b - g["depth"][1])) < 1e-3 and np.isfinite(depth_to_xyz(b, g["intrinsics"][1])).any()
    (tmp_path / "ints.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(tmp_path / "c.npy", np.zeros((4, 4), np.int32))
    (tmp_path / "c.json").write_text("{}")
    np.save(tmp_path / "d.npy", np.ones((120, 160), np.float32) * 0.4)
    (tmp_path / "d.json").write_text(json.dumps({"fx": 100, "fy": 100, "cx": 80, "cy": 60, "width": 200, "height": 120}))
    (tmp_path / "e.npy").write_bytes(npy.read_bytes())
    (tmp_path / "f.npy").write_bytes(npy.read_bytes())
    (tmp_path / "f.json").write_text("fx = 1")
    cases = {"ints.npy": "not a NumPy array file", "c.npy": "expected a 2-D float array", "d.npy": "its intrinsics say 200x120",
             "e.npy": "no intrinsics", "f.npy": "not a JSON file of intrinsics"}
    for name, message in cases.items():
        with pytest.raises(ScanFormatError, match=message) as err:
            read_frame(frame_files([tmp_path / name], False)[0], need_rgb=False)
        assert name.split(".")[0] in str(err.value)
    with pytest.raises(ScanFormatError, match="bad intrinsics .*fx"):
        read_frame(frame_files([npy], False, tmp_path / "c.json")[0], need_rgb=False)
    run = subprocess.run([EXE, "reconstruct", "--checkpoint", str(setup["encoder"]), "--in", str(png), "--in", str(npy),
                          "--in", str(tmp_path / "c.npy"), "--in", str(tmp_path / "e.npy"), "--out", str(tmp_path / "m")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "meshes     2 (depth" in run.stdout and run.stdout.count("failed") == 2 and "c.npy" in run.stdout
    assert sorted(p.name for p in (tmp_path / "m").glob("*.ply")) == ["a.ply", "b.ply"]


def test_evaluate_reproduces_a_constructed_error(setup: dict, tmp_path: Path) -> None:
    real = EncoderPredictor.load(setup["encoder"], "cpu")
    truth = read_frames(setup["rgbd"], 16, 16).truth.astype(np.float64)

    class Shifted(EncoderPredictor):
        """The truth moved 2 mm along x and turned 5 degrees: 2 mm + rotation in camera space, 0 after the fit."""

        seen = 0

        def predict(self, rgb: np.ndarray, xyz: np.ndarray, modality: str, fit: object = None, points: object = None,
                    k: object = None, landmarks: object = None) -> np.ndarray:
            t = truth[Shifted.seen % len(truth):][: len(rgb)]
            Shifted.seen += len(rgb)
            c = t.mean(1, keepdims=True)
            a = np.radians(5)
            rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
            return (t - c) @ rot.T + c + np.array([2.0, 0.0, 0.0])

    fake = Shifted(real.encoder, real.face, real.config, real.device)
    summary = evaluate_frames(setup["rgbd"], fake, tmp_path / "ev")
    r = summary["branches"]
    assert set(r) == {"depth/sensor", "depth/clean"}
    assert r["depth/sensor"]["vertex_mm_pose_fitted"]["max"] < 1e-3
    assert r["depth/sensor"]["vertex_mm"]["mean"] > 2.0
    for name in ("report.json", "samples.csv", "heatmap_depth_sensor.png", "heatmap_depth_clean.png"):
        assert (tmp_path / "ev" / name).exists()
    cli = subprocess.run([EXE, "evaluate", "--in", setup["rgbd"], "--checkpoint", str(setup["encoder"]), "--out", str(tmp_path / "cli"),
                          "--limit", "4"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "depth/sensor" in cli.stdout and "depth/clean" in cli.stdout


@pytest.mark.slow
def test_two_process_ddp_encoder_run_with_torchrun(setup: dict, tmp_path: Path) -> None:
    (tmp_path / "enc.json").write_text(tiny(setup["face"], setup["rgbd"], epochs=2).model_dump_json())
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    run = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "facepipe.cli.app", "train-encoder",
                          "--checkpoint", str(setup["face"]), "--config", "enc.json", "--out", "run"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("epochs     2") == 1  # one summary, from rank 0
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[0]["frames"] == 16  # each rank half of the 30 frames, in whole batches of 8
