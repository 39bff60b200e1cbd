"""`facepipe render-rgbd`: frames per second with 1 and 2 worker processes per preset, time per step,
and the depth error on a plane and a sphere against each preset's stated precision; prints and writes JSON.

    python benchmarks/bench_rgbd.py [--faces 16] [--out benchmarks/results/rgbd.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import open3d as o3d

from common import machine, write_results

from facepipe.pipeline.faces.procedural import default_template, procedural_model
from facepipe.pipeline.faces.template import template_selection
from facepipe.pipeline.geometry.depth_sensor import StructuredLight
from facepipe.pipeline.geometry.render import Raycaster
from facepipe.pipeline.runtime.sources import resolve_source
from facepipe.pipeline.stages.rgbd import run_render_rgbd
from facepipe.pipeline.stages.synth import run_synth
from facepipe.schemas.rgbd import PRESETS, RenderConfig
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig

REPO = Path(__file__).resolve().parents[1]


def accuracy(preset_name: str) -> dict[str, dict[str, float]]:
    p = PRESETS[preset_name]
    device = StructuredLight(p)
    box, ball = o3d.geometry.TriangleMesh.create_box(3000, 3000, 1), o3d.geometry.TriangleMesh.create_sphere(100, 80)
    shapes = {"plane": (np.asarray(box.vertices) - np.array([1500, 1500, 1.0]), np.asarray(box.triangles), 0.0),
              "sphere": (np.asarray(ball.vertices), np.asarray(ball.triangles), 100.0)}
    out = {}
    for name, (v, f, r) in shapes.items():
        cam = device.camera(np.array([0.0, 0.0, p.distance_mm + r]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
        shot = device.capture(Raycaster(v, f), cam, np.random.default_rng(0))
        surface = np.isfinite(shot.depth_clean)
        ok = np.isfinite(shot.depth) & surface
        err = shot.depth[ok] - shot.depth_clean[ok]
        out[name] = {"valid_fraction": float(ok.sum() / surface.sum()), "mean_error_mm": float(err.mean()),
                     "median_abs_error_mm": float(np.median(np.abs(err))), "p95_abs_error_mm": float(np.percentile(np.abs(err), 95)),
                     "expected_precision_mm": p.expected_precision_mm()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=16)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rgbd.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rgbd-"))
    result: dict[str, object] = {"machine": machine(), "presets": {}}
    try:
        model = procedural_model()
        selection, _ = template_selection(model)
        synth = str(tmp / "synth.zarr")
        run_synth(model, default_template(), selection, synth,
                  SynthConfig(model="procedural", model_id=model.id, identities=args.faces, expressions=0, n_points=1000), options=RunOptions(processes=False))
        source = resolve_source(synth, tmp / "none.yaml")
        for name in ("phone", "kinect"):
            row: dict[str, object] = {"accuracy": accuracy(name)}
            for workers in (1, 2):
                report = run_render_rgbd(source, str(tmp / f"{name}{workers}.zarr"), RenderConfig(preset=PRESETS[name]), options=RunOptions(workers=workers))
                row[f"frames_per_s_{workers}w"] = report.scans_per_second
                row["step_ms"] = {k: v * 1e3 for k, v in report.stage_seconds_mean.items()}
            result["presets"][name] = row  # type: ignore[index]
            acc = row["accuracy"]
            print(f"{name:>7}: {row['frames_per_s_1w']:.1f} / {row['frames_per_s_2w']:.1f} frames/s (1 / 2 workers), "
                  f"per frame {', '.join(f'{k} {v:.0f} ms' for k, v in row['step_ms'].items())}")  # type: ignore[union-attr]
            for shape, a in acc.items():  # type: ignore[union-attr]
                print(f"         {shape}: valid {a['valid_fraction']:.2f}, mean error {a['mean_error_mm']:+.2f} mm, "
                      f"median |error| {a['median_abs_error_mm']:.2f} mm, p95 {a['p95_abs_error_mm']:.2f} mm "
                      f"(stated precision {a['expected_precision_mm']:.2f} mm)")
        write_results(args.out, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
