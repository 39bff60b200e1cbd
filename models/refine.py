"""Test-time refinement: the network's face, fitted to the scan itself.

The network gives a face of the right kind in one pass but does not lie on the scan (a few mm
off after short training). Two short fits, in torch (CPU and GPU alike), take it there:
(a) the face within the decoders' space. A basis decoder's face is linear in its bases'
coefficients, so they are fitted by Gauss-Newton from the network's: each step pairs every vertex
with its nearest scan point, and one linear solve minimises the point-to-plane distances (the
plane of the face at the vertex), the five landmarks and a small pull towards zero coefficients.
Point-to-plane lets the face slide along the scan to where its shape fits, so it converges in a
few steps; a scan-to-face term is left out on purpose, since scan points beyond the template's
edge and the uneven vertex density pull vertices sideways (measured: 1.3 mm against 0.7 mm on
held-out ICT faces). Paper 1's decoders are not linear: their codes take Adam steps against the
robust two-sided Chamfer, the landmarks and a pull towards the network's codes.
(b) A displacement of each vertex along its normal against the Chamfer and landmarks, kept smooth
by the squared uniform Laplacian of the displacement, so scan noise does not come through and
vertices do not slide off their correspondence: what the decoders cannot express.
Nearest scan points come from one k-d tree per scan (the scan does not move), without gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial import cKDTree

from facepipe.models.losses import gather, neighbour_table, vertex_normals
from facepipe.models.network import FaceNet
from facepipe.pipeline.faces.template import Template
from facepipe.pipeline.geometry.nicp import landmark_offsets, landmark_vertices


class RefineConfig(BaseModel):
    """Steps, rates and weights of the refinement, in template units (the face spans about 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    basis_steps: int = Field(5, ge=0, description="Gauss-Newton steps on a basis decoder's coefficients")
    basis_threshold: float = Field(0.002, gt=0, description="squared distance beyond which a vertex is unpaired, basis steps")
    basis_prior: float = Field(1e-7, ge=0, description="pull of the coefficients towards zero (the bases are PCA-scaled)")
    basis_landmark_weight: float = Field(0.1, ge=0, description="the five landmarks against the mean point-to-plane term")
    latent_steps: int = Field(30, ge=0, description="Adam steps on the codes of paper 1's decoders")
    latent_lr: float = Field(0.05, gt=0)
    vertex_steps: int = Field(15, ge=0)
    vertex_lr: float = Field(0.002, gt=0, description="about 0.1 mm per step on a face of 100 mm per unit")
    latent_threshold: float = Field(0.01, gt=0, description="squared distance beyond which a pair is ignored, codes step")
    vertex_threshold: float = Field(0.001, gt=0, description="the same for the per-vertex step (training's threshold)")
    landmark_weight: float = Field(0.1, ge=0)
    code_weight: float = Field(1e-4, ge=0, description="pull towards the network's codes")
    smooth_weight: float = Field(2.0, ge=0, description="squared Laplacian of the displacement against the Chamfer")
    max_points: int = Field(8000, ge=16, description="scan points used (a fixed random subset)")
    seed: int = 0


class _Scans:
    """The scans' points as a tensor and a k-d tree each, built once."""

    def __init__(self, points: np.ndarray, max_points: int, seed: int, device: torch.device) -> None:
        rng = np.random.default_rng(seed)
        keep = [np.sort(rng.choice(len(p), max_points, replace=False)) if len(p) > max_points else np.arange(len(p))
                for p in points]
        self.points = torch.as_tensor(np.stack([p[k] for p, k in zip(points, keep, strict=True)]), dtype=torch.float32,
                                      device=device)
        self.arrays = [p.cpu().numpy() for p in self.points]  # for the per-step search, copied once
        self.trees = [cKDTree(p) for p in self.arrays]

    def nearest(self, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V) index of each vertex's nearest scan point and its squared distance, without gradient."""
        f = face.detach().cpu().numpy()
        found = [t.query(q, workers=1) for t, q in zip(self.trees, f, strict=True)]
        index = torch.as_tensor(np.stack([i for _, i in found]), device=face.device)
        return index, torch.as_tensor(np.stack([d for d, _ in found]) ** 2, dtype=face.dtype, device=face.device)

    def chamfer(self, face: torch.Tensor, threshold: float) -> torch.Tensor:
        """Two-sided squared Chamfer with pairs beyond `threshold` ignored, averaged over the batch."""
        p2s, _ = self.nearest(face)
        with torch.no_grad():
            f = face.detach().cpu().numpy()
            s2p = torch.as_tensor(np.stack([cKDTree(q).query(p, workers=1)[1] for q, p in zip(f, self.arrays, strict=True)]),
                                  device=face.device)
        d_ps = ((face - gather(self.points, p2s)) ** 2).sum(-1)
        d_sp = ((self.points - gather(face, s2p)) ** 2).sum(-1)
        return (d_ps * (d_ps <= threshold)).mean() + (d_sp * (d_sp <= threshold)).mean()


def _landmarks(face: torch.Tensor, ids: torch.Tensor, five: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`five`: the scan's landmarks less the template's landmark offsets, so the vertices are pulled there."""
    d = ((face[:, ids] - five) ** 2).sum(-1)
    return (d * valid).sum() / valid.sum().clamp_min(1)


def fit_bases(net: FaceNet, triangles: torch.Tensor, scans: _Scans, ids: torch.Tensor, five: torch.Tensor, valid: torch.Tensor,
              codes: tuple[torch.Tensor, torch.Tensor], config: RefineConfig) -> torch.Tensor:
    """(B, V, 3) faces of a basis decoder with their coefficients fitted to the scans (module docstring, (a))."""
    decoders = (net.identity_decoder, net.expression_decoder)
    basis = torch.cat([d.basis.weight for d in decoders], 1).double()  # type: ignore[union-attr]  # (3V, K)
    vertices, size = basis.shape[0] // 3, basis.shape[1]
    rows = basis.reshape(vertices, 3, size)
    rest = (net.mean.reshape(-1) + sum(d.basis.bias for d in decoders)).double().reshape(vertices, 3)  # type: ignore[union-attr]
    with torch.no_grad():
        coefficients = torch.cat([d.coefficients(c) for d, c in zip(decoders, codes, strict=True)], 1).double()  # type: ignore[union-attr]
    # the landmark and prior terms of the normal equations do not change from step to step
    fixed_a, fixed_b = [], []
    for b in range(len(coefficients)):
        lm = valid[b] > 0
        weight_lm = config.basis_landmark_weight / max(int(lm.sum()), 1)
        jac_lm = rows[ids[lm]].reshape(-1, size)
        res_lm = (five[b, lm].double() - rest[ids[lm]]).reshape(-1)
        fixed_a.append(weight_lm * jac_lm.T @ jac_lm + config.basis_prior * torch.eye(size, dtype=basis.dtype, device=basis.device))
        fixed_b.append(weight_lm * jac_lm.T @ res_lm)
    for _ in range(config.basis_steps):
        face = rest + (coefficients @ basis.T).reshape(-1, vertices, 3)
        normals = vertex_normals(face, triangles)
        nearest, dist2 = scans.nearest(face)
        paired = gather(scans.points, nearest).double()
        solved = []
        for b in range(len(face)):
            m = dist2[b] <= config.basis_threshold
            n = normals[b, m]
            jac = torch.einsum("vd,vdk->vk", n, rows[m])  # d(n . vertex)/d(coefficients)
            res = (n * (paired[b, m] - rest[m])).sum(-1)
            weight = 1.0 / max(int(m.sum()), 1)
            solved.append(torch.linalg.solve(weight * jac.T @ jac + fixed_a[b], weight * jac.T @ res + fixed_b[b]))
        coefficients = torch.stack(solved)
    return (rest + (coefficients @ basis.T).reshape(-1, vertices, 3)).float()


def _fit_codes(net: FaceNet, scans: _Scans, ids: torch.Tensor, five: torch.Tensor, valid: torch.Tensor,
               codes: tuple[torch.Tensor, torch.Tensor], config: RefineConfig) -> torch.Tensor:
    """(B, V, 3) faces of paper 1's decoders with their codes fitted to the scans (module docstring, (a))."""
    start = [c.detach() for c in codes]
    free = [c.clone().requires_grad_(True) for c in start]
    opt = torch.optim.Adam(free, lr=config.latent_lr)
    for _ in range(config.latent_steps):
        face = net.decode(*free)
        loss = (scans.chamfer(face, config.latent_threshold) + config.landmark_weight * _landmarks(face, ids, five, valid)
                + config.code_weight * sum(((c - c0) ** 2).mean() for c, c0 in zip(free, start, strict=True)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net.decode(*free)


def refine(net: FaceNet, template: Template, points: np.ndarray, five: np.ndarray, config: RefineConfig = RefineConfig(),
           codes: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """(B, P, 3) scan points and (B, 5, 3) five landmarks (NaN where missing), template frame ->
    (B, V, 3) refined faces; the network's weights are left untouched. `codes`: the encoder's
    codes of these points, when the caller has them already (encoding costs more than refining)."""
    device = next(net.parameters()).device
    scans = _Scans(points, config.max_points, config.seed, device)
    ids = torch.as_tensor(landmark_vertices(template), device=device)
    five_t = torch.as_tensor(np.nan_to_num(five - landmark_offsets(template)), dtype=torch.float32, device=device)
    triangles = torch.as_tensor(template.triangles, device=device)
    valid = torch.as_tensor(np.isfinite(five).all(-1), dtype=torch.float32, device=device)
    was_training = net.training
    net.eval()
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        if codes is None:
            with torch.no_grad():
                codes = net.encode(torch.as_tensor(points, dtype=torch.float32, device=device))
        if net.decoder == "basis":
            base = fit_bases(net, triangles, scans, ids, five_t, valid, codes, config)
        else:
            base = _fit_codes(net, scans, ids, five_t, valid, codes, config)
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        net.train(was_training)
    # (b) along each vertex's normal only: a sideways step would slide vertices over the surface,
    # nearer the scan but off their correspondence
    table, counts = neighbour_table(template.edges(), len(template.vertices))
    table, counts = table.to(device), counts.to(device)
    mask = (table >= 0).to(base.dtype)[None]
    normals = vertex_normals(base, triangles)
    height = torch.zeros(base.shape[:2], dtype=base.dtype, device=device, requires_grad=True)
    opt = torch.optim.Adam([height], lr=config.vertex_lr)
    for _ in range(config.vertex_steps):
        face = base + height[..., None] * normals
        lap = height - (height[:, table.clamp_min(0)] * mask).sum(2) / counts.clamp_min(1)[None]
        loss = (scans.chamfer(face, config.vertex_threshold) + config.landmark_weight * _landmarks(face, ids, five_t, valid)
                + config.smooth_weight * (lap ** 2).mean() * len(template.vertices) / 1000)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (base + height.detach()[..., None] * normals).cpu().numpy().astype(np.float64)
