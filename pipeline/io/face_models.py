"""Face models by kind: the built-in procedural model, or a file on the user's disk read by its reader."""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from pathlib import Path

from facepipe.pipeline.errors import FacepipeError, ScanFormatError
from facepipe.pipeline.faces.morphable import MorphableModel


def _loaders() -> dict[str, Callable[[str | PathLike[str]], MorphableModel]]:
    from facepipe.pipeline.io.bfm import load_bfm2009
    from facepipe.pipeline.io.flame import load_flame
    from facepipe.pipeline.io.ict import load_ict_folder, load_ict_npz

    def load_ict(path: str | PathLike[str]) -> MorphableModel:
        return load_ict_npz(path) if Path(path).suffix == ".npz" else load_ict_folder(path)

    return {"ict": load_ict, "bfm2009": load_bfm2009, "flame": load_flame}


MODEL_FILES = ("ict", "bfm2009", "flame")
MODEL_KINDS = ("procedural", *MODEL_FILES)


def load_model(kind: str, path: str | PathLike[str] | None = None) -> MorphableModel:
    """A model by kind: the built-in procedural one, or a file of one of the loaders; errors name what is wrong."""
    if kind == "procedural":
        if path is not None:
            raise FacepipeError(f"{path}: the procedural model is built in: it takes no model file", remedy="no_model_path")
        from facepipe.pipeline.faces.procedural import procedural_model

        return procedural_model()
    if kind not in MODEL_FILES:
        raise ScanFormatError(str(path or kind), f"unknown model kind {kind!r} (have: {', '.join(MODEL_KINDS)})")
    if path is None:
        raise FacepipeError(f"{kind}: the {kind} model needs its model file (on your disk)", remedy="model_path")
    return _loaders()[kind](path)
