"""Model loaders on small files the tests write in the real layouts: BFM 2009 + 3DDFA, FLAME pickles."""

from __future__ import annotations

import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.landmark_sets import FIVE
from facepipe.pipeline.faces.template import template_from_model, template_selection
from facepipe.pipeline.io.bfm import load_bfm2009
from facepipe.pipeline.io.face_models import load_model
from facepipe.pipeline.io.flame import load_flame
from facepipe.pipeline.io.ict import load_ict_npz
from facepipe.pipeline.runtime.store import open_group
from facepipe.pipeline.stages.synth import run_synth
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig


@pytest.fixture(scope="module")
def grid_face(face_model_npz: Path) -> dict[str, np.ndarray]:
    """The test face model's geometry in mm, with its iBUG ids, to write in other layouts."""
    m = load_ict_npz(face_model_npz)
    ibug = np.load(face_model_npz)["landmarks_ibug68"].astype(np.int64)
    return {"mean": m.mean, "tri": m.triangles, "identity": m.identity.astype(np.float64),
            "expression": m.expression.astype(np.float64), "ibug": ibug}


def interleave(per_vertex: np.ndarray) -> np.ndarray:
    """(K, V, 3) -> (3V, K), x y z per vertex as in the .mat files."""
    return per_vertex.transpose(1, 2, 0).reshape(-1, per_vertex.shape[0])


