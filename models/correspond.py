"""`facepipe correspond`: every scan as a mesh in template topology, in the scan's own frame and units.

Inputs are a store (the preprocessed points with their `to_template`), a catalog dataset or raw
files (preprocessed on the fly). The learned way runs the trained network in batches; `method="nicp"`
registers the template with non-rigid ICP instead, for comparison on the same scans. Each
mesh is mapped back with the inverse of its stored similarity, named after its source scan, and
listed in `index.csv` with its time and its residual (mean distance to the scan, mm).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from facepipe.models.network import FaceNet
from facepipe.models.refine import RefineConfig, refine
from facepipe.models.train import load_checkpoint
from facepipe.pipeline.errors import FacepipeError, printable
from facepipe.pipeline.faces.template import Template, load_template
from facepipe.pipeline.geometry.align import apply, scale_of
from facepipe.pipeline.geometry.nicp import nicp
from facepipe.pipeline.runtime.naming import file_relatives, output_names
from facepipe.pipeline.runtime.sources import Source
from facepipe.pipeline.runtime.store import OK, open_group, read_status
from facepipe.schemas.train import TrainConfig


class CorrespondError(FacepipeError):
    """A checkpoint, template or input that cannot be used."""


@dataclass
class Predictor:
    """A trained network and the template it was trained with."""

    net: FaceNet
    template: Template
    device: torch.device

    @staticmethod
    def load(path: str | Path, device: str = "auto") -> Predictor:
        """A run directory (its model.pt) or a checkpoint file; loaded with weights_only=True."""
        from facepipe.pipeline.faces.procedural import default_template

        p = Path(path)
        file = p / "model.pt" if p.is_dir() else p
        if not file.exists():
            raise CorrespondError(f"{file}: no such checkpoint (give a run directory with model.pt, or a .pt file)")
        state = load_checkpoint(file)
        config = TrainConfig.model_validate_json(str(state["config"]))
        template = load_template(config.template) if config.template else default_template()
        if template.id != state["template_id"]:
            raise CorrespondError(f"{file}: trained with template {state['template_id']}, but {template.id} is at hand")
        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
        weights: dict[str, torch.Tensor] = state["model"]  # type: ignore[assignment]
        decoder = "paper" if "identity_decoder.net.0.weight" in weights else "basis"  # runs from before the choice
        net = FaceNet(len(template.vertices), config.identity_dim, config.expression_dim, config.hidden, decoder,
                      config.basis_size, torch.as_tensor(template.vertices))
        net.load_state_dict(weights)
        return Predictor(net.to(dev).eval(), template, dev)

    def predict(self, points: np.ndarray) -> np.ndarray:
        """(B, P, 3) template-frame points -> (B, V, 3) template-frame faces."""
        with torch.no_grad():
            out = self.net(torch.as_tensor(points, dtype=torch.float32, device=self.device))["face"]
        return out.float().cpu().numpy().astype(np.float64)

    def predict_refined(self, points: np.ndarray, five: np.ndarray, config: RefineConfig) -> np.ndarray:
        """The network's faces, then fitted to the scans (codes first, then a smooth per-vertex step)."""
        with torch.no_grad():
            codes = self.net.encode(torch.as_tensor(points, dtype=torch.float32, device=self.device))
        return refine(self.net, self.template, points, five, config, codes)


@dataclass(frozen=True)
class Item:
    """One scan to correspond: its points in the template frame, its transform back, its five."""

    name: str
    source: str
    points: np.ndarray
    to_template: np.ndarray
    five: np.ndarray
    index: int = -1  # the sample's index in its store (-1: a raw file)


def store_items(url: str, limit: int | None = None, rows: Sequence[int] | None = None) -> Iterator[Item]:
    """The ok samples of a store (or those `rows`), named by their path relative to the dataset root
    (unique by construction)."""
    group = open_group(url, "r")
    paths = group["source_path"][:]
    ok = [int(i) for i in (np.flatnonzero(read_status(group) == OK)[:limit] if rows is None else rows)]
    sources = [str(paths[i]) for i in ok]
    for i, source, name in zip(ok, sources, output_names(sources), strict=True):
        yield Item(name, source, group["points"][i].astype(np.float64), group["to_template"][i],
                   group["landmarks"][i].astype(np.float64), i)


def file_items(paths: list[Path], template: Template, n_points: int = 29_495,
               relatives: list[str] | None = None) -> Iterator[Item | FacepipeError]:
    """Raw scans preprocessed on the fly; a scan that fails is yielded as its error.

    `relatives` (each path relative to its dataset root) name the outputs; by default the file
    names, with the folders that tell same-named files apart, so `a/x.wrl` and `b/x.wrl` never
    write the same mesh."""
    from facepipe.pipeline.runtime.seeding import sample_rng
    from facepipe.pipeline.stages.preprocess import Preprocessed, preprocess_file
    from facepipe.schemas.preprocess import PreprocessConfig

    config = PreprocessConfig(n_points=n_points)
    relatives = relatives if relatives is not None else file_relatives(paths)
    for path, name in zip(paths, output_names(relatives), strict=True):
        out = preprocess_file(path, template, config, sample_rng(0, "correspond", path.name))
        if isinstance(out, Preprocessed):
            yield Item(name, printable(str(path)), out.points.astype(np.float64), out.to_template,
                       out.landmarks.astype(np.float64))
        else:
            yield FacepipeError(f"{out.path}: {out.stage}: {out.reason}")


