"""`facepipe evaluate`: how far a correspondence method lands from the truth, in mm.

For every ok sample of a store the method (the trained network, or NICP) predicts the face in
template topology; then: the dense vertex error and NME where the store has ground truth (synth),
the error of the five alignment landmarks (every store), and the BU-3DFE landmark error per region
where the raw scan has a `.bnd` (read through the catalog) or the store has the truth (at the
template's 83 BU-3DFE landmark vertices), and the 22 Bosphorus landmarks from `.lm3` files. Tables go to the terminal, CSV and
JSON; plots are a per-region bar chart and a heat map of the mean vertex error on the template.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from facepipe.models.correspond import Item, Predictor, choose_template, correspond, face_path, item_names
from facepipe.models.refine import RefineConfig
from facepipe.pipeline.errors import CatalogError, FacepipeError
from facepipe.pipeline.faces.landmark_sets import BOSPHORUS22, BU3DFE_REGIONS
from facepipe.pipeline.faces.template import Template
from facepipe.pipeline.geometry.align import apply, scale_of
from facepipe.pipeline.geometry.metrics import mm_errors, nme, region_errors
from facepipe.pipeline.geometry.nicp import face_landmarks
from facepipe.pipeline.geometry.render import Raycaster, frontal_camera
from facepipe.pipeline.io.catalog import get_entry, load_catalog, resolve_root
from facepipe.pipeline.io.registry import read_scan
from facepipe.pipeline.runtime.jobs import OnSample, OnStart
from facepipe.pipeline.runtime.sources import resolve_source
from facepipe.pipeline.runtime.store import open_group, read_plan
from facepipe.schemas.store import RunOptions


def annotated(root: Path | None, item: Item) -> tuple[str, np.ndarray] | None:
    """The scan's own landmarks in the template frame, in the order of the template's list for its
    database: ("bu3dfe83", (83, 3)) from a .bnd, ("bosphorus22", (22, 3)) from a .lm3 (NaN where missing)."""
    if root is None:
        return None
    try:
        scan = read_scan(root / item.source, texture=False)
    except FacepipeError:
        return None
    lm = scan.landmarks
    if lm is not None and lm.source == "bnd" and len(lm) == 83:
        return "bu3dfe83", apply(item.to_template, lm.points)
    if lm is not None and lm.source == "lm3":
        pts = np.array([lm.points[lm.names.index(n)] if n in lm.names else np.full(3, np.nan) for n in BOSPHORUS22])
        return "bosphorus22", apply(item.to_template, pts)
    return None


def dataset_root(url: str, catalog: Path) -> Path | None:
    dataset = read_plan(open_group(url, "r"), url).dataset
    try:
        return resolve_root(dataset, get_entry(load_catalog(catalog), dataset), catalog.parent)
    except CatalogError:
        return None


def evaluate(url: str, template: Template | None, predictor: Predictor | None, out: Path, catalog: Path = Path("data_catalog.yaml"),
             limit: int | None = None, refinement: RefineConfig | None = None, options: RunOptions = RunOptions(),
             on_start: OnStart | None = None, on_sample: OnSample | None = None) -> dict[str, object]:
    """`url`: a store (synth stores have dense ground truth); `template` None: the model's, else the
    store's; `predictor` None: NICP; `refinement`: fit the network's faces to the scans first
    (learned only; None: the network alone).

    The faces are made by `correspond` into `out/meshes/` (the same Dask tasks and resumable folder,
    so a rerun only evaluates again), then measured."""
    source = resolve_source(url, catalog, limit, kinds=("store",))
    if template is None:
        template = choose_template(predictor, None, source)
    group = open_group(source.location, "r")
    to_template, landmarks = group["to_template"][:], group["landmarks"][:].astype(np.float64)
    # what the measures need of each sample; its points stay in the store (the correspondence tasks read them)
    items = [Item(name, sid, np.empty((0, 3)), to_template[row], landmarks[row], row)
             for name, sid, row in zip(item_names(source), source.ids, source.indices, strict=True)]
    if not items:
        raise FacepipeError(f"{url}: no finished sample to evaluate")
    meshes = Path(out) / "meshes"
    correspond(source, template, meshes, "learned" if predictor is not None else "nicp", predictor, refinement=refinement,
               options=options, keep_faces=True, on_start=on_start, on_sample=on_sample)
    done = [(k, it) for k, it in enumerate(items) if face_path(meshes, k).exists()]
    if not done:
        raise FacepipeError(f"{url}: no sample could be corresponded (see {meshes / 'index.csv'})")
    items = [it for _, it in done]
    preds = [np.load(face_path(meshes, k)) for k, _ in done]
    root = dataset_root(url, catalog)
    has_truth = "vertices" in group
    rows, dense_sum, dense_count = [], np.zeros(len(template.vertices)), 0
    bu_err, bu_ok, bos_err = [], [], []
    fives = face_landmarks(np.stack(preds), template)
    for item, pred, five in zip(items, preds, fives, strict=True):
        scale = scale_of(item.to_template)
        row: dict[str, object] = {"source": item.source, "five_mm": float(mm_errors(five, item.five, scale).mean())}
        if has_truth:
            truth = group["vertices"][item.index].astype(np.float64)
            per_vertex = mm_errors(pred, truth, scale)
            dense_sum += per_vertex
            dense_count += 1
            row |= {"vertex_mm": float(per_vertex.mean()), "nme": nme(pred, truth, item.five[:2])}
        marks = annotated(root, item)
        if marks is None and has_truth and "bu3dfe83" in template.regions:  # a synthetic face's landmarks: its truth there
            ids = template.regions["bu3dfe83"]
            marks = "bu3dfe83", np.where((ids >= 0)[:, None], truth[np.maximum(ids, 0)], np.nan)
        if marks is not None and marks[0] in template.regions:
            kind, lm = marks
            ids = template.regions[kind]
            ok = (ids >= 0) & np.isfinite(lm).all(1)
            err = np.full(len(ids), np.nan)
            err[ok] = mm_errors(pred[ids[ok]], lm[ok], scale)
            (bu_err if kind == "bu3dfe83" else bos_err).append(err)
            if kind == "bu3dfe83":
                bu_ok.append(ok)
            row[f"{kind}_mm"] = float(np.nanmean(err)) if ok.any() else float("nan")
        rows.append(row)
    summary: dict[str, object] = {"store": url, "method": "nicp" if predictor is None else "learned+refine" if refinement else "learned", "samples": len(rows),
                                  "template": template.id, "five_mm": summary_stats([r["five_mm"] for r in rows])}
    if has_truth:
        summary |= {"vertex_mm": summary_stats([r["vertex_mm"] for r in rows]), "nme": summary_stats([r["nme"] for r in rows])}
    if bu_err:
        regions = region_errors(np.array(bu_err), np.array(bu_ok), BU3DFE_REGIONS)
        summary["bu3dfe_regions_mm"] = {k: {"mean": m, "std": s, "landmarks": n} for k, (m, s, n) in regions.items()}
        summary["bu3dfe_mean_over_regions_mm"] = float(np.mean([m for m, _, _ in regions.values()]))
    errs = np.array(bos_err)
    seen = np.isfinite(errs).any(axis=0) if bos_err else np.zeros(0, bool)  # a landmark the template lacks is never measured
    if seen.any():
        per = np.full(errs.shape[1], np.nan)
        per[seen] = np.nanmean(errs[:, seen], axis=0)
        summary["bosphorus22_mm"] = {name: float(v) for name, v in zip(BOSPHORUS22, per, strict=True) if np.isfinite(v)}
        summary["bosphorus22_mean_mm"] = float(np.nanmean(per))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}, key=lambda k: (k != "source", k)))
        writer.writeheader()
        writer.writerows(rows)
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    if bu_err:
        plot_regions(summary["bu3dfe_regions_mm"], out / "regions.png")  # type: ignore[arg-type]
    if dense_count:
        write_heatmap(template, dense_sum / dense_count, out / "heatmap.png")
    return summary


def summary_stats(values: list[object]) -> dict[str, float]:
    """Mean, std, median and max of one measure over the samples."""
    v = np.array(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)), "max": float(v.max())}


def plot_regions(regions: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(regions)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(names, [regions[n]["mean"] for n in names], yerr=[regions[n]["std"] for n in names], capsize=3)
    ax.set_ylabel("landmark error (mm)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_heatmap(template: Template, per_vertex_mm: np.ndarray, path: Path, max_mm: float | None = None) -> None:
    """The template rendered from the front, coloured by the mean error at each vertex (turbo, 0 to max)."""
    from facepipe.pipeline.io.image import write_image

    top = max_mm or float(np.percentile(per_vertex_mm, 99)) or 1.0
    colours = cv2.applyColorMap((np.clip(per_vertex_mm / top, 0, 1) * 255).astype(np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1]
    hits = Raycaster(template.vertices, template.triangles).render(frontal_camera(template.vertices, 400, 480))
    tri = template.triangles[np.maximum(hits.triangle, 0)]
    img = (hits.weights()[..., None] * colours[tri].astype(np.float64)).sum(-2)
    shade = np.abs(hits.normals[..., 2])[..., None] * 0.5 + 0.5
    img = np.where(hits.mask[..., None], img * shade, 30.0)
    write_image(path, np.clip(img, 0, 255).astype(np.uint8))
