"""Fixtures: small scans written by facepipe's own writers in the real byte layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facepipe.pipeline.faces.relief import FaceParams
from facepipe.pipeline.faces.template import Template
from facepipe.pipeline.io.sample_data import bosphorus_files, bu3dfe_files, frgc_files, write_example_dataset, write_files


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("example")
    write_example_dataset(out, subjects=2, seed=7)
    return out


@pytest.fixture
def bu3dfe_scan(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    write_files(tmp_path, bu3dfe_files(FaceParams(), rng, "F0007_HA03AE_F3D", spacing=3.0))
    return tmp_path / "F0007_HA03AE_F3D.wrl"


@pytest.fixture
def bosphorus_scan(tmp_path: Path) -> Path:
    rng = np.random.default_rng(6)
    write_files(tmp_path, bosphorus_files(FaceParams(), rng, "bs012_E_HAPPY_0", spacing=2.5))
    return tmp_path / "bs012_E_HAPPY_0.bnt"


@pytest.fixture
def frgc_scan(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    write_files(tmp_path, frgc_files(FaceParams(), rng, "02463d452", rows=48, cols=64))
    return tmp_path / "02463d452.abs"


@pytest.fixture(scope="session")
def face_template() -> Template:
    from facepipe.pipeline.faces.procedural import default_template

    return default_template()


def write_face_model_npz(path: Path) -> Path:
    """A small face-like model in the exact layout of ICT-FaceKit's compact npz (cm, iBUG-68 ids).

    A 26 x 32 grid with a nose and a chin; identity modes widen, lengthen and push the nose, the
    expression modes open the jaw and lift a mouth corner, and the iBUG eye, nose and mouth ids sit
    where a face has them, so alignment by the five landmarks behaves as on a real model.
    """
    xs, ys = np.linspace(-7.5, 7.5, 26), np.linspace(-10, 9, 32)
    gx, gy = np.meshgrid(xs, ys)
    z = 9 - 0.04 * gx**2 - 0.02 * gy**2 + 2.0 * np.exp(-(gx**2 + (gy + 1) ** 2) / 2)
    neutral = np.stack([gx, gy, z], -1).reshape(-1, 3).astype(np.float32)
    idx = np.arange(gx.size).reshape(gx.shape)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    tris = np.concatenate([quads[:, [0, 2, 1]], quads[:, [0, 3, 2]]]).astype(np.int32)
    x, y = neutral[:, 0], neutral[:, 1]
    identity = np.stack([np.stack([0.08 * x, 0 * y, 0 * x], -1), np.stack([0 * x, 0.06 * y, 0 * x], -1),
                         np.stack([0 * x, 0 * y, np.exp(-(x**2 + (y + 1) ** 2) / 2)], -1)]).astype(np.float32)
    jaw = np.stack([0 * x, np.where(y < -4, -1.0, 0.0), 0 * x], -1)
    smile = np.stack([0 * x, 0.8 * np.exp(-((x - 2.5) ** 2 + (y + 5) ** 2) / 2), 0 * x], -1)
    expression = np.stack([jaw, smile]).astype(np.float32)

    def nearest(px: float, py: float) -> int:
        return int(np.argmin((x - px) ** 2 + (y - py) ** 2))

    ibug = np.array([nearest(-6 + 12 * k / 67, -9) for k in range(68)])  # a jaw line for the unnamed ones
    ibug[36:42] = [nearest(-3 + dx, 2.5 + dy) for dx, dy in ((-1, 0), (-0.5, 0.3), (0.5, 0.3), (1, 0), (0.5, -0.3), (-0.5, -0.3))]
    ibug[42:48] = [nearest(3 + dx, 2.5 + dy) for dx, dy in ((-1, 0), (-0.5, 0.3), (0.5, 0.3), (1, 0), (0.5, -0.3), (-0.5, -0.3))]
    ibug[30], ibug[48], ibug[54] = nearest(0, -1), nearest(-2.5, -5), nearest(2.5, -5)
    np.savez(path, neutral=neutral, triangles=tris, identity=identity, expression=expression,
             expression_names=np.array(["jawOpen", "mouthSmile_L"]), landmarks_ibug68=ibug.astype(np.int32),
             narrow_face_vertex_count=np.array(gx.size, np.int32), narrow_face_triangle_count=np.array(len(tris), np.int32),
             units=np.array("cm"), license=np.array("Apache-2.0 (facepipe test model)"), source=np.array("tests"))
    return path


@pytest.fixture(scope="session")
def face_model_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_face_model_npz(tmp_path_factory.mktemp("model") / "face_model.npz")
