"""`facepipe train-encoder`: image encoders that regress a trained run's codes from RGB-D, depth or RGB.

The decoders of a `facepipe train` run are frozen; the encoder learns their codes, a pose and (RGB)
the light. Losses (paper 2): L1 on the standardised codes where a frame's codes are known (frames of
a synth store: its ground truth in template topology, fitted by the decoders once at the start),
the vertex distance in camera space to the posed ground truth, the cross-domain term (the face
predicted from the sensor's depth against the true depth's points, a robust Chamfer: the only term
for frames of raw scans), and for RGB a photometric term (albedo x SH shading at visible vertices
against the image). Batches depend only on (seed, epoch), so a resumed run continues exactly.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facepipe.models.correspond import Predictor
from facepipe.models.depth_denoiser import DepthDenoiser, train_denoiser
from facepipe.models.encoder import FaceEncoder, posed, shade
from facepipe.models.frames import Frames, anchors, concat, depth_pairs, network_input, read_frames
from facepipe.models.image_landmarks import MESH_POINTS, learn_embedding
from facepipe.models.losses import gather, nearest, vertex_normals
from facepipe.models.run_files import load_state, model_file, open_run, restore, save_atomic, start_records, write_history
from facepipe.models.train import Clock, pick_device
from facepipe.pipeline.errors import FacepipeError
from facepipe.pipeline.geometry.align import scale_of, umeyama
from facepipe.pipeline.runtime.store import open_group, read_plan
from facepipe.schemas.encoder import EncoderConfig


class EncoderError(FacepipeError):
    """An encoder run that cannot start: stores of another template, no supervision, a bad run."""


def face_run_state(checkpoint: str | Path) -> tuple[dict[str, object], Path]:
    """The `facepipe train` run's model.pt as loaded (an encoder run embeds it, so it is self-contained)."""
    file = model_file(checkpoint)
    if not file.exists():
        raise EncoderError(f"{file}: no trained face model (give a `facepipe train` run directory or its model.pt)",
                           remedy="checkpoint")
    state = load_state(file)
    if "decoders" in state:
        raise EncoderError(f"{file} is an encoder run; give the `facepipe train` run its decoders come from")
    return state, file


def fit_codes(predictor: Predictor, truth: np.ndarray, steps: int, chunk: int = 64) -> np.ndarray:
    """(N, I+E) codes whose decoded faces best match (N, V, 3) template-frame ground truth: the run's
    own encoder reads the faces' vertices as points, then the codes are fitted (decoders fixed)."""
    net, out = predictor.net, []
    for start in range(0, len(truth), chunk):
        target = torch.as_tensor(truth[start:start + chunk], dtype=torch.float32, device=predictor.device)
        with torch.no_grad():
            first = net.encode(predictor.encoder_input(truth[start:start + chunk]))
        codes = [c.clone().requires_grad_(True) for c in first]
        opt = torch.optim.Adam(codes, lr=0.02)
        for _ in range(steps):
            opt.zero_grad()
            loss = (net.decode(*codes) - target).norm(dim=-1).mean()
            loss.backward()
            opt.step()
        out.append(torch.cat(codes, 1).detach().cpu().numpy())
    return np.concatenate(out)


def robust_chamfer_mm(pred: torch.Tensor, points: torch.Tensor, limit_mm: float, method: str = "auto") -> torch.Tensor:
    """Two-sided mean distance (mm), each capped at `limit_mm` (hair, neck and the template's unseen
    side count no more than that); frames without points (NaN) are left out. `method`: the
    nearest-neighbour search (`losses.nearest`)."""
    valid = torch.isfinite(points).all(-1).all(-1)
    if not valid.any():
        return pred.sum() * 0.0
    pred, points = pred[valid], points[valid]
    p2s, s2p = nearest(pred, points, method=method), nearest(points, pred, method=method)
    d1 = (pred - gather(points, p2s.to(pred.device))).norm(dim=-1).clamp_max(limit_mm)
    d2 = (points - gather(pred, s2p.to(pred.device))).norm(dim=-1).clamp_max(limit_mm)
    return (d1.mean() + d2.mean()) / 2


def project(points: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, P, 2) OpenCV pixel positions (col, row) of camera-space points through intrinsics `k` (B, 3, 3)."""
    return torch.stack([k[:, 0, 0, None] * points[..., 0] / points[..., 2] + k[:, 0, 2, None],
                        k[:, 1, 1, None] * points[..., 1] / points[..., 2] + k[:, 1, 2, None]], -1)


def image_at_vertices(camera: torch.Tensor, rgb: torch.Tensor, k: torch.Tensor,
                      triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The face's vertex normals (B, V, 3), the image `rgb` (B, H, W, 3) at each vertex's projection
    (B, V, 3), and which vertices face the camera and project inside the image (B, V)."""
    n = vertex_normals(camera, triangles)
    h, w = rgb.shape[1:3]
    uv = project(camera, k)
    grid = torch.stack([2 * uv[..., 0] / (w - 1) - 1, 2 * uv[..., 1] / (h - 1) - 1], -1)
    seen = torch.nn.functional.grid_sample(rgb.permute(0, 3, 1, 2), grid[:, :, None], align_corners=True)[..., 0].transpose(1, 2)
    return n, seen, ((n * camera).sum(-1) < 0) & (grid.abs() <= 1).all(-1)


