"""Paper 1's decoder against the basis decoder, each trained with the tiny preset on the demo's data,
and both against NICP on the same example scans: residual (median vertex-to-scan distance, mm),
roughness (mean uniform-Laplacian length, mm) and its ratio to NICP's mesh of the same scan, and
time per scan. Writes the meshes' previews beside the JSON, so the numbers can be checked by eye.

    python benchmarks/bench_decoders.py [--scans 6] [--identities 30] [--out benchmarks/results/decoders.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh
from common import machine, write_results

from facepipe.models.correspond import Predictor, correspond
from facepipe.models.train import train
from facepipe.pipeline.faces.procedural import default_template, procedural_model
from facepipe.pipeline.faces.template import template_selection
from facepipe.pipeline.geometry.metrics import roughness
from facepipe.pipeline.io.image import write_image
from facepipe.pipeline.io.registry import read_scan
from facepipe.pipeline.io.sample_data import write_example_dataset
from facepipe.pipeline.runtime.sources import store_source
from facepipe.pipeline.stages.ingest import run_ingest
from facepipe.pipeline.stages.inspect import preview
from facepipe.pipeline.stages.synth import run_synth
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig
from facepipe.schemas.train import tiny_preset

REPO = Path(__file__).resolve().parents[1]


def mesh_figures(folder: Path, rows: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Per output mesh: roughness (mm), the mean distance of its vertices to the scan (mm) and seconds."""
    out = {}
    for row in rows:
        if not row["output"]:
            continue
        name = str(row["output"])
        mesh = trimesh.load(folder / name, process=False)
        out[name] = {"roughness_mm": roughness(np.asarray(mesh.vertices), np.asarray(mesh.faces)),
                     "residual_mm": float(row["residual_mm"]), "seconds": float(row["seconds"])}  # type: ignore[arg-type]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=6)
    ap.add_argument("--identities", type=int, default=30)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "decoders.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-decoders-"))
    try:
        template = default_template()
        write_example_dataset(work / "data" / "example", subjects=4, seed=0)
        shutil.copy(REPO / "data_catalog.yaml", work)
        scans = str(work / "scans.zarr")
        run_ingest("example", work / "data_catalog.yaml", scans, template, options=RunOptions(workers=1, processes=False))
        model = procedural_model()
        config = SynthConfig(model="procedural", model_id=model.id, identities=args.identities, expressions=2)
        synth = str(work / "synth.zarr")
        run_synth(model, template, template_selection(model)[0], synth, config, options=RunOptions(workers=1, processes=False))
        results: dict[str, object] = {"machine": machine(), "scans": args.scans, "identities": args.identities}
        figures: dict[str, dict[str, dict[str, float]]] = {}
        previews = args.out.parent / "decoders"
        previews.mkdir(parents=True, exist_ok=True)
        for method in ("nicp", "paper", "basis"):
            folder = work / method
            t0 = time.perf_counter()
            if method == "nicp":
                rows = correspond(store_source(scans, args.scans), template, folder, "nicp", options=RunOptions(workers=1))
            else:
                cfg = tiny_preset([synth], [scans]).model_copy(update={"decoder": method})
                train(cfg, work / f"run-{method}", log=lambda _: None)
                predictor = Predictor.load(work / f"run-{method}")
                rows = correspond(store_source(scans, args.scans), predictor.template, folder, "learned", predictor)
            figures[method] = mesh_figures(folder, rows)
            results[f"{method}_wall_s"] = round(time.perf_counter() - t0, 1)
            first = sorted(figures[method])[0]
            write_image(previews / f"{method}-{Path(first).stem}.png", preview(read_scan(folder / first)))
        for method in ("paper", "basis"):
            ratios = [figures[method][k]["roughness_mm"] / figures["nicp"][k]["roughness_mm"] for k in figures["nicp"]]
            results[method] = {"roughness_vs_nicp_mean": float(np.mean(ratios)), "roughness_vs_nicp_max": float(np.max(ratios)),
                               "residual_mm_mean": float(np.mean([v["residual_mm"] for v in figures[method].values()])),
                               "seconds_per_scan": float(np.mean([v["seconds"] for v in figures[method].values()]))}
        results["nicp"] = {"residual_mm_mean": float(np.mean([v["residual_mm"] for v in figures["nicp"].values()])),
                           "roughness_mm_mean": float(np.mean([v["roughness_mm"] for v in figures["nicp"].values()])),
                           "seconds_per_scan": float(np.mean([v["seconds"] for v in figures["nicp"].values()]))}
        for key in ("nicp", "paper", "basis"):
            print(key, results[key])
        write_results(args.out, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
