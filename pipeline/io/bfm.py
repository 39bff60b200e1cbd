"""Basel Face Model 2009 (`01_MorphableModel.mat`) with the 3DDFA expression basis, as the paper used.

Layouts (MATLAB v5 files, read with scipy):
- `01_MorphableModel.mat`: `shapeMU` (3N, 1), `shapePC` (3N, K), `shapeEV` (K, 1) standard deviations,
  `tl` (F, 3) 1-based triangles; x, y, z interleaved per vertex; micrometres. A face is
  shapeMU + shapePC (alpha * shapeEV) with alpha ~ N(0, 1).
- 3DDFA `Model_Expression.mat` beside it (optional): `w_exp` (3M, Ke), optional `sigma_exp` (Ke, 1)
  and `mu_exp` (3M, 1), on the 3DDFA crop of M = 53,215 vertices, in the same units.
- 3DDFA `model_info.mat` beside it: `trimIndex` (M, 1), the 1-based BFM vertex of each crop vertex,
  and `keypoints` (68 values): the iBUG-68 landmarks as 1-based crop vertex ids (or, with 204 values,
  1-based indices into the interleaved 3M vector). BFM 2009 itself names no landmark, so this file
  is required.
The model is returned on the crop (the face without ears and neck) when `trimIndex` is there.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.landmark_sets import IBUG68_FIVE
from facepipe.pipeline.faces.morphable import MorphableModel, ibug_regions

UM_TO_MM = 1e-3
EXPRESSION_FILE = "Model_Expression.mat"
INFO_FILE = "model_info.mat"


def _loadmat(path: Path, names: list[str], required: list[str]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        d = loadmat(path, variable_names=names)
    except NotImplementedError:
        raise ScanFormatError(path, "a MATLAB v7.3 (HDF5) file: re-save it with save(..., '-v7') to read it") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ScanFormatError(path, f"not a readable MATLAB file ({exc})") from None
    if missing := [n for n in required if n not in d]:
        raise ScanFormatError(path, f"missing variables {missing} (have {sorted(k for k in d if not k.startswith('__'))})")
    return d


def _per_vertex(path: Path, name: str, flat: np.ndarray) -> np.ndarray:
    """(3V, K) interleaved -> (K, V, 3)."""
    if flat.shape[0] % 3:
        raise ScanFormatError(path, f"{name} has {flat.shape[0]} rows, not a multiple of 3 (x, y, z per vertex)")
    return np.ascontiguousarray(flat.reshape(flat.shape[0] // 3, 3, -1).transpose(2, 0, 1))


def load_bfm2009(path: str | PathLike[str]) -> MorphableModel:
    """`01_MorphableModel.mat` (or its folder) with the 3DDFA files beside it, in mm."""
    p = Path(path)
    if p.is_dir():
        p = p / "01_MorphableModel.mat"
    if not p.exists():
        raise ScanFormatError(p, "BFM 2009 model file not found")
    d = _loadmat(p, ["shapeMU", "shapePC", "shapeEV", "tl"], ["shapeMU", "shapePC", "shapeEV", "tl"])
    mean = _per_vertex(p, "shapeMU", d["shapeMU"].astype(np.float64))[0] * UM_TO_MM
    ev = d["shapeEV"].astype(np.float64).ravel()
    pcs = d["shapePC"]
    if pcs.shape != (3 * len(mean), len(ev)):
        raise ScanFormatError(p, f"shapePC is {pcs.shape}, expected ({3 * len(mean)}, {len(ev)}) from shapeMU and shapeEV")
    identity = (_per_vertex(p, "shapePC", pcs.astype(np.float32)) * (ev * UM_TO_MM).astype(np.float32)[:, None, None])
    tri = d["tl"].astype(np.int64) - 1
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= len(mean):
        raise ScanFormatError(p, f"tl must be (F, 3) 1-based vertex ids in 1..{len(mean)}")
    info_path = p.with_name(INFO_FILE)
    if not info_path.exists():
        raise ScanFormatError(info_path, "BFM 2009 names no landmarks: put 3DDFA's model_info.mat (trimIndex, keypoints) "
                              "beside 01_MorphableModel.mat")
    info = _loadmat(info_path, ["trimIndex", "keypoints"], ["keypoints"])
    keep = info["trimIndex"].astype(np.int64).ravel() - 1 if "trimIndex" in info else np.arange(len(mean))
    if keep.min() < 0 or keep.max() >= len(mean):
        raise ScanFormatError(info_path, f"trimIndex must be 1-based BFM vertex ids in 1..{len(mean)}")
    mean, identity = mean[keep], identity[:, keep]
    tri = _crop_triangles(tri, keep, len(d["shapeMU"]) // 3)
    keypoints = info["keypoints"].astype(np.int64).ravel()
    if len(keypoints) == 3 * 68:
        keypoints = (keypoints[::3] - 1) // 3 + 1
    if len(keypoints) != 68 or keypoints.min() < 1 or keypoints.max() > len(keep):
        raise ScanFormatError(info_path, f"keypoints must be 68 1-based vertex ids of the {len(keep)}-vertex crop")
    ibug = keypoints - 1
    expression, names = np.zeros((0, len(keep), 3), np.float32), ()
    exp_path = p.with_name(EXPRESSION_FILE)
    if exp_path.exists():
        e = _loadmat(exp_path, ["w_exp", "sigma_exp", "mu_exp"], ["w_exp"])
        w = e["w_exp"]
        if w.shape[0] != 3 * len(keep):
            raise ScanFormatError(exp_path, f"w_exp has {w.shape[0] // 3} vertices, the (cropped) BFM {len(keep)}")
        sigma = e["sigma_exp"].astype(np.float64).ravel() if "sigma_exp" in e else np.ones(w.shape[1])
        expression = _per_vertex(exp_path, "w_exp", w.astype(np.float32)) * (sigma * UM_TO_MM).astype(np.float32)[:, None, None]
        if "mu_exp" in e:  # 3DDFA's expression mean belongs to the neutral face
            mean = mean + _per_vertex(exp_path, "mu_exp", e["mu_exp"].astype(np.float64))[0] * UM_TO_MM
        names = tuple(f"exp{k:02d}" for k in range(len(expression)))
    landmarks = {name: ibug[ids] for name, ids in IBUG68_FIVE.items()} | {f"ibug{k:02d}": ibug[k:k + 1] for k in range(68)}
    return MorphableModel("bfm2009", mean, tri, identity.astype(np.float32), expression.astype(np.float32), names, landmarks,
                          license="Basel Face Model 2009: University of Basel licence, non-commercial research only",
                          regions=ibug_regions(mean, mean[ibug]), expression_kind="pca")


def _crop_triangles(tri: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    index = np.full(n, -1)
    index[keep] = np.arange(len(keep))
    mapped = index[tri]
    return mapped[(mapped >= 0).all(1)]
