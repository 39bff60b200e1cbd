"""Paper 2's image encoders: ResNet branches that regress a trained run's codes, a pose and, for RGB, light.

Each input kind has its own stem (RGB: 3 channels, RGB-D: RGB + camera XYZ, depth: XYZ), the
branches share the next ResNet stages (paper 2 shares early layers), then each has its own last
stages and head. A head gives standardised identity and expression codes (the frozen decoders of a
`facepipe train` run make the face in the template frame), a similarity to camera space (a rotation
in the 6-D form, a translation in mm, a log-scale: the template frame normalises each face's size,
so its size lives there) and, for RGB, an albedo and 3-band SH light. Heads start at zero: an
untrained encoder gives the mean codes, a frontal face at the anchor, at the mean size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from facepipe.models.vision import torchvision
from facepipe.schemas.encoder import CHANNELS

FRONTAL = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # face frame (y up, z out) -> OpenCV camera
SH_CONST = (0.282095, 0.488603, 1.092548, 0.315392, 0.546274)
POSE = 6 + 3 + 1  # rotation (6-D), translation, log-scale
LIGHT = 3 + 27  # albedo, SH (9 x RGB)


def rotation_6d(x: torch.Tensor) -> torch.Tensor:
    """(B, 6) -> (B, 3, 3) rotations by Gram-Schmidt of two columns (Zhou et al.: continuous, unlike Euler angles)."""
    a = nn.functional.normalize(x[:, :3], dim=-1)
    b = nn.functional.normalize(x[:, 3:] - (a * x[:, 3:]).sum(-1, keepdim=True) * a, dim=-1)
    return torch.stack([a, b, torch.cross(a, b, dim=-1)], -1)


def sh_basis(n: torch.Tensor) -> torch.Tensor:
    """(..., 9) real spherical harmonics up to band 2 at unit normals (as render-rgbd lights its faces)."""
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    c0, c1, c2, c3, c4 = SH_CONST
    return torch.stack([torch.full_like(x, c0), c1 * y, c1 * z, c1 * x, c2 * x * y, c2 * y * z, c3 * (3 * z * z - 1),
                        c2 * x * z, c4 * (x * x - y * y)], -1)


def _resnet(name: str, weights: dict[str, torch.Tensor] | None) -> nn.Module:
    net = getattr(torchvision().models, name)(weights=None)  # never downloads
    if weights is not None:
        net.load_state_dict(weights)
    return net


def _stem(channels: int, reference: nn.Module) -> nn.Sequential:
    """A ResNet stem for `channels` inputs; the reference's first filters copied over RGB (and repeated
    for XYZ), so a local ImageNet file helps every branch."""
    conv = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        w = reference.conv1.weight
        conv.weight.copy_(w.repeat(1, channels // 3, 1, 1) / (channels // 3))
    bn = nn.BatchNorm2d(64)
    bn.load_state_dict(reference.bn1.state_dict())
    return nn.Sequential(conv, bn, nn.ReLU(inplace=True), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


class FaceEncoder(nn.Module):
    """Branches for `modalities`; `forward({modality: images})` runs each given branch once (one call
    per step, as DDP wants), `branch(images, modality)` one of them."""

    def __init__(self, modalities: Sequence[str], identity_dim: int, expression_dim: int, backbone: str = "resnet18",
                 shared_stages: int = 2, weights: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.identity_dim, self.expression_dim = identity_dim, expression_dim
        trunk = _resnet(backbone, weights)
        stages = [trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4]
        self.stems = nn.ModuleDict({m: _stem(CHANNELS[m], trunk) for m in self.modalities})
        self.shared = nn.Sequential(*stages[:shared_stages])
        self.branches = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        features = trunk.fc.in_features
        for m in self.modalities:
            own = _resnet(backbone, weights)
            self.branches[m] = nn.Sequential(*[own.layer1, own.layer2, own.layer3, own.layer4][shared_stages:],
                                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
            head = nn.Linear(features, identity_dim + expression_dim + POSE + (LIGHT if m == "rgb" else 0))
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
            self.heads[m] = head
        self.register_buffer("code_mean", torch.zeros(identity_dim + expression_dim))
        self.register_buffer("code_std", torch.ones(identity_dim + expression_dim))
        self.register_buffer("scale_mm", torch.tensor(100.0))  # mean mm per template unit of the training faces
        self.register_buffer("distance_mm", torch.tensor(400.0))  # their mean distance: where RGB predictions start

    @torch.no_grad()
    def set_mean_offset(self, modality: str, offset_mm: np.ndarray) -> None:
        """Start a branch at the training faces' mean offset from their anchor (the XYZ centroid lies
        behind the nose, the template origin elsewhere)."""
        k = self.identity_dim + self.expression_dim
        self.heads[modality].bias[k + 6:k + 9] = torch.as_tensor(offset_mm / 100.0, dtype=torch.float32)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        return {m: self.branch(x, m) for m, x in inputs.items()}

    def branch(self, images: torch.Tensor, modality: str) -> dict[str, torch.Tensor]:
        h = self.heads[modality](self.branches[modality](self.shared(self.stems[modality](images)))).float()
        k = self.identity_dim + self.expression_dim
        z = h[:, :k]
        codes = self.code_mean + self.code_std * z
        r6 = h[:, k:k + 6] + torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], device=h.device)
        out = {"z": z, "identity_code": codes[:, :self.identity_dim], "expression_code": codes[:, self.identity_dim:],
               "rotation": rotation_6d(r6) @ FRONTAL.to(h.device), "offset_mm": 100.0 * h[:, k + 6:k + 9],
               "scale_mm": self.scale_mm * torch.exp(0.1 * h[:, k + 9])}
        if modality == "rgb":
            out["albedo"] = torch.sigmoid(h[:, k + 10:k + 13] + 0.6)  # starts near skin grey
            out["sh"] = h[:, k + 13:].reshape(-1, 9, 3) + torch.tensor([2.6, 0.0, 0.6, 0, 0, 0, 0, 0, 0],
                                                                        device=h.device)[:, None]
        return out


def posed(faces: torch.Tensor, out: dict[str, torch.Tensor], anchor: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) template-frame faces into camera space (mm): scale, rotate, then the anchor (a point
    the input gives: its XYZ centroid, or a prior distance for RGB) plus the predicted offset."""
    return out["scale_mm"][:, None, None] * faces @ out["rotation"].transpose(1, 2) + (anchor + out["offset_mm"])[:, None]


def shade(normals_camera: torch.Tensor, albedo: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) colours in [0, 1.6] as render-rgbd makes them: albedo x SH light at normals taken into
    the view frame (x right, y up, z toward the camera) that its light is drawn in."""
    n = normals_camera * torch.tensor([1.0, -1.0, -1.0], device=normals_camera.device)
    light = torch.einsum("bvk,bkc->bvc", sh_basis(n), sh).clamp(0.0, 1.6)
    return albedo[:, None] * light
