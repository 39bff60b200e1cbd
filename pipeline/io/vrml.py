"""VRML 2.0 (VRML97) IndexedFaceSet reader and writer.

trimesh cannot read VRML, and naive line-based readers confuse `TextureCoordinate { point [...] }`
with `Coordinate { point [...] }`. This reader walks the node tree (DEF/USE, Transform, Group,
Shape, PROTO skipped), but hands every numeric array to numpy in one slice, so a 3 MB BU-3DFE
scan parses in a few tens of milliseconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.scan import Scan, fan_corners, make_scan, polygon_offsets
from facepipe.pipeline.io.image import read_image
from facepipe.pipeline.io.limits import read_limits
from facepipe.pipeline.io.text import fmt_rows, parse_numbers, read_text
from facepipe.schemas.scan import ScanMeta

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]]|[^\s{}\[\],"#]+')
_SKIP = re.compile(r"(?:\s|,|#[^\n]*)*")
_COMMENT = re.compile(r"#[^\n]*")
_GROUPS = {"Transform", "Group", "Anchor", "Billboard", "Collision", "Switch", "LOD"}


@dataclass(eq=False)
class FaceSet:
    """One IndexedFaceSet, indices kept exactly as in the file (polygons end in -1)."""

    coords: np.ndarray  # (V, 3)
    coord_index: np.ndarray  # flat int64 with -1 terminators
    tex_coords: np.ndarray | None = None  # (T, 2)
    tex_index: np.ndarray | None = None  # flat, per corner, same -1 layout as coord_index
    normals: np.ndarray | None = None  # (N, 3)
    normal_index: np.ndarray | None = None
    colors: np.ndarray | None = None  # (C, 3) floats in [0, 1]
    color_index: np.ndarray | None = None
    texture_url: str | None = None
    transform: np.ndarray = field(default_factory=lambda: np.eye(4))


@dataclass(eq=False)
class Viewpoint:
    description: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 0.0)


@dataclass(eq=False)
class VrmlDocument:
    face_sets: list[FaceSet]
    comments: list[str] = field(default_factory=list)  # header comment lines, without '# '
    viewpoints: list[Viewpoint] = field(default_factory=list)


class _Parser:
    def __init__(self, text: str, path: str | PathLike[str], max_depth: int) -> None:
        self.text, self.path, self.pos = text, path, 0
        self.defs: dict[str, dict[str, Any]] = {}
        self.depth, self.max_depth = 0, max_depth

    def fail(self, problem: str) -> ScanFormatError:
        line = self.text.count("\n", 0, self.pos) + 1
        return ScanFormatError(self.path, f"VRML line {line}: {problem}")

    def peek(self) -> str | None:
        self.pos = _SKIP.match(self.text, self.pos).end()  # type: ignore[union-attr]
        m = _TOKEN.match(self.text, self.pos)
        return m.group(0) if m else None

    def next(self) -> str:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end of file (truncated?)")
        self.pos += len(tok)
        return tok

    def expect(self, tok: str) -> None:
        got = self.next()
        if got != tok:
            raise self.fail(f"expected {tok!r}, found {got[:40]!r}")

    def document(self) -> list[dict[str, Any]]:
        nodes = []
        while (tok := self.peek()) is not None:
            if tok == "ROUTE":
                for _ in range(4):
                    self.next()
            elif tok in ("PROTO", "EXTERNPROTO"):
                self.skip_proto()
            else:
                nodes.append(self.node())
        return nodes

    def skip_proto(self) -> None:
        kind = self.next()
        self.next()  # name
        self.skip_block("[", "]")
        if kind == "PROTO":
            self.skip_block("{", "}")
        else:
            while (tok := self.peek()) is not None and tok.startswith('"'):
                self.next()
            if self.peek() == "[":
                self.skip_block("[", "]")

    def skip_block(self, open_: str, close: str) -> None:
        self.expect(open_)
        depth = 1
        while depth:
            tok = self.next()
            depth += (tok == open_) - (tok == close)

    def node(self) -> dict[str, Any]:
        tok = self.next()
        if tok == "USE":
            name = self.next()
            if name not in self.defs:
                raise self.fail(f"USE {name!r} before its DEF")
            return self.defs[name]
        def_name = None
        if tok == "DEF":
            def_name, tok = self.next(), self.next()
        if not (tok[0].isalpha() or tok[0] == "_"):
            raise self.fail(f"expected a node type, found {tok[:40]!r}")
        node: dict[str, Any] = {"_type": tok}
        self.expect("{")
        self.depth += 1
        if self.depth > self.max_depth:  # before Python's own recursion limit turns it into a crash
            raise self.fail(f"nodes nested deeper than {self.max_depth} (FACEPIPE_MAX_NESTING raises the limit)")
        while (fname := self.next()) != "}":
            if not (fname[0].isalpha() or fname[0] == "_"):
                raise self.fail(f"expected a field name in {tok}, found {fname[:40]!r}")
            node[fname] = self.value()
        self.depth -= 1
        if def_name:
            self.defs[def_name] = node
        return node

    def value(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end of file in a field value")
        if tok == "[":
            self.pos += 1
            first = self.peek()
            if first is None:
                raise self.fail("unterminated '['")
            if first == "]":
                self.pos += 1
                return np.zeros(0)
            if first[0] in "0123456789+-.":
                end = self.text.find("]", self.pos)
                if end < 0:
                    raise self.fail("unterminated number list (truncated file?)")
                body = self.text[self.pos : end]
                if "#" in body:
                    body = _COMMENT.sub(" ", body)
                self.pos = end + 1
                return parse_numbers(body, self.path, f"VRML number list at line {self.text.count(chr(10), 0, end) + 1}")
            items: list[Any] = []
            while self.peek() != "]":
                items.append(self.next()[1:-1] if first.startswith('"') else self.node())
            self.pos += 1
            return items
        if tok in ("DEF", "USE") or (tok[0].isalpha() and tok not in ("TRUE", "FALSE", "NULL")):
            return self.node()
        values = []
        while (tok := self.peek()) is not None and (tok[0] in "0123456789+-.\"" or tok in ("TRUE", "FALSE", "NULL")):
            self.pos += len(tok)
            values.append(tok[1:-1] if tok.startswith('"') else tok)
        return values


def _numbers(node: dict[str, Any], name: str, default: list[float], path: str | PathLike[str]) -> np.ndarray:
    """A fixed-size numeric field (SFVec3f, SFRotation, ...) checked for count and finiteness."""
    raw = node.get(name, default)
    try:
        values = np.array([float(x) for x in raw], dtype=np.float64) if isinstance(raw, (list, np.ndarray)) else None
    except (TypeError, ValueError):
        values = None
    if values is None or len(values) != len(default) or not np.isfinite(values).all():
        shown = raw if isinstance(raw, (list, np.ndarray)) else type(raw).__name__
        raise ScanFormatError(path, f"{node['_type']}.{name} needs {len(default)} finite numbers, found {str(shown)[:60]}")
    return values


def _transform_matrix(node: dict[str, Any], path: str | PathLike[str] = "<vrml>") -> np.ndarray:
    """T * C * R * SR * S * SR^-1 * C^-1, as the VRML97 spec defines Transform."""

    def vec(name: str, default: list[float]) -> np.ndarray:
        return _numbers(node, name, default, path)

    def rot(axis_angle: np.ndarray) -> np.ndarray:
        axis, angle = axis_angle[:3], axis_angle[3]
        n = np.linalg.norm(axis)
        m = np.eye(4)
        if n > 0 and angle != 0:
            x, y, z = axis / n
            c, s = math.cos(angle), math.sin(angle)
            k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
            m[:3, :3] = np.eye(3) + s * k + (1 - c) * (k @ k)
        return m

    def move(t: np.ndarray) -> np.ndarray:
        m = np.eye(4)
        m[:3, 3] = t
        return m

    t, c = vec("translation", [0, 0, 0]), vec("center", [0, 0, 0])
    r, sr = rot(vec("rotation", [0, 0, 1, 0])), rot(vec("scaleOrientation", [0, 0, 1, 0]))
    s = np.diag(np.append(vec("scale", [1, 1, 1]), 1.0))
    return move(t) @ move(c) @ r @ sr @ s @ sr.T @ move(-c)


def _child(node: dict[str, Any], field_name: str, kind: str, path: str | PathLike[str]) -> dict[str, Any] | None:
    """A node-valued field (`coord Coordinate {...}`); a number list or a node of another type there is an error."""
    child = node.get(field_name)
    if child is None:
        return None
    if not isinstance(child, dict) or child.get("_type") != kind:
        found = child.get("_type") if isinstance(child, dict) else "a list of values" if isinstance(child, (list, np.ndarray)) else child
        raise ScanFormatError(path, f"{node['_type']}.{field_name} must be a {kind} node, found {str(found)[:40]}")
    return child


def _array(node: dict[str, Any], name: str, path: str | PathLike[str]) -> np.ndarray:
    value = node[name]
    if not isinstance(value, np.ndarray):
        raise ScanFormatError(path, f"{node['_type']}.{name} must be a [ ... ] list of numbers")
    return value.astype(np.float64)


def _floats(node: dict[str, Any] | None, name: str, width: int, path: str | PathLike[str]) -> np.ndarray | None:
    if not node or name not in node:
        return None
    arr = _array(node, name, path)
    if arr.size % width:
        raise ScanFormatError(path, f"{node['_type']}.{name} has {arr.size} numbers, not a multiple of {width}")
    return arr.reshape(-1, width)


def _ints(node: dict[str, Any], name: str, path: str | PathLike[str]) -> np.ndarray | None:
    if name not in node:
        return None
    arr = _array(node, name, path)
    if arr.size and (np.any(arr != np.round(arr)) or np.abs(arr).max() > 2**62):
        raise ScanFormatError(path, f"IndexedFaceSet.{name} holds non-integers")
    return arr.astype(np.int64)


def _face_set(node: dict[str, Any], texture_url: str | None, xf: np.ndarray, path: str | PathLike[str]) -> FaceSet:
    coords = _floats(_child(node, "coord", "Coordinate", path), "point", 3, path)
    if coords is None:
        raise ScanFormatError(path, "IndexedFaceSet without Coordinate points")
    index = _ints(node, "coordIndex", path)
    if index is None:
        raise ScanFormatError(path, "IndexedFaceSet without coordIndex")
    return FaceSet(
        coords=coords,
        coord_index=index,
        tex_coords=_floats(_child(node, "texCoord", "TextureCoordinate", path), "point", 2, path),
        tex_index=_ints(node, "texCoordIndex", path),
        normals=_floats(_child(node, "normal", "Normal", path), "vector", 3, path),
        normal_index=_ints(node, "normalIndex", path),
        colors=_floats(_child(node, "color", "Color", path), "color", 3, path),
        color_index=_ints(node, "colorIndex", path),
        texture_url=texture_url,
        transform=xf,
    )


def parse_vrml(text: str, path: str | PathLike[str] = "<vrml>") -> VrmlDocument:
    """Every IndexedFaceSet in the file with its accumulated transform, plus header comments and viewpoints."""
    head = text.lstrip("\ufeff")
    if head.startswith("#VRML V1.0"):
        raise ScanFormatError(path, "VRML 1.0 is not supported (only VRML 2.0 / VRML97)")
    if not head.startswith("#VRML V2.0"):
        raise ScanFormatError(path, f"not a VRML 2.0 file: the header is {head[:20]!r}, expected '#VRML V2.0'")
    comments = []
    for line in head.splitlines()[1:]:
        if line.startswith("#"):
            comments.append(line[1:].strip())
        elif line.strip():
            break
    limits = read_limits()
    parser = _Parser(head, path, limits.max_nesting)
    doc = VrmlDocument(face_sets=[], comments=comments)
    n_vertices = n_nodes = 0

    def walk(nodes: list[Any], xf: np.ndarray, depth: int) -> None:
        nonlocal n_vertices, n_nodes
        if depth > limits.max_nesting:  # USE of a DEF inside itself cannot happen, but chains of USE can nest deep
            raise ScanFormatError(path, f"groups nested deeper than {limits.max_nesting} through DEF/USE")
        for node in nodes:
            if not isinstance(node, dict):
                continue
            n_nodes += 1  # a few kB of DEF/USE can name a node 2^40 times: count every visit
            if n_nodes > limits.max_nodes:
                raise ScanFormatError(path, f"the scene expands to more than {limits.max_nodes:,} nodes through DEF/USE "
                                      "(FACEPIPE_MAX_NODES raises the limit)")
            kind = node["_type"]
            if kind in _GROUPS:
                inner = _transform_matrix(node, path) if kind == "Transform" else np.eye(4)
                kids = node.get("children", node.get("choice", node.get("level", [])))
                walk(kids if isinstance(kids, list) else [kids], xf @ inner, depth + 1)
            elif kind == "Shape":
                geom = node.get("geometry")
                if isinstance(geom, dict) and geom.get("_type") == "IndexedFaceSet":
                    app = node.get("appearance") if isinstance(node.get("appearance"), dict) else {}
                    tex = app.get("texture") if isinstance(app.get("texture"), dict) else {}
                    url = tex.get("url")
                    face_set = _face_set(geom, str(url[0]) if isinstance(url, list) and url else None, xf, path)
                    n_vertices += len(face_set.coords)  # DEF/USE can repeat one shape exponentially often
                    if n_vertices > limits.max_vertices:
                        raise ScanFormatError(path, f"the shapes hold more than {limits.max_vertices:,} vertices in all "
                                              "(FACEPIPE_MAX_VERTICES raises the limit)")
                    doc.face_sets.append(face_set)
            elif kind == "Viewpoint":
                pos = tuple(_numbers(node, "position", [0, 0, 10], path).tolist())
                ori = tuple(_numbers(node, "orientation", [0, 0, 1, 0], path).tolist())
                desc = node.get("description", [""])
                doc.viewpoints.append(Viewpoint(str(desc[0]) if isinstance(desc, list) and desc else "", pos, ori))  # type: ignore[arg-type]

    walk(parser.document(), np.eye(4), 0)
    if not doc.face_sets:
        raise ScanFormatError(path, "no IndexedFaceSet in the VRML file")
    return doc


def _check_index(path: str | PathLike[str], name: str, index: np.ndarray, count: int, what: str) -> None:
    real = index[index >= 0]
    if real.size and real.max() >= count:
        raise ScanFormatError(path, f"{name} refers to {what} {int(real.max())} but only {count} exist")
    if (index < -1).any():
        raise ScanFormatError(path, f"{name} holds negative indices other than -1")


def _per_vertex(path: str | PathLike[str], what: str, values: np.ndarray, index: np.ndarray | None,
                coord_index: np.ndarray, n_vertices: int) -> np.ndarray:
    """Per-vertex attribute from VRML's per-vertex or per-corner layout (per-corner values averaged)."""
    index = index if index is not None and index.size else None
    if index is None:
        if len(values) != n_vertices:
            raise ScanFormatError(path, f"{len(values)} {what}s for {n_vertices} vertices and no {what}Index")
        return values
    _check_index(path, f"{what}Index", index, len(values), what)
    if np.array_equal(index, coord_index):
        return values
    corners = (coord_index >= 0) & (index >= 0)
    out = np.zeros((n_vertices, values.shape[1]))
    np.add.at(out, coord_index[corners], values[index[corners]])
    counts = np.bincount(coord_index[corners], minlength=n_vertices)[:, None]
    return out / np.maximum(counts, 1)


