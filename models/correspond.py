"""`facepipe correspond`: every scan as a mesh in template topology, in the scan's own frame and units.

Inputs are a store (the preprocessed points with their `to_template`), a catalog dataset or raw
files (preprocessed on the fly). The learned way runs the trained network in batches; `method="nicp"`
registers the template with non-rigid ICP instead, for comparison on the same scans. Each
mesh is mapped back with the inverse of its stored similarity, named after its source scan, and
listed in `index.csv` with its time and its residual (mean distance to the scan, mm).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from facepipe.models.network import FaceNet
from facepipe.models.refine import RefineConfig, refine
from facepipe.models.run_files import model_file
from facepipe.models.train import load_checkpoint, template_from_state
from facepipe.pipeline.errors import FacepipeError, printable
from facepipe.pipeline.faces.template import Template, load_template
from facepipe.pipeline.geometry.align import apply, scale_of
from facepipe.pipeline.geometry.nicp import nicp
from facepipe.pipeline.runtime.folders import prepare_folder, write_atomic, write_index, write_row
from facepipe.pipeline.runtime.jobs import OnSample, OnStart, run_tasks
from facepipe.pipeline.runtime.lock import store_lock
from facepipe.pipeline.runtime.naming import output_names
from facepipe.pipeline.runtime.sources import Source, store_source
from facepipe.pipeline.runtime.store import facepipe_version, open_group, samples_digest
from facepipe.schemas.correspond import CorrespondPlan
from facepipe.schemas.store import RunOptions, SampleOutcome
from facepipe.schemas.train import TrainConfig


class CorrespondError(FacepipeError):
    """A checkpoint, template or input that cannot be used."""


@dataclass
class Predictor:
    """A trained network and the template it was trained with."""

    net: FaceNet
    template: Template
    device: torch.device
    input_points: int | None = None  # points the encoder reads per scan, as in training (None: all)

    @staticmethod
    def load(path: str | Path, device: str = "auto") -> Predictor:
        """A run directory (its model.pt) or a checkpoint file; loaded with weights_only=True."""
        file = model_file(path)
        if not file.exists():
            raise CorrespondError(f"{file}: no such checkpoint (give a run directory with model.pt, or a .pt file)")
        return Predictor.from_state(load_checkpoint(file), file, device)

    @staticmethod
    def from_state(state: dict[str, object], file: Path, device: str = "auto") -> Predictor:
        """The network of a loaded model.pt (`file` names it in errors); encoder runs carry one."""
        from facepipe.pipeline.faces.procedural import default_template

        config = TrainConfig.model_validate_json(str(state["config"]))
        if "template" in state:  # runs carry their template; older ones name its file
            template = template_from_state(state["template"], file)  # type: ignore[arg-type]
        else:
            template = load_template(config.template) if config.template else default_template()
        if template.id != state["template_id"]:
            raise CorrespondError(f"{file}: trained with template {state['template_id']}, but {template.id} is at hand")
        dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
        weights: dict[str, torch.Tensor] = state["model"]  # type: ignore[assignment]
        decoder = "paper" if "identity_decoder.net.0.weight" in weights else "basis"  # runs from before the choice
        net = FaceNet(len(template.vertices), config.identity_dim, config.expression_dim, config.hidden, decoder,
                      config.basis_size, torch.as_tensor(template.vertices))
        net.load_state_dict(weights)
        net.requires_grad_(False)  # inference only; refinement optimises codes and vertices, never weights
        return Predictor(net.to(dev).eval(), template, dev, config.input_points)

    @property
    def fingerprint(self) -> str:
        """Hash of the weights: a result folder records which network made it."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.net.state_dict().items()):
            h.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def encoder_input(self, points: np.ndarray) -> torch.Tensor:
        """The points the encoder reads: a fixed random subset of `input_points` of them, the count it was
        trained on (a max-pooled PointNet sees the same density as in training, and encoding costs
        what it did there), or all of them."""
        count = points.shape[1]
        if self.input_points is not None and count > self.input_points:
            points = points[:, np.sort(np.random.default_rng(0).permutation(count)[: self.input_points])]
        return torch.as_tensor(points, dtype=torch.float32, device=self.device)

    def predict(self, points: np.ndarray) -> np.ndarray:
        """(B, P, 3) template-frame points -> (B, V, 3) template-frame faces."""
        with torch.no_grad():
            out = self.net(self.encoder_input(points))["face"]
        return out.float().cpu().numpy().astype(np.float64)

    def predict_refined(self, points: np.ndarray, five: np.ndarray, config: RefineConfig,
                        detected: np.ndarray | None = None) -> np.ndarray:
        """The network's faces, then fitted to the scans (codes and pose first, then a smooth per-vertex
        step). `detected`: (B,) whether each scan's five landmarks were detected rather than annotated."""
        with torch.no_grad():
            codes = self.net.encode(self.encoder_input(points))
        return refine(self.net, self.template, points, five, config, codes, detected)