def photometric(camera: torch.Tensor, out: dict[str, torch.Tensor], rgb: torch.Tensor, k: torch.Tensor,
                triangles: torch.Tensor) -> torch.Tensor:
    """Mean L1 (0-1 colour) between the image at each visible vertex's projection and its albedo x SH
    shading; visible: facing the camera and inside the image (self-occlusion is not traced)."""
    n, seen, visible = image_at_vertices(camera, rgb, k, triangles)
    mask = visible.float()
    diff = (shade(n, out["albedo"], out["sh"]) - seen).abs().mean(-1)
    return (diff * mask).sum() / mask.sum().clamp_min(1.0)


def outward(triangles: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """The template's triangles wound so that normals point out of the face (+z in the template frame)."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    return triangles if np.cross(b - a, c - a)[:, 2].sum() >= 0 else triangles[:, ::-1].copy()


@dataclass
class Supervision:
    """What the frames are trained against, on the device; None where no frame has it."""

    z: torch.Tensor | None  # (N, K) standardised target codes
    truth: torch.Tensor | None  # (N, V, 3) camera mm
    clean: torch.Tensor | None  # (N, P, 3) camera mm


@dataclass
class EncoderRun:
    config: EncoderConfig
    face: Predictor
    face_state: dict[str, object]
    encoder: FaceEncoder
    model: torch.nn.Module  # the encoder, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    frames: Frames
    anchors: dict[str, np.ndarray]
    supervision: Supervision
    triangles: torch.Tensor
    device: torch.device
    rank: int = 0
    world: int = 1
    landmarks: np.ndarray = field(default_factory=lambda: np.full(MESH_POINTS, -1))  # template vertex of each MediaPipe landmark
    denoiser: DepthDenoiser | None = None  # the sensor's depth correction, learnt after the epochs

    def epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config
        lr = cfg.lr * 0.5 ** (epoch // cfg.lr_halve_every)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(self.frames))
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        if self.world > 1:  # every rank takes the same number of steps
            batches = [batches[k % len(batches)] for k in range(max(len(batches) // self.world, 1) * self.world)]
        clock, totals, seen = Clock(self.device), {}, 0
        self.model.train()
        t0 = time.perf_counter()
        for b, index in enumerate(batches):
            if b % self.world != self.rank:
                continue
            terms = self.losses(np.sort(index), clock)
            loss = sum(terms.values())
            with clock("backward"):
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[union-attr]
                self.optimizer.step()
            for key, value in [*terms.items(), ("loss", loss)]:
                totals[key] = totals.get(key, 0.0) + float(value.detach()) * len(index)  # type: ignore[union-attr]
            seen += len(index)
        seconds = time.perf_counter() - t0
        return {k: v / max(seen, 1) for k, v in totals.items()} | {
            "lr": lr, "frames": float(seen), "seconds": seconds, "frames_per_s": seen / seconds if seconds > 0 else 0.0} | {
            f"s_{k}": v for k, v in clock.seconds.items()}

    def predict(self, index: np.ndarray, clock: Clock | None = None, training: bool = True
                ) -> dict[str, tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Per branch: its outputs and (B, V, 3) camera-space faces for frames `index`; `training`
        False: through the bare encoder (rank 0 alone, no DDP synchronisation)."""
        clock = clock or Clock(self.device)
        f = self.frames
        with clock("data"):
            inputs = {m: network_input(f.rgb[index], f.xyz[index], self.anchors[m][index], m, self.device) for m in self.config.modalities}
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" and self.config.amp
                    else nullcontext())
        with clock("forward"):
            with autocast:
                outs = (self.model if training else self.encoder)(inputs)
            result = {}
            for m, out in outs.items():
                faces = self.face.net.decode(out["identity_code"], out["expression_code"]).float()
                anchor = torch.as_tensor(self.anchors[m][index], device=self.device)
                result[m] = (out, posed(faces, out, anchor))
        return result

    def losses(self, index: np.ndarray, clock: Clock) -> dict[str, torch.Tensor]:
        cfg, w, sup = self.config, self.config.weights, self.supervision
        ix = torch.as_tensor(index, device=self.device)
        terms: dict[str, torch.Tensor] = {}
        for m, (out, camera) in self.predict(index, clock).items():
            if sup.z is not None and w.code:
                target = sup.z[ix]
                known = torch.isfinite(target).all(-1)
                if known.any():
                    terms[f"{m}_code"] = w.code * (out["z"][known] - target[known]).abs().mean()
            if sup.truth is not None:
                truth = sup.truth[ix]
                known = torch.isfinite(truth).all(-1).all(-1)
                if known.any():
                    terms[f"{m}_vertex"] = w.vertex * (camera[known] - truth[known]).norm(dim=-1).mean()
            if cfg.cross_domain and m != "rgb" and sup.clean is not None and w.cross_domain:
                with clock("nearest"):
                    terms[f"{m}_cross_domain"] = w.cross_domain * robust_chamfer_mm(camera, sup.clean[ix], w.cross_domain_mm)
            if m == "rgb" and w.photometric:
                rgb = torch.as_tensor(self.frames.rgb[index], device=self.device).float() / 255.0
                k = torch.as_tensor(self.frames.k[index], dtype=torch.float32, device=self.device)
                terms["rgb_photometric"] = w.photometric * photometric(camera, out, rgb, k, self.triangles)
        if not terms:
            raise EncoderError("no loss applies to these frames: they have neither codes, ground truth nor clean depth")
        return terms


