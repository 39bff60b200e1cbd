"""`facepipe reconstruct`: one mesh per RGB-D, depth or RGB frame, in template topology, in camera space.

Inputs are an rgbd store (its ok frames) or capture files (`pipeline/io/frame_files.py`). The
encoder branch regresses the codes of its frozen decoders and a pose; the mesh is written in the
frame's camera space (OpenCV: x right, y down, z forward, mm) and listed in `index.csv` with its
residual (mean distance from the frame's depth points to the mesh, mm). The folder is a resumable
result like correspond's; a frame that cannot be read is a failure row, and the rest go on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh
from pydantic import ValidationError
from scipy.spatial import cKDTree

from facepipe.models.correspond import Predictor
from facepipe.models.depth_denoiser import DepthDenoiser, denoise
from facepipe.models.encoder import FaceEncoder, posed, rotation_6d, shade
from facepipe.models.frames import FramesError, anchors, fit_points, network_input, prepare, read_frames
from facepipe.models.run_files import load_state, model_file
from facepipe.models.refine import RefineConfig, refine
from facepipe.models.image_landmarks import MESH_POINTS, detect
from facepipe.models.train_encoder import image_at_vertices, outward, project, robust_chamfer_mm
from facepipe.pipeline.errors import FacepipeError, printable
from facepipe.pipeline.geometry.render import Raycaster
from facepipe.pipeline.io.frame_files import FrameFiles, read_frame
from facepipe.pipeline.runtime.folders import prepare_folder, write_atomic, write_index, write_row
from facepipe.pipeline.runtime.lock import store_lock
from facepipe.pipeline.runtime.naming import file_relatives, output_names
from facepipe.pipeline.runtime.store import facepipe_version, samples_digest
from facepipe.schemas.encoder import EncoderConfig, FitConfig, ReconstructPlan

FIELDS = ("source", "output", "modality", "residual_mm", "error")


class ReconstructError(FacepipeError):
    """An encoder run or an input that cannot be used."""


@dataclass
class EncoderPredictor:
    """A trained encoder run: its branches, and the decoders (with their template) it regresses codes for."""

    encoder: FaceEncoder
    face: Predictor
    config: EncoderConfig
    device: torch.device
    landmarks: np.ndarray = field(default_factory=lambda: np.full(MESH_POINTS, -1))  # template vertex of each MediaPipe landmark
    denoiser: DepthDenoiser | None = None  # the sensor's learnt depth correction (runs trained before it have none)

    @staticmethod
    def load(path: str | Path, device: str = "auto") -> EncoderPredictor:
        """A `facepipe train-encoder` run directory (its model.pt) or checkpoint; weights_only=True."""
        file = model_file(path)
        if not file.exists():
            raise ReconstructError(f"{file}: no such encoder run (give a train-encoder run directory or its model.pt)")
        state = load_state(file)
        if "decoders" not in state:
            raise ReconstructError(f"{file} is not an encoder run (a `facepipe train` run? train an encoder on it first)")
        try:
            config = EncoderConfig.model_validate_json(str(state["config"]))
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            raise ReconstructError(f"{file}: its encoder settings are not this facepipe's (made by another version?): "
                                   f"{printable(fields)}") from exc
        face = Predictor.from_state(state["decoders"], file, device)
        encoder = FaceEncoder(config.modalities, face.net.identity_head.out_features, face.net.expression_head.out_features,
                              config.backbone, config.shared_stages)
        encoder.load_state_dict(state["encoder"])
        encoder.requires_grad_(False)
        marks = np.asarray(state["landmarks"], np.int64) if "landmarks" in state else np.full(MESH_POINTS, -1)
        denoiser = None
        if "denoiser" in state:
            denoiser = DepthDenoiser(config.denoiser.width)
            denoiser.load_state_dict(state["denoiser"])
            denoiser = denoiser.to(face.device).eval().requires_grad_(False)
        return EncoderPredictor(encoder.to(face.device).eval(), face, config, face.device, marks, denoiser)

    @property
    def has_landmarks(self) -> bool:
        return bool((self.landmarks >= 0).any())

    def fits_landmarks(self, modality: str, fit: FitConfig | None) -> bool:
        """Whether `predict` fits this branch's faces to MediaPipe's landmarks (so its frames need them found)."""
        return modality == "rgb" and fit is not None and fit.image_steps > 0 and self.has_landmarks

    def correction(self, fit: FitConfig | None, clean_input: bool = False) -> Callable[[np.ndarray], np.ndarray] | None:
        """What the fit to the depth reads a frame's full-size depth through: the run's learnt
        correction of the sensor, where there is one and a fit to sensor depth will use it (else None)."""
        if self.denoiser is None or fit is None or not fit.denoise or clean_input:
            return None
        net = self.denoiser
        return lambda depth: denoise(net, depth)

    def depth_fit(self, fit: FitConfig | None, clean_input: bool = False) -> FitConfig | None:
        """The fit for this input: the refinement's scan-to-face term follows the depth faithfully, the
        sensor's bias too, so it reads depth that is clean or corrected by the run's learnt correction,
        and is left out on the sensor's depth as it is (phone camera without the correction 1.73 mm
        without the term, 1.71 with it; the tiny camera, which has none, 5.4 against 7.4)."""
        if fit is None or not fit.scan_weight or clean_input or self.correction(fit) is not None:
            return fit
        return fit.model_copy(update={"scan_weight": 0.0})

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(self.face.fingerprint.encode())
        parts = [*self.encoder.state_dict().items(), *(() if self.denoiser is None else
                                                        ((f"denoiser.{k}", v) for k, v in self.denoiser.state_dict().items()))]
        for name, tensor in sorted(parts):
            h.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def modality(self, wanted: str | None) -> str:
        if wanted is None:
            return self.config.modalities[0]
        if wanted not in self.config.modalities:
            raise ReconstructError(f"this encoder has the {', '.join(self.config.modalities)} branch(es), not {wanted}")
        return wanted

    def predict(self, rgb: np.ndarray, xyz: np.ndarray, modality: str, fit: FitConfig | None = None,
                points: np.ndarray | None = None, k: np.ndarray | None = None, landmarks: np.ndarray | None = None) -> np.ndarray:
        """(N, V, 3) camera-space faces (mm) from frames at the input size; `fit`: then fitted to
        their depth (branches that read depth) or, for RGB, to their images, seen through `k` (N, 3, 3),
        the intrinsics at the input size, and MediaPipe's `landmarks` (N, 468, 2); `points`: (N, P, 3) points of the depth at its own size for
        both depth fits (`frames.fit_points`; without them they read the input-size XYZ)."""
        anchor = anchors(xyz, modality, float(self.encoder.distance_mm))
        anchor_t = torch.as_tensor(anchor, device=self.device)
        with torch.no_grad():
            out = self.encoder.branch(network_input(rgb, xyz, anchor, modality, self.device), modality)
            camera = posed(self.face.net.decode(out["identity_code"], out["expression_code"]).float(), out, anchor_t)
        if fit is None or (modality == "rgb" and not fit.image_steps):
            return camera.cpu().numpy().astype(np.float64)
        if modality == "rgb":
            if k is None:
                raise ReconstructError("fitting to the image needs the frames' intrinsics")
            return fit_to_image(self, out, anchor_t, rgb, k, fit, landmarks).camera().cpu().numpy().astype(np.float64)
        near = None if points is None else torch.as_tensor(points, dtype=torch.float32, device=self.device)
        far = (depth_points(xyz, fit.max_points, self.device) if near is None or near.shape[1] < fit.max_points
               else near[:, :fit.max_points])  # a random subset already: its first points are one too
        placed = fit_to_depth(self, out, anchor_t, far, fit)
        if not fit.refine:
            return placed.camera().cpu().numpy().astype(np.float64)
        return refine_to_depth(self, placed, depth_points(xyz, fit.refine_points, self.device) if near is None else near, fit)


def depth_points(xyz: np.ndarray, count: int, device: torch.device) -> torch.Tensor:
    """(N, count, 3) valid XYZ points of each frame, a fixed random subset (drawn with replacement when fewer)."""
    out = []
    for k, frame in enumerate(xyz):
        pts = frame.reshape(-1, 3)
        pts = pts[np.isfinite(pts).all(1)]
        out.append(pts[np.random.default_rng(k).choice(len(pts), count, replace=len(pts) < count)])
    return torch.as_tensor(np.stack(out), dtype=torch.float32, device=device)


@dataclass
class Placed:
    """Faces of the decoders placed in camera space: codes, and the similarity camera = s f R^T + t."""

    identity: torch.Tensor  # (B, I)
    expression: torch.Tensor  # (B, E)
    faces: torch.Tensor  # (B, V, 3) template frame
    rotation: torch.Tensor  # (B, 3, 3)
    scale: torch.Tensor  # (B,) mm per template unit
    translation: torch.Tensor  # (B, 3) mm

    def camera(self, faces: torch.Tensor | None = None) -> torch.Tensor:
        f = self.faces if faces is None else faces
        return self.scale[:, None, None] * f @ self.rotation.transpose(1, 2) + self.translation[:, None]

    def to_face_frame(self, points: torch.Tensor) -> torch.Tensor:
        return (points - self.translation[:, None]) @ self.rotation / self.scale[:, None, None]


def fit_to_depth(predictor: EncoderPredictor, out: dict[str, torch.Tensor], anchor: torch.Tensor, points: torch.Tensor,
                 config: FitConfig) -> Placed:
    """The encoder's faces fitted to their frames' depth points: standardised codes, a rotation about
    the face, a translation (cm) and a log-scale move from the encoder's values, against the robust
    Chamfer (mm) and a pull of the codes towards the encoder's. Decoders and encoder stay fixed. The
    Chamfer's wide reach (`limit_mm`) takes the face from where the encoder put it to within a few mm."""
    moves = Moves(predictor, out, anchor)
    opt = torch.optim.Adam(moves.parameters(), lr=config.lr)
    count = len(predictor.face.template.vertices)
    some = torch.as_tensor(np.sort(np.random.default_rng(0).permutation(count)[: config.max_vertices]), device=anchor.device)
    for _ in range(config.steps):
        loss = robust_chamfer_mm(moves.place().camera()[:, some], points, config.limit_mm) + config.code_weight * moves.code_prior().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # no graph: the placement's tensors are plain values
        return moves.place()


