"""RGB-D frames as the encoders read them: resized images, camera XYZ, intrinsics, and what supervises them.

Every frame, from a store or from files, goes through `prepare`: RGB resized by area, XYZ from the
depth at full resolution then resized by nearest pixel (a point stays a point on the surface), the
intrinsics scaled to match. The network inputs are RGB standardised and XYZ relative to its centroid
(the anchor a prediction is placed at), in decimetres, 0 in holes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from facepipe.models.depth_denoiser import crop_box
from facepipe.models.image_landmarks import detect
from facepipe.pipeline.errors import FacepipeError
from facepipe.pipeline.geometry.depth_sensor import depth_to_xyz
from facepipe.pipeline.runtime.store import OK, open_group, read_plan, read_status

CHUNK = 32  # frames read from a store at a time (full-size images are large)


class FramesError(FacepipeError):
    """An RGB-D input that cannot be used: no valid depth, a store that is not rgbd, mismatched sizes."""


@dataclass
class Frames:
    """N frames at the encoder's input size; supervision arrays are None where the source lacks them."""

    ids: list[str]
    rgb: np.ndarray  # (N, H, W, 3) uint8
    xyz: np.ndarray  # (N, H, W, 3) float32 camera mm, NaN in holes
    k: np.ndarray  # (N, 3, 3) intrinsics at the input size
    shape: tuple[int, int]  # (H, W) of the original images
    truth: np.ndarray | None = None  # (N, V, 3) ground truth, camera mm
    truth_template: np.ndarray | None = None  # (N, V, 3) the same in the template frame
    clean: np.ndarray | None = None  # (N, P, 3) points of the true depth, camera mm
    points: np.ndarray | None = None  # (N, P, 3) points of the input depth at its own size (the fit's), camera mm
    landmarks: np.ndarray | None = None  # (N, 468, 2) MediaPipe's landmarks in input-size pixels, NaN where none found

    def __len__(self) -> int:
        return len(self.ids)


def prepare(rgb: np.ndarray | None, depth: np.ndarray | None, k: np.ndarray, width: int, height: int,
            where: str = "frame") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame at the input size: (H, W, 3) uint8 RGB (grey if none), (H, W, 3) XYZ (NaN if no depth), K."""
    if depth is not None:
        shape = depth.shape
    elif rgb is not None:
        shape = rgb.shape[:2]
    else:
        raise FramesError(f"{where}: neither an image nor a depth")
    if rgb is not None and rgb.shape[:2] != shape:
        raise FramesError(f"{where}: the RGB image is {rgb.shape[1]}x{rgb.shape[0]}, the depth {shape[1]}x{shape[0]}")
    sx, sy = width / shape[1], height / shape[0]
    small_k = np.array([[k[0, 0] * sx, 0.0, (k[0, 2] + 0.5) * sx - 0.5], [0.0, k[1, 1] * sy, (k[1, 2] + 0.5) * sy - 0.5],
                        [0.0, 0.0, 1.0]])
    small_rgb = (cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA) if rgb is not None
                 else np.full((height, width, 3), 128, np.uint8))
    if depth is None:
        return small_rgb, np.full((height, width, 3), np.nan, np.float32), small_k
    xyz = depth_to_xyz(depth, k).astype(np.float32)
    rows = np.minimum(((np.arange(height) + 0.5) / sy).astype(np.int64), shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) / sx).astype(np.int64), shape[1] - 1)
    return small_rgb, xyz[rows][:, cols], small_k


def image_points(depth: np.ndarray, k: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 3) camera points of a depth image (drawn with replacement when fewer are valid); NaN if none."""
    xyz = depth_to_xyz(depth, k).reshape(-1, 3)
    valid = xyz[np.isfinite(xyz).all(1)]
    if not len(valid):
        return np.full((count, 3), np.nan, np.float32)
    return valid[rng.choice(len(valid), count, replace=len(valid) < count)].astype(np.float32)