def document_to_scan(doc: VrmlDocument, path: str | PathLike[str], meta: ScanMeta) -> tuple[Scan, str | None]:
    """Merge the face sets into one triangle mesh; returns the scan and the first texture URL."""
    verts, faces, normals, colors, face_uv = [], [], [], [], []
    any_normals = all(fs.normals is not None for fs in doc.face_sets)
    any_colors = all(fs.colors is not None for fs in doc.face_sets)
    any_uv = all(fs.tex_coords is not None for fs in doc.face_sets)
    offset = 0
    for fs in doc.face_sets:
        n = len(fs.coords)
        _check_index(path, "coordIndex", fs.coord_index, n, "vertex")
        corners = fan_corners(fs.coord_index)
        faces.append(fs.coord_index[corners] + offset)
        xf = fs.transform
        verts.append(fs.coords @ xf[:3, :3].T + xf[:3, 3])
        if any_uv:
            assert fs.tex_coords is not None
            tidx = fs.coord_index if fs.tex_index is None or fs.tex_index.size == 0 else fs.tex_index
            if len(tidx) != len(fs.coord_index):
                raise ScanFormatError(path, f"texCoordIndex has {len(tidx)} entries but coordIndex has {len(fs.coord_index)}")
            _check_index(path, "texCoordIndex", tidx, len(fs.tex_coords), "texture coordinate")
            face_uv.append(fs.tex_coords[tidx[corners]])
        if any_normals:
            assert fs.normals is not None
            # normals follow the inverse transpose, so a non-uniform scale does not bend them
            nv = _per_vertex(path, "normal", fs.normals, fs.normal_index, fs.coord_index, n) @ np.linalg.inv(xf[:3, :3])
            normals.append(nv / np.maximum(np.linalg.norm(nv, axis=1, keepdims=True), 1e-12))
        if any_colors:
            assert fs.colors is not None
            colors.append(_per_vertex(path, "color", fs.colors, fs.color_index, fs.coord_index, n))
        offset += n
    scan = make_scan(
        path,
        np.concatenate(verts),
        np.concatenate(faces),
        meta,
        normals=np.concatenate(normals) if any_normals else None,
        colors=np.clip(np.round(np.concatenate(colors) * 255), 0, 255).astype(np.uint8) if any_colors else None,
        face_uv=np.concatenate(face_uv) if any_uv else None,
    )
    return scan, doc.face_sets[0].texture_url