@dataclass(frozen=True)
class Item:
    """One scan to correspond: its points in the template frame, its transform back, its five."""

    name: str
    source: str
    points: np.ndarray
    to_template: np.ndarray
    five: np.ndarray
    index: int = -1  # the sample's index in its store (-1: a raw file)
    detected: bool = False  # the five were found by MediaPipe, not read from the database's files


def detected_landmarks(quality: str) -> bool:
    """Whether a store row's quality record says its landmarks came from MediaPipe (synth rows have none)."""
    return bool(quality) and json.loads(quality).get("landmark_source") == "mediapipe"


def store_items(url: str, limit: int | None = None) -> Iterator[Item]:
    """The ok samples of a store, named by their path relative to the dataset root (unique by construction)."""
    source = store_source(url, limit)
    group = open_group(url, "r")
    for position, name in enumerate(item_names(source)):
        yield _store_item(group, source.indices[position], name, source.ids[position])


def _store_item(group: Any, row: int, name: str, source: str) -> Item:
    return Item(name, source, group["points"][row].astype(np.float64), group["to_template"][row],
                group["landmarks"][row].astype(np.float64), row, detected_landmarks(str(group["quality"][row])))


@functools.lru_cache(maxsize=4)
def _group(url: str) -> Any:
    """One open store per worker process (tasks read their own rows)."""
    return open_group(url, "r")


def file_item(path: Path, name: str, template: Template, n_points: int = 29_495) -> Item | FacepipeError:
    """A raw scan preprocessed on the fly into `template`; a scan that fails is its error."""
    from facepipe.pipeline.runtime.seeding import sample_rng
    from facepipe.pipeline.stages.preprocess import Preprocessed, preprocess_file
    from facepipe.schemas.preprocess import PreprocessConfig

    out = preprocess_file(path, template, PreprocessConfig(n_points=n_points), sample_rng(0, "correspond", path.name))
    if isinstance(out, Preprocessed):
        return Item(name, printable(str(path)), out.points.astype(np.float64), out.to_template, out.landmarks.astype(np.float64),
                    detected=out.quality.landmark_source == "mediapipe")
    return FacepipeError(f"{out.path}: {out.stage}: {out.reason}")


def item_names(source: Source) -> list[str]:
    """The output name of each of the source's samples: its path in the dataset, made unique."""
    return output_names(list(source.ids) if source.kind == "store" else source.relatives())


def check_frame(source: Source, template: Template) -> None:
    """A store's points are in the template it was made in: refuse to read them in another."""
    if source.kind == "store" and source.template_id and source.template_id != template.id:
        raise CorrespondError(f"{source.location} was made in template {source.template_id}, but this correspondence "
                              f"works in {template.name} ({template.id}): its points are in another frame",
                              remedy="template")


def load_item(source: Source, position: int, name: str, template: Template, n_points: int = 29_495) -> Item | FacepipeError:
    """The source's sample at `position`: a store row as stored, or a scan file preprocessed now."""
    if source.kind == "store":
        return _store_item(_group(source.location), source.indices[position], name, source.ids[position])
    return file_item(source.paths()[position], name, template, n_points)


def source_items(source: Source, template: Template, n_points: int = 29_495) -> Iterator[Item | FacepipeError]:
    """The items of any source: a store's samples as stored, scan files preprocessed into `template`."""
    check_frame(source, template)
    for position, name in enumerate(item_names(source)):
        yield load_item(source, position, name, template, n_points)


def choose_template(predictor: Predictor | None, template: Template | None = None, source: Source | None = None) -> Template:
    """The template a correspondence works in: the trained model's (a given one must be the same),
    else the given one, else the one a store source was made in, else the procedural model's."""
    from facepipe.pipeline.faces.procedural import default_template
    from facepipe.pipeline.runtime.sources import store_template

    if predictor is None:
        if template is None and source is not None and source.kind == "store":
            template = store_template(source.location)
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


