"""FLAME (`generic_model.pkl`), read through an unpickler that can build arrays and nothing else.

A pickle can run any code on load, and FLAME's is a Python 2 pickle of chumpy objects. The
unpickler here resolves only numpy's array reconstruction and `copyreg._reconstructor`; chumpy and
scipy.sparse classes become inert records of their state (a chumpy array's values are its `x`),
and every other class is refused with an error naming it.

Layout: a dict with `v_template` (5023, 3) in metres, `f` (9976, 3), `shapedirs` (5023, 3, 300 + 100)
chumpy: the first 300 identity ("shape") directions, then 100 expression directions, both for
weights ~ N(0, 1). Beside it, `flame_static_embedding.pkl` gives the 51 iBUG landmarks 17..67 as
`lmk_face_idx` (51,) and `lmk_b_coords` (51, 3), and `FLAME_masks.pkl` (optional) a `face` vertex list.
"""

from __future__ import annotations

import pickle
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.landmark_sets import IBUG68_FIVE
from facepipe.pipeline.faces.morphable import MorphableModel, ibug_regions

M_TO_MM = 1000.0
N_SHAPE = 300
EMBEDDING_FILE = "flame_static_embedding.pkl"
MASKS_FILE = "FLAME_masks.pkl"
SAFE = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
        ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("copyreg", "_reconstructor"), ("builtins", "object"), ("_codecs", "encode")}  # encode: bytes in protocol-2 pickles


class Inert:
    """Stands for a chumpy or scipy.sparse object: keeps the state it was pickled with, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE:
            return super().find_class(module, name)
        if module.split(".")[0] == "chumpy" or module.startswith("scipy.sparse"):
            return type(name, (Inert,), {"__module__": module})
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a model file may only hold arrays")


def read_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, TypeError) as exc:
        raise ScanFormatError(path, f"not a readable model pickle: {exc}") from None
    except OSError as exc:
        raise ScanFormatError(path, f"cannot read: {exc}") from None


def as_array(path: Path, name: str, value: Any) -> np.ndarray:
    if isinstance(value, Inert):
        state = value.state
        value = state.get("x") if isinstance(state, dict) else None
    if not isinstance(value, np.ndarray):
        raise ScanFormatError(path, f"{name} is not an array (nor a chumpy array with values)")
    return value


def load_flame(path: str | PathLike[str]) -> MorphableModel:
    """`generic_model.pkl` (or its folder) with the landmark embedding beside it, in mm."""
    p = Path(path)
    if p.is_dir():
        p = p / "generic_model.pkl"
    d = read_pickle(p)
    if not isinstance(d, dict) or not {"v_template", "f", "shapedirs"} <= set(d):
        raise ScanFormatError(p, "a FLAME model needs v_template, f and shapedirs")
    mean = as_array(p, "v_template", d["v_template"]).astype(np.float64) * M_TO_MM
    tri = as_array(p, "f", d["f"]).astype(np.int64)
    dirs = as_array(p, "shapedirs", d["shapedirs"])
    if dirs.shape[:2] != mean.shape or dirs.shape[2] <= N_SHAPE or tri.max() >= len(mean):
        raise ScanFormatError(p, f"shapedirs {dirs.shape} / f do not fit v_template {mean.shape} "
                              f"({N_SHAPE} shape then expression directions)")
    basis = (np.moveaxis(dirs, 2, 0) * M_TO_MM).astype(np.float32)
    emb_path = p.with_name(EMBEDDING_FILE)
    if not emb_path.exists():
        raise ScanFormatError(emb_path, "FLAME's landmark embedding is needed beside generic_model.pkl")
    emb = read_pickle(emb_path)
    faces_idx = as_array(emb_path, "lmk_face_idx", emb.get("lmk_face_idx") if isinstance(emb, dict) else None).astype(np.int64)
    bary = as_array(emb_path, "lmk_b_coords", emb.get("lmk_b_coords")).astype(np.float64)
    if faces_idx.shape != (51,) or bary.shape != (51, 3) or faces_idx.max() >= len(tri):
        raise ScanFormatError(emb_path, f"expected 51 landmarks (iBUG 17-67) as face ids and barycentric coordinates, "
                              f"got {faces_idx.shape} and {bary.shape}")
    landmarks, weights = {}, {}
    for name, ibug_ids in (IBUG68_FIVE | {f"ibug{k:02d}": [k] for k in range(17, 68)}).items():
        landmarks[name] = tri[faces_idx[[k - 17 for k in ibug_ids]]].ravel()
        weights[name] = bary[[k - 17 for k in ibug_ids]].ravel()
    points = np.full((68, 3), np.nan)  # FLAME embeds iBUG 17-67; the jaw line (0-16) stays unknown
    points[17:] = [np.average(mean[landmarks[f"ibug{k:02d}"]], axis=0, weights=weights[f"ibug{k:02d}"]) for k in range(17, 68)]
    regions = ibug_regions(mean, points)
    if (mask_path := p.with_name(MASKS_FILE)).exists():
        masks = read_pickle(mask_path)
        if isinstance(masks, dict) and "face" in masks:
            regions["face"] = as_array(mask_path, "face", masks["face"]).astype(np.int64)
    names = tuple(f"exp{k:03d}" for k in range(len(basis) - N_SHAPE))
    return MorphableModel("flame", mean, tri, basis[:N_SHAPE], basis[N_SHAPE:], names, landmarks, license="FLAME: Max Planck Gesellschaft licence, non-commercial scientific research only",
                          regions=regions, landmark_weights=weights, expression_kind="pca")
