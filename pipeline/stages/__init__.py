"""The per-sample stages and the runs that drive them over a dataset: preprocess, ingest, synth,
render-rgbd, inspect."""

from facepipe.pipeline.lazy import lazy_exports

_EXPORTS = {
    "preprocess_file": ".preprocess",
    "Preprocessed": ".preprocess",
    "run_ingest": ".ingest",
    "run_synth": ".synth",
    "synth_from_model": ".synth",
    "run_render_rgbd": ".rgbd",
    "describe": ".inspect",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
