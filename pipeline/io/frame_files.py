"""Depth, RGB and intrinsics files of a capture, as `facepipe reconstruct` takes them.

A depth frame is a 16-bit PNG in millimetres or a float32 `.npy` in metres (0, NaN and inf are
holes), with an intrinsics JSON (`fx fy cx cy width height`, OpenCV convention: pixel centres at
integers): given once for all frames, or as `<stem>.json` beside each. An RGB image of the same
size may sit beside it as `<stem>.rgb.png` (or `.jpg`). For the RGB branch the files are images,
their intrinsics found the same way but optional (the fit to the image then assumes a phone's view).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.io.image import read_image
from facepipe.pipeline.io.text import read_bytes
from facepipe.schemas.rgbd import Intrinsics

RGB_SUFFIXES = (".rgb.png", ".rgb.jpg", ".rgb.jpeg")


@dataclass(frozen=True)
class FrameFiles:
    """One capture's files: the depth (None for an RGB image alone), its intrinsics, its RGB image."""

    source: Path
    depth: Path | None
    intrinsics: Path | None
    rgb: Path | None


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray | None  # (H, W, 3) uint8
    depth: np.ndarray | None  # (H, W) float32 mm, NaN = hole
    k: np.ndarray | None  # (3, 3)


def read_intrinsics(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """(3, 3) K and (H, W) from an intrinsics JSON."""
    try:
        values = json.loads(read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScanFormatError(path, f"not a JSON file of intrinsics ({exc})") from None
    try:
        k = Intrinsics.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ScanFormatError(path, f"bad intrinsics ({problems}); expected fx, fy, cx, cy, width, height") from None
    return np.array(k.matrix()), (k.height, k.width)


def read_depth(path: Path) -> np.ndarray:
    """(H, W) float32 depth in mm, NaN in holes."""
    name = path.name.lower()
    if name.endswith(".png"):
        raw = read_image(path, "I")
        if raw.dtype not in (np.uint16, np.int32, np.uint8) or raw.ndim != 2:
            raise ScanFormatError(path, f"expected a 16-bit single-channel depth PNG in mm, got {raw.dtype} {raw.shape}")
        depth = raw.astype(np.float32)
    elif name.endswith(".npy"):
        try:
            raw = np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ScanFormatError(path, f"not a NumPy array file ({exc})") from None
        if raw.ndim != 2 or raw.dtype.kind != "f":
            raise ScanFormatError(path, f"expected a 2-D float array of depth in metres, got {raw.dtype} {raw.shape}")
        depth = raw.astype(np.float32) * 1000.0
    else:
        raise ScanFormatError(path, "unknown depth format (a 16-bit .png in mm or a float32 .npy in metres)")
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    if not np.isfinite(depth).any():
        raise ScanFormatError(path, "the depth image has no valid pixel")
    return depth


def frame_files(paths: list[Path], rgb_only: bool, intrinsics: Path | None = None) -> list[FrameFiles]:
    """Each given file as a capture, its intrinsics and RGB image found beside it (missing ones are
    left None here and reported when the frame is read, so one bad frame costs only itself)."""
    out = []
    for p in paths:
        stem = p.name[: -len(p.suffix)] if p.suffix else p.name
        own = p.with_name(stem + ".json")
        if rgb_only:
            out.append(FrameFiles(p, None, intrinsics or (own if own.exists() else None), p))
            continue
        rgb = next((p.with_name(stem + s) for s in RGB_SUFFIXES if p.with_name(stem + s).exists()), None)
        out.append(FrameFiles(p, p, intrinsics or (own if own.exists() else None), rgb))
    return out


def read_frame(files: FrameFiles, need_rgb: bool) -> Frame:
    """The capture's arrays, checked against each other; errors name the file."""
    depth = read_depth(files.depth) if files.depth is not None else None
    k = shape = None
    if files.intrinsics is not None:
        k, shape = read_intrinsics(files.intrinsics)
    elif depth is not None:
        raise ScanFormatError(files.source, f"no intrinsics: give --intrinsics, or put {files.source.stem}.json beside it")
    if depth is not None and depth.shape != shape:
        raise ScanFormatError(files.source, f"the depth is {depth.shape[1]}x{depth.shape[0]}, its intrinsics say "
                              f"{shape[1]}x{shape[0]}")  # type: ignore[index]
    rgb = read_image(files.rgb) if files.rgb is not None else None
    if rgb is not None and depth is None and shape is not None and rgb.shape[:2] != shape:
        raise ScanFormatError(files.rgb, f"the image is {rgb.shape[1]}x{rgb.shape[0]}, its intrinsics say "  # type: ignore[arg-type]
                              f"{shape[1]}x{shape[0]}")
    if need_rgb and rgb is None:
        raise ScanFormatError(files.source, f"the rgbd branch needs an RGB image beside it ({files.source.stem}.rgb.png)")
    if rgb is not None and depth is not None and rgb.shape[:2] != depth.shape:
        raise ScanFormatError(files.rgb, f"the RGB image is {rgb.shape[1]}x{rgb.shape[0]}, the depth "  # type: ignore[arg-type]
                              f"{depth.shape[1]}x{depth.shape[0]}")
    return Frame(rgb, depth, k)
