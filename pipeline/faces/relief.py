"""The analytic face: a head ellipsoid with eye sockets, brows, nose, lips and chin, in mm.

Its depth and landmark positions are known exactly, so tests measure against it, and it is the
procedural model's mean. +x is the subject's left, +y up, +z toward the viewer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facepipe.pipeline.faces.landmark_sets import FIVE
from facepipe.pipeline.geometry.scan import compact, grid_faces

MOUTH_Y = -38.0  # height of the mouth line (mm)
CORNER = 25.0  # half-width of the closed mouth (mm); a smile widens it


@dataclass(frozen=True)
class FaceParams:
    """One synthetic subject/expression: proportions in mm and a smile/open-mouth amount in [0, 1]."""

    width: float = 75.0
    height: float = 100.0
    nose: float = 1.0
    eye_gap: float = 32.0
    smile: float = 0.0
    mouth_open: float = 0.0

    @staticmethod
    def random(rng: np.random.Generator, smile: float = 0.0, mouth_open: float = 0.0) -> FaceParams:
        return FaceParams(width=float(rng.uniform(68, 82)), height=float(rng.uniform(92, 108)),
                          nose=float(rng.uniform(0.8, 1.2)), eye_gap=float(rng.uniform(29, 35)),
                          smile=smile, mouth_open=mouth_open)


def bump(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """An axis-aligned Gaussian of height 1 at (cx, cy): the relief's features are sums of these."""
    return np.exp(-((x - cx) ** 2) / (2 * sx**2) - ((y - cy) ** 2) / (2 * sy**2))


def face_depth(x: np.ndarray, y: np.ndarray, p: FaceParams = FaceParams()) -> tuple[np.ndarray, np.ndarray]:
    """Depth z (mm) of the face relief at (x, y) and the mask of points on the face."""
    r2 = (x / p.width) ** 2 + (y / p.height) ** 2
    inside = r2 < 0.92
    z = 90.0 * np.sqrt(np.clip(1 - r2, 0, None)) - 90.0
    ridge = 1.0 / (1.0 + np.exp(-(y + 2.0) / 3.0)) * 1.0 / (1.0 + np.exp((y - 38.0) / 4.0))
    z = z + p.nose * (18.0 * np.exp(-(x**2) / (2 * 7.0**2)) * ridge + 9.0 * bump(x, y, 0, -2, 9, 7))
    mouth_y = MOUTH_Y
    corner = CORNER + 4.0 * p.smile
    for s in (-1.0, 1.0):
        z = z - 10.0 * bump(x, y, s * p.eye_gap, 35, 13, 8) + 5.0 * bump(x, y, s * p.eye_gap, 53, 18, 4.5)
        z = z + 4.0 * p.smile * bump(x, y, s * corner, mouth_y + 4 * p.smile, 5, 5)
    lips = 6.0 * bump(x, y, 0, mouth_y, corner * 0.8, 7) - 2.5 * bump(x, y, 0, mouth_y, corner * 0.9, 1.2)
    z = z + lips + 6.0 * bump(x, y, 0, -75, 18, 12)
    if p.mouth_open > 0:  # an open mouth is a hole in the scan, as with real scanners
        inside &= ~(((x / (corner * 0.8)) ** 2 + ((y - mouth_y) / (6.0 * p.mouth_open)) ** 2) < 1.0)
    return z, inside


def landmark_positions(p: FaceParams = FaceParams()) -> dict[str, tuple[float, float]]:
    """(x, y) of named landmarks on the relief, in the subject frame ('right' = subject's right = -x)."""
    e, c = p.eye_gap, CORNER + 4.0 * p.smile
    pts: dict[str, tuple[float, float]] = {"nose_tip": (0.0, -2.0), "chin_middle": (0.0, -75.0),
                                           "upper_lip_outer_middle": (0.0, -32.0), "lower_lip_outer_middle": (0.0, -45.0),
                                           "upper_lip_inner_middle": (0.0, -36.5), "lower_lip_inner_middle": (0.0, -40.0)}
    for side, s in (("right", -1.0), ("left", 1.0)):
        pts |= {f"{side}_eye_inner": (s * (e - 15), 35.0), f"{side}_eye_outer": (s * (e + 15), 35.0),
                f"{side}_eye_centre": (s * e, 35.0), f"{side}_brow_inner": (s * (e - 17), 53.0),
                f"{side}_brow_middle": (s * e, 55.0), f"{side}_brow_outer": (s * (e + 18), 52.0),
                f"nose_saddle_{side}": (s * 8.0, 30.0), f"nose_ala_{side}": (s * 16.0, -6.0),
                f"mouth_{side}": (s * c, MOUTH_Y + 4 * p.smile)}
    return pts


