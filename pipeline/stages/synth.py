"""`facepipe synth`: faces of a morphable model, with ground-truth correspondence, as network input.

Each sample is a model face (random identity, neutral or a random expression mix) aligned to the
template by its five landmarks exactly as a raw scan is, cropped to the template box, optionally
degraded like a scan (holes, a missing side, noise), and sampled to points with normals. The
ground truth is the same face in template topology (the model vertices the template was cut from),
in the same frame, so the store pairs "what a scanner would give" with "where every template vertex is".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.pipeline.faces.landmark_sets import FIVE
from facepipe.pipeline.faces.morphable import MorphableModel
from facepipe.pipeline.faces.template import Template, TemplateMap, template_from_model, template_record, template_selection
from facepipe.pipeline.geometry.align import apply, scale_of, umeyama
from facepipe.pipeline.geometry.crop import crop_mesh, region_mask
from facepipe.pipeline.geometry.render import facing_direction, frontal_camera, render, shade
from facepipe.pipeline.geometry.resample import sample_points, subdivide_to
from facepipe.pipeline.geometry.scan import compact, triangle_normals
from facepipe.pipeline.io.face_models import load_model
from facepipe.pipeline.runtime.jobs import OnSample, OnStart, run_store_job
from facepipe.pipeline.runtime.seeding import sample_rng
from facepipe.pipeline.runtime.store import (
    OK, Column, SampleWriter, facepipe_version, open_group, read_status, samples_digest, scan_columns,
)
from facepipe.schemas.store import RunOptions, RunReport, SampleOutcome, StorePlan
from facepipe.schemas.synth import SynthConfig


def sample_ids(identities: int, expressions: int) -> list[str]:
    """`id00007_e00` is identity 7's neutral face, `_e01`.. its expressions."""
    return [f"id{i:05d}_e{k:02d}" for i in range(identities) for k in range(expressions + 1)]


