"""Correspondence: time per scan of the full-size network (batched, no gradient) and of NICP, and the
accuracy of learned vs NICP correspondence on the same held-out ICT-FaceKit faces with expressions,
noise and holes; prints and writes JSON.

    python benchmarks/bench_correspond.py [--batch 8] [--ict ../shared/models/ict_facekit_face.npz]
                                          [--identities 200] [--epochs 12] [--test 16]
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
from facepipe.models.train import train
from facepipe.pipeline.faces.procedural import default_template
from facepipe.pipeline.faces.template import template_from_model, template_selection
from facepipe.pipeline.geometry.nicp import nicp
from facepipe.pipeline.io.face_models import load_model
from facepipe.pipeline.stages.synth import run_synth
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig
from facepipe.schemas.train import Phase, TrainConfig

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


def accuracy(ict: Path, identities: int, epochs: int, test: int, tmp: Path) -> dict[str, object]:
    model = load_model("ict", ict)
    template = template_from_model(model)
    template_path = tmp / "template.npz"
    template.save(template_path)
    selection, _ = template_selection(model)
    realism = {"noise_mm": 0.2, "holes": 2, "missing_side": 0.2}
    train_url, test_url = str(tmp / "train.zarr"), str(tmp / "test.zarr")
    run_synth(model, template, selection, train_url, SynthConfig(model="ict", model_id=model.id, identities=identities,
              expressions=2, n_points=4096, **realism), seed=0, options=RunOptions(workers=2))
    run_synth(model, template, selection, test_url, SynthConfig(model="ict", model_id=model.id, identities=test // 2,
              expressions=1, n_points=4096, **realism), seed=1, options=RunOptions(workers=2))
    cfg = TrainConfig(synth=[train_url], template=str(template_path), identity_dim=160, expression_dim=64, input_points=2048,
                      batch_size=16, lr=1e-3, lr_halve_every=max(epochs // 3, 1), preview_samples=0,
                      phases=(Phase(name="identity", synthetic_epochs=epochs, mixed_epochs=0),
                              Phase(name="expression", synthetic_epochs=epochs // 2, mixed_epochs=0),
                              Phase(name="joint", synthetic_epochs=epochs // 2, mixed_epochs=0)))
    t0 = time.perf_counter()
    train(cfg, tmp / "run", log=lambda _: None)
    train_s = time.perf_counter() - t0
    predictor = Predictor.load(tmp / "run", "cpu")
    learned = evaluate(test_url, template, predictor, tmp / "eval-learned", limit=test)
    t0 = time.perf_counter()
    registered = evaluate(test_url, template, None, tmp / "eval-nicp", limit=test)
    nicp_s = (time.perf_counter() - t0) / len(list(store_items(test_url, test)))
    return {"train_identities": identities, "epochs": epochs, "train_seconds": train_s, "test_faces": learned["samples"],
            "learned": {k: learned[k] for k in ("vertex_mm", "five_mm", "nme")},
            "nicp": {k: registered[k] for k in ("vertex_mm", "five_mm", "nme")}, "nicp_seconds_per_scan_ict": nicp_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ict", type=Path, default=REPO.parent / "shared" / "models" / "ict_facekit_face.npz")
    ap.add_argument("--identities", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--test", type=int, default=16)
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
            result["accuracy"] = a = accuracy(args.ict, args.identities, args.epochs, args.test, tmp)
            for method in ("learned", "nicp"):
                m = a[method]  # type: ignore[index]
                print(f"{method:>8} on {a['test_faces']} held-out ICT faces (expressions, noise, holes): vertex "
                      f"{m['vertex_mm']['mean']:.2f} mm, five landmarks {m['five_mm']['mean']:.2f} mm, NME {m['nme']['mean']:.4f}")
            print(f"         (learned: {a['train_identities']} identities, {a['train_seconds']:.0f} s of CPU training; "
                  f"NICP {a['nicp_seconds_per_scan_ict']:.1f} s per scan on the ICT template)")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
