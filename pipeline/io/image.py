"""Texture and photo images (BMP, PNG, PPM, JPEG) through Pillow, with errors that name the file."""

from __future__ import annotations

import io
from os import PathLike

import numpy as np
from PIL import Image, UnidentifiedImageError

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.io.text import read_bytes

# Real textures are at most a few megapixels; a forged header must not make Pillow allocate gigabytes.
Image.MAX_IMAGE_PIXELS = 64_000_000


def read_image(path: str | PathLike[str], mode: str = "RGB") -> np.ndarray:
    """(H, W, 3) uint8 for mode 'RGB'; (H, W) of the file's own bit depth for mode 'I' (range images)."""
    try:
        with Image.open(io.BytesIO(read_bytes(path))) as img:
            img.load()
            if mode == "I":
                arr = np.asarray(img)
                if arr.ndim != 2:
                    raise ScanFormatError(path, f"expected a single-channel image, got mode {img.mode}")
                return arr
            return np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise ScanFormatError(path, f"unreadable image: {exc}") from None


def write_image(path: str | PathLike[str], pixels: np.ndarray) -> None:
    """Write an image whose format follows the extension (.bmp, .png, .ppm, .jpg)."""
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