def source_items(source: Source, template: Template, n_points: int = 29_495) -> Iterator[Item | FacepipeError]:
    """The items of any source: a store's samples as stored, scan files preprocessed into `template`."""
    if source.kind == "store":
        if source.template_id and source.template_id != template.id:
            raise CorrespondError(f"{source.location} was made in template {source.template_id}, but this correspondence "
                                  f"works in {template.name} ({template.id}): its points are in another frame",
                                  remedy="template")
        return store_items(source.location, rows=source.indices)
    return file_items(source.paths(), template, n_points, relatives=source.relatives())


def choose_template(predictor: Predictor | None, template: Template | None = None) -> Template:
    """The template a correspondence works in: the trained model's (a given one must be the same),
    else the given one, else the procedural model's."""
    from facepipe.pipeline.faces.procedural import default_template

    if predictor is None:
        return template or default_template()
    if template is not None and template.id != predictor.template.id:
        raise CorrespondError(f"the model was trained in template {predictor.template.name} ({predictor.template.id}), "
                              f"not {template.name} ({template.id})")
    return predictor.template


def distance_colours(vertices: np.ndarray, points: np.ndarray, mm_per_unit: float, max_mm: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """(V,) distance of each vertex to the scan in mm and (V, 4) uint8 turbo colours (0 to `max_mm`)."""
    dist = cKDTree(points).query(vertices)[0] * mm_per_unit
    scaled = (np.clip(dist / max_mm, 0, 1) * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(scaled[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1]
    return dist, np.column_stack([rgb, np.full(len(rgb), 255, np.uint8)])


def correspond(items: Iterator[Item | FacepipeError], template: Template, out: Path, method: str = "learned",
               predictor: Predictor | None = None, fmt: str = "ply", batch: int = 8, colour: bool = False,
               refinement: RefineConfig | None = None) -> list[dict[str, object]]:
    """Write one mesh per item and `index.csv`; returns the index rows (failures included, with their reason).
    `refinement` (learned only): fit each predicted face to its scan (`models/refine.py`); None: the network alone."""
    if method == "learned" and predictor is None:
        raise CorrespondError("the learned method needs a trained model", remedy="checkpoint")
    if fmt not in ("ply", "obj"):
        raise CorrespondError(f"unknown mesh format {fmt!r} (ply or obj)")
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    pending: list[Item] = []
    label = "learned+refine" if method == "learned" and refinement is not None else method

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        if method == "learned" and refinement is not None:
            faces = predictor.predict_refined(np.stack([it.points for it in pending]), np.stack([it.five for it in pending]),  # type: ignore[union-attr]
                                              refinement)
        elif method == "learned":
            faces = predictor.predict(np.stack([it.points for it in pending]))  # type: ignore[union-attr]
        else:
            faces = np.stack([nicp(template, it.points, it.five) for it in pending])
        each = (time.perf_counter() - t0) / len(pending)
        for it, face in zip(pending, faces, strict=True):
            rows.append(_export(it, face, template, out, fmt, colour, label, each))
        pending.clear()

    for item in items:
        if isinstance(item, FacepipeError):
            rows.append({"source": str(item).split(":")[0], "output": "", "method": method, "seconds": 0.0, "residual_mm": "",
                         "error": str(item)})
            continue
        pending.append(item)
        if len(pending) >= (batch if method == "learned" else 1):
            flush()
    flush()
    with open(out / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["source", "output", "method", "seconds", "residual_mm", "error"])
        writer.writeheader()
        writer.writerows({"error": ""} | r for r in rows)
    (out / "template.json").write_text(json.dumps({"template": template.name, "id": template.id,
                                                   "vertices": len(template.vertices), "triangles": len(template.triangles)}))
    return rows


def _export(item: Item, face: np.ndarray, template: Template, out: Path, fmt: str, colour: bool, method: str,
            seconds: float) -> dict[str, object]:
    mm = 1.0 / scale_of(item.to_template)
    dist, colours = distance_colours(face, item.points, mm)
    mesh = trimesh.Trimesh(apply(np.linalg.inv(item.to_template), face), template.triangles, process=False,
                           vertex_colors=colours if colour else None)
    path = out / f"{item.name}.{fmt}"
    mesh.export(path)
    return {"source": item.source, "output": path.name, "method": method, "seconds": round(seconds, 6),
            "residual_mm": round(float(dist.mean()), 4)}