def read_vrml(path: str | PathLike[str]) -> VrmlDocument:
    return parse_vrml(read_text(path), path)


def read_vrml_scan(path: str | PathLike[str], meta: ScanMeta, texture: bool) -> Scan:
    """A VRML scan with its texture (URL from the file, resolved beside it); shared by BU-3DFE and BU-4DFE."""
    p = Path(path)
    scan, url = document_to_scan(read_vrml(p), p, meta)
    tex_path = p.parent / Path(url).name if url else None
    if texture and tex_path is not None and tex_path.exists():
        scan = replace(scan, texture=read_image(tex_path))
    return scan


# ---------------------------------------------------------------- writing

Style = Literal["bu3dfe", "polyworks"]


def _rows_block(values: np.ndarray, indent: str) -> str:
    return "".join(f"{indent}{row},\n" for row in fmt_rows(values, "%.6f").splitlines())


def _polygon_lines(index: np.ndarray, sep: str) -> list[str]:
    """One string per polygon, its -1 terminator included, e.g. '0, 1, 2, -1,' for sep ', '."""
    starts, lengths = polygon_offsets(index)
    return [sep.join(str(i) for i in index[s : s + n + 1]) + "," for s, n in zip(starts.tolist(), lengths.tolist())]


def _polygons(index: np.ndarray, indent: str) -> str:
    return "".join(f"{indent}{line}\n" for line in _polygon_lines(index, ", "))


