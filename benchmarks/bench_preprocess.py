"""Single-scan preprocessing: time per stage, MediaPipe landmark accuracy on ICT-FaceKit renders,
the effect of ICP, and area vs vertex sampling; prints tables and writes JSON.

    python benchmarks/bench_preprocess.py [--ict ../shared/models/ict_facekit_face.npz] [--faces 24]
                                          [--scans 12] [--out benchmarks/results/preprocess.json]

Speed is measured on BU-3DFE-sized example scans (about 8k vertices, `.wrl` read included) with
the landmarks found by MediaPipe (the expensive path) and from the `.bnd` file. Accuracy is measured
on faces of the ICT-FaceKit model (random identities, half with random expressions), rendered and
detected exactly as raw scans are, against the model's own iBUG-68 landmark vertices.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

from facepipe.pipeline.faces.morphable import MorphableModel
from facepipe.pipeline.faces.relief import FaceParams
from facepipe.pipeline.faces.template import Template, template_from_model
from facepipe.pipeline.geometry.align import apply, umeyama
from facepipe.pipeline.geometry.landmarks import MediaPipe
from facepipe.pipeline.geometry.resample import sample_points, subdivide_to
from facepipe.pipeline.geometry.scan import Scan
from facepipe.pipeline.io.ict import load_ict_npz
from facepipe.pipeline.io.sample_data import bu3dfe_files, write_files
from facepipe.pipeline.stages.preprocess import Preprocessed, preprocess, preprocess_file
from facepipe.schemas.preprocess import PreprocessConfig
from facepipe.schemas.scan import ScanMeta

REPO = Path(__file__).resolve().parents[1]


def random_face(model: MorphableModel, rng: np.random.Generator, expressive: bool) -> np.ndarray:
    w = np.zeros(len(model.expression))
    if expressive:
        k = rng.choice(len(w), 6, replace=False)
        w[k] = rng.uniform(0, 1, 6)
    return model.shape(rng.normal(size=len(model.identity)), w)


def bench_speed(template: Template, scans: int, mp: MediaPipe) -> dict[str, object]:
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(scans):
            rng = np.random.default_rng(i)
            p = FaceParams.random(rng, smile=float(i % 2), mouth_open=0.5 * (i % 2))
            paths.append(write_files(Path(tmp) / str(i), bu3dfe_files(p, rng, f"F{i:04d}_NE00WH_F3D", spacing=1.6))[0])
        for source in ("mediapipe", "annotations"):
            cfg = PreprocessConfig(landmarks=source)  # type: ignore[arg-type]
            preprocess_file(paths[0], template, cfg, np.random.default_rng(0), mediapipe=mp)  # warm-up
            totals, stages, verts = [], [], []
            for i, path in enumerate(paths):
                t0 = time.perf_counter()
                r = preprocess_file(path, template, cfg, np.random.default_rng(i), mediapipe=mp)
                totals.append(time.perf_counter() - t0)
                assert isinstance(r, Preprocessed), r
                stages.append(r.quality.seconds)
                verts.append(r.quality.vertices_before_crop)
            out[source] = {"seconds_per_scan_mean": float(np.mean(totals)), "seconds_per_scan_median": float(np.median(totals)),
                           "vertices_per_scan": float(np.mean(verts)),
                           "stage_seconds_mean": {k: float(np.mean([s[k] for s in stages])) for k in stages[0]}}
    return out


def bench_accuracy(model: MorphableModel, template: Template, faces: int, mp: MediaPipe, size: int) -> dict[str, object]:
    """Detected vs true five (mm); alignment error = mean vertex distance between the detected and the
    true-landmark alignment, in mm of the face, with and without ICP."""
    rng = np.random.default_rng(2026)
    errors: dict[str, list[np.ndarray]] = {"neutral": [], "expression": []}
    align_err: dict[str, list[float]] = {"similarity": [], "similarity+icp": []}
    failures = 0
    for i in range(faces):
        kind = "expression" if i % 2 else "neutral"
        v = random_face(model, rng, kind == "expression")
        truth = model.landmark_points(v)
        scan = Scan(v, model.triangles, ScanMeta(format="ict", path=f"ict_{i}"))
        t_true = umeyama(truth, template.landmarks)
        ref = apply(t_true, v[: model.face_vertices])
        for icp_on, key in ((False, "similarity"), (True, "similarity+icp")):
            r = preprocess(scan, template, PreprocessConfig(icp=icp_on, n_points=2000, render_size=size), np.random.default_rng(i), mp)
            if not isinstance(r, Preprocessed):
                failures += not icp_on
                continue
            if not icp_on:
                five = apply(np.linalg.inv(r.to_template), r.landmarks.astype(np.float64))
                errors[kind].append(np.linalg.norm(five - truth, axis=1))
            scale = np.cbrt(np.linalg.det(t_true[:3, :3]))
            align_err[key].append(float(np.linalg.norm(apply(r.to_template, v[: model.face_vertices]) - ref, axis=1).mean() / scale))
    names = ["right_eye_centre", "left_eye_centre", "nose_tip", "mouth_right", "mouth_left"]
    res: dict[str, object] = {"faces": faces, "failures": failures}
    for kind, e in errors.items():
        arr = np.array(e)
        res[kind] = {"mean_mm": float(arr.mean()), "per_landmark_mm": dict(zip(names, arr.mean(0).round(3).tolist())),
                     "max_mm": float(arr.max())}
    res["all_mean_mm"] = float(np.concatenate([np.array(e) for e in errors.values()]).mean())
    res["alignment_error_mm"] = {k: float(np.mean(x)) for k, x in align_err.items()}
    return res


def bench_sampling(model: MorphableModel, template: Template, n: int = 29_495) -> dict[str, object]:
    """Area vs vertex sampling of the narrow ICT face as a scan (6.7k vertices, so vertex sampling
    needs loop subdivision): distance to the true surface and coverage (mean distance from a dense
    uniform reference of the true surface to the nearest sample), in mm."""
    f = model.triangles[(model.triangles < model.face_vertices).all(1)]
    v = model.mean
    dense, _ = sample_points(v, f, 200_000, np.random.default_rng(1), "area")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
    out: dict[str, object] = {}
    for method in ("area", "vertices"):
        t0 = time.perf_counter()
        sv, sf, levels = subdivide_to(v, f, n) if method == "vertices" else (v, f, 0)
        pts, _ = sample_points(sv, sf, n, np.random.default_rng(2), method)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        to_surface = scene.compute_distance(o3d.core.Tensor(pts.astype(np.float32))).numpy()
        coverage = cKDTree(pts).query(dense)[0]
        spacing = cKDTree(pts).query(pts, k=2)[0][:, 1]
        out[method] = {"seconds": seconds, "subdivision_levels": levels, "distance_to_true_surface_mm": float(to_surface.mean()),
                       "coverage_mm": float(coverage.mean()), "coverage_p99_mm": float(np.percentile(coverage, 99)),
                       "nn_spacing_cv": float(spacing.std() / spacing.mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ict", type=Path, default=REPO.parent / "shared" / "models" / "ict_facekit_face.npz")
    ap.add_argument("--faces", type=int, default=24)
    ap.add_argument("--scans", type=int, default=12)
    ap.add_argument("--render-size", type=int, default=PreprocessConfig().render_size)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "preprocess.json")
    args = ap.parse_args()
    if not args.ict.exists():
        raise SystemExit(f"ICT-FaceKit npz not found at {args.ict}: pass --ict PATH")
    model = load_ict_npz(args.ict)
    template = template_from_model(model)
    mp = MediaPipe()
    result = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "template": {"name": template.name, "id": template.id, "vertices": len(template.vertices)},
              "speed": bench_speed(template, args.scans, mp),
              "landmarks": bench_accuracy(model, template, args.faces, mp, args.render_size),
              "sampling": bench_sampling(model, template)}
    for source, r in result["speed"].items():  # type: ignore[union-attr]
        stages = "  ".join(f"{k} {1e3 * s:.1f}" for k, s in r["stage_seconds_mean"].items())
        print(f"speed [{source:11s}] {1e3 * r['seconds_per_scan_mean']:.1f} ms/scan "
              f"({r['vertices_per_scan']:.0f} vertices)  stages ms: {stages}")
    lm = result["landmarks"]
    for kind in ("neutral", "expression"):
        print(f"landmarks [{kind:10s}] mean {lm[kind]['mean_mm']:.2f} mm, max {lm[kind]['max_mm']:.1f} mm, "
              + ", ".join(f"{k} {x:.2f}" for k, x in lm[kind]["per_landmark_mm"].items()))
    print(f"landmarks [all       ] mean {lm['all_mean_mm']:.2f} mm over {lm['faces']} ICT faces, {lm['failures']} failures")
    print("alignment error (mean vertex distance to the true-landmark alignment): "
          + ", ".join(f"{k} {x:.2f} mm" for k, x in lm["alignment_error_mm"].items()))
    for method, r in result["sampling"].items():
        print(f"sampling [{method:8s}] {1e3 * r['seconds']:.0f} ms, {r['subdivision_levels']} levels, "
              f"to true surface {r['distance_to_true_surface_mm']:.4f} mm, coverage {r['coverage_mm']:.3f} mm "
              f"(p99 {r['coverage_p99_mm']:.3f}), spacing CV {r['nn_spacing_cv']:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