class Moves:
    """What a fit moves from the encoder's prediction: standardised codes, a rotation about the face
    (6-D, from identity), a translation (cm) and a log-scale; all start at zero."""

    def __init__(self, predictor: EncoderPredictor, out: dict[str, torch.Tensor], anchor: torch.Tensor) -> None:
        self.enc, self.net, self.out, self.anchor = predictor.encoder, predictor.face.net, out, anchor
        n, k = out["z"].shape
        self.dz = torch.zeros(n, k, device=anchor.device, requires_grad=True)
        self.dr = torch.zeros(n, 6, device=anchor.device, requires_grad=True)
        self.dt = torch.zeros(n, 3, device=anchor.device, requires_grad=True)
        self.ds = torch.zeros(n, device=anchor.device, requires_grad=True)
        self.eye6 = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], device=anchor.device)

    def parameters(self, scale: bool = True) -> list[torch.Tensor]:
        return [self.dz, self.dr, self.dt, self.ds] if scale else [self.dz, self.dr, self.dt]

    def code_prior(self) -> torch.Tensor:
        """Mean squared code move; per frame (B,)."""
        return (self.dz ** 2).mean(1)

    def place(self) -> Placed:
        enc, out = self.enc, self.out
        codes = enc.code_mean + enc.code_std * (out["z"] + self.dz)
        identity, expression = codes[:, :enc.identity_dim], codes[:, enc.identity_dim:]
        return Placed(identity, expression, self.net.decode(identity, expression), rotation_6d(self.eye6 + self.dr) @ out["rotation"],
                      out["scale_mm"] * torch.exp(self.ds), self.anchor + out["offset_mm"] + 10.0 * self.dt)


