"""The network's shapes and the losses on cases with known values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facepipe.models.losses import (chamfer, edge_loss, edge_lengths, laplacian_loss, nearest, neighbour_table, normal_loss,
                                    vertex_l1, vertex_normals)
from facepipe.models.network import FaceNet


def grid(n: int = 12, h: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A flat n x n grid (1, V, 3) in the z = 0 plane, its triangles and its edges."""
    xs = torch.arange(n, dtype=torch.float64) * h
    y, x = torch.meshgrid(xs, xs, indexing="ij")
    v = torch.stack([x, y, torch.zeros_like(x)], -1).reshape(1, -1, 3)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    tri = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    edges = np.unique(np.sort(tri[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0)
    return v, torch.as_tensor(tri), edges


def test_facenet_shapes_any_point_count_and_order() -> None:
    torch.manual_seed(0)
    net = FaceNet(vertices=50, identity_dim=16, expression_dim=8, hidden=32).eval()
    pts = torch.rand(2, 300, 3) * 2 - 1
    out = net(pts)
    assert out["face"].shape == (2, 50, 3) and out["identity_code"].shape == (2, 16) and out["expression_code"].shape == (2, 8)
    assert torch.allclose(out["face"], out["identity"] + out["expression"])
    assert out["face"].abs().max() <= 2.0  # two Tanh outputs
    shuffled = pts[:, torch.randperm(300)]
    assert torch.allclose(net(shuffled)["face"], out["face"], atol=1e-6)  # a set function
    assert net(pts[:, :123])["face"].shape == (2, 50, 3)
    assert "expression" not in net(pts, with_expression=False)


def test_full_size_network_has_the_papers_parameter_count() -> None:
    with torch.device("meta"):
        net = FaceNet(vertices=29_495)
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - 184e6) / 184e6 < 0.01, count  # "about 184 M parameters"


def test_chamfer_of_a_set_with_itself_is_zero_and_of_a_small_shift_is_twice_its_square() -> None:
    v, _, _ = grid()
    loss, index = chamfer(v, v.clone())
    assert loss.item() == 0.0 and torch.equal(index[0], torch.arange(v.shape[1]))
    shifted = v + torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64)
    loss, _ = chamfer(shifted, v)
    assert loss.item() == pytest.approx(2 * 0.01**2, rel=1e-9)
    far = v + torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    assert chamfer(far, v, threshold=0.001)[0].item() == 0.0  # every pair beyond the robust threshold is ignored
    v.requires_grad_(True)
    chamfer(v, shifted.detach())[0].backward()
    assert torch.allclose(v.grad[0, :, 0], torch.full((v.shape[1],), -2 * 2 * 0.01 / v.shape[1], dtype=torch.float64))


def test_nearest_matches_brute_force() -> None:
    rng = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 200, 3, generator=rng), torch.rand(2, 150, 3, generator=rng)
    assert torch.equal(nearest(a, b), torch.cdist(a, b).argmin(-1))
    assert torch.equal(nearest(a, b, chunk=64, method="cdist"), nearest(a, b, method="tree"))  # the GPU way, run on CPU


def test_edge_normal_vertex_and_laplacian_losses_on_known_cases() -> None:
    v, tri, edges = grid()
    e = torch.as_tensor(edges)
    ref = edge_lengths(v, e)
    assert edge_loss(v * 1.25, ref, e).item() == pytest.approx(0.25)  # a uniformly scaled mesh: every ratio is 1.25
    normals = vertex_normals(v, tri)
    assert torch.allclose(normals.abs(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(normals))
    assert normal_loss(normals, normals).item() == 0.0 and normal_loss(normals, -normals).item() == pytest.approx(2.0)
    assert vertex_l1(v + 0.5, v).item() == pytest.approx(0.5)
    table, counts = neighbour_table(edges, v.shape[1])
    interior = torch.as_tensor([i * 12 + j for i in range(1, 11) for j in range(1, 11)])
    assert laplacian_loss(v, table, counts, interior).item() == pytest.approx(0.0, abs=1e-20)  # flat and regular
    bumped = v.clone()
    bumped[0, 5 * 12 + 5, 2] = 0.3
    assert laplacian_loss(bumped, table, counts, interior).item() > 0


def test_normal_ray_partners_follow_the_normal_not_the_closest_point() -> None:
    from facepipe.models.losses import ray_partners

    v, _, _ = grid(n=41, h=0.05)  # a plane z = 0 from (0, 0) to (2, 2)
    scan = v.float()
    pred = torch.tensor([[[1.0, 1.0, 0.3]]])
    tilted = torch.nn.functional.normalize(torch.tensor([[[0.6, 0.0, 0.8]]]), dim=-1)
    hit = scan[0, ray_partners(pred, tilted, scan, k=200)[0, 0]]
    assert torch.equal(ray_partners(pred, tilted, scan, k=200, method="cdist"), ray_partners(pred, tilted, scan, k=200, method="tree"))
    assert torch.allclose(hit, torch.tensor([1.0 - 0.3 * 0.75, 1.0, 0.0]), atol=0.026)  # where the line meets the plane
    assert torch.allclose(scan[0, nearest(pred, scan)[0, 0]], torch.tensor([1.0, 1.0, 0.0]))  # the closest point differs


def test_an_untrained_basis_decoder_outputs_the_template() -> None:
    torch.manual_seed(0)
    template = torch.rand(50, 3) * 2 - 1
    net = FaceNet(50, 16, 8, 32, decoder="basis", basis_size=6, mean=template).eval()
    net.set_bases(torch.randn(6, 150), torch.randn(6, 150))
    out = net(torch.rand(3, 200, 3) * 2 - 1)
    assert torch.equal(out["face"], template.expand(3, -1, -1))
    assert "mean" not in net.state_dict()  # the template travels with the template, not the weights
    with pytest.raises(ValueError, match="unknown decoder"):
        FaceNet(50, decoder="mlp")


def test_pca_basis_spans_the_training_offsets() -> None:
    from facepipe.models.basis import pca_basis

    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, 40 * 3))
    offsets = (rng.normal(size=(200, 3)) @ directions).reshape(200, 40, 3)
    basis = pca_basis(offsets, 8)
    assert basis.shape == (8, 120) and np.allclose(basis[3:], 0)  # rank 3: the rest is zero
    q, _ = np.linalg.qr(basis[:3].T)
    flat = offsets.reshape(200, -1)
    assert np.abs(flat - flat @ q @ q.T).max() < 1e-9
    # scaled by the deviation: unit-variance codes reproduce the data's spread
    assert np.isclose((basis**2).sum(), (flat**2).sum() / 200)
