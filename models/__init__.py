"""The learning side (torch): encoder, decoders, losses, training and inference.

The functions named like their modules are exported as `run_*` (`run_training`, `run_correspond`,
`run_evaluate`), as the CLI calls them."""

from facepipe.pipeline.lazy import lazy_exports

_EXPORTS = {
    "FaceNet": ".network",
    "run_training": ".train:train",
    "Predictor": ".correspond",
    "choose_template": ".correspond",
    "source_items": ".correspond",
    "store_items": ".correspond",
    "run_correspond": ".correspond:correspond",
    "run_evaluate": ".evaluate:evaluate",
    "RefineConfig": ".refine",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
