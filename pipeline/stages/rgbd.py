"""`facepipe render-rgbd`: faces through the simulated structured-light camera, into `rgbd.zarr`.

Sources are the meshes of a synth store (the ground-truth faces, mm) or the raw scans of a catalog
dataset (with their textures). Every sample is one source face in a random head pose, at a jittered
working distance, captured by the preset's device: RGB (the texture, or a skin albedo under random
3-band spherical-harmonics light), the matcher's depth with its holes and artefacts, the true depth,
the camera-space XYZ image, intrinsics and extrinsics (source frame -> OpenCV camera). Frames of a
synth store also carry their ground truth in template topology, in camera space (`vertices`, mm) and
in the template frame (`vertices_template`): what the RGB-D encoders are trained and measured on.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from facepipe.pipeline.errors import FacepipeError
from facepipe.pipeline.faces.landmark_sets import FIVE
from facepipe.pipeline.geometry.align import apply
from facepipe.pipeline.geometry.depth_sensor import StructuredLight, colorize, depth_to_xyz, intrinsics, world_to_camera
from facepipe.pipeline.geometry.render import Hits, Raycaster, surface_colors
from facepipe.pipeline.geometry.scan import Scan
from facepipe.pipeline.io.registry import read_scan
from facepipe.pipeline.runtime.jobs import OnSample, OnStart, run_store_job
from facepipe.pipeline.runtime.seeding import sample_rng
from facepipe.pipeline.runtime.sources import Source
from facepipe.pipeline.runtime.store import (
    FAILED, OK, Column, SampleWriter, bookkeeping_columns, facepipe_version, open_group, read_status,
    samples_digest,
)
from facepipe.schemas.rgbd import RenderConfig
from facepipe.schemas.scan import ScanMeta
from facepipe.schemas.store import RunOptions, RunReport, SampleOutcome, StorePlan


class RenderError(FacepipeError):
    """A source that cannot be rendered (a store of points, an unknown dataset, ...)."""


@functools.lru_cache(maxsize=4)
def _synth_arrays(url: str) -> tuple[object, np.ndarray]:
    group = open_group(url, "r")
    return group, group["template_triangles"][:].astype(np.int64)


def load_source_mesh(source: Source, position: int) -> Scan:
    """The source face in its own frame, mm (synth: the ground truth taken back out of the template frame)."""
    if source.kind == "store":
        group, triangles = _synth_arrays(source.location)
        index = source.indices[position]
        vertices = apply(np.linalg.inv(group["to_template"][index]), group["vertices"][index].astype(np.float64))
        return Scan(vertices, triangles, ScanMeta(format="synth", path=f"{source.location}#{source.ids[position]}"))
    return read_scan(source.paths()[position], source.fmt)


SH_CONST = (0.282095, 0.488603, 1.092548, 0.315392, 0.546274)


def sh_basis(n: np.ndarray) -> np.ndarray:
    """(..., 9) real spherical harmonics up to band 2 at unit normals."""
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    c0, c1, c2, c3, c4 = SH_CONST
    return np.stack([np.full_like(x, c0), c1 * y, c1 * z, c1 * x, c2 * x * y, c2 * y * z, c3 * (3 * z * z - 1), c2 * x * z,
                     c4 * (x * x - y * y)], -1)


def random_sh(rng: np.random.Generator, strength: float) -> np.ndarray:
    """(9, 3) coefficients: a mostly frontal light of random direction and tint."""
    coeffs = np.zeros((9, 3))
    coeffs[0] = 0.75 / SH_CONST[0] * rng.uniform(0.9, 1.1, 3)
    coeffs[1:4] = rng.normal(0.0, strength, (3, 1)) + rng.normal(0.0, strength / 10, (3, 3))
    coeffs[2] += 0.6  # band 1, z: light from the camera side
    coeffs[4:] = rng.normal(0.0, strength / 3, (5, 1))
    return coeffs


def posed(scan: Scan, yaw: float, pitch: float, roll: float) -> tuple[Scan, np.ndarray]:
    """The face rotated about its centroid (yaw about y, pitch about x, roll about z) and the 4x4 applied."""
    rot = Rotation.from_euler("yxz", [yaw, pitch, roll], degrees=True).as_matrix()
    center = scan.vertices.mean(0)
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = rot, center - rot @ center
    return Scan(apply(t, scan.vertices), scan.faces, scan.meta, uv=scan.uv, face_uv=scan.face_uv, texture=scan.texture,
                colors=scan.colors), t


@dataclass(frozen=True)
class RgbdJob:
    url: str
    plan_key: str
    seed: int
    config: RenderConfig
    source: Source


@functools.lru_cache(maxsize=2)
def _device(config: RenderConfig) -> StructuredLight:
    return StructuredLight(config.preset)


def render_sample(job: RgbdJob, index: int, sample_id: str) -> SampleOutcome:
    """The task: pose the source face, capture it, write the sample's chunks, then its status."""
    t0 = time.perf_counter()
    cfg, preset = job.config, job.config.preset
    position = index // cfg.views
    rng = sample_rng(job.seed, f"rgbd:{job.source.name}", sample_id)
    pose = np.array([rng.uniform(*cfg.yaw_deg), rng.uniform(*cfg.pitch_deg), rng.uniform(*cfg.roll_deg)])
    distance = preset.distance_mm + rng.uniform(-cfg.distance_jitter_mm, cfg.distance_jitter_mm)
    try:
        scan = load_source_mesh(job.source, position)
    except FacepipeError as exc:
        return _failed(job, index, sample_id, "read", str(exc))
    try:
        return _render(job, index, position, sample_id, scan, pose, distance, rng, t0)
    except Exception as exc:  # noqa: BLE001 - one odd mesh must not end the batch
        return _failed(job, index, sample_id, "internal", f"{sample_id}: {type(exc).__name__}: {exc}")


