from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.io.vrml import FaceSet, Viewpoint, VrmlDocument, document_to_scan, parse_vrml, write_vrml
from facepipe.schemas.scan import ScanMeta

META = ScanMeta(format="vrml", path="t.wrl")


def _decimals(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 50.0) -> np.ndarray:
    """Values that are exactly what a 6-decimal text file holds, so round trips can be compared exactly."""
    return np.array([float(f"{x:.6f}") for x in rng.normal(0, scale, int(np.prod(shape)))]).reshape(shape)


def _doc(rng: np.random.Generator, n: int = 40) -> VrmlDocument:
    coords = _decimals(rng, (n, 3))
    polys: list[int] = []
    for i in range(30):
        k = 3 if i % 7 else (4 if i % 14 else 5)
        polys += rng.choice(n, k, replace=False).tolist() + [-1]
    index = np.array(polys)
    corners = int((index >= 0).sum())
    tex = _decimals(rng, (corners, 2), 0.3)
    tex_index = index.copy()
    tex_index[index >= 0] = np.arange(corners)
    return VrmlDocument([FaceSet(coords, index, tex, tex_index, texture_url="F0001_NE00WH_F3D.bmp")], ["made by a test"],
                        [Viewpoint("Front", (0.0, 0.0, 500.0))])


def test_bu3dfe_layout_round_trips_exactly(rng: np.random.Generator) -> None:
    doc = _doc(rng)
    data = write_vrml(doc)
    back = parse_vrml(data.decode(), "t.wrl")
    fs, fs0 = back.face_sets[0], doc.face_sets[0]
    assert np.array_equal(fs.coords, fs0.coords) and np.array_equal(fs.coord_index, fs0.coord_index)
    assert np.array_equal(fs.tex_coords, fs0.tex_coords) and np.array_equal(fs.tex_index, fs0.tex_index)
    assert fs.texture_url == "F0001_NE00WH_F3D.bmp" and back.comments == ["made by a test"]
    assert back.viewpoints[0].description == "Front"
    assert write_vrml(back) == data


def test_texture_coordinates_are_not_taken_for_vertices(rng: np.random.Generator) -> None:
    doc = _doc(rng)
    scan, _ = document_to_scan(parse_vrml(write_vrml(doc).decode()), "t.wrl", META)
    assert len(scan.vertices) == 40  # more texture coordinates than vertices, kept apart
    fs = doc.face_sets[0]
    assert scan.face_uv is not None and len(scan.face_uv) == len(scan.faces)
    # every triangle corner carries the texture coordinate of its own polygon corner
    assert np.array_equal(scan.face_uv[0], fs.tex_coords[fs.tex_index[[0, 1, 2]]])


def test_mixed_polygons_become_fans(rng: np.random.Generator) -> None:
    doc = _doc(rng)
    scan, _ = document_to_scan(doc, "t.wrl", META)
    starts = np.flatnonzero(np.r_[-1, doc.face_sets[0].coord_index] == -1)[:-1]
    lengths = np.diff(np.flatnonzero(np.r_[-1, doc.face_sets[0].coord_index] == -1)) - 1
    assert len(scan.faces) == int((lengths - 2).sum()) and len(starts) == 30


def test_other_exporter_layout_with_normals_and_colours(rng: np.random.Generator) -> None:
    doc = _doc(rng)
    fs = doc.face_sets[0]
    normals = _decimals(rng, (40, 3), 1.0)
    normals = np.round(normals / np.linalg.norm(normals, axis=1, keepdims=True), 6)
    colours = np.round(rng.random((40, 3)), 6)
    pw = VrmlDocument([FaceSet(fs.coords, fs.coord_index, normals=normals, colors=colours)], ["PolyWorks-like"])
    data = write_vrml(pw, "polyworks")
    assert b"point [ " + f"{fs.coords[0, 0]:.6f}".encode() in data  # first value on the `point [` line
    back = parse_vrml(data.decode())
    assert write_vrml(back, "polyworks") == data
    scan, _ = document_to_scan(back, "p.wrl", META)
    assert np.allclose(scan.normals, normals / np.linalg.norm(normals, axis=1, keepdims=True))
    assert np.array_equal(scan.colors, np.round(colours * 255).astype(np.uint8))


