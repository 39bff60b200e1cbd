"""The template: the mesh every scan is aligned to and every output shares, normalised into [-1, 1].

`unit_mm` is how many mm of the source model one template unit is, so errors computed in the
template frame can be reported in mm. The id is a content hash: stores and checkpoints record it,
and a mismatch between them is caught instead of silently mixing frames.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from os import PathLike
from pathlib import Path

import numpy as np
from scipy import sparse

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.faces.landmark_sets import FIVE
from facepipe.pipeline.faces.morphable import MorphableModel
from facepipe.pipeline.geometry.resample import loop_operator, vertex_normals
from facepipe.pipeline.geometry.scan import compact


@dataclass(frozen=True, eq=False)
class Template:
    name: str
    vertices: np.ndarray  # (V, 3) float64 in [-1, 1]
    triangles: np.ndarray  # (F, 3) int64
    landmarks: np.ndarray  # (5, 3) float64, the FIVE alignment landmarks in the template frame
    unit_mm: float  # mm per template unit
    center_mm: np.ndarray  # (3,) the source-frame point that became the origin
    # name -> template vertex ids: 'mouth' (the Laplacian loss), 'bu3dfe83' (evaluation, in BU-3DFE order, -1 = none)
    regions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def id(self) -> str:
        h = hashlib.sha256()
        for a in (self.vertices, self.triangles, self.landmarks, np.array([self.unit_mm]), self.center_mm):
            h.update(np.ascontiguousarray(a).tobytes())
        for name in sorted(self.regions):
            h.update(name.encode() + np.ascontiguousarray(self.regions[name], np.int64).tobytes())
        return h.hexdigest()[:16]

    @cached_property
    def normals(self) -> np.ndarray:
        """(V, 3) unit vertex normals, computed once per template (ICP uses them for every scan)."""
        return vertex_normals(self.vertices, self.triangles)

    def edges(self) -> np.ndarray:
        """(E, 2) unique undirected edges, sorted."""
        return np.unique(self._half_edges(), axis=0)

    def _half_edges(self) -> np.ndarray:
        """(3F, 2) each triangle's three edges, sorted within each row."""
        return np.sort(self.triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)

    @cached_property
    def rim(self) -> np.ndarray:
        """(V,) bool: vertices on an edge of one triangle only (the face's outline, the mouth's hole).
        A scan point nearest to one lies beyond the face (hair, neck, the inner mouth) and pairs with nothing."""
        edges, count = np.unique(self._half_edges(), axis=0, return_counts=True)
        out = np.zeros(len(self.vertices), bool)
        out[edges[count == 1].ravel()] = True
        return out

    def save(self, path: str | PathLike[str]) -> None:
        np.savez(Path(path), name=self.name, vertices=self.vertices, triangles=self.triangles,
                 landmarks=self.landmarks, unit_mm=self.unit_mm, center_mm=self.center_mm, id=self.id,
                 **{f"region_{k}": np.asarray(v, np.int64) for k, v in self.regions.items()})


def template_record(t: Template) -> dict[str, object]:
    """The template as JSON values, exactly (float64 and int64 bytes in base64): what a store carries,
    so the commands that read the store can work in its template without the file it came from."""
    def pack(a: np.ndarray, dtype: str) -> dict[str, object]:
        return {"shape": list(a.shape), "data": base64.b64encode(np.ascontiguousarray(a, dtype).tobytes()).decode()}

    return {"name": t.name, "id": t.id, "vertices": pack(t.vertices, "<f8"), "triangles": pack(t.triangles, "<i8"),
            "landmarks": pack(t.landmarks, "<f8"), "unit_mm": t.unit_mm, "center_mm": pack(t.center_mm, "<f8"),
            "regions": {k: pack(np.asarray(v), "<i8") for k, v in t.regions.items()}}


def template_from_record(record: dict[str, object], where: str) -> Template:
    """The template a `template_record` holds, checked against its recorded id."""
    def unpack(p: object, dtype: str) -> np.ndarray:
        d = dict(p)  # type: ignore[call-overload]
        return np.frombuffer(base64.b64decode(d["data"]), dtype).reshape(d["shape"]).astype(dtype[1:])

    try:
        t = Template(str(record["name"]), unpack(record["vertices"], "<f8"), unpack(record["triangles"], "<i8"),
                     unpack(record["landmarks"], "<f8"), float(record["unit_mm"]), unpack(record["center_mm"], "<f8"),  # type: ignore[arg-type]
                     {k: unpack(v, "<i8") for k, v in dict(record["regions"]).items()})  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError) as exc:
        raise ScanFormatError(where, f"the template it records is unreadable ({exc})") from None
    if t.id != record["id"]:
        raise ScanFormatError(where, f"the template it records hashes to {t.id}, not its recorded {record['id']}")
    return t


