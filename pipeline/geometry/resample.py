"""Turning a cropped mesh into a fixed number of points with normals, the network's input.

Sampling from the vertices (the paper's way) needs at least as many vertices as points, so sparse
scans are loop-subdivided first. Area-uniform sampling needs no subdivision: it draws from the
triangles with normals interpolated from the vertices. Every draw comes from the caller's
generator, so a sample is reproducible from its own seed whatever process makes it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import trimesh
from scipy import sparse

from facepipe.pipeline.geometry.scan import compact, triangle_normals


def vertex_normals(vertices: np.ndarray, faces: np.ndarray, fn: np.ndarray | None = None) -> np.ndarray:
    """(V, 3) unit vertex normals, the area-weighted mean of the adjacent triangles' normals."""
    fn = triangle_normals(vertices, faces) if fn is None else fn  # length = twice the area: area weighting for free
    vn = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return np.divide(vn, norm, out=np.zeros_like(vn), where=norm > 0)


def subdivide_to(vertices: np.ndarray, faces: np.ndarray, n: int, max_levels: int = 4) -> tuple[np.ndarray, np.ndarray, int]:
    """Loop-subdivide until the mesh has at least `n` vertices; returns (vertices, faces, levels).

    trimesh's Loop subdivision (with boundary rules) runs 2.5x faster than open3d's on scan meshes
    (230 vs 590 ms for two levels of a 5k-vertex scan, benchmarks/bench_preprocess.py).
    """
    v, f, levels = np.asarray(vertices, np.float64), np.asarray(faces, np.int64), 0
    if len(v) < n and len(f) and len(np.unique(f)) < len(v):  # vertices without a face break the Loop weights
        v, f, _ = compact(v, f)
    while len(v) < n and levels < max_levels and len(f):
        v, f = trimesh.remesh.subdivide_loop(v, f, iterations=1)
        levels += 1
    return v, f, levels


def sample_points(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator,
                  method: Literal["area", "vertices"] = "area") -> tuple[np.ndarray, np.ndarray]:
    """Exactly `n` points on the surface and their unit normals (interpolated vertex normals)."""
    fn = triangle_normals(vertices, faces)
    vn = vertex_normals(vertices, faces, fn)
    if method == "vertices":
        used = np.unique(faces)
        idx = rng.choice(used, size=n, replace=len(used) < n)
        return vertices[idx].copy(), vn[idx].copy()
    cdf = np.cumsum(np.linalg.norm(fn, axis=1))
    tri = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(faces) - 1)
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], 1)  # uniform on a triangle
    corners = faces[tri]
    pts = np.einsum("nk,nkd->nd", w, vertices[corners])
    nrm = np.einsum("nk,nkd->nd", w, vn[corners])
    norm = np.linalg.norm(nrm, axis=1, keepdims=True)
    bad = norm[:, 0] < 1e-12  # opposite normals cancelled: fall back to the face normal
    if bad.any():
        nrm[bad], norm[bad] = fn[tri[bad]], np.linalg.norm(fn[tri[bad]], axis=1, keepdims=True)
    return pts, nrm / np.maximum(norm, 1e-300)



def loop_operator(faces: np.ndarray, n_vertices: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """One level of Loop subdivision as a linear map: (S, new faces) with new vertices = S @ old.

    The same weights as `trimesh.remesh.subdivide_loop` (interior 3/8-1/8 edge rule and Loop's beta,
    boundary 1/2 edges and 3/4-1/8 corners), but as a matrix, so that a template refined this way
    stays a linear function of the model's vertices and synthetic ground truth can follow it.
    """
    f = np.asarray(faces, np.int64)
    half = np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 1).reshape(-1, 2)  # (3F, 2) directed edges
    opposite = f[:, [2, 0, 1]].reshape(-1)
    key = np.sort(half, axis=1)
    edges, edge_of, count = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    edge_of = edge_of.reshape(-1)
    n_e = len(edges)
    boundary = count != 2
    rows, cols, vals = [], [], []

    def add(r: np.ndarray, c: np.ndarray, w: np.ndarray | float) -> None:
        rows.append(np.asarray(r)), cols.append(np.asarray(c)), vals.append(np.broadcast_to(w, np.shape(r)).astype(np.float64))

    # odd vertices (one per edge), numbered after the old ones
    odd = n_vertices + np.arange(n_e)
    add(odd, edges[:, 0], np.where(boundary, 0.5, 3 / 8))
    add(odd, edges[:, 1], np.where(boundary, 0.5, 3 / 8))
    interior_half = ~boundary[edge_of]
    add(odd[edge_of[interior_half]], opposite[interior_half], 1 / 8)
    # even vertices: Loop's beta over the neighbours inside, 3/4 + 1/8 + 1/8 along a boundary
    is_boundary_vertex = np.zeros(n_vertices, bool)
    is_boundary_vertex[edges[boundary].ravel()] = True
    nb = np.concatenate([edges, edges[:, ::-1]])
    valence = np.bincount(nb[:, 0], minlength=n_vertices)
    safe = np.maximum(valence, 1)
    beta = (5 / 8 - (3 / 8 + np.cos(2 * np.pi / safe) / 4) ** 2) / safe
    inner = ~is_boundary_vertex[nb[:, 0]]
    add(nb[inner, 0], nb[inner, 1], beta[nb[inner, 0]])
    add(np.arange(n_vertices), np.arange(n_vertices), np.where(is_boundary_vertex, 3 / 4, 1 - valence * beta))
    bnb = np.concatenate([edges[boundary], edges[boundary][:, ::-1]])
    add(bnb[:, 0], bnb[:, 1], 1 / 8)
    s = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_vertices + n_e, n_vertices))
    m = odd[edge_of.reshape(-1, 3)]  # (F, 3): midpoints of edges 01, 12, 20
    new = np.concatenate([np.stack([f[:, 0], m[:, 0], m[:, 2]], 1), np.stack([f[:, 1], m[:, 1], m[:, 0]], 1),
                          np.stack([f[:, 2], m[:, 2], m[:, 1]], 1), m])
    return s, new