def _failed(job: RgbdJob, index: int, sample_id: str, stage: str, reason: str) -> SampleOutcome:
    SampleWriter(job.url, job.plan_key).write(index, {"failure_stage": stage, "failure_reason": reason}, FAILED)
    return SampleOutcome(index=index, path=sample_id, status="failed", stage=stage, reason=reason)


def _render(job: RgbdJob, index: int, position: int, sample_id: str, scan: Scan, pose: np.ndarray, distance: float,
            rng: np.random.Generator, t0: float) -> SampleOutcome:
    cfg = job.config
    face, pose_t = posed(scan, *pose)
    center = face.vertices.mean(0)
    device = _device(cfg)
    camera = device.camera(center + np.array([0.0, 0.0, distance]), center, np.array([0.0, 1.0, 0.0]))
    caster = Raycaster(face.vertices, face.faces)
    hits = caster.render(camera)
    t1 = time.perf_counter()
    shot = device.capture(caster, camera, rng, hits)
    t2 = time.perf_counter()
    rgb = rgb_image(face, hits, rng, cfg.sh_strength)
    k = intrinsics(camera)
    values = {"rgb": rgb, "ir": shot.ir, "depth": shot.depth, "depth_clean": shot.depth_clean,
              "xyz": depth_to_xyz(shot.depth, k).astype(np.float32), "mask": np.isfinite(shot.depth),
              "intrinsics": k, "extrinsics": world_to_camera(camera) @ pose_t, "pose_deg": pose.astype(np.float32),
              "source_index": job.source.indices[position], "source_sample": job.source.ids[position]}
    if job.source.kind == "store":  # the face is the ground truth in template topology
        values["vertices"] = apply(values["extrinsics"], scan.vertices).astype(np.float32)
        values["vertices_template"] = _synth_arrays(job.source.location)[0]["vertices"][job.source.indices[position]]
    t3 = time.perf_counter()
    SampleWriter(job.url, job.plan_key).write(index, values, OK)
    return SampleOutcome(index=index, path=sample_id, status="ok",
                         seconds={"read+render": t1 - t0, "depth": t2 - t1, "rgb": t3 - t2, "write": time.perf_counter() - t3})


def rgb_image(face: Scan, hits: Hits, rng: np.random.Generator, strength: float) -> np.ndarray:
    """(H, W, 3) uint8 from the same camera: the texture where the scan has one, else skin under SH light."""
    colors = surface_colors(face, hits)
    if colors is None:
        normals = np.where(((hits.normals * hits.rays[..., 3:]).sum(-1) > 0)[..., None], -hits.normals, hits.normals)
        albedo = np.array([0.78, 0.58, 0.47]) * rng.uniform(0.85, 1.1) + rng.normal(0.0, 0.03, 3)
        light = np.clip(sh_basis(normals) @ random_sh(rng, strength), 0.0, 1.6)
        colors = 255.0 * albedo * light
    background = rng.uniform(20, 70)
    img = np.where(hits.mask[..., None], colors, background)
    return np.clip(img + rng.normal(0.0, 1.5, img.shape), 0, 255).astype(np.uint8)  # sensor noise