HAND_WRITTEN = """#VRML V2.0 utf8
# a hand-written file with the constructs real exporters use
PROTO Ignored [ field SFFloat size 1 ] { Group { } }
DEF Root Transform {
  translation 10 0 0
  rotation 0 0 1 1.5707963267948966
  scale 2 2 2
  children [
    Shape {
      appearance Appearance { texture ImageTexture { url [ "tex.png" "fallback.png" ] } }
      geometry DEF Face IndexedFaceSet {
        coord DEF Pts Coordinate { point [ 1 0 0, 0 1 0 # a comment inside the list
                                           0 0 1 ] }
        texCoord TextureCoordinate { point [ 0 0, 1 0, 0 1 ] }
        coordIndex [ 0 1 2 -1 ]
        solid FALSE
      }
    }
    Shape { geometry IndexedFaceSet { coord USE Pts coordIndex [ 2, 1, 0 ] } }
  ]
}
ROUTE A.b TO C.d
"""


def test_transforms_def_use_proto_and_comments() -> None:
    doc = parse_vrml(HAND_WRITTEN, "h.wrl")
    assert len(doc.face_sets) == 2 and doc.face_sets[0].texture_url == "tex.png"
    scan, url = document_to_scan(doc, "h.wrl", META)
    assert url == "tex.png"
    # scale 2, rotate +90 deg about z, then translate by 10 in x: (1, 0, 0) -> (10, 2, 0)
    assert np.allclose(scan.vertices[0], [10, 2, 0]) and np.allclose(scan.vertices[1], [8, 0, 0])
    assert scan.faces.tolist() == [[0, 1, 2], [5, 4, 3]]
    assert scan.face_uv is None  # the second shape has no texture coordinates


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("#VRML V1.0 ascii\nSeparator { }", "VRML 1.0 is not supported"),
        ("solid cube\n", "not a VRML 2.0 file"),
        ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 1 2 3, 4 5", "unterminated"),
        ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 1 2 3 ] } coordIndex [ 0 0 0", "unterminated"),
        ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 1 2 ] } coordIndex [ 0 0 0 ] } }", "not a multiple of 3"),
        ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 1 x 3 ] } coordIndex [ 0 ] } }", "'x' is not a number"),
        ("#VRML V2.0 utf8\nGroup { }", "no IndexedFaceSet"),
        ("#VRML V2.0 utf8\nShape { geometry USE Nothing }", "USE 'Nothing' before its DEF"),
        ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coordIndex [ 0 1 2 ] } }", "without Coordinate"),
    ],
)
def test_broken_files_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ScanFormatError, match=problem) as info:
        parse_vrml(text, "broken.wrl")
    assert str(info.value).startswith("broken.wrl: ")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] } coordIndex [ 0 1 7 -1 ]", "coordIndex refers to vertex 7 but only 3 exist"),
        ("coord Coordinate { point [ 0 0 0, 1 0 nan, 0 1 0 ] } coordIndex [ 0 1 2 -1 ]", "NaN/inf"),
        ("coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] } coordIndex [ 0 1 2 -1 ] texCoord TextureCoordinate { point [ 0 0 ] } texCoordIndex [ 0 0 0 -1 0 ]", "texCoordIndex has 5 entries"),
        ("coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] } coordIndex [ 0 1 2 -2 ]", "negative indices"),
        ("coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] } coordIndex [ 0 1 2.5 -1 ]", "non-integers"),
    ],
)
def test_bad_geometry_is_reported(body: str, problem: str) -> None:
    with pytest.raises(ScanFormatError, match=problem):
        doc = parse_vrml(f"#VRML V2.0 utf8\nShape {{ geometry IndexedFaceSet {{ {body} }} }}", "bad.wrl")
        document_to_scan(doc, "bad.wrl", META)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_scan_format_errors(data: bytes) -> None:
    text = ("#VRML V2.0 utf8\n" + data.decode("latin-1"))
    try:
        doc = parse_vrml(text, "fuzz.wrl")
        document_to_scan(doc, "fuzz.wrl", META)
    except ScanFormatError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 2000))
def test_truncated_files_fail_cleanly(cut: int) -> None:
    data = write_vrml(_doc(np.random.default_rng(3), 12)).decode()
    cut = min(cut, len(data) - 1)
    try:
        document_to_scan(parse_vrml(data[:cut], "cut.wrl"), "cut.wrl", META)
    except ScanFormatError:
        pass


def test_normals_follow_the_inverse_transpose_under_non_uniform_scale() -> None:
    text = """#VRML V2.0 utf8
Transform { scale 1 4 1 children [ Shape { geometry IndexedFaceSet {
  coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 1 ] }
  normal Normal { vector [ 0 0.7071068 -0.7071068, 0 0.7071068 -0.7071068, 0 0.7071068 -0.7071068 ] }
  coordIndex [ 0 1 2 -1 ] } } ] }
"""
    scan, _ = document_to_scan(parse_vrml(text), "s.wrl", META)
    a, b, c = scan.vertices
    true = np.cross(b - a, c - a)
    true /= np.linalg.norm(true)
    assert np.allclose(np.abs(scan.normals @ true), 1.0, atol=1e-6)  # still perpendicular to the surface