def bu83_positions(p: FaceParams = FaceParams()) -> np.ndarray:
    """(83, 2) positions following the BU-3DFE numbering of FORMATS.md."""
    lm = landmark_positions(p)
    out = np.zeros((83, 2))
    theta = np.arange(8) * np.pi / 4  # 0 inner corner, 1-3 upper lid, 4 outer corner, 5-7 lower lid
    for base, side, s in ((0, "right", -1.0), (8, "left", 1.0)):
        cx, cy = lm[f"{side}_eye_centre"]
        out[base : base + 8] = np.stack([cx - s * 15 * np.cos(theta), cy + 6 * np.sin(theta)], 1)
        brow = np.linspace(lm[f"{side}_brow_inner"][0], lm[f"{side}_brow_outer"][0], 5)
        out[16 + (base // 8) * 10 : 21 + (base // 8) * 10] = np.stack([brow, np.full(5, 55.0)], 1)
        out[21 + (base // 8) * 10 : 26 + (base // 8) * 10] = np.stack([brow, np.full(5, 51.0)], 1)
    a = np.linspace(0.15 * np.pi, 0.85 * np.pi, 12)
    out[36:48] = np.stack([18 * np.cos(a) * -1, 28 * np.sin(a) - 30], 1)
    c = lm["mouth_left"][0]
    a = np.linspace(0, 2 * np.pi, 13)[:-1]
    out[48:60] = np.stack([-c * np.cos(a), -38 + 7 * np.sin(a)], 1)
    a = np.linspace(0, 2 * np.pi, 9)[:-1]
    out[60:68] = np.stack([-0.8 * c * np.cos(a), -38 + 2 * np.sin(a)], 1)
    a = np.linspace(np.pi * 1.05, np.pi * 1.95, 15)
    out[68:83] = np.stack([0.9 * p.width * np.cos(a), 0.9 * p.height * np.sin(a) + 10], 1)
    return out


def relief_face(p: FaceParams = FaceParams(), spacing: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The analytic face as a clean mesh (mm) and its exact five alignment landmarks (FIVE order)."""
    rows, cols = int(2 * p.height / spacing), int(2 * p.width / spacing)
    x, y = np.meshgrid((np.arange(cols) - (cols - 1) / 2) * spacing, ((rows - 1) / 2 - np.arange(rows)) * spacing)
    z, inside = face_depth(x, y, p)
    pts = np.stack([x, y, z], -1)
    v, f, _ = compact(pts.reshape(-1, 3), grid_faces(inside, pts, rows_up=False))
    lm = landmark_positions(p)
    xy = np.array([lm[n] for n in FIVE])
    five = np.column_stack([xy, face_depth(xy[:, 0], xy[:, 1], p)[0]])
    return v, f, five


@dataclass(frozen=True)
class FaceSurface:
    """What the layout writers need of a face: its depth over (x, y), where its landmarks lie, its size."""

    depth: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # (x, y) -> (z, on the face)
    landmarks: dict[str, tuple[float, float]]  # (x, y) of the landmark_positions names
    bu83: np.ndarray  # (83, 2) BU-3DFE landmark positions
    width: float  # half-widths (mm) of the face ellipse
    height: float


def as_surface(face: FaceParams | FaceSurface) -> FaceSurface:
    if isinstance(face, FaceSurface):
        return face
    return FaceSurface(lambda x, y: face_depth(x, y, face), landmark_positions(face), bu83_positions(face), face.width, face.height)