def read_frames(url: str, width: int, height: int, clean_input: bool = False, clean_count: int = 0, seed: int = 0,
                limit: int | None = None, fit_count: int = 0, landmarks: bool = False,
                correct: Callable[[np.ndarray], np.ndarray] | None = None) -> Frames:
    """The ok frames of an rgbd store; `clean_input`: XYZ from the true depth instead of the sensor's;
    `clean_count` > 0: also that many true-depth points per frame (the cross-domain term's target);
    `fit_count` > 0: that many points of the input depth at its own size (the fit to the depth's);
    `landmarks`: MediaPipe's landmarks, found on the RGB at its own size (the fit to the image's);
    `correct`: what the fit's points are read from, a function of the full-size depth (the sensor's
    learnt correction, `depth_denoiser.denoise`)."""
    group = open_group(url, "r")
    plan = read_plan(group, url)
    if plan.kind != "rgbd":
        raise FramesError(f"{url} is a {plan.kind} store; the encoders read rgbd stores (facepipe render-rgbd)")
    ok = np.flatnonzero(read_status(group) == OK)[:limit]
    if not len(ok):
        raise FramesError(f"{url}: no finished frame")
    ids = [str(s) for s in group["source_path"][:]]
    has_truth = "vertices" in group
    rgbs, xyzs, ks, clean, points, marks, truth, truth_template = [], [], [], [], [], [], [], []
    for start in range(0, len(ok), CHUNK):
        rows = ok[start:start + CHUNK]
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        rgb, k = group["rgb"][lo:hi], group["intrinsics"][lo:hi]
        depth = group["depth_clean" if clean_input else "depth"][lo:hi]
        true = group["depth_clean"][lo:hi] if clean_count else None
        for r in rows - lo:
            a, b, c = prepare(rgb[r], depth[r], k[r], width, height, f"{url}#{ids[lo + r]}")
            rgbs.append(a)
            xyzs.append(b)
            ks.append(c)
            if true is not None:
                clean.append(image_points(true[r], k[r], clean_count, np.random.default_rng([seed, lo + int(r)])))
            if fit_count:
                points.append(fit_points(depth[r] if correct is None else correct(depth[r]), k[r], fit_count))
            if landmarks:
                marks.append(detect(rgb[r], width, height))
        if has_truth:
            truth.append(group["vertices"][lo:hi][rows - lo])
            truth_template.append(group["vertices_template"][lo:hi][rows - lo])
    return Frames([ids[i] for i in ok], np.stack(rgbs), np.stack(xyzs), np.stack(ks), tuple(group["depth"].shape[1:3]),
                  np.concatenate(truth) if has_truth else None, np.concatenate(truth_template) if has_truth else None,
                  np.stack(clean) if clean_count else None, np.stack(points) if fit_count else None,
                  np.stack(marks) if landmarks else None)


def fit_points(depth: np.ndarray, k: np.ndarray, count: int) -> np.ndarray:
    """A frame's points for the fit to its depth: the same subset whichever batch or run reads it."""
    return image_points(depth, k, count, np.random.default_rng(0))


def depth_pairs(urls: Sequence[str], count: int, margin: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Up to `count` ok frames of the stores (evenly spread over all of them) as (sensor, true) depth
    images (mm, NaN holes), each cropped to its pixels with either depth and `margin` more: what the
    sensor's correction learns from, without holding whole images."""
    rows = []
    for url in urls:
        group = open_group(url, "r")
        if "depth_clean" in group:
            rows += [(url, int(i)) for i in np.flatnonzero(read_status(group) == OK)]
    pick = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).round().astype(int))] if rows else []
    sensor, clean = [], []
    for url, i in pick:
        group = open_group(url, "r")
        d, c = group["depth"][i], group["depth_clean"][i]
        seen = np.isfinite(d) | np.isfinite(c)
        if not seen.any():
            continue
        box = crop_box(seen, margin)
        sensor.append(d[box])
        clean.append(c[box])
    return sensor, clean


def concat(frames: Sequence[Frames]) -> Frames:
    """Frames of several stores as one set; supervision kept only where every store has it."""
    def both(name: str) -> np.ndarray | None:
        arrays = [getattr(f, name) for f in frames]
        return np.concatenate(arrays) if all(a is not None for a in arrays) else None

    return Frames([i for f in frames for i in f.ids], np.concatenate([f.rgb for f in frames]),
                  np.concatenate([f.xyz for f in frames]), np.concatenate([f.k for f in frames]), frames[0].shape,
                  both("truth"), both("truth_template"), both("clean"), landmarks=both("landmarks"))


def anchors(xyz: np.ndarray, modality: str, distance_mm: float) -> np.ndarray:
    """(N, 3) where each prediction is placed before its offset: the XYZ centroid, or for RGB (no depth)
    the optical axis at the training faces' mean distance."""
    if modality == "rgb":
        return np.tile(np.array([0.0, 0.0, distance_mm], np.float32), (len(xyz), 1))
    valid = np.isfinite(xyz).all(-1)
    count = valid.sum((1, 2))
    if (count == 0).any():
        raise FramesError(f"{int((count == 0).sum())} frame(s) without a valid depth pixel")
    return (np.where(valid[..., None], xyz, 0.0).sum((1, 2)) / count[:, None]).astype(np.float32)


def network_input(rgb: np.ndarray, xyz: np.ndarray, anchor: np.ndarray, modality: str, device: torch.device) -> torch.Tensor:
    """(N, C, H, W) float32: RGB standardised, XYZ about the anchor in decimetres (0 in holes)."""
    parts = []
    if modality in ("rgb", "rgbd"):
        parts.append((rgb.astype(np.float32) / 255.0 - 0.45) / 0.25)
    if modality in ("rgbd", "depth"):
        parts.append(np.nan_to_num((xyz - anchor[:, None, None]) / 100.0, nan=0.0))
    return torch.as_tensor(np.concatenate(parts, -1).transpose(0, 3, 1, 2).copy(), device=device)
