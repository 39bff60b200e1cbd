"""The learning side (torch): encoder, decoders, losses, training and inference.

The functions named like their modules are exported as `run_*` (`run_training`, `run_correspond`,
`run_evaluate`, `run_train_encoder`, `run_reconstruct`, `run_evaluate_frames`), as the CLI calls them."""

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
    "FaceEncoder": ".encoder",
    "EncoderPredictor": ".reconstruct",
    "run_train_encoder": ".train_encoder:train_encoder",
    "run_reconstruct": ".reconstruct:reconstruct",
    "run_evaluate_frames": ".evaluate_frames:evaluate_frames",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