def visible_vertices(camera: np.ndarray, triangles: np.ndarray, tolerance_mm: float = 1.0) -> np.ndarray:
    """(B, V) bool: vertices the camera (at the origin) sees, not hidden by the face itself (a ray
    from the camera to each vertex meets nothing nearer)."""
    out = []
    for face in camera:
        dist = np.linalg.norm(face, axis=-1)
        rays = np.concatenate([np.zeros_like(face), face / dist[:, None]], -1)
        out.append(Raycaster(face, triangles).cast(rays).depth >= dist - tolerance_mm)
    return np.stack(out)


def fit_to_image(predictor: EncoderPredictor, out: dict[str, torch.Tensor], anchor: torch.Tensor, rgb: np.ndarray,
                 k: np.ndarray, config: FitConfig, landmarks: np.ndarray | None = None) -> Placed:
    """The RGB branch's faces fitted to their images (paper 1's analysis by synthesis): codes, pose
    (the size too only with `image_scale`: an image cannot tell it from the distance), albedo and SH light move from the encoder's values to lower the L1 between the image at each
    visible vertex's projection and its albedo x SH shading, and the distance (pixels, robust) of
    the face's landmark vertices from MediaPipe's `landmarks` (N, 468, 2; NaN where none was found),
    the codes pulled towards the encoder's. Visibility (facing the camera, inside the image, not
    hidden by the face) is traced again every few steps. A frame without landmarks keeps the
    encoder's face: against a dark background the shading alone shrinks it (procedural faces 5 mm
    and 4 degrees off: 8.7 -> 10.3 mm, 15% smaller)."""
    moves = Moves(predictor, out, anchor)
    dev = anchor.device
    albedo_logit = torch.logit(out["albedo"].clamp(1e-4, 1 - 1e-4)).detach().clone().requires_grad_(True)
    sh = out["sh"].detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": moves.parameters(config.image_scale), "lr": config.image_lr},
                            {"params": [albedo_logit, sh], "lr": config.image_light_lr}])
    image = torch.as_tensor(rgb, dtype=torch.float32, device=dev) / 255.0
    kt = torch.as_tensor(k, dtype=torch.float32, device=dev)
    triangles = torch.as_tensor(outward(predictor.face.template.triangles, predictor.face.template.vertices), device=dev)
    keep = predictor.landmarks >= 0 if landmarks is not None else np.zeros(MESH_POINTS, bool)
    target = torch.as_tensor(landmarks[:, keep] if keep.any() else np.zeros((len(rgb), 0, 2)), dtype=torch.float32, device=dev)  # type: ignore[index]
    found = torch.isfinite(target).all(-1).float()
    target = torch.nan_to_num(target)
    vertex = torch.as_tensor(predictor.landmarks[keep], device=dev)
    anchored = (found.sum(1) > 0).float()  # the shading alone lets the face shrink inside its outline: no landmarks, no fit

    seen = None
    for step in range(config.image_steps if anchored.any() else 0):
        camera = moves.place().camera()
        if step % config.visibility_every == 0:
            seen = torch.as_tensor(visible_vertices(camera.detach().cpu().numpy(), predictor.face.template.triangles), device=dev)
        n, sampled, facing = image_at_vertices(camera, image, kt, triangles)
        mask = (seen & facing).float()
        diff = (shade(n, torch.sigmoid(albedo_logit), sh).clamp(0.0, 1.0) - sampled).abs().mean(-1)
        photo = (diff * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        px = ((project(camera[:, vertex], kt) - target) ** 2).sum(-1)
        marked = ((torch.sqrt(px + 1.0) - 1.0) * found).sum(1) / found.sum(1).clamp_min(1.0)
        loss = ((config.photometric_weight * photo + config.landmark_weight * marked + config.image_code_weight * moves.code_prior())
                * anchored).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return moves.place()


def refine_to_depth(predictor: EncoderPredictor, placed: Placed, points: torch.Tensor, config: FitConfig) -> np.ndarray:
    """(B, V, 3) camera-space faces: the scans' refinement (`models/refine.py`) of the placed faces
    against the depth points, taken into the face's frame by the placement's similarity, so its
    thresholds (template units) mean what they mean for scans. No landmarks: a frame has none. One
    view leaves the sides of the face unseen; their vertices find no pair and follow the bases.
    Measured (held-out ICT faces through the phone camera, the reference run's basis decoders, pose-
    fitted vertex error): 3.3 mm after the Chamfer fit, 1.7 mm after this on sensor depth; 3.0 and
    1.0 mm on the clean depth."""
    unit = float(predictor.encoder.scale_mm)  # the training faces' mm per template unit: the same for every batch
    settings = RefineConfig(basis_threshold_start=(config.pair_start_mm / unit) ** 2, basis_threshold=(config.pair_end_mm / unit) ** 2,
                            basis_steps=config.refine_steps, basis_damping=config.damping_start, max_points=config.refine_points,
                            vertex_steps=config.surface_steps, scan_weight=config.scan_weight)
    inside = placed.to_face_frame(points).cpu().numpy().astype(np.float64)
    five = np.full((len(inside), 5, 3), np.nan)
    faces = refine(predictor.face.net, predictor.face.template, inside, five, settings, codes=(placed.identity, placed.expression))
    faces_t = torch.as_tensor(faces, dtype=placed.scale.dtype, device=placed.scale.device)
    return placed.camera(faces_t).cpu().numpy().astype(np.float64)


def residual_mm(mesh: np.ndarray, xyz: np.ndarray) -> float | str:
    """Mean distance from the frame's depth points to the mesh's vertices (mm); "" without depth."""
    pts = xyz.reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(1)]
    return round(float(cKDTree(mesh).query(pts)[0].mean()), 4) if len(pts) else ""


