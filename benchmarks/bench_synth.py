"""`facepipe synth`: model build/load time, samples per second with 1 and 2 worker processes, bytes
per sample; prints a table and writes JSON.

    python benchmarks/bench_synth.py [--identities 40] [--ict ../shared/models/ict_facekit_face.npz]
                                     [--out benchmarks/results/synth.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import du, machine, write_results

from facepipe.pipeline.faces.procedural import procedural_model
from facepipe.pipeline.faces.template import template_from_model, template_selection
from facepipe.pipeline.io.face_models import load_model
from facepipe.pipeline.stages.synth import run_synth
from facepipe.schemas.store import RunOptions
from facepipe.schemas.synth import SynthConfig

REPO = Path(__file__).resolve().parents[1]



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, default=40)
    ap.add_argument("--expressions", type=int, default=4)
    ap.add_argument("--ict", type=Path, default=REPO.parent / "shared" / "models" / "ict_facekit_face.npz")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "synth.json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    results: dict[str, object] = {"machine": machine(), "models": {}}
    try:
        t0 = time.perf_counter()
        procedural_model.cache_clear()
        models = {"procedural": load_model("procedural")}
        load_s = {"procedural": time.perf_counter() - t0}
        if args.ict.exists():
            t0 = time.perf_counter()
            models["ict"] = load_model("ict", args.ict)
            load_s["ict"] = time.perf_counter() - t0
        for name, model in models.items():
            template = template_from_model(model)
            selection, _ = template_selection(model)
            cfg = SynthConfig(model=name, model_id=model.id, identities=args.identities, expressions=args.expressions, holes=2,
                              noise_mm=0.1)
            row: dict[str, object] = {"load_s": load_s[name], "vertices": len(model.mean), "template_vertices": selection.size}
            for workers in (1, 2):
                out = tmp / f"{name}{workers}.zarr"
                report = run_synth(model, template, selection, str(out), cfg, options=RunOptions(workers=workers))
                row[f"samples_per_s_{workers}w"] = report.scans_per_second
                row["stage_ms"] = {k: v * 1e3 for k, v in report.stage_seconds_mean.items()}
                row["bytes_per_sample"] = du(out) / report.samples
                row["manifest"] = report.manifest_digest
            results["models"][name] = row  # type: ignore[index]
            print(f"{name:>10}: load {row['load_s']:.2f} s, {row['samples_per_s_1w']:.1f} / {row['samples_per_s_2w']:.1f} samples/s "
                  f"(1 / 2 workers), {row['bytes_per_sample'] / 1e3:.0f} kB/sample, per sample {row['stage_ms']}")
        write_results(args.out, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
