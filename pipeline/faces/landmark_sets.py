"""The named landmark sets, in one place: the five alignment landmarks, the BU-3DFE 83 and the
Bosphorus 22 (subject-frame names: 'right' is the subject's right, -x), the BU-3DFE evaluation
regions, and the iBUG-68 points that model markups map onto them."""

from __future__ import annotations

FIVE = ("right_eye_centre", "left_eye_centre", "nose_tip", "mouth_right", "mouth_left")


# 0-based iBUG-68 ids: 36-41 the subject's right eye, 42-47 the left, 30 the nose tip, 48/54 mouth corners
IBUG68_FIVE = {"right_eye_centre": list(range(36, 42)), "left_eye_centre": list(range(42, 48)),
               "nose_tip": [30], "mouth_right": [48], "mouth_left": [54]}


# BU-3DFE landmark (0-based) -> the iBUG-68 points (0-based) it matches, averaged: eye corners and lids,
# alae, mouth corners and lip middles, chin tip. Brows, nose ridge and contour are defined differently.
BU3DFE_FROM_IBUG = {0: [39], 1: [38], 2: [37, 38], 3: [37], 4: [36], 5: [41], 6: [40, 41], 7: [40],
                    8: [42], 9: [43], 10: [43, 44], 11: [44], 12: [45], 13: [46], 14: [46, 47], 15: [47],
                    39: [31], 44: [35], 48: [48], 51: [51], 54: [54], 57: [57], 75: [8]}


# Bosphorus landmark name -> iBUG-68 point (0-based); the nose saddle points have no iBUG counterpart
BOSPHORUS_FROM_IBUG = {"right_brow_outer": 17, "right_brow_middle": 19, "right_brow_inner": 21, "left_brow_inner": 22,
                       "left_brow_middle": 24, "left_brow_outer": 26, "right_eye_outer": 36, "right_eye_inner": 39,
                       "left_eye_inner": 42, "left_eye_outer": 45, "nose_ala_right": 31, "nose_tip": 30, "nose_ala_left": 35,
                       "mouth_right": 48, "upper_lip_outer_middle": 51, "mouth_left": 54, "upper_lip_inner_middle": 62,
                       "lower_lip_inner_middle": 66, "lower_lip_outer_middle": 57, "chin_middle": 8}


def _bu83_names() -> tuple[str, ...]:
    """Names of the 83 BU-3DFE landmarks, 'right'/'left' in the subject's frame (FORMATS.md numbering)."""
    names = {1: "right_eye_inner", 5: "right_eye_outer", 9: "left_eye_inner", 13: "left_eye_outer",
             49: "mouth_right", 55: "mouth_left", 52: "upper_lip_middle", 58: "lower_lip_middle", 76: "chin_tip"}
    for i, j in enumerate((2, 3, 4)):
        names[j], names[j + 8] = f"right_eye_upper_{i + 1}", f"left_eye_upper_{i + 1}"
    for i, j in enumerate((6, 7, 8)):
        names[j], names[j + 8] = f"right_eye_lower_{i + 1}", f"left_eye_lower_{i + 1}"
    for i in range(10):
        names[17 + i], names[27 + i] = f"right_brow_{i + 1}", f"left_brow_{i + 1}"
    for i in range(12):
        names.setdefault(37 + i, f"nose_{i + 1}")
    for i in range(12):
        names.setdefault(49 + i, f"outer_lip_{i + 1}")
    for i in range(8):
        names[61 + i] = f"inner_lip_{i + 1}"
    for i in range(15):
        names.setdefault(69 + i, f"contour_{i + 1}")
    return tuple(f"bu{k:02d}_{names[k]}" for k in range(1, 84))


BU83_NAMES = _bu83_names()


# The 22 labels (Bosphorus 'left' = image left = the subject's right) and their subject-frame names.
BOSPHORUS_LABELS = {
    "outer left eyebrow": "right_brow_outer", "middle left eyebrow": "right_brow_middle",
    "inner left eyebrow": "right_brow_inner", "inner right eyebrow": "left_brow_inner",
    "middle right eyebrow": "left_brow_middle", "outer right eyebrow": "left_brow_outer",
    "outer left eye corner": "right_eye_outer", "inner left eye corner": "right_eye_inner",
    "inner right eye corner": "left_eye_inner", "outer right eye corner": "left_eye_outer",
    "nose saddle left": "nose_saddle_right", "nose saddle right": "nose_saddle_left",
    "left nose peak": "nose_ala_right", "nose tip": "nose_tip", "right nose peak": "nose_ala_left",
    "left mouth corner": "mouth_right", "upper lip outer middle": "upper_lip_outer_middle",
    "right mouth corner": "mouth_left", "upper lip inner middle": "upper_lip_inner_middle",
    "lower lip inner middle": "lower_lip_inner_middle", "lower lip outer middle": "lower_lip_outer_middle",
    "chin middle": "chin_middle",
}
BOSPHORUS22 = tuple(BOSPHORUS_LABELS.values())  # the 22 Bosphorus landmarks, subject-frame names, in file order


# 1-based BU-3DFE ids per evaluation region, as in ../shared/FORMATS.md
BU3DFE_REGIONS: dict[str, list[int]] = {
    "right eye lids": [2, 3, 4, 6, 7, 8], "left eye lids": [10, 11, 12, 14, 15, 16],
    "right brow": list(range(17, 27)), "left brow": list(range(27, 37)), "nose": list(range(37, 48)),
    "mouth": list(range(49, 61)), "right face": list(range(69, 75)), "chin": [75, 76, 77], "left face": list(range(78, 84)),
}