def reconstruct(inputs: str | list[FrameFiles], predictor: EncoderPredictor, out: Path, modality: str | None = None,
                clean_input: bool = False, fmt: str = "ply", batch: int = 16, overwrite: bool = False,
                fit: FitConfig | None = FitConfig()) -> list[dict[str, object]]:
    """Meshes of every frame of an rgbd store (`inputs` a URL) or of capture files into `out`, with
    index.csv; returns the index rows (failures with their reason). `fit`: each face fitted to its
    frame's depth after the encoder (None: the encoder alone; RGB has no depth to fit)."""
    m = predictor.modality(modality)
    fit = predictor.depth_fit(fit, clean_input)
    if fmt not in ("ply", "obj"):
        raise ReconstructError(f"unknown mesh format {fmt!r} (ply or obj)")
    cfg = predictor.config
    count = fit.refine_points if fit is not None and fit.refine and m != "rgb" else 0  # the refinement reads the depth at its own size
    marks = predictor.fits_landmarks(m, fit)
    if isinstance(inputs, str):
        frames = read_frames(inputs, cfg.width, cfg.height, clean_input=clean_input, fit_count=count, landmarks=marks,
                             correct=predictor.correction(fit, clean_input))
        sources = frames.ids
        loaded = [_checked(frames.rgb[i], frames.xyz[i], None if frames.points is None else frames.points[i], frames.k[i],
                           None if frames.landmarks is None else frames.landmarks[i], m, f"{inputs}#{frames.ids[i]}")
                  for i in range(len(frames))]
    else:
        sources = file_relatives([f.source for f in inputs])
        loaded = [_load(f, m, cfg, count, marks, predictor.correction(fit)) for f in inputs]
    names = output_names(sources)
    plan = ReconstructPlan(facepipe_version=facepipe_version(), modality=m, clean_input=clean_input, fit=fit,  # type: ignore[arg-type]
                           model_sha256=predictor.fingerprint, template_id=predictor.face.template.id, fmt=fmt,  # type: ignore[arg-type]
                           batch=batch, n_samples=len(names),
                           samples_sha256=samples_digest([f"{s}\t{n}" for s, n in zip(sources, names, strict=True)]))
    triangles = predictor.face.template.triangles
    with store_lock(str(out)):
        done = prepare_folder(out, plan, overwrite)
        for start in range(0, len(names), batch):
            positions = [p for p in range(start, min(start + batch, len(names))) if p not in done]
            if not positions:
                continue
            good = [p for p in range(start, min(start + batch, len(names))) if not isinstance(loaded[p], FacepipeError)]
            stacked = [np.stack([loaded[p][j] for p in good]) if good and loaded[good[0]][j] is not None else None  # type: ignore[index]
                       for j in range(5)]
            meshes = dict(zip(good, predictor.predict(*stacked[:2], m, fit, *stacked[2:]) if good else [], strict=True))
            for p in positions:
                row: dict[str, object] = {"position": p, "source": printable(sources[p]), "modality": m}
                if p not in meshes:
                    write_row(out, p, row | {"output": "", "residual_mm": "", "error": printable(str(loaded[p]))})
                    continue
                data = trimesh.Trimesh(meshes[p], triangles, process=False).export(file_type=fmt)
                write_atomic(out / f"{names[p]}.{fmt}", data.encode() if isinstance(data, str) else data)
                write_row(out, p, row | {"output": f"{names[p]}.{fmt}", "residual_mm": residual_mm(meshes[p], loaded[p][1]),
                                         "error": ""})
        rows = write_index(out, FIELDS)
        t = predictor.face.template
        write_atomic(out / "template.json", json.dumps({"template": t.name, "id": t.id, "vertices": len(t.vertices),
                                                        "triangles": len(t.triangles), "frame": "OpenCV camera, mm"}).encode())
    return rows


