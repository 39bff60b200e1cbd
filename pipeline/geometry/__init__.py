"""The pure array cores: the `Scan` mesh type, alignment, crop, resampling, rendering, landmarks,
the depth camera, NICP and the error metrics."""

from facepipe.pipeline.lazy import lazy_exports

_EXPORTS = {
    "Scan": ".scan",
    "Landmarks": ".scan",
    "umeyama": ".align",
    "apply": ".align",
    "crop_mesh": ".crop",
    "sample_points": ".resample",
    "Raycaster": ".render",
    "StructuredLight": ".depth_sensor",
    "mm_errors": ".metrics",
    "nme": ".metrics",
    "roughness": ".metrics",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