def load_template(path: str | PathLike[str]) -> Template:
    p = Path(path)
    try:
        d = np.load(p, allow_pickle=False)
        regions = {k.removeprefix("region_"): d[k].astype(np.int64) for k in d.files if k.startswith("region_")}
        t = Template(str(d["name"]), d["vertices"].astype(np.float64), d["triangles"].astype(np.int64),
                     d["landmarks"].astype(np.float64), float(d["unit_mm"]), d["center_mm"].astype(np.float64), regions)
        stored = str(d["id"])
    except (OSError, KeyError, ValueError) as exc:
        raise ScanFormatError(p, f"not a facepipe template ({exc})") from None
    if t.id != stored:
        raise ScanFormatError(p, f"template content hash {t.id} does not match its recorded id {stored}")
    return t


def template_from_mesh(name: str, vertices_mm: np.ndarray, triangles: np.ndarray, landmarks_mm: np.ndarray,
                       regions: dict[str, np.ndarray] | None = None) -> Template:
    """Centre the mesh's bounding box and scale its largest half-extent to 1."""
    lo, hi = vertices_mm.min(0), vertices_mm.max(0)
    center = (lo + hi) / 2
    unit = float((hi - lo).max() / 2)
    return Template(name, (vertices_mm - center) / unit, np.asarray(triangles, np.int64),
                    (np.asarray(landmarks_mm, np.float64) - center) / unit, unit, center, regions or {})


@dataclass(frozen=True, eq=False)
class TemplateMap:
    """How a face of a model becomes a face in template topology: pick the template's model vertices,
    then apply the subdivision operator when the template was refined. Linear, so exact for any face."""

    ids: np.ndarray  # (V0,) model vertex of each base template vertex
    operator: sparse.csr_matrix | None = None  # (V, V0) refined vertices from base vertices

    @property
    def size(self) -> int:
        return len(self.ids) if self.operator is None else self.operator.shape[0]

    def __call__(self, model_vertices: np.ndarray) -> np.ndarray:
        base = np.asarray(model_vertices)[self.ids]
        return base if self.operator is None else self.operator @ base


def template_selection(model: MorphableModel, face_only: bool = True,
                       target_vertices: int | None = None) -> tuple[TemplateMap, np.ndarray]:
    """(map, template triangles): the face region of the model, Loop-subdivided until it has at least
    `target_vertices` vertices (the original vertices keep their numbers; new ones follow)."""
    f = model.triangles
    if face_only and model.face_vertices is not None:
        f = f[(f < model.face_vertices).all(1)]
    if face_only and "face" in model.regions:
        inside = np.zeros(len(model.mean), bool)
        inside[model.regions["face"]] = True
        f = f[inside[f].all(1)]
    _, f, kept = compact(model.mean, f)
    operator = None
    while target_vertices is not None and (len(kept) if operator is None else operator.shape[0]) < target_vertices:
        n = len(kept) if operator is None else operator.shape[0]
        step, f = loop_operator(f, n)
        operator = step if operator is None else (step @ operator).tocsr()
    return TemplateMap(kept, operator), f


def template_from_model(model: MorphableModel, face_only: bool = True, target_vertices: int | None = None) -> Template:
    """The model's mean face, cut to its face region when it declares one, optionally refined."""
    selection, f = template_selection(model, face_only, target_vertices)
    index = np.full(len(model.mean), -1)
    index[selection.ids] = np.arange(len(selection.ids))
    ordered = ("bu3dfe83", "bosphorus22")  # landmark lists keep their order, -1 where a landmark has no vertex
    regions = {name: np.where(v >= 0, index[v], -1) if name in ordered else index[v][index[v] >= 0]
               for name, v in model.regions.items()}
    if selection.operator is not None:  # a refined vertex belongs to a region when most of its weight comes from it
        for name, ids in regions.items():
            if name not in ordered:
                mask = np.zeros(len(selection.ids))
                mask[ids] = 1.0
                regions[name] = np.flatnonzero(selection.operator @ mask >= 0.5)
    name = model.name if selection.operator is None else f"{model.name}-{selection.size}v"
    return template_from_mesh(name, selection(model.mean), f, model.landmark_points(model.mean, FIVE), regions)