def rgbd_columns(config: RenderConfig, n_vertices: int | None = None) -> list[Column]:
    """The arrays of `rgbd.zarr`; `n_vertices`: the template's, for frames of a synth store (ground truth)."""
    h, w = config.preset.height, config.preset.width
    image, cam = ("row", "col"), {"frame": "OpenCV camera: x right, y down, z forward, mm"}
    return [
        Column("rgb", (h, w, 3), "uint8", 0, (*image, "channel"), {}),
        Column("ir", (h, w), "uint8", 0, image, {"description": "the IR image the depth was matched from"}),
        Column("depth", (h, w), "float32", np.nan, image, {"description": "structured-light depth (mm), NaN = hole", **cam}),
        Column("depth_clean", (h, w), "float32", np.nan, image, {"description": "true depth (mm), NaN = no surface"}),
        Column("xyz", (h, w, 3), "float32", np.nan, (*image, "xyz"), {"description": "camera-space points of `depth`", **cam}),
        Column("mask", (h, w), "bool", False, image, {"description": "where `depth` is valid"}),
        Column("intrinsics", (3, 3), "float64", np.nan, ("row3", "col3"), {"description": "OpenCV K, pixel centres at integers"}),
        Column("extrinsics", (4, 4), "float64", np.nan, ("row4", "col4"), {"description": "source frame (mm) -> camera"}),
        Column("pose_deg", (3,), "float32", np.nan, ("angle",), {"names": ["yaw", "pitch", "roll"]}),
        Column("source_index", (), "int32", -1, (), {"description": "sample index in the source store"}),
        Column("source_sample", (), str, "", (), {"description": "the source sample id or file"}),
        *([Column("vertices", (n_vertices, 3), "float32", np.nan, ("vertex", "xyz"),
                  {"description": "ground truth in template topology, camera space (mm)", **cam}),
           Column("vertices_template", (n_vertices, 3), "float32", np.nan, ("vertex", "xyz"),
                  {"description": "ground truth in template topology, template frame"})] if n_vertices else []),
        *bookkeeping_columns(),
    ]


def run_render_rgbd(source: Source, out: str, config: RenderConfig, *, seed: int = 0, options: RunOptions = RunOptions(),
                    on_start: OnStart | None = None, on_sample: OnSample | None = None) -> RunReport:
    """Every source face, `config.views` poses each, into `rgbd.zarr`; a rerun resumes, like ingest."""
    if source.kind == "store" and source.store_kind != "synth":
        raise RenderError(f"{source.location}: a {source.store_kind} store holds points, not meshes; "
                          "render a synth store, a catalog dataset or scan files")
    if not source.ids:
        raise RenderError(f"{source.location or source.name}: no finished sample to render")
    ids = [f"{sid}#v{v:02d}" for sid in source.ids for v in range(config.views)]
    dataset = f"rgbd-{source.name}"
    plan = StorePlan(kind="rgbd", facepipe_version=facepipe_version(), dataset=dataset,
                     format={"store": "synth"}.get(source.kind, source.kind), seed=seed,
                     config=config, template_id=source.template_id, template_name="", landmark_names=FIVE,
                     n_samples=len(ids), samples_sha256=samples_digest(ids))
    n_vertices = open_group(source.location, "r")["vertices"].shape[1] if source.kind == "store" else None
    return run_store_job(render_sample, lambda key: RgbdJob(out, key, seed, config, source), plan, ids,
                         rgbd_columns(config, n_vertices), out, options, on_start=on_start, on_sample=on_sample)


def contact_sheet(url: str, count: int = 4) -> np.ndarray:
    """Rows of RGB | true depth | structured-light depth | their difference (0-5 mm) for the first samples."""
    group = open_group(url, "r")
    ok = np.flatnonzero(read_status(group) == OK)[:count]
    if not len(ok):
        raise RenderError(f"{url}: no finished sample to preview")
    rows = []
    for i in ok:
        clean, depth = group["depth_clean"][int(i)], group["depth"][int(i)]
        lo, hi = np.nanpercentile(clean, [1, 99]) if np.isfinite(clean).any() else (0.0, 1.0)
        diff = np.abs(depth - clean)
        rows.append(np.concatenate([group["rgb"][int(i)], colorize(clean, lo, hi), colorize(depth, lo, hi),
                                    colorize(np.where(np.isfinite(clean), diff, np.nan), 0.0, 5.0)], 1))
    return np.concatenate(rows, 0)
