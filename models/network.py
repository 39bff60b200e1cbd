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


class BasisDecoder(nn.Module):
    """code -> hidden (ReLU) -> `size` coefficients -> offsets through a linear basis of 3V shapes.

    The coefficient layer starts at zero, so an untrained decoder adds nothing to the template; the
    basis (a trainable linear layer) starts from `set_basis`, a PCA of the training faces, so the
    decoder is a smooth linear model from the first steps and training refines it.
    """

    def __init__(self, code: int, vertices: int, hidden: int = 1024, size: int = 64) -> None:
        super().__init__()
        self.vertices = vertices
        self.coefficients = nn.Sequential(nn.Linear(code, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, size))
        self.basis = nn.Linear(size, 3 * vertices)
        nn.init.zeros_(self.coefficients[-1].weight)
        nn.init.zeros_(self.coefficients[-1].bias)
        nn.init.zeros_(self.basis.bias)

    @torch.no_grad()
    def set_basis(self, basis: torch.Tensor) -> None:
        """(size, 3V) basis shapes (rows), e.g. principal directions scaled by their deviation."""
        self.basis.weight.copy_(basis.T.to(self.basis.weight))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.basis(self.coefficients(code)).view(-1, self.vertices, 3)


class FaceNet(nn.Module):
    """Encoder, identity and expression heads and decoders; `forward` returns the face and its parts.

    `decoder="paper"` is paper 1's (the face is the sum of two Tanh MLP outputs); `"basis"` adds
    the decoders' offsets to `mean` (the template, not saved in the state dict: it comes with the
    template), through bases set by `set_bases`.
    """

    def __init__(self, vertices: int, identity_dim: int = 512, expression_dim: int = 512, hidden: int = 1024,
                 decoder: str = "paper", basis_size: int = 64, mean: torch.Tensor | None = None) -> None:
        super().__init__()
        self.encoder = PointNetEncoder()
        self.identity_head = nn.Linear(self.encoder.out_features, identity_dim)
        self.expression_head = nn.Linear(self.encoder.out_features, expression_dim)
        self.decoder = decoder
        if decoder == "paper":
            self.identity_decoder: nn.Module = Decoder(identity_dim, vertices, hidden)
            self.expression_decoder: nn.Module = Decoder(expression_dim, vertices, hidden)
        elif decoder == "basis":
            self.identity_decoder = BasisDecoder(identity_dim, vertices, hidden, basis_size)
            self.expression_decoder = BasisDecoder(expression_dim, vertices, hidden, basis_size)
        else:
            raise ValueError(f"unknown decoder {decoder!r} (paper or basis)")
        if mean is None or decoder == "paper":
            mean = torch.zeros(vertices, 3)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(vertices, 3), persistent=False)

    def decode(self, identity_code: torch.Tensor, expression_code: torch.Tensor) -> torch.Tensor:
        """The face of given codes (what test-time refinement optimises)."""
        return self.mean + self.identity_decoder(identity_code) + self.expression_decoder(expression_code)

    def set_bases(self, identity: torch.Tensor, expression: torch.Tensor) -> None:
        self.identity_decoder.set_basis(identity)  # type: ignore[operator]
        self.expression_decoder.set_basis(expression)  # type: ignore[operator]

    def encode(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.encoder(points)
        return self.identity_head(feature), self.expression_head(feature)

    def forward(self, points: torch.Tensor, with_expression: bool = True) -> dict[str, torch.Tensor]:
        identity_code, expression_code = self.encode(points)
        identity = self.mean + self.identity_decoder(identity_code)
        out = {"identity_code": identity_code, "expression_code": expression_code, "identity": identity}
        if with_expression:
            out["expression"] = self.expression_decoder(expression_code)
            out["face"] = identity + out["expression"]
        else:
            out["face"] = identity
        return out
