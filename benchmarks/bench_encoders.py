"""Faces from RGB-D, depth and RGB (issue 18): held-out synthetic ICT faces through the phone camera.

Trains encoders on ICT faces rendered by `render-rgbd --preset phone` for the decoders of a trained
face run (the reference recipe's, `benchmarks/reference_recipe.sh`), with and without paper 2's
cross-domain term, and evaluates them on frames of identities not seen in training; then times
batched inference at the input size on this machine. Every step is the CLI as a user runs it.

    python benchmarks/bench_encoders.py --ict ICT --face-run RUN [--work DIR] [--identities 150] [--test 12]
        [--epochs 30] [--out benchmarks/results/encoders.json]

With the fit to the depth, each depth branch is evaluated with and without the run's learnt
correction of the sensor's depth, and the correction's own error on the test frames is reported.

Targets: pose-fitted mean vertex error RGB-D < 1.5 mm, depth < 2 mm, RGB < 3 mm; the cross-domain
term lowers the error from sensor depth; inference < 20 ms per frame on 2 cores at 160x120, batched.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, write_results

from facepipe.models.frames import read_frames
from facepipe.models.reconstruct import EncoderPredictor

REPO = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("facepipe"))


def step(times: dict[str, float], name: str, *args: str) -> None:
    t0 = time.perf_counter()
    print("$ facepipe", " ".join(args), flush=True)
    subprocess.run([EXE, *args], check=True)
    times[name] = round(time.perf_counter() - t0, 1)


def inference_ms(run: Path, rgbd: str, batch: int = 16, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per frame of each branch, batched, decoders included, on this machine's threads."""
    predictor = EncoderPredictor.load(run, "cpu")
    cfg = predictor.config
    frames = read_frames(rgbd, cfg.width, cfg.height, limit=batch)
    out = {}
    for m in cfg.modalities:
        predictor.predict(frames.rgb, frames.xyz, m)  # warm up
        t0 = time.perf_counter()
        for _ in range(repeats):
            predictor.predict(frames.rgb, frames.xyz, m)
        out[m] = round((time.perf_counter() - t0) / repeats / len(frames) * 1e3, 2)
    return out


