"""Texture and photo images (BMP, PNG, PPM, JPEG) through Pillow, with errors that name the file."""

from __future__ import annotations

import io
from os import PathLike

import numpy as np
from PIL import Image

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.io.limits import read_limits
from facepipe.pipeline.io.text import read_bytes

# Pillow's own guard, for images opened elsewhere; ours below is checked against the header first.
Image.MAX_IMAGE_PIXELS = 64_000_000


def read_image(path: str | PathLike[str], mode: str = "RGB") -> np.ndarray:
    """(H, W, 3) uint8 for mode 'RGB'; (H, W) of the file's own bit depth for mode 'I' (range images)."""
    limits = read_limits()
    cap, what = (limits.max_grid_pixels, "range-image") if mode == "I" else (limits.max_image_pixels, "image")
    try:
        with Image.open(io.BytesIO(read_bytes(path))) as img:
            width, height = img.size
            if width * height > cap:  # decided from the header alone, before a single pixel is decoded
                env = "FACEPIPE_MAX_GRID_PIXELS" if mode == "I" else "FACEPIPE_MAX_IMAGE_PIXELS"
                raise ScanFormatError(path, f"the header declares {width} x {height} pixels, more than the {what} limit of "
                                      f"{cap:,} ({env} raises it)")
            img.load()
            if mode == "I":
                arr = np.asarray(img)
                if arr.ndim != 2:
                    raise ScanFormatError(path, f"expected a single-channel image, got mode {img.mode}")
                return arr
            return np.asarray(img.convert(mode))
    except ScanFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise OSError, struct, index and type errors on broken files
        raise ScanFormatError(path, f"unreadable image: {exc}") from None


def write_image(path: str | PathLike[str], pixels: np.ndarray) -> None:
    """Write an image whose format follows the extension (.bmp, .png, .ppm, .jpg)."""
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
