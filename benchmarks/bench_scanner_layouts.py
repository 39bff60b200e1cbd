"""Learned correspondence beyond synthetic points: held-out ICT-FaceKit faces written in the range
scanners' layouts (Bosphorus .bnt grid, FRGC .abs grid, BU-3DFE VRML mesh, through the example-data
writers: sensor noise, holes, each layout's own sampling), preprocessed with MediaPipe landmarks as
a raw scan is, then corresponded by the network, the network + refinement and NICP; the errors
against the known face, in mm. Prints and writes JSON.

    python benchmarks/bench_scanner_layouts.py --run RUN [--ict ../shared/models/ict_facekit_face.npz]
                                               [--faces 4] [--out benchmarks/results/scanner_layouts.json]

RUN: a model trained in the ICT template (benchmarks/reference_recipe.sh makes one).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, write_results

from facepipe.models.correspond import Predictor
from facepipe.models.refine import RefineConfig
from facepipe.pipeline.faces.procedural import procedural_surface
from facepipe.pipeline.faces.template import template_selection
from facepipe.pipeline.geometry.align import apply, scale_of
from facepipe.pipeline.geometry.metrics import mm_errors, nme
from facepipe.pipeline.geometry.nicp import face_landmarks, nicp
from facepipe.pipeline.io.face_models import load_model
from facepipe.pipeline.io.sample_data import bosphorus_files, bu3dfe_files, frgc_files, write_files
from facepipe.pipeline.runtime.seeding import sample_rng
from facepipe.pipeline.stages.preprocess import Preprocessed, preprocess_file
from facepipe.pipeline.stages.synth import draw_weights
from facepipe.schemas.preprocess import PreprocessConfig
from facepipe.schemas.synth import SynthConfig

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = {  # the writer, the scan file it makes, where the face sits in the file's frame (mm)
    "bosphorus": (lambda s, rng, k: bosphorus_files(s, rng, f"bs{k:03d}_E_HAPPY_0"), "bs{k:03d}_E_HAPPY_0.bnt", (0.0, 0.0, 0.0)),
    "frgc": (lambda s, rng, k: frgc_files(s, rng, f"{4200 + k:05d}d{100 + 2 * k}"), "{n:05d}d{m}.abs", (0.0, 0.0, -1000.0)),
    "bu3dfe": (lambda s, rng, k: bu3dfe_files(s, rng, f"F{k + 1:04d}_HA04WH_F3D"), "F{j:04d}_HA04WH_F3D.wrl", (0.0, 0.0, 0.0)),
}


def scans(ict: Path, faces: int, folder: Path) -> list[tuple[str, Path, np.ndarray]]:
    """(layout, scan file, true face in template topology in the file's frame) for each written scan;
    the faces are drawn as `facepipe synth --seed 1` draws them (identities the recipe did not train on)."""
    model = load_model("ict", ict)
    selection, _ = template_selection(model)
    config = SynthConfig(model="ict", model_id=model.id, identities=faces, expressions=1)
    out = []
    for k in range(faces):
        identity, expression = draw_weights(model, config, 1, "ict", f"id{k:05d}_e01")
        surface = procedural_surface(model, identity, expression)
        truth = selection(model.shape(identity, expression))
        for layout, (write, name, shift) in LAYOUTS.items():
            write_files(folder / layout, write(surface, np.random.default_rng([1, k]), k))
            path = folder / layout / name.format(k=k, n=4200 + k, m=100 + 2 * k, j=k + 1)
            out.append((layout, path, truth + np.array(shift)))
    return out


def measure(predictor: Predictor, items: list[tuple[str, Preprocessed, np.ndarray]]) -> dict[str, object]:
    template = predictor.template
    results: dict[str, dict[str, list[float]]] = {}
    torch.set_num_threads(1)
    for layout, pre, truth_file in items:
        truth = apply(pre.to_template, truth_file)
        points, five = pre.points.astype(np.float64)[None], pre.landmarks.astype(np.float64)[None]
        faces = {}
        t0 = time.perf_counter()
        faces["network"] = predictor.predict(points)[0]
        t1 = time.perf_counter()
        faces["network+refine"] = predictor.predict_refined(points, five, RefineConfig(), np.array([True]))[0]
        t2 = time.perf_counter()
        faces["nicp"] = nicp(template, points[0], five[0])
        seconds = {"network": t1 - t0, "network+refine": t2 - t1, "nicp": time.perf_counter() - t2}
        scale = scale_of(pre.to_template)
        true_five = face_landmarks(truth, template)
        for method, face in faces.items():
            r = results.setdefault(f"{layout}/{method}", {"vertex_mm": [], "nme": [], "five_mm": [], "seconds": []})
            r["vertex_mm"].append(float(mm_errors(face, truth, scale).mean()))
            r["nme"].append(nme(face, truth, true_five[:2]))
            r["five_mm"].append(float(mm_errors(face_landmarks(face, template), true_five, scale).mean()))
            r["seconds"].append(seconds[method])
    return {key: {k: float(np.mean(v)) for k, v in r.items()} | {"scans": len(r["vertex_mm"])} for key, r in results.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--ict", type=Path, default=REPO.parent / "shared" / "models" / "ict_facekit_face.npz")
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scanner_layouts.json")
    args = ap.parse_args()
    predictor = Predictor.load(args.run, "cpu")
    config = PreprocessConfig(landmarks="mediapipe")
    items, failures = [], []
    with tempfile.TemporaryDirectory(prefix="bench-layouts-") as tmp:
        for layout, path, truth in scans(args.ict, args.faces, Path(tmp)):
            pre = preprocess_file(path, predictor.template, config, sample_rng(0, "bench", path.name))
            if isinstance(pre, Preprocessed):
                items.append((layout, pre, truth))
            else:
                failures.append(f"{layout}: {path.name}: {pre.stage}: {pre.reason}")
    result: dict[str, object] = {"machine": machine(), "run": str(args.run), "landmarks": "mediapipe", "failures": failures,
                                 "methods": measure(predictor, items)}
    for key, r in result["methods"].items():  # type: ignore[union-attr]
        print(f"{key:>24}: vertex {r['vertex_mm']:.2f} mm, NME {r['nme']:.4f}, five {r['five_mm']:.2f} mm, "
              f"{r['seconds']:.2f} s per scan ({r['scans']} scans)")
    for f in failures:
        print("failed:", f)
    write_results(args.out, result)


if __name__ == "__main__":
    main()
