"""The network of paper 1: a PointNet encoder and two MLP decoders, identity and expression.

A scan (any number of points) is encoded to a 1024-d global feature by shared per-point layers and
a max pool, then to an identity and an expression code. Each decoder maps its code to 3V numbers
through Tanh (the template frame is [-1, 1]); the face is identity shape + expression offset, in
template topology, so every scan gets a dense correspondence with the template for free.
"""

from __future__ import annotations

import torch
from torch import nn

POINT_LAYERS = (3, 64, 64, 64, 128, 1024)


class PointNetEncoder(nn.Module):
    """Shared per-point layers 3-64-64-64-128-1024 with batch norm and ReLU, then a max pool."""

    def __init__(self, layers: tuple[int, ...] = POINT_LAYERS) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for a, b in zip(layers[:-1], layers[1:], strict=True):
            blocks += [nn.Conv1d(a, b, 1, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*blocks)
        self.out_features = layers[-1]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, P, 3) -> (B, 1024); invariant to point order and count."""
        return self.layers(points.transpose(1, 2)).amax(dim=2)


class Decoder(nn.Module):
    """code -> 1024 (ReLU) -> 3V (Tanh), reshaped to (B, V, 3)."""

    def __init__(self, code: int, vertices: int, hidden: int = 1024) -> None:
        super().__init__()
        self.vertices = vertices
        self.net = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 3 * vertices), nn.Tanh())

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.net(code).view(-1, self.vertices, 3)


class FaceNet(nn.Module):
    """Encoder, identity and expression heads and decoders; `forward` returns the face and its parts."""

    def __init__(self, vertices: int, identity_dim: int = 512, expression_dim: int = 512, hidden: int = 1024) -> None:
        super().__init__()
        self.encoder = PointNetEncoder()
        self.identity_head = nn.Linear(self.encoder.out_features, identity_dim)
        self.expression_head = nn.Linear(self.encoder.out_features, expression_dim)
        self.identity_decoder = Decoder(identity_dim, vertices, hidden)
        self.expression_decoder = Decoder(expression_dim, vertices, hidden)

    def encode(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.encoder(points)
        return self.identity_head(feature), self.expression_head(feature)

    def forward(self, points: torch.Tensor, with_expression: bool = True) -> dict[str, torch.Tensor]:
        identity_code, expression_code = self.encode(points)
        identity = self.identity_decoder(identity_code)
        out = {"identity_code": identity_code, "expression_code": expression_code, "identity": identity}
        if with_expression:
            out["expression"] = self.expression_decoder(expression_code)
            out["face"] = identity + out["expression"]
        else:
            out["face"] = identity
        return out
