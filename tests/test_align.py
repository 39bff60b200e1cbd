from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from facepipe.pipeline.faces.relief import relief_face
from facepipe.pipeline.geometry.align import apply, apply_to_normals, icp, scale_of, umeyama
from facepipe.pipeline.geometry.resample import vertex_normals


def similarity(rng: np.random.Generator, scale: float | None = None) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = (scale or rng.uniform(0.005, 3.0)) * Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    t[:3, 3] = rng.normal(0, 100, 3)
    return t


@pytest.mark.parametrize("seed", range(5))
def test_umeyama_recovers_a_known_similarity(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = rng.normal(0, 30, (5, 3))
    t = similarity(rng)
    est = umeyama(src, apply(t, src))
    assert np.abs(est - t).max() < 1e-9 * max(1.0, np.abs(t).max())
    assert scale_of(est) == pytest.approx(scale_of(t))


def test_umeyama_never_reflects_and_skips_missing_rows() -> None:
    rng = np.random.default_rng(3)
    src = rng.normal(0, 1, (6, 3))
    mirrored = src * np.array([-1.0, 1.0, 1.0])
    t = umeyama(src, mirrored)
    assert np.linalg.det(t[:3, :3]) > 0
    dst = apply(similarity(rng, 2.0), src)
    dst[1] = np.nan
    assert np.abs(apply(umeyama(src, dst), src[[0, 2, 3, 4, 5]]) - dst[[0, 2, 3, 4, 5]]).max() < 1e-9
    with pytest.raises(ValueError, match="collinear"):
        umeyama(np.outer(np.arange(4.0), [1.0, 2.0, 3.0]), rng.normal(size=(4, 3)))
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(src[:2], src[:2])


def test_normals_turn_with_the_rotation_only() -> None:
    t = similarity(np.random.default_rng(4), 7.0)
    n = np.array([[0.0, 0.0, 1.0]])
    assert np.linalg.norm(apply_to_normals(t, n)) == pytest.approx(1.0)
    assert np.allclose(apply_to_normals(t, n), t[:3, :3] @ n[0] / 7.0)


def test_icp_undoes_a_small_rigid_offset() -> None:
    v, f, _ = relief_face(spacing=3.0)
    rot = Rotation.from_euler("xyz", [2.0, -3.0, 1.5], degrees=True).as_matrix()
    moved = v @ rot.T + np.array([1.5, -1.0, 2.0])
    t, fitness, rmse = icp(moved, v, vertex_normals(v, f), max_distance=10.0, iterations=50)
    assert fitness > 0.95 and rmse < 0.05
    assert np.abs(apply(t, moved) - v).max() < 0.05