def write_vrml(doc: VrmlDocument, style: Style = "bu3dfe") -> bytes:
    """The document in one exporter's byte layout.

    'bu3dfe': the Tricorder layout of BU-3DFE/BU-4DFE (one Transform, textured IndexedFaceSet,
    separate texCoordIndex, Viewpoints after). 'polyworks': another exporter's layout with
    per-vertex normals and colours, numbers starting on the same line as `point [`.
    """
    out = ["#VRML V2.0 utf8\n"] + [f"# {c}\n" for c in doc.comments] + ["\n"]
    if style == "bu3dfe":
        out.append("Transform {\n  children [\n")
        for fs in doc.face_sets:
            out.append("    Shape {\n")
            if fs.texture_url:
                out.append(f'      appearance Appearance {{\n        texture ImageTexture {{\n          url "{fs.texture_url}"\n        }}\n      }}\n')
            out.append("      geometry IndexedFaceSet {\n        creaseAngle 3.14\n        coord Coordinate {\n          point [\n")
            out.append(_rows_block(fs.coords, "            "))
            out.append("          ]\n        }\n        coordIndex [\n")
            out.append(_polygons(fs.coord_index, "          "))
            out.append("        ]\n")
            if fs.tex_coords is not None:
                out.append("        texCoord TextureCoordinate {\n          point [\n")
                out.append(_rows_block(fs.tex_coords, "            "))
                out.append("          ]\n        }\n")
                if fs.tex_index is not None:
                    out.append("        texCoordIndex [\n")
                    out.append(_polygons(fs.tex_index, "          "))
                    out.append("        ]\n")
            out.append("      }\n    }\n")
        out.append("  ]\n}\n")
        for vp in doc.viewpoints:
            pos = " ".join(f"{x:g}" for x in vp.position)
            ori = " ".join(f"{x:g}" for x in vp.orientation)
            out.append(f'Viewpoint {{\n  position {pos}\n  orientation {ori}\n  description "{vp.description}"\n}}\n')
    else:
        for fs in doc.face_sets:
            out.append("Shape {\n  appearance Appearance { material Material { diffuseColor 0.8 0.8 0.8 } }\n")
            out.append("  geometry IndexedFaceSet {\n    solid FALSE\n")
            for node, fname, arr in (("coord Coordinate", "point", fs.coords), ("normal Normal", "vector", fs.normals), ("color Color", "color", fs.colors)):
                if arr is None:
                    continue
                rows = fmt_rows(arr, "%.6f").splitlines()
                out.append(f"    {node} {{ {fname} [ " + ",\n      ".join(rows) + " ] }\n")
            polys = _polygon_lines(fs.coord_index, ", ")
            out.append("    coordIndex [ " + "\n      ".join(polys).rstrip(",") + " ]\n  }\n}\n")
    return "".join(out).encode("ascii")