FIELDS = ("source", "output", "method", "residual_mm", "error")  # index.csv: no timings, so a rerun writes the same bytes


@dataclass(frozen=True)
class CorrespondJob:
    """What every correspondence task gets, shipped once to each worker."""

    url: str  # the output folder
    source: Source
    names: tuple[str, ...]
    template: Template
    method: str
    label: str
    predictor: Predictor | None
    refinement: RefineConfig | None
    fmt: str
    colour: bool
    n_points: int
    keep_faces: bool = False  # also `.faces/<position>.npy`: the template-frame face in float64 (evaluate reads them)


FACES = ".faces"


def face_path(out: Path, position: int) -> Path:
    return Path(out) / FACES / f"{position:08d}.npy"


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Per-scan tasks compute on one thread each, in worker processes and threads alike, so the bits of
    a mesh do not depend on how many workers ran."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def face_of(job: CorrespondJob, item: Item) -> np.ndarray:
    """(V, 3) template-frame face of one scan, by the job's method."""
    if job.method == "nicp":
        return nicp(job.template, item.points, item.five)
    assert job.predictor is not None
    if job.refinement is not None:
        return job.predictor.predict_refined(item.points[None], item.five[None], job.refinement, np.array([item.detected]))[0]
    return job.predictor.predict(item.points[None])[0]


def _failure_row(job: CorrespondJob, position: int, reason: str) -> None:
    write_row(Path(job.url), position, {"position": position, "source": job.source.ids[position], "output": "",
                                        "method": job.label, "residual_mm": "", "error": printable(reason)})


def _done(job: CorrespondJob, position: int, item: Item, face: np.ndarray) -> None:
    if job.keep_faces:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(face, np.float64))
        face_path(Path(job.url), position).parent.mkdir(exist_ok=True)
        write_atomic(face_path(Path(job.url), position), buffer.getvalue())
    write_row(Path(job.url), position, {"position": position, "error": ""}
              | _export(item, face, job.template, Path(job.url), job.fmt, job.colour, job.label))


