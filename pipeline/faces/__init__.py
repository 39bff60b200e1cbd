"""What a face is: the morphable-model type, the named landmark sets, the analytic relief, the
procedural model and templates."""

from facepipe.pipeline.lazy import lazy_exports

_EXPORTS = {
    "MorphableModel": ".morphable",
    "Template": ".template",
    "load_template": ".template",
    "template_from_model": ".template",
    "template_selection": ".template",
    "default_template": ".procedural",
    "procedural_model": ".procedural",
    "FIVE": ".landmark_sets",
    "FaceParams": ".relief",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