def draw_weights(model: MorphableModel, config: SynthConfig, seed: int, dataset: str, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Identity weights from the identity's own generator (shared by its expressions), expression
    weights from the sample's (a few blendshapes in [0, max], or every PCA mode ~ N(0, sigma)); `_e00` is neutral."""
    identity, expr = sample_id.split("_")
    n_id = len(model.identity)
    k = min(config.identity_components or n_id, n_id)
    id_w = np.zeros(n_id)
    id_w[:k] = sample_rng(seed, dataset, identity).normal(0.0, config.identity_sigma, k)
    ex_w = np.zeros(len(model.expression))
    if expr != "e00" and len(ex_w) and model.expression_kind == "pca":
        ex_w = sample_rng(seed, dataset, sample_id).normal(0.0, config.expression_sigma, len(ex_w))
    elif expr != "e00" and len(ex_w):
        rng = sample_rng(seed, dataset, sample_id)
        lo, hi = config.expression_active
        n = int(min(rng.integers(lo, max(hi, lo) + 1), len(ex_w)))
        which = rng.choice(len(ex_w), n, replace=False)
        ex_w[which] = rng.uniform(0.0, config.expression_max, n)
    return id_w, ex_w


def degrade(vertices: np.ndarray, faces: np.ndarray, config: SynthConfig, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Triangles left after cutting holes around random surface points and, sometimes, one side of the face."""
    keep = np.ones(len(faces), bool)
    centroids = vertices[faces].mean(1)
    if config.holes:
        area = np.linalg.norm(triangle_normals(vertices, faces), axis=1)
        centres = centroids[rng.choice(len(faces), config.holes, p=area / area.sum())]
        r = config.hole_radius_mm * scale  # template units per mm
        for c in centres:
            keep &= ((centroids - c) ** 2).sum(1) > r**2
    if config.missing_side and rng.random() < config.missing_side:
        side = rng.choice([-1.0, 1.0])
        keep &= side * centroids[:, 0] < rng.uniform(0.25, 0.6)
    return faces[keep]


@dataclass(frozen=True, eq=False)
class SynthFace:
    points: np.ndarray  # (P, 3) float32, template frame
    normals: np.ndarray  # (P, 3) float32
    landmarks: np.ndarray  # (5, 3) float32
    to_template: np.ndarray  # (4, 4) model frame (mm) -> template frame
    vertices: np.ndarray  # (V, 3) float32, the ground truth in template topology


def synth_face(model: MorphableModel, template: Template, selection: TemplateMap, identity: np.ndarray, expression: np.ndarray,
               config: SynthConfig, rng: np.random.Generator) -> SynthFace:
    v_mm = model.shape(identity, expression)
    five = model.landmark_points(v_mm, FIVE)
    t = umeyama(five, template.landmarks)
    v = apply(t, v_mm)
    vc, fc, _ = crop_mesh(v, model.triangles, region_mask(v, config.crop_box))
    vc, fc, _ = compact(vc, degrade(vc, fc, config, rng, scale_of(t)))
    if facing_direction(vc, fc)[2] < 0:
        fc = fc[:, ::-1]
    if config.sampling == "vertices":
        vc, fc, _ = subdivide_to(vc, fc, config.n_points, 4)
    pts, nrm = sample_points(vc, fc, config.n_points, rng, config.sampling)
    if config.noise_mm:
        pts = pts + nrm * rng.normal(0.0, config.noise_mm * scale_of(t), (len(pts), 1))
    return SynthFace(pts.astype(np.float32), nrm.astype(np.float32), apply(t, five).astype(np.float32), t,
                     apply(t, selection(v_mm)).astype(np.float32))


@dataclass(frozen=True)
class SynthJob:
    url: str
    plan_key: str
    dataset: str
    seed: int
    config: SynthConfig
    model: MorphableModel
    template: Template
    selection: TemplateMap


def synth_sample(job: SynthJob, index: int, sample_id: str) -> SampleOutcome:
    """The task: draw the weights, make the face, write its chunks, then its status."""
    t0 = time.perf_counter()
    id_w, ex_w = draw_weights(job.model, job.config, job.seed, job.dataset, sample_id)
    face = synth_face(job.model, job.template, job.selection, id_w, ex_w, job.config,
                      sample_rng(job.seed, job.dataset, sample_id + "/sampling"))
    t1 = time.perf_counter()
    names = job.model.expression_names or tuple(f"expression{k}" for k in range(len(ex_w)))
    active = [names[k] for k in np.flatnonzero(ex_w)]
    SampleWriter(job.url, job.plan_key).write(index, {
        "points": face.points, "normals": face.normals, "landmarks": face.landmarks, "to_template": face.to_template,
        "vertices": face.vertices, "identity_weights": id_w.astype(np.float32), "expression_weights": ex_w.astype(np.float32),
        "subject": sample_id.split("_")[0], "expression": "+".join(active) if active else "neutral"}, OK)
    return SampleOutcome(index=index, path=sample_id, status="ok",
                         seconds={"synth": t1 - t0, "write": time.perf_counter() - t1})


def synth_columns(model: MorphableModel, n_template_vertices: int) -> list[Column]:
    names = list(model.expression_names) or [f"expression{k}" for k in range(len(model.expression))]
    return [
        Column("vertices", (n_template_vertices, 3), "float32", np.nan, ("vertex", "xyz"),
               {"frame": "template", "description": "ground truth: the face in template topology (template_triangles)"}),
        Column("identity_weights", (len(model.identity),), "float32", np.nan, ("identity_mode",),
               {"description": "weights of the model's identity modes (unit variance)"}),
        Column("expression_weights", (len(model.expression),), "float32", np.nan, ("expression_mode",), {"names": names}),
    ]


def run_synth(model: MorphableModel, template: Template, selection: TemplateMap, out: str, config: SynthConfig, *,
              seed: int = 0, options: RunOptions = RunOptions(), on_start: OnStart | None = None,
              on_sample: OnSample | None = None) -> RunReport:
    """N identities x (neutral + K expressions) into `synth.zarr`; a rerun resumes, like ingest."""
    dataset = f"synth-{config.model}"
    ids = sample_ids(config.identities, config.expressions)
    plan = StorePlan(kind="synth", facepipe_version=facepipe_version(), dataset=dataset, format=config.model, seed=seed,
                     config=config, template_id=template.id, template_name=template.name, landmark_names=FIVE,
                     n_samples=len(ids), samples_sha256=samples_digest(ids))
    columns = scan_columns(config.n_points, FIVE, synth_columns(model, selection.size))
    constants = {"template_triangles": (template.triangles.astype(np.int32), ("triangle", "corner")),
                 "template_vertices": (template.vertices.astype(np.float32), ("vertex", "xyz"))}
    return run_store_job(synth_sample, lambda key: SynthJob(out, key, dataset, seed, config, model, template, selection), plan,
                         ids, columns, out, options, on_start=on_start, on_sample=on_sample, constants=constants,
                         extra_attrs={"template": template_record(template)})


def synth_from_model(kind: str, path: str | Path | None, out: str, settings: dict[str, object], *, seed: int = 0,
                     options: RunOptions = RunOptions(), on_start: OnStart | None = None,
                     on_sample: OnSample | None = None) -> RunReport:
    """`facepipe synth` as one call: load the model, derive its template (Loop-refined if the settings
    ask), draw and store the faces. `settings` are `SynthConfig` fields; bad ones raise ValueError."""
    model = load_model(kind, path)
    config = SynthConfig.model_validate({"model": kind, "model_id": model.id} | settings)
    selection, _ = template_selection(model, target_vertices=config.template_vertices)
    template = template_from_model(model, target_vertices=config.template_vertices)
    return run_synth(model, template, selection, out, config, seed=seed, options=options, on_start=on_start,
                     on_sample=on_sample)


def preview_grid(url: str, count: int = 16, columns: int = 4, size: int = 192) -> np.ndarray:
    """(H, W, 3) uint8: the ground-truth faces of the first `count` ok samples, shaded from the front."""
    group = open_group(url, "r")
    ok = np.flatnonzero(read_status(group) == OK)[:count]
    tri = group["template_triangles"][:].astype(np.int64)
    tiles = []
    for i in ok:
        v = group["vertices"][int(i)].astype(np.float64)
        tiles.append(shade(render(v, tri, frontal_camera(v, size, size))))
    if not tiles:
        raise ValueError(f"{url}: no finished sample to preview")
    rows = -(-len(tiles) // columns)
    grid = np.full((rows * size, columns * size, 3), 40, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        grid[r * size:(r + 1) * size, c * size:(c + 1) * size] = tile
    return grid


def write_preview(url: str, path: str | Path, count: int = 16) -> Path:
    from facepipe.pipeline.io.image import write_image

    write_image(Path(path), preview_grid(url, count))
    return Path(path)
