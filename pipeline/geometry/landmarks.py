"""The five alignment landmarks of a scan: from the database's own annotations, or from MediaPipe.

MediaPipe's face mesh runs on a render of the scan (texture or shading); each of its 478 image
landmarks is lifted back onto the surface by casting the ray through its exact sub-pixel position.
Several views are tried (upright first) and the most confident one is kept.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from facepipe.pipeline.geometry.align import apply, umeyama
from facepipe.pipeline.geometry.render import (Camera, Hits, Raycaster, camera_light, facing_direction, framing_camera, shade,
                                      surface_colors)
from facepipe.pipeline.geometry.scan import Landmarks, Scan

# MediaPipe face-mesh ids. Its "right" is the subject's right, as in our frame. The two eye contours
# are listed so that position k of one is the mirror image of position k of the other.
MP_RIGHT_EYE = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
MP_LEFT_EYE = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
# the points we use (eye contours, nose tip 4, mouth corners 61/291: the ids nearest the iBUG
# definitions on ICT-FaceKit renders) and, position by position, their mirror partners
MP_USED = np.array(MP_RIGHT_EYE + MP_LEFT_EYE + (4, 61, 291))
MP_MIRROR = np.array(MP_LEFT_EYE + MP_RIGHT_EYE + (4, 291, 61))
CORE = (0, 8, 16, 24, 32, 33, 34)  # eye corners, nose, mouth corners: positions in MP_USED
# lights in camera terms (right, up, toward the camera): a headlight and one from above, whose
# detections are averaged; with the mirror images this halves MediaPipe's left/right bias
LIGHTS = ((0.0, 0.0, 1.0), (0.0, 0.5, 1.0))

# (yaw, roll) in degrees, tried in this order until one view is confident and upright. A view whose
# face comes out tilted in the image is followed by one rolled to make it upright: MediaPipe reads
# tilts up to about 60 degrees well, so the quarter turns reach any roll.
VIEWS = ((0.0, 0.0), (0.0, 90.0), (0.0, -90.0), (0.0, 180.0), (-30.0, 0.0), (30.0, 0.0))
UPRIGHT_DEG = 10.0


@dataclass(frozen=True, eq=False)
class FiveLandmarks:
    points: np.ndarray  # (5, 3) in the scan's frame, FIVE order
    source: str  # 'bnd', 'lm3', ... for annotations; 'mediapipe' for detections
    confidence: float  # 1 for annotations; detector score x fraction of core landmarks on the surface
    view: str = ""  # for detections: which view won


def layout_error(five: np.ndarray, reference: np.ndarray, t: np.ndarray | None = None) -> float:
    """Mean distance of the five to a reference five after the best similarity `t` (fitted here when
    not given), in reference eye distances: small for any face, large for points not laid out like one."""
    if t is None:
        try:
            t = umeyama(five, reference)
        except ValueError:
            return float("inf")
    eye_gap = float(np.linalg.norm(reference[1] - reference[0]))
    return float(np.linalg.norm(apply(t, five) - reference, axis=1).mean() / eye_gap)


def _canonical(name: str) -> str:
    """'bu49_mouth_right' -> 'mouth_right': numbered schemes share the subject-frame names."""
    return re.sub(r"^bu\d\d_", "", name)


def face_normal(five: np.ndarray) -> np.ndarray:
    """Unit normal out of the face from the eye line and the eyes-to-mouth direction."""
    across = five[1] - five[0]
    down_up = (five[0] + five[1]) / 2 - (five[3] + five[4]) / 2
    n = np.cross(across, down_up)
    return n / np.linalg.norm(n)


def nose_tip_from_geometry(vertices: np.ndarray, around: np.ndarray, normal: np.ndarray, radius: float) -> np.ndarray:
    """The most protruding vertex along the face normal within `radius` of `around` (pronasale)."""
    near = np.flatnonzero(((vertices - around) ** 2).sum(1) <= radius**2)
    if len(near) == 0:
        return np.full(3, np.nan)
    return vertices[near[np.argmax(vertices[near] @ normal)]]


def five_from_annotations(landmarks: Landmarks, vertices: np.ndarray) -> FiveLandmarks | None:
    """Map a database's markup onto the five; None when it lacks any of them.

    Eye centres: the named centre, else the mean of the eye's contour points (BU-3DFE's eight, or
    Bosphorus's two corners). The nose tip: the named one, else (BU-3DFE, whose 83 points have none)
    the most protruding scan vertex near the nose points.
    """
    names = [_canonical(n) for n in landmarks.names]
    pts = landmarks.points
    by_name = dict(zip(names, pts))

    def eye(side: str) -> np.ndarray:
        if f"{side}_eye_centre" in by_name:
            return by_name[f"{side}_eye_centre"]
        ring = [p for n, p in zip(names, pts) if n.startswith(f"{side}_eye_")]
        corners = {f"{side}_eye_inner", f"{side}_eye_outer"} <= set(names)
        return np.mean(ring, 0) if corners and np.isfinite(ring).all() else np.full(3, np.nan)

    five = np.stack([eye("right"), eye("left"), by_name.get("nose_tip", np.full(3, np.nan)),
                     by_name.get("mouth_right", np.full(3, np.nan)), by_name.get("mouth_left", np.full(3, np.nan))])
    if not np.isfinite(five[[0, 1, 3, 4]]).all():
        return None
    if not np.isfinite(five[2]).all():
        nose = [p for n, p in zip(names, pts) if n.startswith("nose_") and np.isfinite(p).all()]
        if not nose:
            return None
        eye_gap = float(np.linalg.norm(five[1] - five[0]))
        five[2] = nose_tip_from_geometry(vertices, np.mean(nose, 0), face_normal(five), 0.4 * eye_gap)
        if not np.isfinite(five[2]).all():
            return None
    return FiveLandmarks(five, landmarks.source or "annotations", 1.0)


class MediaPipe:
    """MediaPipe's face detector (for a score) and face mesh (for 478 points), made once per process.

    The graphs are not picklable and not thread-safe: use `MediaPipe.shared()` in worker processes.
    """

    _local = threading.local()

    def __init__(self, min_detection_confidence: float = 0.3) -> None:
        # MediaPipe's protobuf use trips a deprecation warning on every graph run; it says nothing to users
        warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
        import mediapipe as mp  # heavy import, only where detection runs

        self.detector = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=min_detection_confidence)
        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                    min_detection_confidence=min_detection_confidence)

    @classmethod
    def shared(cls) -> MediaPipe:
        if getattr(cls._local, "instance", None) is None:
            cls._local.instance = cls()
        return cls._local.instance

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, float] | None:
        """(478, 2) continuous pixel (col, row) positions and the face detector's score, or None."""
        found = self.mesh.process(image).multi_face_landmarks
        if not found:
            return None
        h, w = image.shape[:2]
        px = np.array([(p.x * w, p.y * h) for p in found[0].landmark], np.float64)
        dets = self.detector.process(image).detections
        return px, float(max((d.score[0] for d in dets), default=0.0)) if dets else 0.0

    def detect_used(self, images: list[np.ndarray]) -> tuple[np.ndarray, float] | None:
        """MP_USED positions averaged over the images and their mirror images, and the mean score.

        A mirror image's detection, read through MP_MIRROR and flipped back, is a second opinion
        with the opposite left/right bias.
        """
        positions, scores = [], []
        for image in images:
            for mirrored in (False, True):
                found = self.detect(np.ascontiguousarray(image[:, ::-1]) if mirrored else image)
                if found is None:
                    continue
                px, score = found
                if mirrored:
                    px = px[MP_MIRROR]
                    px[:, 0] = image.shape[1] - px[:, 0]
                else:
                    px = px[MP_USED]
                positions.append(px)
                scores.append(score)
        if not positions:
            return None
        return np.mean(positions, 0), float(np.mean(scores))


