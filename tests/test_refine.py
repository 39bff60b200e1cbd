"""The per-vertex step of the refinement on constructed surfaces: it solves its energy exactly, follows
a smooth change of the surface and does not let one stray region through as a dimple."""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from scipy import sparse
from scipy.sparse.linalg import spsolve

from facepipe.models.losses import gather, vertex_normals
from facepipe.models.refine import RefineConfig, _Scans, normal_step
from facepipe.pipeline.faces.procedural import default_template


def _scan_of(vertices: np.ndarray, triangles: np.ndarray, n: int = 20_000) -> np.ndarray:
    return np.asarray(trimesh.sample.sample_surface(trimesh.Trimesh(vertices, triangles, process=False), n, seed=0)[0])


def _heights(out: np.ndarray, base: np.ndarray, normals: np.ndarray) -> np.ndarray:
    return ((out - base) * normals).sum(-1)


def test_the_solve_is_the_minimiser_of_its_energy() -> None:
    """One pairing: the conjugate-gradient heights equal a direct sparse solve of the same normal equations."""
    template = default_template()
    base = torch.as_tensor(template.vertices, dtype=torch.float64)[None]
    normals = vertex_normals(base, torch.as_tensor(template.triangles))
    x, y = template.vertices[:, 0], template.vertices[:, 1]
    bump = 0.02 * np.exp(-((x - 0.1) ** 2 + (y + 0.2) ** 2) / 0.05)
    scan = _scan_of(template.vertices + bump[:, None] * normals[0].numpy(), template.triangles)
    config = RefineConfig(vertex_steps=1)
    scans = _Scans(scan[None], 20_000, 0, torch.device("cpu"))
    out = normal_step(base.float(), template, scans, config)[0]

    nearest, dist2 = scans.nearest(base.float())
    w = (dist2[0] <= config.vertex_threshold).double().numpy()
    target = (normals[0] * (gather(scans.points, nearest)[0].double() - base[0])).sum(-1).numpy()
    n, edges = len(base[0]), template.edges()
    adjacency = sparse.coo_matrix((np.ones(2 * len(edges)), (edges.ravel(), edges[:, ::-1].ravel())), shape=(n, n)).tocsr()
    degree = np.asarray(adjacency.sum(1)).ravel()
    lap = sparse.identity(n) - sparse.diags(1 / np.maximum(degree, 1)) @ adjacency
    a = sparse.diags(w) + config.smooth_weight * (lap.T @ lap) + config.damping * sparse.identity(n)
    direct = spsolve(a.tocsc(), w * target)
    base32 = base[0].float().double().numpy()  # normal_step works from the float32 face it is given
    normals32 = vertex_normals(torch.as_tensor(base32)[None], torch.as_tensor(template.triangles))[0].numpy()
    assert np.abs(_heights(out, base32, normals32) - direct).max() < 1e-6  # template units


def test_it_follows_a_smooth_change_and_smooths_a_single_spike() -> None:
    template = default_template()
    base = torch.as_tensor(template.vertices, dtype=torch.float32)[None]
    normals = vertex_normals(base.double(), torch.as_tensor(template.triangles))[0].numpy()
    x, y = template.vertices[:, 0], template.vertices[:, 1]
    bump = 0.015 * np.exp(-((x - 0.1) ** 2 + (y + 0.2) ** 2) / 0.05)  # 1.5 template-cm high, 20 vertices wide
    spike = np.zeros(len(x))
    centre = int(np.argmin((x + 0.3) ** 2 + (y - 0.3) ** 2))
    spike[centre] = 0.015  # one vertex 1.5 template-cm out: a stray region one vertex wide
    scan = _scan_of(template.vertices + (bump + spike)[:, None] * normals, template.triangles, 60_000)
    out = normal_step(base, template, _Scans(scan[None], 60_000, 0, torch.device("cpu")), RefineConfig())[0]
    h = _heights(out, template.vertices, normals)
    far = np.linalg.norm(template.vertices[:, :2] - template.vertices[centre, :2], axis=1) > 0.15
    err = np.abs(h - bump)[far]
    assert np.median(err) < 0.05 * bump.max() and np.percentile(err, 95) < 0.15 * bump.max(), (np.median(err), np.percentile(err, 95))
    assert h[centre] < 0.3 * spike[centre], h[centre]  # not followed
    neighbours = template.edges()[(template.edges() == centre).any(1)].ravel()
    assert h[neighbours].min() > -0.1 * spike[centre]  # and no dimple beside it


def test_landmarks_found_by_mediapipe_are_marked_as_detected() -> None:
    """Refinement trusts detected landmarks less: the flag comes from the store row's quality record."""
    from facepipe.models.correspond import detected_landmarks

    assert detected_landmarks('{"landmark_source":"mediapipe","scale":0.01}')
    assert not detected_landmarks('{"landmark_source":"bnd"}') and not detected_landmarks("")  # annotated; synth rows


def test_the_scan_to_face_term_averages_a_sensors_noise_and_keeps_exact_data_exact() -> None:
    """A basis face of nine bumps, its surface sampled densely and each point moved along z by 1 mm of
    noise (template units: 0.01), as a depth sensor moves it: a vertex paired with its nearest noisy
    point can sit anywhere inside the noise band, while the mean of the points nearest to a vertex
    averages the noise; so the fit with the scan-to-face term lands nearer the truth. Without noise
    both fits recover the face."""
    from facepipe.models.network import FaceNet
    from facepipe.models.refine import refine

    template = default_template()
    v = template.vertices
    x, y = v[:, 0], v[:, 1]
    modes = np.stack([np.stack([0 * x, 0 * y, np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.05)], -1)
                      for cx in (-0.4, 0, 0.4) for cy in (-0.4, 0, 0.4)])
    net = FaceNet(len(v), 8, 8, 32, decoder="basis", basis_size=len(modes), mean=torch.as_tensor(v, dtype=torch.float32)).eval()
    net.set_bases(torch.as_tensor(0.03 * modes.reshape(len(modes), -1), dtype=torch.float32), torch.zeros(len(modes), 3 * len(v)))
    rng = np.random.default_rng(1)
    truth = v + 0.03 * np.tensordot(rng.normal(size=len(modes)), modes, 1)
    exact = _scan_of(truth, template.triangles, 30_000)
    noisy = exact + np.array([0, 0, 1.0]) * rng.normal(0, 0.01, (len(exact), 1))
    inner = ~template.rim
    assert template.rim.any() and inner.sum() > 0.8 * len(v)

    def error(scan: np.ndarray, weight: float) -> float:
        config = RefineConfig(vertex_steps=0, scan_weight=weight, max_points=30_000)
        out = refine(net, template, scan[None], np.full((1, 5, 3), np.nan), config, codes=(torch.zeros(1, 8), torch.zeros(1, 8)))[0]
        return float(np.linalg.norm(out - truth, axis=1)[inner].mean())

    without, with_term = error(noisy, 0.0), error(noisy, 3.0)
    assert with_term < 0.7 * without, (with_term, without)
    assert error(exact, 0.0) < 0.002 and error(exact, 3.0) < 0.002  # 0.2 mm on a face of 100 mm per unit
