"""One raw scan to the network's input: landmarks, similarity onto the template, ICP, crop, resample.

`preprocess` never raises for a bad scan: it returns a `PreprocessFailure` naming the stage and
the reason, so that one scan without a face costs a batch nothing but its own record.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike

import numpy as np

from facepipe.pipeline.errors import FacepipeError
from facepipe.pipeline.faces.template import Template
from facepipe.pipeline.geometry.align import apply, icp, scale_of, umeyama
from facepipe.pipeline.geometry.crop import crop_mesh, region_mask
from facepipe.pipeline.geometry.landmarks import FiveLandmarks, MediaPipe, detect_five, five_from_annotations, layout_error
from facepipe.pipeline.geometry.render import facing_direction
from facepipe.pipeline.geometry.resample import sample_points, subdivide_to
from facepipe.pipeline.geometry.scan import Scan
from facepipe.pipeline.io.registry import read_scan
from facepipe.schemas.preprocess import PreprocessConfig, PreprocessFailure, QualityRecord
from facepipe.schemas.scan import ScanMeta


class StageError(FacepipeError):
    """An expected, per-scan failure of one stage (no face, nothing left after the crop, ...)."""

    def __init__(self, stage: str, reason: str) -> None:
        self.stage, self.reason = stage, reason
        super().__init__(f"{stage}: {reason}")


@dataclass(frozen=True, eq=False)
class Preprocessed:
    points: np.ndarray  # (P, 3) float32, template frame
    normals: np.ndarray  # (P, 3) float32, unit
    landmarks: np.ndarray  # (5, 3) float32, the scan's five in the template frame
    to_template: np.ndarray  # (4, 4) float64: raw scan frame -> template frame
    quality: QualityRecord
    meta: ScanMeta | None = None  # what the reader parsed from the file name (subject, expression, ...)


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def find_five(scan: Scan, template: Template, config: PreprocessConfig, mediapipe: MediaPipe | None) -> FiveLandmarks:
    if config.landmarks != "mediapipe" and scan.landmarks is not None:
        five = five_from_annotations(scan.landmarks, scan.vertices)
        if five is not None:
            return five
    if config.landmarks == "annotations":
        raise StageError("landmarks", "the scan has no landmark file with the five alignment landmarks")
    found = detect_five(scan, mediapipe or MediaPipe.shared(), template.landmarks, config.max_landmark_residual,
                        config.render_size, config.accept_confidence, use_texture=config.use_texture, surface=template.vertices)
    if found is None:
        raise StageError("landmarks", "MediaPipe found no face in any view of the scan")
    if found.confidence < config.min_confidence:
        raise StageError("landmarks", f"face detection confidence {found.confidence:.2f} is below {config.min_confidence}")
    return found


def align(scan: Scan, five: np.ndarray, template: Template, config: PreprocessConfig) -> tuple[np.ndarray, dict[str, float | None]]:
    """Raw -> template similarity from the five landmarks, refined by rigid ICP when it pairs enough."""
    try:
        t = umeyama(five, template.landmarks)
    except ValueError as exc:
        raise StageError("align", f"the five landmarks do not determine a similarity: {exc}") from None
    s = scale_of(t)
    residual = float(np.linalg.norm(apply(t, five) - template.landmarks, axis=1).mean())
    if (layout := layout_error(five, template.landmarks, t)) > config.max_landmark_residual:
        raise StageError("landmarks", f"the five landmarks are not laid out like a face: after the best similarity they lie "
                         f"{layout:.2f} eye distances from the template's (limit {config.max_landmark_residual})")
    info: dict[str, float | None] = {"residual": residual / s, "residual_icp": None, "fitness": None, "rmse": None}
    if config.icp:
        moved = apply(t, scan.vertices)
        near = region_mask(moved, config.crop_box * 1.1)
        if near.sum() >= 3:
            rigid, fitness, rmse = icp(moved[near], template.vertices, template.normals, config.icp_max_distance_mm * s,
                                       config.icp_iterations)
            info |= {"fitness": fitness, "rmse": rmse / s}
            if fitness >= config.icp_min_fitness:
                t = rigid @ t
                info["residual_icp"] = float(np.linalg.norm(apply(t, five) - template.landmarks, axis=1).mean() / s)
    return t, info


def sample_problem(points: np.ndarray, normals: np.ndarray, box: float, min_spread: float = 0.05) -> str | None:
    """Why a sampled scan is not fit to store (None when it is): the last check before status ok.

    A degenerate mesh that slipped past the reader (all vertices on one point, every triangle
    flat) samples into identical points with zero normals; that must never be stored as good.
    """
    if not (np.isfinite(points).all() and np.isfinite(normals).all()):
        return "NaN/inf among the sampled points or normals"
    length = np.linalg.norm(normals, axis=1)
    if (bad := np.abs(length - 1) > 1e-3).any():
        return f"{int(bad.sum())} of {len(normals)} sampled normals are not unit vectors (degenerate triangles)"
    if np.abs(points).max() > box * (1 + 1e-5):
        return f"sampled points lie outside the [-{box:g}, {box:g}] box"
    spread = float((points.max(axis=0) - points.min(axis=0)).max())
    if spread < min_spread * 2 * box:
        return f"the sampled points span only {spread:.3g} template units: a degenerate surface"
    return None


def preprocess(scan: Scan, template: Template, config: PreprocessConfig, rng: np.random.Generator,
               mediapipe: MediaPipe | None = None) -> Preprocessed | PreprocessFailure:
    clock = _Clock()
    try:
        with clock.stage("landmarks"):
            five = find_five(scan, template, config, mediapipe)
        with clock.stage("align"):
            t, info = align(scan, five.points, template, config)
        with clock.stage("crop"):
            moved = apply(t, scan.vertices)
            nose = apply(t, five.points[2:3])[0]
            keep = region_mask(moved, config.crop_box, nose, config.crop_radius)
            v, f, _ = crop_mesh(moved, scan.faces, keep)
            if len(v) < config.min_points_after_crop:
                raise StageError("crop", f"only {len(v)} vertices lie inside the template region "
                                 f"(need {config.min_points_after_crop}): wrong landmarks or not a face")
            if facing_direction(v, f)[2] < 0:  # wound inward: make normals face the viewer (+z)
                f = f[:, ::-1]
        with clock.stage("resample"):
            wanted = config.subdivide == "always" or (config.subdivide == "auto" and config.sampling == "vertices")
            sv, sf, levels = subdivide_to(v, f, config.n_points, config.max_subdivisions) if wanted else (v, f, 0)
            if config.sampling == "vertices" and len(sv) < config.n_points:
                raise StageError("resample", f"{len(sv)} vertices after {levels} subdivisions, fewer than {config.n_points}")
            pts, nrm = sample_points(sv, sf, config.n_points, rng, config.sampling)
        if problem := sample_problem(pts, nrm, config.crop_box):
            raise StageError("check", problem)
    except StageError as exc:
        return PreprocessFailure(path=scan.meta.path, stage=exc.stage, reason=exc.reason)  # type: ignore[arg-type]
    quality = QualityRecord(
        landmark_source=five.source, landmark_confidence=five.confidence, landmark_view=five.view,
        landmark_residual_mm=info["residual"], landmark_residual_icp_mm=info["residual_icp"],
        icp_fitness=info["fitness"], icp_rmse_mm=info["rmse"], scale=scale_of(t),
        vertices_before_crop=len(scan.vertices), vertices_after_crop=len(v), triangles_after_crop=len(f),
        subdivision_levels=levels, seconds=clock.seconds, warnings=list(scan.warnings))
    return Preprocessed(pts.astype(np.float32), nrm.astype(np.float32), apply(t, five.points).astype(np.float32), t, quality,
                        scan.meta)


def preprocess_file(path: str | PathLike[str], template: Template, config: PreprocessConfig, rng: np.random.Generator,
                    fmt: str | None = None, mediapipe: MediaPipe | None = None) -> Preprocessed | PreprocessFailure:
    """Read and preprocess; a file that cannot be read is a failure record naming the file and problem."""
    t0 = time.perf_counter()
    try:
        scan = read_scan(path, fmt, texture=config.use_texture and config.landmarks != "annotations")
    except FacepipeError as exc:
        return PreprocessFailure(path=str(path), stage="read", reason=str(exc))
    read_s = time.perf_counter() - t0
    result = preprocess(scan, template, config, rng, mediapipe)
    if isinstance(result, Preprocessed):
        result.quality.seconds = {"read": read_s} | result.quality.seconds
    return result

