"""The sensor's learnt depth correction: it learns a sensor's bias, keeps holes, and starts as the identity."""

from __future__ import annotations

import numpy as np
import torch

from facepipe.models.depth_denoiser import DepthDenoiser, denoise, denoiser_crops, train_denoiser
from facepipe.models.frames import depth_pairs
from facepipe.schemas.encoder import DenoiserConfig


def bumpy_frames(count: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(true, sensor) depth of smooth bumps at about 300 mm, the 'sensor' nearer the camera where the
    surface is steep (a structured-light matcher's grazing bias), with noise and holes."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:60, 0:72].astype(float)
    clean, sensor = [], []
    for _ in range(count):
        z = np.full(rows.shape, 300.0)
        for _ in range(3):
            r, c, s, h = rng.uniform(10, 50), rng.uniform(10, 62), rng.uniform(5, 12), rng.uniform(-30, -10)
            z += h * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * s * s))
        gy, gx = np.gradient(z)
        steep = np.clip(np.hypot(gx, gy), 0, 3)
        d = z - 0.8 * steep + rng.normal(0, 0.2, z.shape)
        d[rng.random(z.shape) < 0.03] = np.nan
        z[:, :4] = np.nan  # no surface there: neither depth sees it
        d[:, :4] = np.nan
        clean.append(z.astype(np.float32))
        sensor.append(d.astype(np.float32))
    return clean, sensor


def mean_error(depth: list[np.ndarray], clean: list[np.ndarray]) -> float:
    return float(np.nanmean(np.concatenate([np.abs(d - c).ravel() for d, c in zip(depth, clean, strict=True)])))


def test_the_correction_learns_a_sensors_bias_and_keeps_its_holes() -> None:
    clean, sensor = bumpy_frames(12, 0)
    net, losses = train_denoiser(sensor, clean, DenoiserConfig(steps=200, width=8, crop=32, lr=5e-3), 0, torch.device("cpu"))
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:5])
    test_clean, test_sensor = bumpy_frames(4, 1)  # other surfaces
    corrected = [denoise(net, d) for d in test_sensor]
    assert mean_error(corrected, test_clean) < 0.6 * mean_error(test_sensor, test_clean)
    for d, c in zip(test_sensor, corrected, strict=True):
        assert c.dtype == np.float32 and np.array_equal(np.isnan(c), np.isnan(d))  # no pixel invented, none dropped
    short = DenoiserConfig(steps=10, width=8, crop=32)
    one, again = (train_denoiser(sensor, clean, short, 0, torch.device("cpu"))[0] for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), again.state_dict().values(), strict=True))


def test_an_untrained_correction_changes_nothing_and_an_empty_frame_passes() -> None:
    _, sensor = bumpy_frames(1, 2)
    net = DepthDenoiser(4).eval()
    assert np.allclose(denoise(net, sensor[0]), sensor[0], equal_nan=True)
    empty = np.full((30, 40), np.nan, np.float32)
    assert np.isnan(denoise(net, empty)).all()
    odd = sensor[0][:37, :53]  # not a multiple of the poolings: padded with holes
    assert denoise(net, odd).shape == odd.shape


def test_crops_centre_on_true_depth_and_pairs_are_cut_to_the_seen_pixels(tmp_path) -> None:
    clean, sensor = bumpy_frames(3, 3)
    x, y = denoiser_crops(sensor, clean, 16, 20, np.random.default_rng(0))
    assert x.shape == y.shape == (20, 16, 16) and all(np.isfinite(c).any() for c in y)
    small = [c[:10, :12] for c in clean]  # smaller than a crop: padded with holes
    x, y = denoiser_crops(small, small, 16, 4, np.random.default_rng(0))
    assert x.shape == (4, 16, 16)

    from facepipe.pipeline.runtime.store import OK
    import zarr

    url = str(tmp_path / "pairs.zarr")
    group = zarr.open_group(url, mode="w")
    depth = np.full((5, 40, 50), np.nan, np.float32)
    depth[:, 10:20, 15:30] = 300.0
    truth = depth.copy()
    truth[:, 9, 15] = 299.0  # the true depth reaches a row further up
    group.create_array("depth", data=depth)
    group.create_array("depth_clean", data=truth)
    group.create_array("status", data=np.array([OK, OK, 0, OK, OK], np.uint8))
    s, c = depth_pairs([url], 3, 2)
    assert len(s) == 3 and all(a.shape == (10 + 1 + 4, 15 + 4) for a in s)
    assert all(np.isfinite(a).sum() == 150 and np.isfinite(b).sum() == 151 for a, b in zip(s, c, strict=True))