def correspond_sample(job: CorrespondJob, position: int, sample_id: str) -> SampleOutcome:
    """One task: the scan's item (preprocessed if raw), its face (NICP, or the network and its
    refinement), the mesh and its row. Any failure is the scan's failure row, and the rest go on."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    item = load_item(job.source, position, job.names[position], job.template, job.n_points)
    if isinstance(item, FacepipeError):
        _failure_row(job, position, str(item))
        return SampleOutcome(index=position, path=sample_id, status="failed", stage="preprocess", reason=str(item))
    try:
        face = face_of(job, item)
    except Exception as exc:  # noqa: BLE001 - one scan's failure (a degenerate scan, a solver error) costs only it
        reason = f"{sample_id}: {type(exc).__name__}: {exc}"
        _failure_row(job, position, reason)
        return SampleOutcome(index=position, path=sample_id, status="failed", stage="correspond", reason=reason)
    _done(job, position, item, face)
    return SampleOutcome(index=position, path=sample_id, status="ok", seconds={"correspond": time.perf_counter() - t0})


def _batched(job: CorrespondJob, todo: list[int], batch: int, on_sample: OnSample | None) -> dict[int, float]:
    """The network alone, in this process, in batches fixed by position (so a resumed run computes
    every batch it needs exactly as an uninterrupted one): seconds per scan by position."""
    assert job.predictor is not None
    wanted, seconds = set(todo), {}
    for start in range(0, len(job.names), batch):
        positions = list(range(start, min(start + batch, len(job.names))))
        if not wanted.intersection(positions):
            continue
        t0 = time.perf_counter()
        loaded = [(p, load_item(job.source, p, job.names[p], job.template, job.n_points)) for p in positions]
        good = [(p, it) for p, it in loaded if isinstance(it, Item)]
        faces = job.predictor.predict(np.stack([it.points for _, it in good])) if good else []
        each = (time.perf_counter() - t0) / len(positions)
        for (p, it), face in zip(good, faces, strict=True):
            if p in wanted:
                _done(job, p, it, face)
                seconds[p] = each
        for p, it in loaded:
            if p in wanted and isinstance(it, FacepipeError):
                _failure_row(job, p, str(it))
        for p in positions:
            if p in wanted and on_sample:
                on_sample(SampleOutcome(index=p, path=job.source.ids[p], status="ok" if p in seconds else "failed"))
    return seconds


def correspond(source: Source, template: Template, out: Path, method: str = "learned", predictor: Predictor | None = None,
               fmt: str = "ply", batch: int = 8, colour: bool = False, refinement: RefineConfig | None = None,
               options: RunOptions = RunOptions(), n_points: int = 29_495, keep_faces: bool = False,
               on_start: OnStart | None = None, on_sample: OnSample | None = None) -> list[dict[str, object]]:
    """One mesh per sample of `source` into `out`, with `index.csv`; returns the index rows (failures
    included, with their reason; `seconds` on those done by this run). `refinement` (learned only):
    fit each predicted face to its scan; None: the network alone.

    The folder is a resumable result: a rerun of the same plan does only what is missing, another
    plan is refused unless `options.overwrite`. The network alone runs batched in this process;
    NICP and refinement run one Dask task per scan (`options`: workers, scheduler, threads)."""
    if method not in ("learned", "nicp"):
        raise CorrespondError(f"unknown method {method!r} (learned or nicp)")
    if method == "learned" and predictor is None:
        raise CorrespondError("the learned method needs a trained model", remedy="checkpoint")
    if fmt not in ("ply", "obj"):
        raise CorrespondError(f"unknown mesh format {fmt!r} (ply or obj)")
    check_frame(source, template)
    refinement = refinement if method == "learned" else None
    names = item_names(source)
    plan = CorrespondPlan(facepipe_version=facepipe_version(), method=method,  # type: ignore[arg-type]
                          refine=refinement.model_dump() if refinement else None,
                          model_sha256=predictor.fingerprint if predictor and method == "learned" else None,
                          template_id=template.id, fmt=fmt, colour=colour,  # type: ignore[arg-type]
                          batch=batch if method == "learned" and refinement is None else None, n_points=n_points,
                          faces=keep_faces,
                          n_samples=len(names), samples_sha256=samples_digest([f"{s}\t{n}" for s, n in zip(source.ids, names, strict=True)]))
    label = "learned+refine" if refinement is not None else method
    job = CorrespondJob(str(out), source, tuple(names), template, method, label, predictor if method == "learned" else None,
                        refinement, fmt, colour, n_points, keep_faces)
    out = Path(out)
    with store_lock(str(out)):
        done = prepare_folder(out, plan, options.overwrite)
        todo = [p for p in range(len(names)) if p not in done]
        missed: list[dict[str, object]] = []
        if plan.batch is not None:
            if on_start:
                on_start(len(todo), len(done), None)
            seconds = _batched(job, todo, batch, on_sample)
        else:
            with torch_threads(1):
                run = run_tasks(correspond_sample, job, todo, list(source.ids), options, done_before=len(done),
                                on_start=on_start, on_sample=on_sample, record_failure=_failure_row)  # type: ignore[arg-type]
            seconds = {o.index: o.seconds["correspond"] for o in run.outcomes if "correspond" in o.seconds}
            missed = [{"source": f.path, "output": "", "method": label, "residual_mm": "", "error": f"not written: {f.reason}"}
                      for f in run.not_written]
        rows = write_index(out, FIELDS)
        write_atomic(out / "template.json", json.dumps({"template": template.name, "id": template.id, "vertices": len(template.vertices),
                                                        "triangles": len(template.triangles)}).encode())
    return [r | ({"seconds": seconds[int(r["position"])]} if int(r["position"]) in seconds else {}) for r in rows] + missed  # type: ignore[call-overload]


def _export(item: Item, face: np.ndarray, template: Template, out: Path, fmt: str, colour: bool, method: str) -> dict[str, object]:
    """The mesh in the scan's own frame and units, written atomically; its index row."""
    mm = 1.0 / scale_of(item.to_template)
    dist, colours = distance_colours(face, item.points, mm)
    mesh = trimesh.Trimesh(apply(np.linalg.inv(item.to_template), face), template.triangles, process=False,
                           vertex_colors=colours if colour else None)
    data = mesh.export(file_type=fmt)
    write_atomic(out / f"{item.name}.{fmt}", data.encode() if isinstance(data, str) else data)
    return {"source": item.source, "output": f"{item.name}.{fmt}", "method": method, "residual_mm": round(float(dist.mean()), 4)}
