"""`facepipe evaluate` on an rgbd store: how far each encoder branch's faces land from the truth, in mm.

For every branch of an encoder run and both inputs (the sensor's depth, and the true depth: what
the sensor's artefacts cost), the mean vertex error against the frame's ground truth in template
topology (frames rendered from a synth store carry it), in camera space as predicted, and after
fitting the pose (a rigid fit of the prediction to the truth: the shape error alone) and after a
similarity fit (scale too: what RGB alone cannot know, the distance, is a scale); and the floor,
the decoders' own closest faces to the truth. Tables go to the terminal, CSV and JSON; a heat map
per branch and input shows the mean error on the template.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from facepipe.models.evaluate import summary_stats, write_heatmap
from facepipe.models.frames import Frames, FramesError, read_frames
from facepipe.models.reconstruct import EncoderPredictor
from facepipe.models.train_encoder import fit_codes
from facepipe.pipeline.geometry.align import apply, scale_of, umeyama
from facepipe.schemas.encoder import FitConfig


def fitted_errors(pred: np.ndarray, truth: np.ndarray, scale: bool = False) -> np.ndarray:
    """(V,) distances after the rigid motion (or similarity) that best lays the prediction onto the truth."""
    return np.linalg.norm(apply(umeyama(pred, truth, with_scale=scale), pred) - truth, axis=-1)


def decoder_floor(predictor: EncoderPredictor, frames: Frames, steps: int = 300) -> np.ndarray:
    """(N,) mean distance (mm) of the decoders' closest faces (codes fitted to the truth itself) to the
    truth: no encoder of these decoders can do better."""
    codes = fit_codes(predictor.face, frames.truth_template, steps)  # type: ignore[arg-type]
    k = predictor.encoder.identity_dim
    with torch.no_grad():
        c = torch.as_tensor(codes, dtype=torch.float32, device=predictor.device)
        faces = predictor.face.net.decode(c[:, :k], c[:, k:]).cpu().numpy().astype(np.float64)
    out = []
    for face, t, cam in zip(faces, frames.truth_template.astype(np.float64), frames.truth.astype(np.float64), strict=True):  # type: ignore[union-attr]
        mm = scale_of(umeyama(t, cam))  # template units -> mm
        out.append(float(np.linalg.norm(face - t, axis=-1).mean() * mm))
    return np.array(out)


def evaluate_frames(url: str, predictor: EncoderPredictor, out: Path, limit: int | None = None, batch: int = 16,
                    fit: FitConfig | None = FitConfig()) -> dict[str, object]:
    """`fit`: the faces of branches that read depth are fitted to it after the encoder, as
    reconstruct does (None: the encoder alone)."""
    cfg, template = predictor.config, predictor.face.template
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    rows: list[dict[str, object]] = []
    for clean in (False, True):
        frames = read_frames(url, cfg.width, cfg.height, clean_input=clean, limit=limit,
                             fit_count=fit.refine_points if fit is not None and fit.refine else 0,
                             landmarks=not clean and any(predictor.fits_landmarks(m, fit) for m in cfg.modalities),
                             correct=predictor.correction(fit, clean))
        if frames.truth is None:
            raise FramesError(f"{url}: no ground truth (render-rgbd carries it for frames of a synth store)")
        for m in cfg.modalities:
            if m == "rgb" and clean:
                continue  # no depth: one result
            key = m if m == "rgb" else f"{m}/{'clean' if clean else 'sensor'}"
            used = predictor.depth_fit(fit, clean)  # the scan-to-face term on clean or corrected depth only
            t0 = time.perf_counter()
            pred = np.concatenate([predictor.predict(frames.rgb[i:i + batch], frames.xyz[i:i + batch], m, used,
                                                     None if frames.points is None else frames.points[i:i + batch],
                                                     frames.k[i:i + batch],
                                                     None if frames.landmarks is None else frames.landmarks[i:i + batch])
                                   for i in range(0, len(frames), batch)])
            ms = (time.perf_counter() - t0) / len(frames) * 1e3
            camera = np.linalg.norm(pred - frames.truth, axis=-1)
            truth = frames.truth.astype(np.float64)
            fitted = np.stack([fitted_errors(p, t) for p, t in zip(pred, truth, strict=True)])
            similar = np.stack([fitted_errors(p, t, scale=True) for p, t in zip(pred, truth, strict=True)])
            results[key] = {"frames": len(frames), "vertex_mm": summary_stats(list(camera.mean(1))),
                            "vertex_mm_pose_fitted": summary_stats(list(fitted.mean(1))),
                            "vertex_mm_similarity_fitted": summary_stats(list(similar.mean(1))), "ms_per_frame": ms}
            rows += [{"frame": f, "branch": m, "input": "rgb" if m == "rgb" else "clean" if clean else "sensor",
                      "vertex_mm": float(c), "vertex_mm_pose_fitted": float(e), "vertex_mm_similarity_fitted": float(q)}
                     for f, c, e, q in zip(frames.ids, camera.mean(1), fitted.mean(1), similar.mean(1), strict=True)]
            write_heatmap(template, fitted.mean(0), out / f"heatmap_{key.replace('/', '_')}.png")
    summary = {"store": url, "encoder": predictor.fingerprint, "template": template.id, "input_size": [cfg.width, cfg.height],
               "fit": fit.model_dump() if fit else None, "decoders_best_fit_mm": summary_stats(list(decoder_floor(predictor, frames))),
               "branches": results}
    with open(out / "samples.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
