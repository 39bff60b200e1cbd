"""A learnt correction of a depth sensor's errors, for the fit to the depth.

A structured-light camera's depth is off the surface by about 1 mm on a face at 300 mm (the phone
preset: mean 1.14 mm, median 0.81), and not at random: its block matcher is nearer the camera at
grazing angles, smears at depth edges and its errors are correlated over its window. Filters do not
remove that (median, Gaussian, edge dropping: docs/rgbd.md), and a fit to those points inherits it.
Rendered RGB-D frames carry both the sensor's depth and the true one, so paper 2's supervision of
synthetic sensor data by the clean scan serves here too: a small U-Net learns, from the sensor's
depth alone, the correction along the ray of every valid pixel (holes stay holes; no pixel is
invented). It reads depth about the frame's median (a face at any distance), and one trained on a
device's renders serves that device's captures.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facepipe.schemas.encoder import DenoiserConfig

UNIT_MM = 10.0  # the net reads and writes depth in cm: the face's relief spans a few units
LEVELS = 2  # poolings: inputs are padded to a multiple of 2 ** LEVELS
MARGIN = 8  # pixels kept about the valid depth when a frame is cropped for the net


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())


class DepthDenoiser(nn.Module):
    """U-Net with LEVELS poolings: (B, 2, H, W) depth about the median (cm, 0 in holes) and validity
    -> (B, 1, H, W) correction (cm). The last layer starts at zero: untrained, it changes nothing."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.down = nn.ModuleList([_block(2, width), _block(width, 2 * width), _block(2 * width, 4 * width)])
        self.up = nn.ModuleList([_block(6 * width, 2 * width), _block(3 * width, width)])
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([F.interpolate(x, scale_factor=2.0), skip], 1))
        return self.out(x)


def net_input(depth: np.ndarray) -> torch.Tensor:
    """(B, 2, H, W) of (B, H, W) depth (mm, NaN holes): depth about each frame's median in cm, validity."""
    valid = np.isfinite(depth)
    median = np.array([np.median(d[v]) if v.any() else 0.0 for d, v in zip(depth, valid, strict=True)])[:, None, None]
    z = np.where(valid, (depth - median) / UNIT_MM, 0.0)
    return torch.as_tensor(np.stack([z, valid], 1), dtype=torch.float32)


def crop_box(valid: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The bounding box of an image's `valid` pixels with `margin` more on each side (inside the image)."""
    rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
    return (slice(max(int(rows[0]) - margin, 0), int(rows[-1]) + 1 + margin),
            slice(max(int(cols[0]) - margin, 0), int(cols[-1]) + 1 + margin))


def denoise(net: DepthDenoiser, depth: np.ndarray) -> np.ndarray:
    """(H, W) float32 depth (mm, NaN holes) corrected by the net, holes kept; the net runs on the
    valid pixels' bounding box, padded with holes to a multiple of 2 ** LEVELS."""
    valid = np.isfinite(depth)
    if not valid.any():
        return depth.astype(np.float32)
    rows, cols = crop_box(valid, MARGIN)
    part = depth[rows, cols]
    step = 2 ** LEVELS
    pad = (-part.shape[0] % step, -part.shape[1] % step)
    x = net_input(np.pad(part, ((0, pad[0]), (0, pad[1])), constant_values=np.nan)[None])
    device = next(net.parameters()).device
    with torch.no_grad():
        correction = net(x.to(device))[0, 0, :part.shape[0], :part.shape[1]].double().cpu().numpy() * UNIT_MM
    out = depth.astype(np.float64).copy()
    out[rows, cols] = part + correction
    return np.where(valid, out, np.nan).astype(np.float32)


def denoiser_crops(sensor: list[np.ndarray], clean: list[np.ndarray], size: int, count: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` (size, size) crops of sensor and true depth, each centred (inside the image) on a
    random pixel with true depth of a random frame."""
    xs, ys = [], []
    for _ in range(count):
        i = int(rng.integers(len(sensor)))
        d, c = sensor[i], clean[i]
        h, w = d.shape
        if h < size or w < size:
            d = np.pad(d, ((0, max(size - h, 0)), (0, max(size - w, 0))), constant_values=np.nan)
            c = np.pad(c, ((0, max(size - h, 0)), (0, max(size - w, 0))), constant_values=np.nan)
        rows, cols = np.nonzero(np.isfinite(c))
        j = int(rng.integers(len(rows)))
        r0 = int(np.clip(rows[j] - size // 2, 0, d.shape[0] - size))
        c0 = int(np.clip(cols[j] - size // 2, 0, d.shape[1] - size))
        xs.append(d[r0:r0 + size, c0:c0 + size])
        ys.append(c[r0:r0 + size, c0:c0 + size])
    return np.stack(xs), np.stack(ys)


def train_denoiser(sensor: list[np.ndarray], clean: list[np.ndarray], config: DenoiserConfig, seed: int,
                   device: torch.device, log: Callable[[str], None] | None = None) -> tuple[DepthDenoiser, list[float]]:
    """The net trained on frames' sensor and true depth ((H, W) mm each, NaN holes; crops of frames
    will do) by L1 on the corrected depth where both are valid and the sensor is within
    `outlier_mm`; the learning rate drops to 0.3x for the last third. Returns it and the loss every
    step. The same frames, config and seed give the same net."""
    usable = [k for k, c in enumerate(clean) if np.isfinite(c).any()]
    if not usable:
        raise ValueError("no training frame has true depth to learn the sensor's correction from")
    sensor, clean = [sensor[k] for k in usable], [clean[k] for k in usable]
    torch.manual_seed(seed)
    net = DepthDenoiser(config.width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    rng = np.random.default_rng([seed, 101])
    size = -(-config.crop // 2 ** LEVELS) * 2 ** LEVELS
    losses = []
    for step in range(config.steps):
        if step == 2 * config.steps // 3:
            for group in opt.param_groups:
                group["lr"] = config.lr * 0.3
        x, y = denoiser_crops(sensor, clean, size, config.batch_size, rng)
        mask = torch.as_tensor(np.isfinite(x) & np.isfinite(y), device=device)[:, None]
        depth = torch.as_tensor(np.nan_to_num(x), dtype=torch.float32, device=device)[:, None]
        truth = torch.as_tensor(np.nan_to_num(y), dtype=torch.float32, device=device)[:, None]
        mask &= (depth - truth).abs() < config.outlier_mm
        error = (depth + UNIT_MM * net(net_input(x).to(device)) - truth).abs()
        loss = (error * mask).sum() / mask.sum().clamp_min(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and (step % 200 == 0 or step == config.steps - 1):
            log(f"depth correction step {step:>5}  L1 {losses[-1]:.3f} mm")
    return net.eval(), losses