def correction_mm(run: Path, rgbd: str) -> dict[str, float] | None:
    """Mean and median distance (mm, along the ray) of the sensor's depth from the true depth on the
    store's frames, as it is and through the run's learnt correction, and the correction's ms per frame."""
    from facepipe.models.depth_denoiser import denoise
    from facepipe.pipeline.runtime.store import open_group

    predictor = EncoderPredictor.load(run, "cpu")
    if predictor.denoiser is None:
        return None
    group = open_group(rgbd, "r")
    raw, fixed, seconds = [], [], 0.0
    for i in range(group["depth"].shape[0]):
        depth, clean = group["depth"][i], group["depth_clean"][i]
        t0 = time.perf_counter()
        corrected = denoise(predictor.denoiser, depth)
        seconds += time.perf_counter() - t0
        both = np.isfinite(depth) & np.isfinite(clean)
        raw.append(np.abs(depth - clean)[both])
        fixed.append(np.abs(corrected - clean)[both])
    a, b = np.concatenate(raw), np.concatenate(fixed)
    return {"sensor_mean_mm": round(float(a.mean()), 3), "sensor_median_mm": round(float(np.median(a)), 3),
            "corrected_mean_mm": round(float(b.mean()), 3), "corrected_median_mm": round(float(np.median(b)), 3),
            "ms_per_frame": round(seconds / group["depth"].shape[0] * 1e3, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ict", type=Path, required=True, help="ict_facekit_face.npz or the FaceXModel/ folder")
    ap.add_argument("--face-run", type=Path, required=True, help="a `facepipe train` run on ICT faces (the reference recipe's)")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "results" / "encoders")
    ap.add_argument("--identities", type=int, default=100, help="training identities (x expressions + 1 neutral)")
    ap.add_argument("--expressions", type=int, default=1)
    ap.add_argument("--test", type=int, default=12, help="held-out identities (another seed)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--modalities", default="rgbd,depth,rgb")
    ap.add_argument("--ablation", default="depth", help="branch trained again without the cross-domain term ('' for none)")
    ap.add_argument("--ablation-size", default="", help="WxH input of the ablation runs (default: the preset's)")
    ap.add_argument("--train", action="append", default=[], help="more training rgbd stores (e.g. other views of the same faces)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "encoders.json")
    args = ap.parse_args()
    w = args.work
    w.mkdir(parents=True, exist_ok=True)
    ict, times = str(args.ict.resolve()), {}
    train, test = str(w / "train.zarr"), str(w / "test.zarr")
    step(times, "synth-train", "synth", "--model", "ict", "--model-path", ict, "--identities", str(args.identities),
         "--expressions", str(args.expressions), "--out", str(w / "synth-train.zarr"))
    step(times, "synth-test", "synth", "--model", "ict", "--model-path", ict, "--identities", str(args.test), "--expressions", "1",
         "--seed", "1", "--out", str(w / "synth-test.zarr"))
    step(times, "render-train", "render-rgbd", "--in", str(w / "synth-train.zarr"), "--out", train, "--preset", "phone")
    step(times, "render-test", "render-rgbd", "--in", str(w / "synth-test.zarr"), "--out", test, "--preset", "phone",
         "--seed", "1")  # the stores resume: a rerun of the benchmark renders nothing again
    size = dict(zip(("width", "height"), map(int, args.ablation_size.split("x")), strict=True)) if args.ablation_size else {}
    runs = {"joint": (args.modalities.split(","), [], {})}
    if args.ablation:
        runs[f"{args.ablation}-no-cross-domain"] = ([args.ablation], ["--no-cross-domain"], size)
        runs[f"{args.ablation}-cross-domain"] = ([args.ablation], [], size)
    stores = [f for u in [train, *args.train] for f in ("--rgbd", u)]
    result: dict[str, object] = {"machine": machine(), "torch_threads": torch.get_num_threads(), "identities": args.identities,
                                 "expressions": args.expressions, "test_identities": args.test, "epochs": args.epochs, "runs": {}}
    for name, (modalities, extra, settings) in runs.items():
        run = w / f"run-{name}"
        if not (run / "model.pt").exists():
            flags = [f for m in modalities for f in ("--modality", m)]
            (w / f"{name}.json").write_text(json.dumps({"epochs": args.epochs} | settings))
            step(times, f"train-{name}", "train-encoder", "--checkpoint", str(args.face_run), *stores, *flags,
                 "--preset", "reference", "--config", str(w / f"{name}.json"), "--out", str(run), *extra)
        figures: dict[str, object] = {"input": settings or "preset"}
        evaluations = [("encoder", ["--no-refine"]), ("encoder+fit", ["--refine"])]
        if modalities != ["rgb"]:  # what the learnt correction of the sensor's depth brings to the fit
            evaluations.append(("encoder+fit-uncorrected", ["--refine", "--no-denoise"]))
        for label, flags in evaluations:
            folder = w / f"eval-{name}-{label}"
            step(times, f"evaluate-{name}-{label}", "evaluate", "--in", test, "--checkpoint", str(run), "--out", str(folder), *flags)
            report = json.loads((folder / "report.json").read_text())
            figures[label] = {k: {"pose_fitted_mm": round(v["vertex_mm_pose_fitted"]["mean"], 3),
                                  "similarity_fitted_mm": round(v["vertex_mm_similarity_fitted"]["mean"], 3),
                                  "camera_mm": round(v["vertex_mm"]["mean"], 3), "ms_per_frame": round(v["ms_per_frame"], 1)}
                              for k, v in report["branches"].items()}
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        result["runs"][name] = figures | {  # type: ignore[index]
            "train_frames_per_s": round(float(np.mean([h["frames_per_s"] for h in history[1:] or history])), 2),
            "inference_ms_per_frame": inference_ms(run, test), "depth_correction": correction_mm(run, test)}
    step(times, "reconstruct", "reconstruct", "--checkpoint", str(w / "run-joint"), "--in", test, "--out", str(w / "meshes"),
         "--overwrite")
    result["seconds"] = times
    print(json.dumps(result["runs"], indent=2))
    write_results(args.out, result)


if __name__ == "__main__":
    main()
