"""`facepipe train-encoder` settings: which trained decoders, which RGB-D stores, which branches, losses."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from facepipe.schemas.train import with_preset

Modality = Literal["rgbd", "depth", "rgb"]
CHANNELS: dict[str, int] = {"rgb": 3, "rgbd": 6, "depth": 3}  # RGB; RGB + camera XYZ; camera XYZ


class EncoderWeights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: float = Field(1.0, ge=0, description="L1 on the standardised codes, frames whose codes are known")
    vertex: float = Field(0.1, ge=0, description="per mm of mean vertex distance to the posed ground truth (camera space)")
    cross_domain: float = Field(0.1, ge=0, description="per mm of robust Chamfer between the prediction from sensor depth and the clean depth")
    cross_domain_mm: float = Field(8.0, gt=0, description="the robust Chamfer counts a distance up to this (mm)")
    photometric: float = Field(1.0, ge=0, description="RGB branch: L1 between the image and albedo x SH shading at visible vertices")


class DenoiserConfig(BaseModel):
    """How the correction is learnt: random crops about valid pixels of the training frames."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(1200, ge=0, description="Adam steps (0: no correction is learnt, the fit reads the sensor's depth)")
    width: int = Field(16, ge=1, description="channels of the first level (x2 per level)")
    crop: int = Field(96, ge=8, description="side of the training crops (pixels of the depth at its own size)")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    frames: int = Field(300, ge=1, description="training frames read (evenly spread over the stores)")
    outlier_mm: float = Field(20.0, gt=0, description="pixels farther than this from the truth do not train (the "
                              "matcher's gross mismatches: no correction can learn them)")


class EncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str = Field(description="the `facepipe train` run whose decoders (frozen) the codes are for")
    rgbd: list[str] = Field(min_length=1, description="rgbd stores to train on")
    modalities: tuple[Modality, ...] = Field(("rgbd",), min_length=1, description="branches trained together")
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    backbone_weights: str | None = Field(None, description="a local torchvision ResNet state dict (.pth); nothing is downloaded")
    shared_stages: int = Field(2, ge=0, le=4, description="ResNet stages the branches share after their own stems")
    width: int = Field(160, ge=32, description="input images are resized to width x height")
    height: int = Field(120, ge=32)
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    lr_halve_every: int = Field(15, ge=1)
    cross_domain: bool = Field(True, description="paper 2's cross-domain term (off: to measure what it brings)")
    chamfer_points: int = Field(1024, ge=16, description="clean-depth points per frame for the cross-domain term")
    code_fit_steps: int = Field(150, ge=0, description="steps fitting the decoders' codes to each ground-truth face (the code targets)")
    weights: EncoderWeights = EncoderWeights()
    landmark_frames: int = Field(500, ge=1, description="RGB branch: training frames on which MediaPipe's landmarks are "
                                 "placed on the template (for the fit to the image)")
    landmark_spread_mm: float = Field(3.0, gt=0, description="a landmark is used when its template vertices over those "
                                      "frames lie this close (median) to their median; contour points slide with the view")
    denoiser: DenoiserConfig = Field(DenoiserConfig(), description="the sensor's depth correction, learnt after the "
                                     "epochs for the fit to the depth (models/depth_denoiser.py)")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA")
    preview_samples: int = Field(4, ge=0)


def tiny_encoder(checkpoint: str, rgbd: list[str]) -> EncoderConfig:
    """A few rendered faces on 2 CPU cores in a minute or two: ResNet-18 at 80 x 64."""
    return EncoderConfig(checkpoint=checkpoint, rgbd=rgbd, modalities=("depth",), width=80, height=64, epochs=25,
                         batch_size=8, lr=2e-3, lr_halve_every=10, code_fit_steps=100, device="cpu",
                         denoiser=DenoiserConfig(steps=0))  # two dozen frames and a minute teach no correction


def reference_encoder(checkpoint: str, rgbd: list[str]) -> EncoderConfig:
    """ResNet-18 at 160 x 120 on 2 CPU cores: hundreds of frames in tens of minutes."""
    return EncoderConfig(checkpoint=checkpoint, rgbd=rgbd, epochs=40, batch_size=16, lr=1e-3, lr_halve_every=15, device="cpu")


def full_encoder(checkpoint: str, rgbd: list[str]) -> EncoderConfig:
    """Paper 2's ResNet-50 branches, for a GPU."""
    return EncoderConfig(checkpoint=checkpoint, rgbd=rgbd, modalities=("rgbd", "depth", "rgb"), backbone="resnet50",
                         epochs=60, batch_size=32, lr=3e-4, lr_halve_every=20, device="auto")


ENCODER_PRESETS = {"tiny": tiny_encoder, "reference": reference_encoder, "full": full_encoder}


def encoder_config(values: dict[str, object], preset: str | None = None) -> EncoderConfig:
    """Settings (from a file and flags) laid over a preset's; raises ValueError on bad settings."""
    return with_preset(ENCODER_PRESETS, EncoderConfig, values, preset,
                       (("checkpoint", lambda v: str(v or "")), ("rgbd", lambda v: list(v or []))))  # type: ignore[arg-type]


class FitConfig(BaseModel):
    """Test-time fitting of an encoder's face to the frame's own depth (the RGB-D and depth branches):
    the codes and the pose, from the encoder's, against the robust Chamfer to the depth points (it
    reaches far: the encoder's face is several mm off), then the scans' refinement (it pairs near)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(40, ge=0)
    lr: float = Field(0.02, gt=0)
    code_weight: float = Field(0.01, ge=0, description="pull of the standardised codes towards the encoder's")
    limit_mm: float = Field(8.0, gt=0, description="the Chamfer counts a distance up to this (mm)")
    max_points: int = Field(4096, ge=16, description="depth points the Chamfer fit reads per frame (a fixed random "
                            "subset; of the depth at its own size where the refinement's points are given): pose-"
                            "fitted from sensor depth 1.71 mm against 1.74 with 1024")
    max_vertices: int = Field(1000, ge=16, description="template vertices the Chamfer reads (a fixed random subset)")
    refine: bool = Field(True, description="then the scans' refinement (issue 16) against the depth points, in the "
                         "face's frame: a Gauss-Newton fit of a basis decoder's coefficients with a similarity (paper "
                         "1's decoders: Adam steps on the codes)")
    refine_points: int = Field(30000, ge=16, description="depth points the refinement reads (a fixed random subset of "
                               "the depth at its own size, not the encoder's input size: from sensor depth 1.74 mm "
                               "pose-fitted, with 30,000 of the phone's 640 x 480, 1.78 with 16,000)")
    refine_steps: int = Field(24, ge=1, description="Gauss-Newton steps of the refinement (with the scan-to-face term, "
                              "pose-fitted from sensor depth: 1.50 mm in 16 steps, 1.45 in 24, 1.43 in 32)")
    damping_start: float = Field(1e-3, ge=0, description="damping of the refinement's first coefficient step, shrinking "
                                 "geometrically over the steps (RefineConfig.basis_damping); pose-fitted from sensor depth, "
                                 "30,000 points: 1.74 mm with it, 2.43 without it from 4 mm pairs, 1.86 without it from 2 mm "
                                 "pairs in 8 steps (the former default)")
    pair_start_mm: float = Field(4.0, gt=0, description="the refinement pairs a vertex with a depth point within this, "
                                 "first step (undamped, far pairs reach from the unseen sides to the silhouette and lock "
                                 "the shape; damped, the first steps move the pose)")
    pair_end_mm: float = Field(1.4, gt=0, description="the same, last step (the steps between shrink it geometrically)")
    scan_weight: float = Field(3.0, ge=0, description="the refinement's scan-to-face term against its face-to-scan term "
                               "(RefineConfig.scan_weight): each depth point paired with its nearest vertex, which "
                               "averages the sensor's noise; pose-fitted, 16 steps, from sensor depth 1.68 mm without it, "
                               "1.52 / 1.50 / 1.59 / 1.76 at 1 / 3 / 10 / 30; from clean depth 0.97 -> 0.73 at 3")
    image_steps: int = Field(100, ge=0, description="RGB branch: Adam steps fitting codes, pose and light to the image")
    image_lr: float = Field(0.01, gt=0)
    image_light_lr: float = Field(0.02, gt=0, description="the albedo's and SH light's step size")
    image_scale: bool = Field(False, description="let the image fit change the face's size (an image cannot tell a "
                              "larger face from a nearer one: the encoder's size, about the training faces' mean, is kept)")
    image_code_weight: float = Field(0.1, ge=0, description="pull of the standardised codes towards the encoder's")
    photometric_weight: float = Field(1.0, ge=0, description="the image fit's L1 between the image and the shaded face (0-1 colour)")
    landmark_weight: float = Field(0.1, ge=0, description="the image fit's robust distance of the landmark vertices from "
                                   "MediaPipe's landmarks, per pixel of the input size")
    visibility_every: int = Field(10, ge=1, description="steps between tracings of which vertices the camera sees")
    denoise: bool = Field(True, description="the fit reads the sensor's depth corrected by the encoder run's learnt "
                          "correction (models/depth_denoiser.py), where the run has one; never the clean depth (phone "
                          "frames, pose-fitted: 1.73 -> 1.70 mm RGB-D, 1.69 -> 1.66 depth)")
    surface_steps: int = Field(0, ge=0, description="pairings of the refinement's per-vertex heights (off: on phone "
                               "depth the heights follow the sensor's noise: two gave 1.84 against 1.78 mm from sensor "
                               "depth with 16,000 points)")


class ReconstructPlan(BaseModel):
    """What decides a reconstruction folder's bytes: a rerun resumes only into a folder with an equal plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    facepipe_version: str
    modality: Modality
    clean_input: bool = Field(description="store frames: XYZ from the true depth instead of the sensor's")
    fit: FitConfig | None = Field(description="fitted to the frame's depth after the encoder (None: the encoder alone)")
    model_sha256: str = Field(description="hash of the encoder's and decoders' weights")
    template_id: str
    fmt: Literal["ply", "obj"]
    batch: int = Field(description="frames per network call: it decides the bits")
    n_samples: int
    samples_sha256: str = Field(description="hash of the ordered (source, output name) list")