Loaded = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]  # RGB, XYZ, depth points, K, landmarks


def _load(files: FrameFiles, modality: str, cfg: EncoderConfig, count: int, landmarks: bool,
          correct: Callable[[np.ndarray], np.ndarray] | None = None) -> Loaded | FacepipeError:
    """A capture at the input size with `count` points of its depth at its own size (0: none; read
    through `correct` if given) and, if asked, MediaPipe's landmarks found on its RGB at its own size; or
    the error that names its file (batches fixed by position keep the bits of every other frame the same)."""
    try:
        frame = read_frame(files, need_rgb=modality == "rgbd")
        if modality != "rgb" and frame.depth is None:
            raise ReconstructError(f"{files.source}: the {modality} branch needs a depth image")
        k = frame.k if frame.k is not None else default_intrinsics(*frame.rgb.shape[1::-1])
        rgb, xyz, small_k = prepare(frame.rgb, frame.depth if modality != "rgb" else None, k, cfg.width, cfg.height, str(files.source))
    except FacepipeError as exc:
        return exc
    points = (fit_points(frame.depth if correct is None else correct(frame.depth), k, count)
              if count and frame.depth is not None else None)
    marks = detect(frame.rgb, cfg.width, cfg.height) if landmarks and frame.rgb is not None else None
    return _checked(rgb, xyz, points, small_k, marks, modality, str(files.source))


def _checked(rgb: np.ndarray, xyz: np.ndarray, points: np.ndarray | None, k: np.ndarray, landmarks: np.ndarray | None,
             modality: str, where: str) -> Loaded | FacepipeError:
    if modality != "rgb" and not np.isfinite(xyz).all(-1).any():
        return FramesError(f"{where}: no valid depth pixel at the encoder's input size")
    return rgb, xyz, points, k, landmarks


DEFAULT_FOV_DEG = 60.0  # a photo without intrinsics: a phone's horizontal field of view (and render-rgbd's phone's)


def default_intrinsics(width: int, height: int) -> np.ndarray:
    """(3, 3) OpenCV intrinsics of a `width x height` image of DEFAULT_FOV_DEG, centred: what the fit
    to an RGB image assumes when it is given none (its faces' distance and size follow from it)."""
    f = width / 2 / np.tan(np.radians(DEFAULT_FOV_DEG) / 2)
    return np.array([[f, 0.0, width / 2 - 0.5], [0.0, f, height / 2 - 0.5], [0.0, 0.0, 1.0]])
