"""Test-time refinement: the network's face, fitted to the scan itself.

The network gives a face of the right kind in one pass but does not lie on the scan (a few mm
off after short training). Two short fits, in torch (CPU and GPU alike), take it there:
(a) the face within the decoders' space. A basis decoder's face is linear in its bases'
coefficients, so they are fitted by Gauss-Newton from the network's, with a similarity pose of
the face: each step pairs every vertex with its nearest scan point (within a distance that
shrinks from step to step), and one linear solve minimises the point-to-plane distances (the
plane of the face at the vertex), the five landmarks and a small pull towards zero coefficients.
Point-to-plane lets the face slide along the scan to where its shape fits, so it converges in a
few steps. A damping of the coefficients' steps that shrinks over the steps (`basis_damping`) lets
the first steps move the pose and the broad shape only, so a start a few mm off (a depth frame's)
can take pairs from further without their locking the shape. A scan-to-face term (`scan_weight`)
pairs each scan point with its nearest vertex, point-to-plane, and leaves out points nearest to a
rim vertex (beyond the face's edge); it averages a sensor's noise, which the face-to-scan pairs do
not (depth frames: 1.68 -> 1.50 mm pose-fitted from sensor depth, 0.97 -> 0.73 from clean depth).
On scans too (held-out ICT faces in the scanners' layouts 0.95 -> 0.84 mm, the recipe's held-out
synthetic scans 0.69 -> 0.53 mm): as a point-to-point Chamfer term without the rim, scan points
past the template's edge and the uneven vertex density had pulled vertices sideways (1.3 mm
against 0.7 mm). It follows the scan faithfully, a sensor's bias too: a depth frame's fit uses it
on depth that is clean or read through the run's learnt correction.
Paper 1's decoders are not linear: their codes take Adam steps against the robust two-sided
Chamfer, the landmarks and a pull towards the network's codes.
(b) A height of each vertex along its normal, towards its nearest scan point, kept smooth by the
squared uniform Laplacian of the heights, so scan noise does not come through and vertices do not
slide off their correspondence: what the decoders cannot express. The heights are one linear solve
per pairing (`normal_step`).
Nearest scan points come from one k-d tree per scan (the scan does not move), without gradient.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial import cKDTree

from facepipe.models.losses import gather, vertex_normals
from facepipe.models.network import FaceNet
from facepipe.pipeline.faces.template import Template
from facepipe.pipeline.geometry.nicp import landmark_offsets, landmark_vertices


class RefineConfig(BaseModel):
    """Steps, rates and weights of the refinement, in template units (the face spans about 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    basis_steps: int = Field(8, ge=0, description="Gauss-Newton steps on a basis decoder's coefficients")
    basis_threshold_start: float = Field(0.0005, gt=0, description="squared distance beyond which a vertex is unpaired, "
                                         "first basis step (2.2 mm on a face of 100 mm per unit)")
    basis_threshold: float = Field(0.0002, gt=0, description="the same, last basis step (1.4 mm); the steps between "
                                   "shrink it geometrically, so the far pairs of a rough start (scan edges, the "
                                   "shadow under the nose) stop pulling once the face is close")
    basis_prior: float = Field(1e-7, ge=0, description="pull of the coefficients towards zero (the bases are PCA-scaled)")
    basis_damping: float = Field(0.0, ge=0, description="Levenberg-Marquardt damping of the coefficients' step at the "
                                 "first basis step, shrinking geometrically to basis_prior at the last (0, or a prior "
                                 "of 0: none): the first steps move the pose and the broad shape, the later ones the "
                                 "detail, so a start a few mm off is not locked into the shape by its first pairs")
    basis_landmark_weight: float = Field(0.1, ge=0, description="the five landmarks against the mean point-to-plane term")
    detected_trust: float = Field(0.01, ge=0, le=1, description="share of the landmark weights given to detected "
                                  "landmarks (MediaPipe's are 2-3 mm off; a database's annotations are not)")
    scan_weight: float = Field(10.0, ge=0, description="basis decoders: the scan-to-face term (each scan point to its "
                               "nearest vertex, point-to-plane, rim vertices left out) against the face-to-scan term: a "
                               "sensor's noise averages out in it (0: none); the landmarks' weight grows with it, so they "
                               "keep their share. Mean vertex error, the reference run: held-out ICT faces in the scanners' "
                               "layouts (MediaPipe landmarks) 0.95 mm at 0, 0.84 at 3 and at 10; the recipe's held-out "
                               "synthetic scans (annotated) 0.69 / 0.56 / 0.53 mm")
    latent_steps: int = Field(30, ge=0, description="Adam steps on the codes of paper 1's decoders")
    latent_lr: float = Field(0.05, gt=0)
    vertex_steps: int = Field(3, ge=0, description="pairings of the per-vertex step, each one linear solve")
    latent_threshold: float = Field(0.01, gt=0, description="squared distance beyond which a pair is ignored, codes step")
    vertex_threshold: float = Field(0.001, gt=0, description="the same for the per-vertex step (training's threshold)")
    landmark_weight: float = Field(0.1, ge=0)
    code_weight: float = Field(1e-4, ge=0, description="pull towards the network's codes")
    smooth_weight: float = Field(100.0, ge=0, description="squared Laplacian of the heights against the point-to-plane "
                                 "term (features narrower than about smooth_weight ** 0.25 vertices are smoothed)")
    damping: float = Field(0.01, ge=0, description="pull of each height towards 0: unpaired vertices stay on the face")
    solver_iterations: int = Field(200, ge=1, description="conjugate-gradient iterations of each per-vertex solve")
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

    def nearest(self, face: torch.Tensor, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V) index of each vertex's nearest scan point and its squared distance, without gradient;
        `face` holds the faces of scans first, first + 1, ..."""
        f = face.detach().cpu().numpy()
        found = [t.query(q, workers=1) for t, q in zip(self.trees[first:first + len(f)], f, strict=True)]
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


def _landmarks(face: torch.Tensor, ids: torch.Tensor, five: torch.Tensor, valid: torch.Tensor, trust: torch.Tensor) -> torch.Tensor:
    """`five`: the scan's landmarks less the template's landmark offsets, so the vertices are pulled
    there; `trust`: (B,) weight of each scan's landmarks."""
    d = ((face[:, ids] - five) ** 2).sum(-1)
    return (d * valid * trust[:, None]).sum() / valid.sum().clamp_min(1)


def _rotation(omega: torch.Tensor) -> torch.Tensor:
    """(3, 3) rotation of the axis-angle vector `omega`: the exponential of its cross-product matrix."""
    x, y, z = omega
    zero = torch.zeros((), dtype=omega.dtype, device=omega.device)
    return torch.linalg.matrix_exp(torch.stack([torch.stack([zero, -z, y]), torch.stack([z, zero, -x]), torch.stack([-y, x, zero])]))


def _plane_rows(m: torch.Tensor, target: torch.Tensor, face: torch.Tensor, normals: torch.Tensor, centre: torch.Tensor,
                rows: torch.Tensor, rotation: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobian (M, K + 7) and residuals (M,) of the point-to-plane distances of `target` (M, 3) from
    the vertices `m` (a mask or ids) along their normals; d(face)/d(unknowns): s R B, omega x arm, I, arm."""
    n, arm = normals[m], face[m] - centre
    jac = torch.cat([scale * torch.einsum("vj,vjk->vk", n @ rotation, rows[m]), torch.cross(arm, n, dim=-1), n,
                     (n * arm).sum(-1, keepdim=True)], 1)  # n . (s R B) = (n^T R) . s B, without the rotated basis
    return jac, (n * (target - face[m])).sum(-1)


def _scan_rows(points: np.ndarray, threshold: float, face: torch.Tensor, normals: torch.Tensor, centre: torch.Tensor,
               rows: torch.Tensor, rotation: torch.Tensor, scale: torch.Tensor,
               rim: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scan-to-face term: each scan point paired with its nearest vertex (none past `threshold` or
    at the rim), summed per vertex. The sum of a vertex's squared point-to-plane distances is its count
    times that of the pairs' mean point, plus a constant: one row per paired vertex, weighted by
    `count`. Unlike a vertex's nearest scan point, which among noisy points is the one whose noise
    brings it nearest (a noise band of the sensor's width holds a face anywhere inside it), a vertex's
    mean of the points nearest to it averages their noise."""
    dist, index = cKDTree(face.detach().cpu().numpy()).query(points, workers=1)
    keep = (dist ** 2 <= threshold) & ~rim[index]
    vertices = len(face)
    count = np.bincount(index[keep], minlength=vertices).astype(np.float64)
    total = np.stack([np.bincount(index[keep], points[keep, d], minlength=vertices) for d in range(3)], 1)
    ids = np.flatnonzero(count)
    mean = torch.as_tensor(total[ids] / count[ids, None], dtype=face.dtype, device=face.device)
    ids_t = torch.as_tensor(ids, device=face.device)
    jac, res = _plane_rows(ids_t, mean, face, normals, centre, rows, rotation, scale)
    return jac, res, torch.as_tensor(count[ids], dtype=face.dtype, device=face.device)


def fit_bases(net: FaceNet, triangles: torch.Tensor, scans: _Scans, ids: torch.Tensor, five: torch.Tensor, valid: torch.Tensor,
              trust: torch.Tensor, codes: tuple[torch.Tensor, torch.Tensor], config: RefineConfig,
              rim: np.ndarray) -> torch.Tensor:
    """(B, V, 3) faces of a basis decoder with their coefficients, and a similarity pose of each face,
    fitted to the scans (module docstring, (a)). The pose is there because a scan's frame comes from
    its five landmarks: detected ones (MediaPipe) are 2-3 mm off, which leaves the scan turned, moved
    and scaled against the faces the bases were made from, and bases have no mode for that. `rim`:
    (V,) the template's rim vertices (the scan-to-face term leaves out points nearest to them)."""
    decoders = (net.identity_decoder, net.expression_decoder)
    basis = torch.cat([d.basis.weight for d in decoders], 1).double()  # type: ignore[union-attr]  # (3V, K)
    vertices, size = basis.shape[0] // 3, basis.shape[1]
    rows = basis.reshape(vertices, 3, size)
    rest = (net.mean.reshape(-1) + sum(d.basis.bias for d in decoders)).double().reshape(vertices, 3)  # type: ignore[union-attr]
    with torch.no_grad():
        start = torch.cat([d.coefficients(c) for d, c in zip(decoders, codes, strict=True)], 1).double()  # type: ignore[union-attr]
    eye = torch.eye(3, dtype=basis.dtype, device=basis.device)
    unknowns = size + 7  # coefficient steps, then rotation (3), translation (3), log-scale (1)
    prior = torch.zeros(unknowns, unknowns, dtype=basis.dtype, device=basis.device)
    prior[size:, size:] = 1e-9 * torch.eye(7, dtype=basis.dtype, device=basis.device)  # keeps the solve regular
    thresholds = np.geomspace(config.basis_threshold_start, config.basis_threshold, config.basis_steps)
    dampings = (np.geomspace(config.basis_damping, config.basis_prior, config.basis_steps)
                if config.basis_damping > config.basis_prior > 0 else np.full(config.basis_steps, config.basis_prior))
    out = []
    for b in range(len(start)):
        coefficients, rotation = start[b], eye.clone()
        scale, shift = torch.ones((), dtype=basis.dtype, device=basis.device), torch.zeros(3, dtype=basis.dtype, device=basis.device)
        lm = valid[b] > 0
        # the landmarks keep their share against the two data terms together
        weight_lm = config.basis_landmark_weight * (1.0 + config.scan_weight) * float(trust[b]) / max(int(lm.sum()), 1)
        for threshold, damping in zip(thresholds, dampings, strict=True):
            prior[:size, :size] = damping * torch.eye(size, dtype=basis.dtype, device=basis.device)
            shape = rest + (rows @ coefficients)
            face = scale * shape @ rotation.T + shift
            centre = face.mean(0)
            normals = vertex_normals(face[None].float(), triangles)[0].double()
            nearest, dist2 = scans.nearest(face[None].float(), b)
            m = dist2[0] <= threshold
            jac, res = _plane_rows(m, gather(scans.points[b:b + 1], nearest)[0].double()[m], face, normals, centre, rows, rotation, scale)
            weight = 1.0 / max(int(m.sum()), 1)
            a, rhs = weight * jac.T @ jac + prior, weight * jac.T @ res
            if config.scan_weight > 0:
                jac, res, count = _scan_rows(scans.arrays[b], threshold, face, normals, centre, rows, rotation, scale, rim)
                weight = config.scan_weight / max(float(count.sum()), 1.0)
                a, rhs = a + weight * jac.T @ (count[:, None] * jac), rhs + weight * jac.T @ (count * res)
            rhs[:size] -= config.basis_prior * coefficients
            if lm.any():
                k = ids[lm]
                arm_lm = face[k] - centre
                cross = torch.stack([torch.cross(arm_lm, eye[d].expand_as(arm_lm), dim=-1) for d in range(3)], 1)  # (L, 3, 3)
                jac_lm = torch.cat([scale * torch.einsum("ij,vjk->vik", rotation, rows[k]), cross, eye.expand(len(k), 3, 3),
                                    arm_lm[..., None]], 2).reshape(-1, unknowns)
                res_lm = (five[b, lm].double() - face[k]).reshape(-1)
                a, rhs = a + weight_lm * jac_lm.T @ jac_lm, rhs + weight_lm * jac_lm.T @ res_lm
            step = torch.linalg.solve(a, rhs)
            turn, grow = _rotation(step[size:size + 3]), torch.exp(step[-1])
            coefficients = coefficients + step[:size]
            scale, rotation = grow * scale, turn @ rotation
            shift = grow * (shift - centre) @ turn.T + centre + step[size + 3:size + 6]
        out.append(scale * (rest + rows @ coefficients) @ rotation.T + shift)
    return torch.stack(out).float()


def _fit_codes(net: FaceNet, scans: _Scans, ids: torch.Tensor, five: torch.Tensor, valid: torch.Tensor, trust: torch.Tensor,
               codes: tuple[torch.Tensor, torch.Tensor], config: RefineConfig) -> torch.Tensor:
    """(B, V, 3) faces of paper 1's decoders with their codes fitted to the scans (module docstring, (a))."""
    start = [c.detach() for c in codes]
    free = [c.clone().requires_grad_(True) for c in start]
    opt = torch.optim.Adam(free, lr=config.latent_lr)
    for _ in range(config.latent_steps):
        face = net.decode(*free)
        loss = (scans.chamfer(face, config.latent_threshold) + config.landmark_weight * _landmarks(face, ids, five, valid, trust)
                + config.code_weight * sum(((c - c0) ** 2).mean() for c, c0 in zip(free, start, strict=True)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net.decode(*free)


def refine(net: FaceNet, template: Template, points: np.ndarray, five: np.ndarray, config: RefineConfig = RefineConfig(),
           codes: tuple[torch.Tensor, torch.Tensor] | None = None, detected: np.ndarray | None = None) -> np.ndarray:
    """(B, P, 3) scan points and (B, 5, 3) five landmarks (NaN where missing), template frame ->
    (B, V, 3) refined faces; the network's weights are left untouched. `codes`: the encoder's
    codes of these points, when the caller has them already (encoding costs more than refining).
    `detected`: (B,) scans whose landmarks were detected, which pull with `detected_trust` of the
    weight (measured on ICT faces in scanner layouts with MediaPipe landmarks: 0.84-0.99 mm against
    1.67-2.03 mm at full weight; on annotated ones full weight is better, 0.68 against 0.73 mm)."""
    device = next(net.parameters()).device
    scans = _Scans(points, config.max_points, config.seed, device)
    ids = torch.as_tensor(landmark_vertices(template), device=device)
    five_t = torch.as_tensor(np.nan_to_num(five - landmark_offsets(template)), dtype=torch.float32, device=device)
    triangles = torch.as_tensor(template.triangles, device=device)
    valid = torch.as_tensor(np.isfinite(five).all(-1), dtype=torch.float32, device=device)
    found = np.zeros(len(points), bool) if detected is None else np.asarray(detected, bool)
    trust = torch.as_tensor(np.where(found, config.detected_trust, 1.0), dtype=torch.float32, device=device)
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
            base = fit_bases(net, triangles, scans, ids, five_t, valid, trust, codes, config, template.rim)
        else:
            base = _fit_codes(net, scans, ids, five_t, valid, trust, codes, config)
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        net.train(was_training)
    return normal_step(base, template, scans, config)


_BENDING: dict[tuple[str, float, float, str], torch.Tensor] = {}


def _bending(template: Template, smooth: float, damping: float, device: torch.device) -> torch.Tensor:
    """Sparse (V, V) smooth * L^T L + damping * I, L the uniform Laplacian of the template's mesh;
    built once per template and weights (correspond refines one scan per call, and building it costs
    a tenth of a refinement)."""
    key = (template.id, smooth, damping, str(device))
    if key not in _BENDING:
        _BENDING[key] = _build_bending(template, smooth, damping, device)
    return _BENDING[key]


def _build_bending(template: Template, smooth: float, damping: float, device: torch.device) -> torch.Tensor:
    from scipy import sparse

    n, edges = len(template.vertices), template.edges()
    adjacency = sparse.coo_matrix((np.ones(2 * len(edges)), (edges.ravel(), edges[:, ::-1].ravel())), shape=(n, n)).tocsr()
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    lap = sparse.identity(n, format="csr") - sparse.diags(1.0 / np.maximum(degree, 1)) @ adjacency
    m = (smooth * (lap.T @ lap) + damping * sparse.identity(n)).tocsr()
    with warnings.catch_warnings():  # CSR is "beta" in torch, and 25x faster than COO here (0.3 ms a product)
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return torch.sparse_csr_tensor(torch.as_tensor(m.indptr.astype(np.int64)), torch.as_tensor(m.indices.astype(np.int64)),
                                       torch.as_tensor(m.data), size=(n, n), dtype=torch.float64, device=device,
                                       check_invariants=True)


def normal_step(base: torch.Tensor, template: Template, scans: _Scans, config: RefineConfig) -> np.ndarray:
    """(b) of the module docstring: heights h along the normals of `base` minimising
    sum_v w_v (h_v - n_v.(q_v - x_v))^2 + smooth * |L h|^2 + damping * |h|^2, q_v the vertex's nearest
    scan point and w_v whether it is near enough. A linear solve (conjugate gradients, batched) rather
    than gradient steps: Adam's steps are the same size at every vertex, which raised creases and
    dimples where a few vertices had far to go (the nose ridge, the landmark vertices); the solve
    moves each region as far as its scan asks and no further, smoothly. Only along normals, since a
    sideways step slides a vertex over the surface, nearer the scan but off its correspondence; no
    landmark term, since (a) has placed the landmarks and one vertex pulled alone makes a dimple."""
    device = base.device
    bending = _bending(template, config.smooth_weight, config.damping, device)
    triangles = torch.as_tensor(template.triangles, device=device)
    base = base.double()
    normals = vertex_normals(base, triangles)
    height = torch.zeros(base.shape[:2], dtype=base.dtype, device=device)
    for _ in range(config.vertex_steps):
        face = base + height[..., None] * normals
        nearest, dist2 = scans.nearest(face)
        weight = (dist2 <= config.vertex_threshold).to(base.dtype)
        target = (normals * (gather(scans.points, nearest).double() - base)).sum(-1)

        def apply_a(h: torch.Tensor, w: torch.Tensor = weight) -> torch.Tensor:
            return w * h + (bending @ h.T).T

        height = _conjugate_gradients(apply_a, weight * target, height, config.solver_iterations)
    return (base + height[..., None] * normals).cpu().numpy().astype(np.float64)


def _conjugate_gradients(apply_a: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, x: torch.Tensor,
                         iterations: int) -> torch.Tensor:
    """Solves A x = b for each row of the batch (A symmetric positive definite), from `x`."""
    r = b - apply_a(x)
    p, rr = r.clone(), (r * r).sum(-1, keepdim=True)
    enough = 1e-12 * (b * b).sum(-1, keepdim=True) + 1e-30  # residual 1e-6 of the right-hand side's
    for _ in range(iterations):
        ap = apply_a(p)
        alpha = rr / (p * ap).sum(-1, keepdim=True).clamp_min(1e-300)
        x, r = x + alpha * p, r - alpha * ap
        new = (r * r).sum(-1, keepdim=True)
        if bool((new <= enough).all()):
            break
        p, rr = r + new / rr.clamp_min(1e-300) * p, new
    return x