def build(config: EncoderConfig) -> EncoderRun:
    torch.manual_seed(config.seed)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = pick_device(config.device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    state, file = face_run_state(config.checkpoint)
    face = Predictor.from_state(state, file, str(device))
    for url in config.rgbd:
        plan = read_plan(open_group(url, "r"), url)
        if plan.kind == "rgbd" and plan.template_id and plan.template_id != face.template.id and "vertices" in open_group(url, "r"):
            raise EncoderError(f"{url} holds ground truth in template {plan.template_id}; {file} was trained with "
                               f"{face.template.id} ({face.template.name})")
    clean_count = config.chamfer_points if config.cross_domain else 0
    frames = concat([read_frames(u, config.width, config.height, clean_count=clean_count, seed=config.seed) for u in config.rgbd])
    weights = load_state(Path(config.backbone_weights)) if config.backbone_weights else None
    encoder = FaceEncoder(config.modalities, face.net.identity_head.out_features, face.net.expression_head.out_features,
                          config.backbone, config.shared_stages, weights)  # type: ignore[arg-type]
    z = None
    if frames.truth is not None:
        codes = fit_codes(face, frames.truth_template, config.code_fit_steps)  # type: ignore[arg-type]
        mean, std = codes.mean(0), np.maximum(codes.std(0), 1e-3)
        z = torch.as_tensor((codes - mean) / std, dtype=torch.float32, device=device)
        encoder.code_mean.copy_(torch.as_tensor(mean))
        encoder.code_std.copy_(torch.as_tensor(std))
        poses = [umeyama(t.astype(np.float64), c.astype(np.float64)) for c, t in zip(frames.truth, frames.truth_template, strict=True)]
        encoder.scale_mm.fill_(float(np.mean([scale_of(p) for p in poses])))
        encoder.distance_mm.fill_(float(frames.truth[..., 2].mean()))
        origins = np.array([p[:3, 3] for p in poses])  # where each face's template origin sits in camera space
        for m in config.modalities:  # heads start at the training faces' mean placement about their anchor
            encoder.set_mean_offset(m, (origins - anchors(frames.xyz, m, float(encoder.distance_mm))).mean(0))
    else:
        encoder.scale_mm.fill_(face.template.unit_mm)
        encoder.distance_mm.fill_(float(np.nanmean(frames.xyz[..., 2])))
    points = {m: anchors(frames.xyz, m, float(encoder.distance_mm)) for m in config.modalities}
    encoder = encoder.to(device)
    model: torch.nn.Module = encoder
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(encoder, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)

    def tensor(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.as_tensor(a, dtype=torch.float32, device=device)

    supervision = Supervision(z, tensor(frames.truth), tensor(frames.clean))
    triangles = torch.as_tensor(outward(face.template.triangles, face.template.vertices), device=device)
    marks = landmark_vertices(config, face, float(encoder.scale_mm)) if "rgb" in config.modalities else np.full(MESH_POINTS, -1)
    return EncoderRun(config, face, state, encoder, model, optimizer, frames, points, supervision, triangles, device, rank, world,
                      marks)


def landmark_vertices(config: EncoderConfig, face: Predictor, unit_mm: float) -> np.ndarray:
    """(468,) the template vertex of each MediaPipe landmark (-1: left out), learnt on the first
    training frames with ground truth; all -1 where none has it (the fit to an image then keeps the encoder's faces)."""
    frames = concat([read_frames(u, config.width, config.height, limit=config.landmark_frames, landmarks=True) for u in config.rgbd])
    if frames.truth is None:
        return np.full(MESH_POINTS, -1)
    return learn_embedding(frames.landmarks, frames.k, frames.truth.astype(np.float64), face.template.vertices,  # type: ignore[arg-type]
                           face.template.triangles, unit_mm, config.landmark_spread_mm)


def encoder_state(run: EncoderRun) -> dict[str, object]:
    """What `facepipe reconstruct` needs and nothing else: the encoder, its config and the face run it decodes with."""
    state = {"encoder": run.encoder.state_dict(), "config": run.config.model_dump_json(), "decoders": run.face_state,
             "landmarks": torch.as_tensor(run.landmarks)}
    return state | ({} if run.denoiser is None else {"denoiser": run.denoiser.state_dict()})


def learn_correction(run: EncoderRun, out: Path, log: Callable[[str], None]) -> DepthDenoiser | None:
    """The sensor's depth correction, learnt on the training stores' sensor and true depth (None when
    it is off or no branch reads depth); its L1 every step goes to denoiser.jsonl. Its own seeded
    RNG: the encoder's training, before or after a resume, is untouched by it."""
    cfg = run.config.denoiser
    if not cfg.steps or all(m == "rgb" for m in run.config.modalities):
        return None
    sensor, clean = depth_pairs(run.config.rgbd, cfg.frames, cfg.crop // 2)
    if not sensor:
        log("no frame with true depth: the fit will read the sensor's depth as it is")
        return None
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        net, losses = train_denoiser(sensor, clean, cfg, run.config.seed, run.device, log)
    with open(out / "denoiser.jsonl", "w") as f:
        f.writelines(json.dumps({"step": k, "l1_mm": v}) + "\n" for k, v in enumerate(losses))
    return net


def save_checkpoint(path: Path, run: EncoderRun, epoch: int) -> None:
    save_atomic(encoder_state(run) | {"optimizer": run.optimizer.state_dict(), "epoch": epoch, "torch_rng": torch.get_rng_state()}, path)


def train_encoder(config: EncoderConfig, out: Path, resume: bool = False, log: Callable[[str], None] = print) -> list[dict[str, object]]:
    """Run the epochs, writing config.json, metrics.jsonl, TensorBoard scalars, checkpoints and, at the
    end, losses.png, predictions.png and model.pt."""
    last = open_run(out, config, resume)
    run = build(config)
    done = -1
    if resume:
        state = load_state(last)
        restore(state, "encoder", run.encoder, run.optimizer)
        done = int(state["epoch"])  # type: ignore[call-overload]
        log(f"resuming after epoch {done}")
    history, writer = start_records(out, config, done, run.rank)
    try:
        for epoch in range(done + 1, config.epochs):
            metrics = run.epoch(epoch)
            history.append({"epoch": epoch, "step": epoch, "phase": "encoder"} | metrics)
            if run.rank == 0:
                write_history(out, history)
                save_checkpoint(last, run, epoch)
                for key, value in metrics.items():
                    writer.add_scalar(key, value, epoch)  # type: ignore[union-attr]
                writer.flush()  # type: ignore[union-attr]
                log(f"encoder epoch {epoch:>3}  loss {metrics['loss']:.4f}  {metrics['frames_per_s']:.1f} frames/s")
    finally:
        if writer is not None:
            writer.close()
    if run.rank == 0:
        from facepipe.models.plots import plot_losses

        run.denoiser = learn_correction(run, out, log)
        plot_losses(history, out / "losses.png", keys=tuple(k for k in history[-1] if k.endswith(("_vertex", "_cross_domain"))))
        write_preview(run, out / "predictions.png")
        save_atomic(encoder_state(run), out / "model.pt")
    return history


def write_preview(run: EncoderRun, path: Path) -> None:
    """Rows of RGB | input depth | each branch's face as a depth image | its distance from the input
    depth (0-5 mm): the picture a run ends with."""
    from facepipe.pipeline.geometry.depth_sensor import colorize, mesh_depth
    from facepipe.pipeline.io.image import write_image

    count = min(run.config.preview_samples, len(run.frames))
    if not count:
        return
    index = np.arange(count)
    run.encoder.eval()
    with torch.no_grad():
        preds = {m: cam.cpu().numpy() for m, (_, cam) in run.predict(index, training=False).items()}
    rows = []
    for i in index:
        z = run.frames.xyz[i, ..., 2]
        lo, hi = (np.nanpercentile(z, [1, 99]) if np.isfinite(z).any() else (0.0, 1.0))
        cells = [run.frames.rgb[i], colorize(z, lo, hi)]
        for m, cam in preds.items():
            d = mesh_depth(cam[i], run.face.template.triangles, run.frames.k[i], z.shape)
            cells += [colorize(d, lo, hi), colorize(np.where(np.isfinite(z), np.abs(d - z), np.nan), 0.0, 5.0)]
        rows.append(np.concatenate(cells, 1))
    write_image(path, np.concatenate(rows, 0))
