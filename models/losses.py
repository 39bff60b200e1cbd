"""The losses of paper 1, on (B, V, 3) predictions in template topology.

Supervised (synthetic faces, known correspondence): L1 vertex, normal cosine, edge-length ratio.
Unsupervised (raw scans): two-sided squared Chamfer that ignores pairs farther than a threshold,
the normal loss at each vertex's closest scan point, edge lengths against the template's, and a
Laplacian on the mouth. Nearest neighbours come from a search without gradient (a k-d tree on CPU,
chunked `torch.cdist` on GPU); distances are then recomputed in torch on the gathered points, which
gives the same gradient as a differentiable search.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) unit vertex normals: area-weighted sums of the adjacent triangles' normals."""
    a, b, c = (vertices[:, triangles[:, k]] for k in range(3))
    face = torch.cross(b - a, c - a, dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals = normals.index_add(1, triangles[:, k], face)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


def vertex_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def normal_loss(pred_normals: torch.Tensor, target_normals: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos between predicted and target unit normals."""
    return (1.0 - (pred_normals * target_normals).sum(-1)).mean()


def edge_lengths(vertices: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    return (vertices[:, edges[:, 0]] - vertices[:, edges[:, 1]]).norm(dim=-1)


def edge_loss(pred: torch.Tensor, reference_lengths: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean |len_pred / len_ref - 1| over the template edges (reference: ground truth or template)."""
    return (edge_lengths(pred, edges) / reference_lengths.clamp_min(1e-12) - 1.0).abs().mean()


def nearest(query: torch.Tensor, points: torch.Tensor, chunk: int = 4096, method: str = "auto") -> torch.Tensor:
    """(B, Q) index of the nearest of `points` (B, P, 3) for each query point, without gradient.

    `method`: "tree" (scipy k-d tree, CPU), "cdist" (chunked torch.cdist, the GPU way), "auto" by device.
    """
    with torch.no_grad():
        if method == "tree" or (method == "auto" and query.device.type == "cpu"):
            out = [cKDTree(p.numpy()).query(q.numpy(), workers=1)[1] for q, p in zip(query.detach(), points.detach(), strict=True)]
            return torch.as_tensor(np.stack(out), dtype=torch.long)
        idx = [torch.cat([torch.cdist(q[None, i:i + chunk], p[None])[0].argmin(-1) for i in range(0, len(q), chunk)])
               for q, p in zip(query, points, strict=True)]
        return torch.stack(idx)


def ray_partners(pred: torch.Tensor, normals: torch.Tensor, points: torch.Tensor, k: int = 16, method: str = "auto") -> torch.Tensor:
    """(B, V) index of the scan point where the line along each predicted normal meets the scan: of the
    vertex's `k` nearest scan points, the one closest to that line. Better partners than the closest
    point where the surface curves (paper 1's refinement), still without gradient."""
    with torch.no_grad():
        k = min(k, points.shape[1])
        if method == "tree" or (method == "auto" and pred.device.type == "cpu"):
            cand = torch.as_tensor(np.stack([cKDTree(p.numpy()).query(q.numpy(), k=k, workers=1)[1].reshape(len(q), k)
                                             for q, p in zip(pred.detach(), points.detach(), strict=True)]), dtype=torch.long)
        else:
            cand = torch.stack([torch.cdist(q[None], p[None])[0].topk(k, largest=False).indices for q, p in zip(pred, points, strict=True)])
        pts = torch.gather(points[:, None].expand(-1, pred.shape[1], -1, -1), 2, cand[..., None].expand(-1, -1, -1, 3))
        rel = pts - pred[:, :, None]
        n = normals[:, :, None]
        off_line = (rel - (rel * n).sum(-1, keepdim=True) * n).norm(dim=-1)
        return torch.gather(cand, 2, off_line.argmin(-1, keepdim=True))[..., 0]


def gather(points: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(points, 1, index[..., None].expand(-1, -1, points.shape[-1]))


def chamfer(pred: torch.Tensor, scan: torch.Tensor, threshold: float | None = None,
            pred_to_scan: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-sided squared Chamfer distance, pairs with squared distance above `threshold` ignored.

    Returns (loss, index of each prediction vertex's nearest scan point) so the normal loss can reuse it.
    """
    p2s = nearest(pred, scan) if pred_to_scan is None else pred_to_scan
    s2p = nearest(scan, pred)
    d_ps = ((pred - gather(scan, p2s)) ** 2).sum(-1)
    d_sp = ((scan - gather(pred, s2p)) ** 2).sum(-1)
    if threshold is not None:
        d_ps = d_ps * (d_ps <= threshold)
        d_sp = d_sp * (d_sp <= threshold)
    return d_ps.mean() + d_sp.mean(), p2s


def laplacian_loss(vertices: torch.Tensor, neighbours: torch.Tensor, counts: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean squared uniform Laplacian over `region` vertices; `neighbours` (V, K) padded with -1."""
    valid = neighbours >= 0
    gathered = vertices[:, neighbours.clamp_min(0)] * valid[None, ..., None]
    lap = vertices - gathered.sum(2) / counts.clamp_min(1)[None, :, None]
    return (lap[:, region] ** 2).sum(-1).mean()


def neighbour_table(edges: np.ndarray, n_vertices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, K) neighbour ids padded with -1 and (V,) neighbour counts, from undirected edges."""
    both = np.concatenate([edges, edges[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    counts = np.bincount(both[:, 0], minlength=n_vertices)
    table = np.full((n_vertices, max(int(counts.max()), 1)), -1, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(both)) - starts[both[:, 0]]
    table[both[:, 0], slot] = both[:, 1]
    return torch.as_tensor(table), torch.as_tensor(counts)