def lift(pixels: np.ndarray, camera: Camera, caster: Raycaster, image_hits: Hits, snap_px: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """3D surface points under image positions, and which hit directly.

    A ray that misses (the landmark sits on a hole, as eye corners do on scans without eyes) takes
    the hit of the nearest covered pixel within `snap_px`; farther ones stay NaN.
    """
    hits = caster.cast(camera.rays(pixels))
    pts = hits.points()
    direct = hits.mask.copy()
    if not direct.all():
        dist, (rr, cc) = ndimage.distance_transform_edt(~image_hits.mask, return_indices=True)
        surface = image_hits.points()
        col = np.clip(pixels[~direct, 0].astype(np.int64), 0, camera.width - 1)
        row = np.clip(pixels[~direct, 1].astype(np.int64), 0, camera.height - 1)
        near = dist[row, col] <= snap_px
        snapped = surface[rr[row, col], cc[row, col]]
        pts[~direct] = np.where(near[:, None], snapped, np.nan)
    return pts, direct


def five_from_mediapipe_points(pts: np.ndarray) -> np.ndarray:
    """The five from the lifted MP_USED points: eye centres as the mean of each eye's contour."""
    n = len(MP_RIGHT_EYE)

    def centre(ring: np.ndarray) -> np.ndarray:
        ok = np.isfinite(ring).all(1)
        return ring[ok].mean(0) if ok.any() else np.full(3, np.nan)

    return np.stack([centre(pts[:n]), centre(pts[n : 2 * n]), pts[2 * n], pts[2 * n + 1], pts[2 * n + 2]])


def surface_fit(vertices: np.ndarray, t: np.ndarray, surface: cKDTree, near: float = 0.05) -> float:
    """Fraction of the scan (inside the template box, after the five-point similarity) within `near`
    template units of the template surface: near 1 for a right reading on a scan shaped like the
    template, about 0.6 on one shaped unlike it, and lower for a face read upside down (nose on the
    forehead, brows as the mouth), whose five can still be laid out almost like a face's. `t` is the
    five-point similarity; `vertices` may be a subsample of the scan."""
    moved = apply(t, vertices)
    inside = (np.abs(moved) <= 1.0).all(1)
    if inside.sum() < 10:
        return 0.0
    dist, _ = surface.query(moved[inside])
    return float((dist < near).mean())


def plausible_pose(vertices: np.ndarray, direction: np.ndarray, five: np.ndarray, t: np.ndarray,
                   max_tilt_deg: float = 20.0, slack: float = 0.08) -> bool:
    """Whether the five-point similarity leaves the face looking along +z (the template's, and the
    project's, facing direction; within `max_tilt_deg`) with the detected nose tip the most protruding
    point inside the template box (within `slack` units). A face read upside down (nose on the
    forehead, brows as the mouth) needs a strong tilt to match the template's five. `t` is the
    five-point similarity; `vertices` may be a subsample of the scan."""
    rotation = t[:3, :3] / np.cbrt(np.linalg.det(t[:3, :3]))
    if (rotation @ direction)[2] < np.cos(np.radians(max_tilt_deg)):
        return False
    moved = apply(t, vertices)
    inside = moved[(np.abs(moved) <= 1.0).all(1)]
    return len(inside) > 0 and float(inside[:, 2].max() - apply(t, five[2:3])[0, 2]) < slack


def detect_five(scan: Scan, mediapipe: MediaPipe, reference: np.ndarray, max_layout_error: float = 0.2,
                size: int = 384, accept: float = 0.5, views: tuple[tuple[float, float], ...] = VIEWS,
                use_texture: bool = True, surface: np.ndarray | None = None, accept_fit: float = 0.75) -> FiveLandmarks | None:
    """Render, detect and lift, view after view, until a confident view; None if no view has a face.

    A view whose five are not laid out like `reference` (a template's five; see `layout_error`)
    counts as no face: MediaPipe returns confident nonsense for faces lying on their side. With the
    template's vertices as `surface`, views are also ranked by `surface_fit`, and a good view is
    taken at once only when the scan fits the template at least `accept_fit` or the pose it implies
    is plausible (`plausible_pose`); otherwise as soon as a second good view finds the same five (a
    misreading is not repeated from another angle).
    """
    tree = cKDTree(surface) if surface is not None else None
    sample = scan.vertices[:: max(1, len(scan.vertices) // 5000)]  # enough of the scan to judge a fit or a pose
    caster = Raycaster(scan.vertices, scan.faces)
    direction = facing_direction(scan.vertices, scan.faces)
    best: tuple[float, FiveLandmarks] | None = None
    good: list[np.ndarray] = []  # confident, upright, face-like views not taken at once
    queue = [(yaw, roll, True) for yaw, roll in views]
    while queue:
        yaw, roll, may_correct = queue.pop(0)
        cam = framing_camera(scan.vertices, scan.faces, size, size, yaw=yaw, roll=roll, direction=direction)
        hits = caster.render(cam)
        if hits.mask.sum() < 100:
            continue
        albedo = surface_colors(scan, hits) if use_texture else None  # looked up once, lit twice
        images = [shade(hits, camera_light(cam, light), albedo) for light in LIGHTS]
        found = mediapipe.detect_used(images)
        if found is None:
            continue
        px, score = found
        n = len(MP_RIGHT_EYE)
        eye_line = px[n : 2 * n].mean(0) - px[:n].mean(0)
        tilt = float(np.degrees(np.arctan2(eye_line[1], eye_line[0])))
        if abs(tilt) > UPRIGHT_DEG and may_correct:
            queue.insert(0, (yaw, roll - tilt, False))
            continue
        pts, direct = lift(px, cam, caster, hits)
        five = five_from_mediapipe_points(pts)
        try:
            t = umeyama(five, reference) if np.isfinite(five).all() else None
        except ValueError:
            t = None
        layout = layout_error(five, reference, t) if t is not None else np.inf
        if layout > max_layout_error:
            continue
        confidence = score * float(direct[list(CORE)].mean())
        fit = surface_fit(sample, t, tree) if tree is not None else 1.0
        rank = confidence * (1 - layout / max_layout_error) * np.cos(np.radians(tilt)) * fit
        if best is None or rank > best[0]:
            best = (rank, FiveLandmarks(five, "mediapipe", confidence, f"yaw{yaw:+.0f}_roll{roll:+.0f}"))
        if confidence >= accept and layout <= max_layout_error / 2 and abs(tilt) <= UPRIGHT_DEG:
            eye_gap = float(np.linalg.norm(five[1] - five[0]))
            if (fit >= accept_fit or plausible_pose(sample, direction, five, t)
                    or any(np.linalg.norm(five - other, axis=1).mean() < 0.1 * eye_gap for other in good)):
                break
            good.append(five)
    return None if best is None else best[1]