def write_bfm(folder: Path, g: dict[str, np.ndarray], drop: int = 26) -> np.ndarray:
    """01_MorphableModel.mat (um), model_info.mat with a crop that drops the first `drop` vertices, and
    Model_Expression.mat on the crop. Returns the crop (0-based BFM ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    ev = np.array([2.0, 0.5, 1.5])
    savemat(folder / "01_MorphableModel.mat", {
        "shapeMU": g["mean"].reshape(-1, 1) * 1e3, "shapePC": interleave(g["identity"] / ev[:, None, None]) * 1e3,
        "shapeEV": ev.reshape(-1, 1), "tl": g["tri"] + 1, "texMU": np.zeros((g["mean"].size, 1))})
    keep = np.arange(drop, len(g["mean"]))
    crop_index = np.full(len(g["mean"]), -1)
    crop_index[keep] = np.arange(len(keep))
    savemat(folder / "model_info.mat", {"trimIndex": (keep + 1).reshape(-1, 1), "keypoints": (crop_index[g["ibug"]] + 1).reshape(1, -1)})
    sigma = np.array([4.0, 0.25])
    savemat(folder / "Model_Expression.mat", {"w_exp": interleave(g["expression"][:, keep] / sigma[:, None, None]) * 1e3,
                                              "sigma_exp": sigma.reshape(-1, 1), "mu_exp": np.full((3 * len(keep), 1), 500.0)})
    return keep


def test_bfm2009_with_3ddfa_files_loads_in_mm_on_the_crop(tmp_path: Path, grid_face: dict[str, np.ndarray]) -> None:
    keep = write_bfm(tmp_path / "bfm", grid_face)
    m = load_model("bfm2009", tmp_path / "bfm" / "01_MorphableModel.mat")
    assert m.name == "bfm2009" and m.expression_kind == "pca" and len(m.mean) == len(keep)
    assert np.allclose(m.mean, grid_face["mean"][keep] + 0.5, atol=1e-9)  # + mu_exp (500 um)
    assert np.allclose(m.identity, grid_face["identity"][:, keep], atol=1e-5)
    assert np.allclose(m.expression, grid_face["expression"][:, keep], atol=1e-5)
    assert m.triangles.max() < len(keep) and len(m.triangles) < len(grid_face["tri"])
    assert np.allclose(m.landmark_points(m.mean), (load_bfm2009(tmp_path / "bfm")).landmark_points(m.mean))  # folder works too
    five = m.landmark_points(m.mean - 0.5)
    assert np.allclose(five[2], grid_face["mean"][grid_face["ibug"][30]])


def test_bfm2009_errors_name_the_file(tmp_path: Path, grid_face: dict[str, np.ndarray]) -> None:
    write_bfm(tmp_path / "bfm", grid_face)
    (tmp_path / "bfm" / "model_info.mat").unlink()
    with pytest.raises(ScanFormatError, match=r"model_info.mat: BFM 2009 names no landmarks"):
        load_bfm2009(tmp_path / "bfm")
    savemat(tmp_path / "bad.mat", {"shapeMU": np.zeros((6, 1))})
    with pytest.raises(ScanFormatError, match=r"bad.mat: missing variables \['shapePC', 'shapeEV', 'tl'\]"):
        load_bfm2009(tmp_path / "bad.mat")


def test_synth_from_bfm_draws_gaussian_expressions_and_reproduces_the_model(tmp_path: Path, grid_face: dict[str, np.ndarray]) -> None:
    write_bfm(tmp_path / "bfm", grid_face)
    m = load_bfm2009(tmp_path / "bfm")
    t = template_from_model(m)
    selection, _ = template_selection(m)
    cfg = SynthConfig(model="bfm2009", model_id=m.id, identities=2, expressions=1, n_points=1000)
    out = str(tmp_path / "s.zarr")
    assert run_synth(m, t, selection, out, cfg, options=RunOptions(processes=False)).store_status["ok"] == 4
    g = open_group(out)
    ex = g["expression_weights"][:]
    assert not ex[0].any() and (ex[1] != 0).all()  # every PCA mode, signed
    shape = m.shape(g["identity_weights"][1].astype(np.float64), ex[1].astype(np.float64))
    assert np.allclose(g["vertices"][1], (g["to_template"][1][:3, :3] @ selection(shape).T).T + g["to_template"][1][:3, 3], atol=1e-5)


class _FakeChumpy:
    """Puts a `chumpy.ch.Ch` class into sys.modules while a test writes a FLAME-like pickle."""

    def __enter__(self) -> type:
        ch = types.ModuleType("chumpy.ch")

        class Ch:
            def __init__(self, x: np.ndarray) -> None:
                self.x = x

        Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
        ch.Ch = Ch
        self.saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
        sys.modules["chumpy"], sys.modules["chumpy.ch"] = types.ModuleType("chumpy"), ch
        return Ch

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_flame(folder: Path, g: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    v = len(g["mean"])
    dirs = np.zeros((v, 3, 302))
    dirs[:, :, :3] = g["identity"].transpose(1, 2, 0) / 1000.0
    dirs[:, :, 300:] = g["expression"].transpose(1, 2, 0) / 1000.0
    with _FakeChumpy() as Ch:
        model = {"v_template": g["mean"] / 1000.0, "f": g["tri"].astype(np.uint32), "shapedirs": Ch(dirs),
                 "bs_style": "lbs", "kintree_table": np.zeros((2, 5), np.int64)}
        (folder / "generic_model.pkl").write_bytes(pickle.dumps(model, protocol=2))
    # landmark k (iBUG 17 + k) sits on a triangle that has the iBUG vertex as its first corner
    first_corner = {int(a): i for i, a in reversed(list(enumerate(g["tri"][:, 0])))}
    faces = np.array([first_corner[int(g["ibug"][17 + k])] for k in range(51)])
    bary = np.tile([1.0, 0.0, 0.0], (51, 1))
    (folder / "flame_static_embedding.pkl").write_bytes(pickle.dumps({"lmk_face_idx": faces, "lmk_b_coords": bary}, protocol=2))


def test_flame_pickle_loads_through_the_restricted_unpickler(tmp_path: Path, grid_face: dict[str, np.ndarray]) -> None:
    write_flame(tmp_path / "flame", grid_face)
    assert "chumpy" not in sys.modules
    m = load_model("flame", tmp_path / "flame" / "generic_model.pkl")
    assert m.expression_kind == "pca" and m.identity.shape == (300, len(grid_face["mean"]), 3) and len(m.expression) == 2
    assert np.allclose(m.mean, grid_face["mean"], atol=1e-9)
    assert np.allclose(m.identity[:3], grid_face["identity"], atol=1e-5) and not m.identity[3:].any()
    ibug = grid_face["ibug"]
    assert np.allclose(m.landmark_points(m.mean, FIVE)[2], grid_face["mean"][ibug[30]])
    assert np.allclose(m.landmark_points(m.mean, FIVE)[0], grid_face["mean"][ibug[36:42]].mean(0))


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > /tmp/facepipe-pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, grid_face: dict[str, np.ndarray]) -> None:
    write_flame(tmp_path / "flame", grid_face)
    (tmp_path / "flame" / "generic_model.pkl").write_bytes(pickle.dumps({"v_template": _Evil()}, protocol=2))
    with pytest.raises(ScanFormatError, match=r"generic_model.pkl: not a readable model pickle: refusing to load (posix|os)\.system"):
        load_flame(tmp_path / "flame")
    assert not Path("/tmp/facepipe-pwned").exists()
    (tmp_path / "flame" / "flame_static_embedding.pkl").unlink()
    write_flame(tmp_path / "flame2", grid_face)
    (tmp_path / "flame2" / "flame_static_embedding.pkl").unlink()
    with pytest.raises(ScanFormatError, match="landmark embedding is needed"):
        load_flame(tmp_path / "flame2")


def write_obj(path: Path, v: np.ndarray, quads: np.ndarray | None = None) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v] + ["vt 0.5 0.5"]
    if quads is not None:
        lines += ["f " + " ".join(f"{i + 1}/1" for i in q) for q in quads]
    path.write_text("\n".join(lines) + "\n")


def test_ict_facexmodel_folder_of_obj_morph_targets(tmp_path: Path, face_model_npz: Path) -> None:
    d = np.load(face_model_npz)
    neutral = d["neutral"].astype(np.float64)  # cm, as ICT-FaceKit
    cols = 26
    idx = np.arange(len(neutral)).reshape(-1, cols)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], -1).reshape(-1, 4)
    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    write_obj(folder / "generic_neutral_mesh.obj", neutral, quads)
    for k, mode in enumerate(d["identity"]):
        write_obj(folder / f"identity{k:03d}.obj", neutral + mode)
    names = [str(n) for n in d["expression_names"]]
    for name, mode in zip(names, d["expression"], strict=True):
        write_obj(folder / f"{name}.obj", neutral + mode)
    (folder / "vertex_indices.json").write_text(json.dumps({"expressions": names, "fitting_expressions": names,
                                                            "idx_to_landmark_verts": d["landmarks_ibug68"].tolist()}))
    m = load_model("ict", folder)
    npz = load_ict_npz(face_model_npz)
    assert np.allclose(m.mean, npz.mean, atol=1e-5) and np.allclose(m.identity, npz.identity, atol=1e-4)
    assert np.allclose(m.expression, npz.expression, atol=1e-4) and m.expression_names == npz.expression_names
    assert len(m.triangles) == 2 * len(quads) and np.allclose(m.landmark_points(m.mean), npz.landmark_points(npz.mean), atol=1e-5)
    (folder / "mouthSmile_L.obj").unlink()
    with pytest.raises(ScanFormatError, match="expression meshes missing: mouthSmile_L"):
        load_model("ict", folder)


def test_ibug_models_name_a_mouth_region_that_templates_keep(face_model_npz: Path) -> None:
    m = load_ict_npz(face_model_npz)
    mouth = m.mean[m.regions["mouth"]]
    corners = m.landmark_points(m.mean, FIVE)[3:]
    assert len(mouth) > 5 and np.abs(mouth[:, 1] - corners[:, 1].mean()).max() < np.linalg.norm(corners[1] - corners[0])
    assert not np.isin(m.landmarks["right_eye_centre"], m.regions["mouth"]).any()
    assert len(template_from_model(m).regions["mouth"]) == len(m.regions["mouth"])


def test_ibug_models_map_the_bu3dfe_landmarks_they_determine(face_model_npz: Path, tmp_path: Path,
                                                              grid_face: dict[str, np.ndarray]) -> None:
    m = load_ict_npz(face_model_npz)
    ibug = grid_face["ibug"]
    bu = m.regions["bu3dfe83"]
    assert (bu >= 0).sum() == 23 and bu[48] == ibug[48] and bu[54] == ibug[54] and bu[0] == ibug[39] and bu[75] == ibug[8]
    assert (template_from_model(m).regions["bu3dfe83"] >= 0).sum() == 23
    write_flame(tmp_path / "flame", grid_face)
    flame = load_flame(tmp_path / "flame")
    assert flame.regions["bu3dfe83"][75] == -1 and flame.regions["bu3dfe83"][48] == ibug[48]  # no chin in FLAME's embedding
