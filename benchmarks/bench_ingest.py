"""`facepipe ingest` end to end: throughput with 1 and 2 worker processes, peak memory per worker,
and store bytes per sample; prints a table and writes JSON.

    python benchmarks/bench_ingest.py [--scans 200] [--out benchmarks/results/ingest.json]

The dataset is BU-3DFE-sized scans (`.wrl` of about 8k vertices with `.bnd` and texture) written by
the example-data generator. Each configuration runs on a fresh LocalCluster of single-threaded
worker processes; throughput counts from the first task to the last result (the cluster start is
reported apart), so it is what a long ingest sustains.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from common import du, machine, write_results

from facepipe.pipeline.faces.procedural import default_template
from facepipe.pipeline.faces.relief import FaceParams
from facepipe.pipeline.io.sample_data import bu3dfe_files, write_files
from facepipe.pipeline.runtime.jobs import dask_client
from facepipe.pipeline.stages.ingest import run_ingest
from facepipe.schemas.store import RunOptions

REPO = Path(__file__).resolve().parents[1]


def make_dataset(folder: Path, scans: int) -> Path:
    for i in range(scans):
        rng = np.random.default_rng(i)
        p = FaceParams.random(rng, smile=float(i % 2), mouth_open=0.5 * (i % 2))
        sid = f"F{i // 25:04d}"
        write_files(folder / "data" / sid, bu3dfe_files(p, rng, f"{sid}_{'HA' if i % 2 else 'NE'}{i % 25:02d}WH_F3D", spacing=1.6))
    catalog = folder / "catalog.yaml"
    entries = {name: {"format": "bu3dfe", "root": "data", "patterns": ["**/*_F3D.wrl"], "landmarks": source,
                      "licence": "generated", "obtain": "generated"} for name, source in (("bnd", "file"), ("mp", "mediapipe"))}
    catalog.write_text(yaml.safe_dump({"version": 1, "datasets": entries}))
    return catalog


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024



def run_one(catalog: Path, name: str, workers: int, out: Path) -> dict[str, object]:
    template = default_template()
    t0 = time.perf_counter()
    with dask_client(workers, None, processes=True) as client:  # ingest's own cluster, held here to read worker memory
        started = time.perf_counter() - t0
        report = run_ingest(name, catalog, str(out), template, options=RunOptions(scheduler=client.scheduler.address, overwrite=True))
        peaks = client.run(peak_rss_mb)
    assert report.store_status["pending"] == 0 and report.failed == 0, report.failures[:3]
    ok = report.store_status["ok"]
    return {"workers": workers, "landmarks": name, "scans": ok, "cluster_start_s": started,
            "processing_s": report.processing_seconds, "scans_per_s": report.scans_per_second,
            "stage_ms_mean": {k: v * 1e3 for k, v in report.stage_seconds_mean.items()},
            "peak_rss_mb_per_worker": max(peaks.values()), "store_bytes": du(out), "bytes_per_sample": du(out) / ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=200)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ingest.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        t0 = time.perf_counter()
        catalog = make_dataset(tmp, args.scans)
        print(f"wrote {args.scans} BU-3DFE-sized scans in {time.perf_counter() - t0:.1f} s")
        runs = []
        for name in ("bnd", "mp"):
            for workers in (1, 2):
                r = run_one(catalog, name, workers, tmp / f"{name}{workers}.zarr")
                runs.append(r)
                print(f"{name:>4} landmarks, {workers} worker(s): {r['scans_per_s']:6.1f} scans/s, "
                      f"peak {r['peak_rss_mb_per_worker']:.0f} MB/worker, {r['bytes_per_sample'] / 1e3:.0f} kB/sample, "
                      f"cluster start {r['cluster_start_s']:.1f} s")
            same = (tmp / f"{name}1.zarr" / "zarr.json").read_bytes() == (tmp / f"{name}2.zarr" / "zarr.json").read_bytes()
            print(f"      1 vs 2 workers, same manifest: {same}")
            assert same
        speedup = {name: next(r["scans_per_s"] for r in runs if r["landmarks"] == name and r["workers"] == 2)
                   / next(r["scans_per_s"] for r in runs if r["landmarks"] == name and r["workers"] == 1) for name in ("bnd", "mp")}
        per_sample = float(np.mean([r["bytes_per_sample"] for r in runs]))
        result = {"machine": machine(), "scans": args.scans,
                  "runs": runs, "speedup_2_vs_1_workers": speedup, "bytes_per_sample": per_sample,
                  "store_gb_for_2500_scans": per_sample * 2500 / 1e9}
        print(f"speed-up 2 vs 1 workers: bnd {speedup['bnd']:.2f}x, mediapipe {speedup['mp']:.2f}x; "
              f"2,500 scans take {result['store_gb_for_2500_scans']:.2f} GB")
        write_results(args.out, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
