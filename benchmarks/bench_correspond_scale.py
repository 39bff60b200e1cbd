"""Correspondence at scale: per-scan optimisation (NICP, refinement) with 1 and 2 Dask workers on the
same scans, and the network alone over a large store against the batched network's own time.

    python benchmarks/bench_correspond_scale.py [--scans 40] [--stored 1000] [--out benchmarks/results/correspond_scale.json]

Targets (issue 17): 2 workers at least 1.7x faster than 1 for NICP or refinement on 2 cores; the
network-only correspondence of a large store within 20 % of the network's own time per scan.
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

from facepipe.models.correspond import Predictor, correspond, store_items
from facepipe.models.network import FaceNet
from facepipe.models.refine import RefineConfig
from facepipe.models.train import train
from facepipe.pipeline.faces.procedural import default_template
from facepipe.pipeline.io.sample_data import write_example_dataset
from facepipe.pipeline.runtime.sources import store_source
from facepipe.pipeline.stages.ingest import run_ingest
from facepipe.pipeline.stages.synth import synth_from_model
from facepipe.schemas.store import RunOptions
from facepipe.schemas.train import tiny_preset

REPO = Path(__file__).resolve().parents[1]


def per_scan_speedup(url: str, count: int, work: Path, name: str, predictor: Predictor | None = None,
                     refinement: RefineConfig | None = None) -> dict[str, float]:
    """Wall seconds per scan with 1 and 2 worker processes, and the speed-up (same folder bytes either way)."""
    out: dict[str, float] = {}
    template = predictor.template if predictor else default_template()
    for workers in (1, 2):
        t0 = time.perf_counter()
        rows = correspond(store_source(url, count), template, work / f"{name}-{workers}", "learned" if predictor else "nicp",
                          predictor, refinement=refinement, options=RunOptions(workers=workers))
        out[f"seconds_per_scan_{workers}_workers"] = (time.perf_counter() - t0) / len(rows)
    out["speedup"] = out["seconds_per_scan_1_workers"] / out["seconds_per_scan_2_workers"]
    a, b = work / f"{name}-1", work / f"{name}-2"
    out["identical_folders"] = float(all((a / p.name).read_bytes() == p.read_bytes() for p in b.glob("*.ply")))
    return out


def network_only(url: str, predictor: Predictor, work: Path, batch: int, label: str, limit: int | None = None) -> dict[str, float]:
    """The network's own time per scan (stored points already in memory, batched forward only) against
    `correspond`'s wall time per scan for the same store (reading, forward, residual, export)."""
    items = list(store_items(url, limit))
    points = [np.stack([it.points for it in items[i:i + batch]]) for i in range(0, len(items), batch)]
    predictor.predict(points[0])  # warm-up
    t0 = time.perf_counter()
    for chunk in points:
        predictor.predict(chunk)
    forward = (time.perf_counter() - t0) / len(items)
    t0 = time.perf_counter()
    rows = correspond(store_source(url, limit), predictor.template, work / f"net-{label}", "learned", predictor, batch=batch)
    wall = (time.perf_counter() - t0) / len(rows)
    return {"scans": len(rows), "network_seconds_per_scan": forward, "correspond_seconds_per_scan": wall,
            "overhead": wall / forward - 1.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scans", type=int, default=40, help="example scans for the per-scan methods")
    ap.add_argument("--stored", type=int, default=1000, help="stored samples for the network-only run")
    ap.add_argument("--full-stored", type=int, default=200, help="of those, for the paper-size network")
    ap.add_argument("--network-only", action="store_true", help="skip NICP and refinement")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "correspond_scale.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        write_example_dataset(work / "data" / "example", subjects=(args.scans + 4) // 5, seed=0)
        shutil.copy(REPO / "data_catalog.yaml", work)
        scans = str(work / "scans.zarr")
        run_ingest("example", work / "data_catalog.yaml", scans, default_template(), options=RunOptions(workers=2))
        synth = str(work / "synth.zarr")
        synth_from_model("procedural", None, synth, {"identities": args.stored // 5, "expressions": 4}, options=RunOptions(workers=2))
        results: dict[str, object] = {"machine": machine(), "torch_threads": torch.get_num_threads()}
        if not args.network_only:
            results["nicp"] = per_scan_speedup(scans, args.scans, work, "nicp")
            print("nicp", results["nicp"])
        train(tiny_preset([synth], [scans]), work / "run", log=lambda _: None)
        tiny = Predictor.load(work / "run")
        if not args.network_only:
            results["refine"] = per_scan_speedup(scans, args.scans, work, "refine", tiny, RefineConfig())
            print("refine", results["refine"])
        results["network_tiny"] = network_only(synth, tiny, work, args.batch, "tiny")
        print("network (tiny preset)", results["network_tiny"])
        template = default_template()
        full = FaceNet(len(template.vertices), 512, 512, 1024, "basis", 64, torch.as_tensor(template.vertices)).eval()
        results["network_full"] = network_only(synth, Predictor(full.requires_grad_(False), template, torch.device("cpu")), work,
                                               args.batch, "full", args.full_stored)
        print("network (paper sizes)", results["network_full"])
        write_results(args.out, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
