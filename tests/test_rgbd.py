"""The simulated structured-light camera and `facepipe render-rgbd`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest
import zarr
from PIL import Image

from facepipe.pipeline.faces.procedural import procedural_model
from facepipe.pipeline.geometry.align import apply
from facepipe.pipeline.geometry.depth_sensor import StructuredLight, depth_to_xyz, intrinsics, world_to_camera, xyz_to_depth
from facepipe.pipeline.geometry.render import Raycaster
from facepipe.pipeline.geometry.scan import Scan
from facepipe.pipeline.runtime.sources import SourceError, resolve_source
from facepipe.pipeline.runtime.store import open_group, verify_store
from facepipe.pipeline.stages.rgbd import RenderError, posed, run_render_rgbd
from facepipe.schemas.rgbd import PRESETS, RenderConfig
from facepipe.schemas.scan import ScanMeta
from facepipe.schemas.store import RunOptions

EXE = str(Path(sys.executable).with_name("facepipe"))


def plane_and_sphere() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    box = o3d.geometry.TriangleMesh.create_box(3000, 3000, 1)
    sphere = o3d.geometry.TriangleMesh.create_sphere(100, 80)
    return {"plane": (np.asarray(box.vertices) - np.array([1500, 1500, 1.0]), np.asarray(box.triangles)),
            "sphere": (np.asarray(sphere.vertices), np.asarray(sphere.triangles))}


@pytest.mark.parametrize("preset", ["phone", "kinect"])
def test_depth_of_a_plane_and_a_sphere_matches_the_truth_within_the_preset_precision(preset: str) -> None:
    p = PRESETS[preset]
    device = StructuredLight(p)
    for name, (v, f) in plane_and_sphere().items():
        front = p.distance_mm  # the nearest surface point sits at the working distance
        eye = np.array([0.0, 0.0, front + (100.0 if name == "sphere" else 0.0)])
        shot = device.capture(Raycaster(v, f), device.camera(eye, np.zeros(3), np.array([0.0, 1.0, 0.0])), np.random.default_rng(1))
        surface = np.isfinite(shot.depth_clean)
        ok = np.isfinite(shot.depth) & surface
        err = shot.depth[ok] - shot.depth_clean[ok]
        precision = p.expected_precision_mm()
        assert ok.sum() > 0.6 * surface.sum(), (preset, name, ok.sum() / surface.sum())
        assert abs(err.mean()) < precision and np.median(np.abs(err)) < precision, (preset, name, err.mean(), precision)
        near = cv2.dilate(surface.astype(np.uint8), np.ones((p.block_size, p.block_size), np.uint8)) > 0
        assert not np.isfinite(shot.depth[~near]).any()  # no depth away from the surface; edge pixels may fly, as on devices


def test_threads_sharing_one_device_capture_what_one_thread_does() -> None:
    """render-rgbd --threads shares one device per process; its matcher must not mix their frames."""
    from concurrent.futures import ThreadPoolExecutor

    p = PRESETS["phone"]
    device = StructuredLight(p)
    v, f = plane_and_sphere()["sphere"]
    caster = Raycaster(v, f)
    cameras = [device.camera(np.array([x, 0.0, p.distance_mm + 100.0]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
               for x in (-40.0, 0.0, 40.0, 80.0)]

    def shot(k: int) -> np.ndarray:
        return device.capture(caster, cameras[k % 4], np.random.default_rng(k)).depth

    alone = [shot(k) for k in range(8)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(shot, range(8)))
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(alone, together, strict=True))


def test_the_projector_shadow_beside_the_nose_is_a_hole() -> None:
    model = procedural_model()
    p = PRESETS["phone"]
    device = StructuredLight(p)
    face, _ = posed(Scan(model.mean, model.triangles, ScanMeta(format="procedural", path="mean")), -25.0, 0.0, 0.0)
    center = face.vertices.mean(0)  # turned 25 degrees: the nose now hides part of the cheek from the projector
    camera = device.camera(center + np.array([0.0, 0.0, p.distance_mm]), center, np.array([0.0, 1.0, 0.0]))
    shot = device.capture(Raycaster(face.vertices, face.faces), camera, np.random.default_rng(0))
    shadow = np.isfinite(shot.depth_clean) & ~shot.lit
    rows, cols = np.nonzero(shadow)
    nose_col = camera.project(model.landmark_points(face.vertices)[2:3])[0, 0]
    assert shadow.sum() > 30 and np.median(cols) < nose_col  # the projector is to the right: the shadow falls left of the nose
    assert np.isnan(shot.depth[shadow]).mean() > 0.9
    assert np.isfinite(shot.depth[np.isfinite(shot.depth_clean) & shot.lit]).mean() > 0.7


def test_xyz_round_trip_and_frames() -> None:
    p = PRESETS["tiny"]
    device = StructuredLight(p)
    model = procedural_model()
    center = model.mean.mean(0)
    camera = device.camera(center + np.array([0.0, 0.0, p.distance_mm]), center, np.array([0.0, 1.0, 0.0]))
    caster = Raycaster(model.mean, model.triangles)
    hits = caster.render(camera)
    shot = device.capture(caster, camera, np.random.default_rng(0), hits)
    k = intrinsics(camera)
    xyz = depth_to_xyz(shot.depth_clean, k)
    back = xyz_to_depth(xyz, k, shot.depth_clean.shape)
    finite = np.isfinite(shot.depth_clean)
    assert np.array_equal(np.isfinite(back), finite) and np.allclose(back[finite], shot.depth_clean[finite], atol=1e-4)
    world = apply(np.linalg.inv(world_to_camera(camera)), xyz[finite].astype(np.float64))
    assert np.abs(world - hits.points()[finite]).max() < 1e-2  # camera space -> the same surface points (mm)


def test_render_rgbd_from_a_synth_store_is_reproducible_with_a_preview(tmp_path: Path) -> None:
    synth = subprocess.run([EXE, "synth", "--identities", "2", "--expressions", "1", "--points", "500", "--threads",
                            "--out", "s.zarr"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert synth.returncode == 0, synth.stderr
    run = subprocess.run([EXE, "render-rgbd", "--in", "s.zarr", "--out", "r.zarr", "--preset", "tiny", "--views", "2",
                          "--threads", "--preview", "sheet.png"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "samples    8 (ok 8, failed 0, pending 0)" in run.stdout
    g = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")
    p = PRESETS["tiny"]
    assert g["rgb"].shape == (8, p.height, p.width, 3) and g["xyz"].metadata.dimension_names == ("sample", "row", "col", "xyz")
    depth, mask = g["depth"][:], g["mask"][:]
    assert np.array_equal(np.isfinite(depth), mask) and mask.mean() > 0.05
    assert list(g["source_sample"][:4]) == ["id00000_e00", "id00000_e00", "id00000_e01", "id00000_e01"]
    assert not np.array_equal(g["pose_deg"][0], g["pose_deg"][1])  # two views, two poses
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape == (4 * p.height, 4 * p.width, 3) and sheet.std() > 10
    config = RenderConfig(preset=p, views=2)
    again = run_render_rgbd(resolve_source(str(tmp_path / "s.zarr"), tmp_path / "none.yaml"), str(tmp_path / "r2.zarr"),
                            config, options=RunOptions(workers=2))
    assert again.manifest_digest == g.attrs["manifest"]["digest"] and verify_store(str(tmp_path / "r2.zarr")).ok


def test_a_store_of_points_cannot_be_rendered(tmp_path: Path) -> None:
    from facepipe.pipeline.faces.procedural import default_template
    from facepipe.pipeline.io.sample_data import write_example_dataset
    from facepipe.pipeline.stages.ingest import run_ingest

    write_example_dataset(tmp_path / "data" / "example", subjects=1)
    (tmp_path / "catalog.yaml").write_text((Path(__file__).resolve().parents[1] / "data_catalog.yaml").read_text())
    run_ingest("example", tmp_path / "catalog.yaml", str(tmp_path / "scans.zarr"), default_template(), limit=1,
               overrides={"n_points": 300}, options=RunOptions(processes=False))
    with pytest.raises(RenderError, match="holds points, not meshes"):
        run_render_rgbd(resolve_source(str(tmp_path / "scans.zarr"), tmp_path / "catalog.yaml"), str(tmp_path / "r.zarr"),
                        RenderConfig(preset=PRESETS["tiny"]))
    with pytest.raises(SourceError, match="'nope' is not a store or a dataset of .*catalog.yaml or scan files"):
        resolve_source("nope", tmp_path / "catalog.yaml")
    source = resolve_source("example", tmp_path / "catalog.yaml", limit=2)
    assert source.kind == "dataset" and len(source.ids) == 2
    assert open_group(str(tmp_path / "scans.zarr")).attrs["plan"]["kind"] == "scans"
