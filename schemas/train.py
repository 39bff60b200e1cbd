"""`facepipe train` settings: data, network size, losses, the three-phase schedule, engineering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

M = TypeVar("M", bound=BaseModel)


class Phase(BaseModel):
    """One phase of paper 1's schedule: some epochs on synthetic faces only, then some mixed with real scans."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["identity", "expression", "joint"]
    synthetic_epochs: int = Field(10, ge=0)
    mixed_epochs: int = Field(10, ge=0)


class LossWeights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    normal: float = Field(1.6e-4, ge=0)
    edge: float = Field(1.6e-4, ge=0)
    laplacian: float = Field(0.005, ge=0, description="mouth-region Laplacian, real scans")
    chamfer_threshold: float = Field(0.001, gt=0, description="pairs with a larger squared distance (template units) are ignored")
    normal_rays: bool = Field(True, description="once the mixed-epoch Chamfer saturates, take normal-loss partners by normal-ray intersection")
    saturation_epochs: int = Field(3, ge=1, description="saturated: over this many mixed epochs the Chamfer fell by less than")
    saturation_tolerance: float = Field(0.01, ge=0, description="... this fraction")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    synth: list[str] = Field(min_length=1, description="synth stores (ground-truth correspondence)")
    scans: list[str] = Field(default_factory=list, description="scans stores (raw scans, unsupervised losses)")
    template: str | None = Field(None, description="template .npz; default: the procedural model's (must match the stores)")
    identity_dim: int = Field(512, ge=1)
    expression_dim: int = Field(512, ge=1)
    hidden: int = Field(1024, ge=1)
    decoder: Literal["paper", "basis"] = Field(
        "basis", description="paper: paper 1's Tanh MLP decoders; basis: template + offsets through linear bases "
        "started from a PCA of the synthetic faces (an untrained model is the template)")
    basis_size: int = Field(64, ge=1, description="basis shapes per decoder (basis decoder)")
    basis_trainable: bool = Field(False, description="train the bases too; by default they stay the PCA of the synthetic "
                                  "training faces, which fits held-out faces better (docs/learning.md)")
    input_points: int | None = Field(None, ge=16, description="points drawn per sample each step (None: all)")
    batch_size: int = Field(16, ge=1)
    real_fraction: float = Field(0.5, ge=0, le=1, description="share of real scans in a mixed batch")
    lr: float = Field(1e-4, gt=0)
    lr_halve_every: int = Field(5, ge=1, description="epochs; the schedule restarts with each phase")
    phases: tuple[Phase, ...] = (Phase(name="identity"), Phase(name="expression"), Phase(name="joint"))
    weights: LossWeights = LossWeights()
    neutral_codes: tuple[str, ...] = Field(("neutral", "NE", "N", ""), description="expression values that mean a neutral face")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA")
    memory_limit_gb: float = Field(8.0, gt=0, description="hold the data on the device below this size, else stream it")
    preview_samples: int = Field(4, ge=0)


def tiny_preset(synth: list[str], scans: list[str]) -> TrainConfig:
    """Trains on the example data on 2 CPU cores in minutes: small codes and decoders, few points, short phases."""
    return TrainConfig(synth=synth, scans=scans, identity_dim=64, expression_dim=32, hidden=256, input_points=1024,
                       batch_size=8, lr=1e-3, lr_halve_every=4,
                       phases=(Phase(name="identity", synthetic_epochs=6, mixed_epochs=2),
                               Phase(name="expression", synthetic_epochs=3, mixed_epochs=1),
                               Phase(name="joint", synthetic_epochs=2, mixed_epochs=1)),
                       device="cpu")


def reference_preset(synth: list[str], scans: list[str]) -> TrainConfig:
    """The reference model on 2 CPU cores in under 30 minutes (ICT-FaceKit synthetic faces, 300
    identities x 5): latent 160 (96 identity + 64 expression), 512-wide decoders with 80-shape bases,
    1,024 points per step (the encoder's cost: 22 samples/s with 2,048 on 2 cores)."""
    return TrainConfig(synth=synth, scans=scans, identity_dim=96, expression_dim=64, hidden=512, basis_size=80,
                       input_points=1024, batch_size=16, lr=1e-3, lr_halve_every=8,
                       phases=(Phase(name="identity", synthetic_epochs=24, mixed_epochs=4 if scans else 0),
                               Phase(name="expression", synthetic_epochs=12, mixed_epochs=2 if scans else 0),
                               Phase(name="joint", synthetic_epochs=12, mixed_epochs=4 if scans else 0)),
                       device="cpu")


def full_preset(synth: list[str], scans: list[str]) -> TrainConfig:
    """Paper 1's sizes for a GPU: 512 + 512 latent, 1024-wide decoders, every point, bf16 autocast."""
    return TrainConfig(synth=synth, scans=scans, identity_dim=512, expression_dim=512, hidden=1024, basis_size=128,
                       input_points=None, batch_size=16, lr=1e-4, lr_halve_every=5,
                       phases=(Phase(name="identity", synthetic_epochs=20, mixed_epochs=10),
                               Phase(name="expression", synthetic_epochs=20, mixed_epochs=10),
                               Phase(name="joint", synthetic_epochs=20, mixed_epochs=10)),
                       device="auto", amp=True)


TRAIN_PRESETS = {"tiny": tiny_preset, "reference": reference_preset, "full": full_preset}


def with_preset(presets: dict[str, Callable[..., M]], model: type[M], values: dict[str, object], preset: str | None,
                leading: tuple[tuple[str, Callable[[object], object]], ...]) -> M:
    """Settings (from a file and flags) laid over a preset's; `leading`: the preset function's
    arguments, taken out of `values` (name, conversion). Raises ValueError on bad settings."""
    if preset is None:
        return model.model_validate(values)
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} (have: {', '.join(presets)})")
    rest = dict(values)
    base = presets[preset](*(convert(rest.pop(name, None)) for name, convert in leading))
    return model.model_validate(base.model_dump() | rest)


def train_config(values: dict[str, object], preset: str | None = None) -> TrainConfig:
    """Settings (from a file and flags) laid over a preset's; raises ValueError on bad settings."""
    return with_preset(TRAIN_PRESETS, TrainConfig, values, preset,
                       (("synth", lambda v: list(v or [])), ("scans", lambda v: list(v or []))))  # type: ignore[arg-type]
