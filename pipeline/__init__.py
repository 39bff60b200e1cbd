"""The data plane: readers, preprocessing, stores and jobs (numpy, open3d, dask, zarr).

What a Python user calls, importable from here (each module is loaded on first use):
`read_scan`, `preprocess_file`, `default_template`, `run_ingest`, ... (see `__all__`)."""

from facepipe.pipeline.lazy import lazy_exports

_EXPORTS = {
    "FacepipeError": ".errors",
    "ScanFormatError": ".errors",
    "CatalogError": ".errors",
    "Scan": ".geometry.scan",
    "Landmarks": ".geometry.scan",
    "umeyama": ".geometry.align",
    "nicp": ".geometry.nicp",
    "MorphableModel": ".faces.morphable",
    "Template": ".faces.template",
    "load_template": ".faces.template",
    "template_from_model": ".faces.template",
    "default_template": ".faces.procedural",
    "procedural_model": ".faces.procedural",
    "FIVE": ".faces.landmark_sets",
    "read_scan": ".io.registry",
    "detect_format": ".io.registry",
    "load_model": ".io.face_models",
    "load_ict_npz": ".io.ict",
    "load_catalog": ".io.catalog",
    "write_example_dataset": ".io.sample_data",
    "write_point_cloud": ".io.generic",
    "open_group": ".runtime.store",
    "verify_store": ".runtime.store",
    "Source": ".runtime.sources",
    "resolve_source": ".runtime.sources",
    "resolve_template": ".runtime.sources",
    "sample_rng": ".runtime.seeding",
    "preprocess": ".stages.preprocess",
    "preprocess_file": ".stages.preprocess",
    "Preprocessed": ".stages.preprocess",
    "run_ingest": ".stages.ingest",
    "run_synth": ".stages.synth",
    "synth_from_model": ".stages.synth",
    "run_render_rgbd": ".stages.rgbd",
    "describe": ".stages.inspect",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
