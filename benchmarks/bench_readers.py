"""Reader throughput per format on files of real-database size; prints a table and writes JSON.

    python benchmarks/bench_readers.py [--repeat N] [--out benchmarks/results/readers.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

from facepipe.pipeline.faces.relief import FaceParams
from facepipe.pipeline.io import bjut, texas
from facepipe.pipeline.io.registry import read_scan
from facepipe.pipeline.io.sample_data import bosphorus_files, bu3dfe_files, scanner_grid, frgc_files, write_files


def make_files(root: Path) -> dict[str, list[Path]]:
    rng = np.random.default_rng(0)
    p = FaceParams()
    files: dict[str, list[Path]] = {}
    files["bu3dfe (.wrl+.bnd, ~8k vertices)"] = [write_files(root / "bu", bu3dfe_files(p, rng, "F0001_NE00WH_F3D", spacing=1.6))[0]]
    files["bosphorus (.bnt+.lm3, 233-row grid)"] = [write_files(root / "bs", bosphorus_files(p, rng, "bs000_N_N_0", spacing=0.9))[0]]
    abs_path = write_files(root / "frgc", frgc_files(p, rng, "02463d452", rows=480, cols=640))[0]
    gz = abs_path.with_name("02463d454.abs.gz")
    gz.write_bytes(gzip.compress(abs_path.read_bytes()))
    files["frgc (.abs, 480x640)"] = [abs_path]
    files["frgc (.abs.gz, 480x640)"] = [gz]
    pts, valid = scanner_grid(p, 751, 501, 0.32, rng)
    depth = np.where(valid, np.round((pts[..., 2] + 100) / 0.32), 0).astype(np.uint16)
    tx = root / "texas" / "s1_Range.png"
    tx.parent.mkdir()
    texas.write_range(tx, depth)
    files["texas3d (_Range.png, 751x501)"] = [tx]
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=80.0)  # 10,242 vertices
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    (root / "gen").mkdir()
    for ext in ("obj", "ply", "off", "stl"):
        out = root / "gen" / f"m.{ext}"
        sphere.export(out)
        files[f"{ext} (10k vertices, trimesh)"] = [out]
    bt = root / "gen" / "b.txt"
    bt.write_bytes(bjut.write_bjut_text(v, f, np.full((len(v), 3), 128)))
    files["bjut3d text (10k vertices)"] = [bt]
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/readers.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, paths in make_files(Path(tmp)).items():
            path = paths[0]
            size = path.stat().st_size
            read_scan(path)  # warm caches and imports
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                scan = read_scan(path)
                times.append(time.perf_counter() - t)
            best, median = min(times), float(np.median(times))
            rows.append({"format": name, "bytes": size, "vertices": len(scan.vertices), "faces": len(scan.faces),
                         "median_s": median, "best_s": best, "files_per_s": 1 / median, "mb_per_s": size / 1e6 / median})
    print(f"{'format':<38} {'MB':>6} {'vertices':>9} {'ms':>8} {'files/s':>8} {'MB/s':>7}")
    for r in rows:
        print(f"{r['format']:<38} {r['bytes'] / 1e6:6.2f} {r['vertices']:9d} {r['median_s'] * 1e3:8.1f} {r['files_per_s']:8.1f} {r['mb_per_s']:7.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                                    "repeat": args.repeat, "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
