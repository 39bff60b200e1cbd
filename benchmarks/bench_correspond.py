"""Correspondence: time per scan of the full-size network (batched, no gradient) and of NICP, and the
accuracy and time per scan of the network, the network + refinement and NICP, side by side on the same
held-out ICT-FaceKit faces with expressions, noise, holes and missing sides; prints and writes JSON.

    python benchmarks/bench_correspond.py [--batch 8] [--ict ../shared/models/ict_facekit_face.npz]
                                          [--run RUN | --identities 200 --epochs 12] [--test 16] [--timed 4]
                                          [--out benchmarks/results/correspond.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, write_results

from facepipe.models.correspond import Predictor, store_items
from facepipe.models.evaluate import evaluate
from facepipe.models.network import FaceNet
from facepipe.models.refine import RefineConfig
from facepipe.models.train import train
from facepipe.pipeline.faces.procedural import default_template
from facepipe.pipeline.faces.template import template_from_model, template_selection
from facepipe.pipeline.geometry.nicp import nicp
from facepipe.pipeline.io.face_models import load_model
from facepipe.pipeline.stages.synth import run_synth
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig
from facepipe.schemas.train import Phase, reference_preset

REPO = Path(__file__).resolve().parents[1]
N = 29_495


def full_size_seconds_per_scan(batch: int, device: torch.device, repeats: int = 3) -> float:
    net = FaceNet(N).to(device).eval()
    points = torch.rand(batch, N, 3, device=device) * 2 - 1
    with torch.no_grad():
        net(points)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(points)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (repeats * batch)


def nicp_seconds_per_scan(count: int = 3) -> float:
    template = default_template()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(count):
        nicp(template, template.vertices + rng.normal(0, 0.01, template.vertices.shape), template.landmarks)
    return (time.perf_counter() - t0) / count


def held_out(ict: Path, test: int, out: Path) -> str:
    """Held-out ICT faces (another seed: identities not trained on) with expressions, 0.2 mm noise,
    holes and missing sides, in the template of `template_from_model` (the recipe's `facepipe template`)."""
    model = load_model("ict", ict)
    template = template_from_model(model)
    selection, _ = template_selection(model)
    url = str(out / "test.zarr")
    run_synth(model, template, selection, url, SynthConfig(model="ict", model_id=model.id, identities=max(test // 2, 1),
              expressions=1, noise_mm=0.2, holes=2, missing_side=0.3), seed=1, options=RunOptions(workers=2))
    return url


def trained_run(ict: Path, identities: int, epochs: int, tmp: Path) -> tuple[Path, float]:
    """A model trained here on ICT faces (when no `--run` is given): the reference preset's sizes, shorter."""
    model = load_model("ict", ict)
    template = template_from_model(model)
    selection, _ = template_selection(model)
    url = str(tmp / "train.zarr")
    run_synth(model, template, selection, url, SynthConfig(model="ict", model_id=model.id, identities=identities,
              expressions=4), seed=0, options=RunOptions(workers=2))
    cfg = reference_preset([url], []).model_copy(update={
        "preview_samples": 0, "phases": (Phase(name="identity", synthetic_epochs=epochs, mixed_epochs=0),
                                         Phase(name="expression", synthetic_epochs=epochs // 2, mixed_epochs=0),
                                         Phase(name="joint", synthetic_epochs=epochs // 2, mixed_epochs=0))})
    t0 = time.perf_counter()
    train(cfg, tmp / "run", log=lambda _: None)
    return tmp / "run", time.perf_counter() - t0


def seconds_per_scan(predictor: Predictor, items: list, refinement: RefineConfig) -> dict[str, float]:
    """Compute time per scan of each method on the same scans, one torch thread (a Dask task's share)."""
    torch.set_num_threads(1)
    points = np.stack([it.points for it in items])
    five = np.stack([it.five for it in items])
    predictor.predict(points[:1])  # warm-up
    t0 = time.perf_counter()
    predictor.predict(points)
    network = (time.perf_counter() - t0) / len(items)
    t0 = time.perf_counter()
    for k in range(len(items)):
        predictor.predict_refined(points[k:k + 1], five[k:k + 1], refinement)
    refined = (time.perf_counter() - t0) / len(items)
    t0 = time.perf_counter()
    for it in items:
        nicp(predictor.template, it.points, it.five)
    registered = (time.perf_counter() - t0) / len(items)
    return {"network": network, "network+refine": refined, "nicp": registered,
            "network_over_nicp": network / registered, "refine_over_nicp": refined / registered}


def accuracy(run: Path, test_url: str, test: int, timed: int, tmp: Path) -> dict[str, object]:
    """Network alone, network + refinement and NICP on the same held-out faces, through `evaluate`."""
    predictor = Predictor.load(run, "cpu")
    reports = {"network": evaluate(test_url, None, predictor, tmp / "eval-network", limit=test),
               "network+refine": evaluate(test_url, None, predictor, tmp / "eval-refine", limit=test, refinement=RefineConfig()),
               "nicp": evaluate(test_url, None, None, tmp / "eval-nicp", limit=test)}
    keys = ("vertex_mm", "five_mm", "nme", "bu3dfe_regions_mm", "bu3dfe_mean_over_regions_mm")
    result: dict[str, object] = {"run": str(run), "test_faces": reports["nicp"]["samples"],
                                 "methods": {m: {k: r[k] for k in keys if k in r} for m, r in reports.items()}}
    result["seconds_per_scan"] = seconds_per_scan(predictor, list(store_items(test_url, timed)), RefineConfig())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ict", type=Path, default=REPO.parent / "shared" / "models" / "ict_facekit_face.npz")
    ap.add_argument("--run", type=Path, help="a trained run in the ICT template (e.g. benchmarks/reference_recipe.sh's); "
                    "without it a shorter reference-size model is trained here")
    ap.add_argument("--identities", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--test", type=int, default=16)
    ap.add_argument("--timed", type=int, default=4, help="scans timed per method")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "correspond.json")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result: dict[str, object] = {"machine": machine() | {"device": str(device)}}
    result["full_network_seconds_per_scan"] = t = full_size_seconds_per_scan(args.batch, device)
    result["nicp_seconds_per_scan_procedural"] = n = nicp_seconds_per_scan()
    print(f"full-size network, batch {args.batch} on {device}: {t * 1e3:.1f} ms per scan; NICP (3,490-vertex template): {n:.2f} s per scan")
    if args.ict.exists():
        tmp = Path(tempfile.mkdtemp(prefix="bench-corr-"))
        try:
            run = args.run
            if run is None:
                run, result["train_seconds"] = trained_run(args.ict, args.identities, args.epochs, tmp)
            result["accuracy"] = a = accuracy(run, held_out(args.ict, args.test, tmp), args.test, args.timed, tmp)
            timing = a["seconds_per_scan"]  # type: ignore[index]
            print(f"{a['test_faces']} held-out ICT faces (expressions, 0.2 mm noise, holes, missing sides), model {run}:")
            for method, m in a["methods"].items():  # type: ignore[union-attr]
                regions = ", ".join(f"{k} {v['mean']:.2f}" for k, v in m.get("bu3dfe_regions_mm", {}).items())
                print(f"  {method:>15}: vertex {m['vertex_mm']['mean']:.2f} mm, NME {m['nme']['mean']:.4f}, five landmarks "
                      f"{m['five_mm']['mean']:.2f} mm, {timing[method]:.3f} s per scan; BU-3DFE regions: {regions}")
            print(f"  time ratios to NICP: network {timing['network_over_nicp']:.4f}, network + refine {timing['refine_over_nicp']:.3f}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
