"""Readers and writers of every scan format (`registry` picks the right one for a path), the
face-model loaders, the data catalog, settings files and the example data."""

from facepipe.pipeline.lazy import lazy_exports

_EXPORTS = {
    "read_scan": ".registry",
    "detect_format": ".registry",
    "FORMATS": ".registry",
    "load_model": ".face_models",
    "load_ict_npz": ".ict",
    "load_catalog": ".catalog",
    "list_samples": ".catalog",
    "write_example_dataset": ".sample_data",
    "write_point_cloud": ".generic",
    "read_settings": ".settings",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
