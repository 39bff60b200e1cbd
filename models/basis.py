"""The linear shape bases a basis decoder starts from: a PCA of the synthetic ground truth.

Paper 1's decoders emit 3V free numbers through Tanh, so an untrained network is noise and a
briefly trained one is a jagged face. A basis decoder emits coefficients of a linear basis of
face offsets instead; started from the principal directions of the training faces (identity:
neutral faces minus the template; expression: each expression face minus its identity's neutral
face), it is the template at step 0 and a smooth linear model from the first steps on, and
training only has to improve on that.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from facepipe.pipeline.faces.template import Template
from facepipe.pipeline.runtime.store import OK, open_group, read_status

MAX_FACES = 2000  # PCA of at most this many faces per basis: enough directions, bounded memory


def pca_basis(offsets: np.ndarray, size: int) -> np.ndarray:
    """(size, 3V) principal directions of (N, V, 3) offsets about zero (the decoder adds them to its
    mean), each scaled by its standard deviation so that unit-variance codes span the data; rows
    past the data's rank are zero."""
    x = offsets.reshape(len(offsets), -1).astype(np.float64)
    basis = np.zeros((size, x.shape[1]))
    if len(x) == 0:
        return basis
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(size, int((s > s[0] * 1e-6).sum()) if s[0] > 0 else 0)
    vt = vt[:k] * np.where(vt[:k].sum(axis=1, keepdims=True) < 0, -1.0, 1.0)  # a fixed sign per direction
    basis[:k] = vt * (s[:k, None] / np.sqrt(len(x)))
    return basis


def training_offsets(urls: Sequence[str], template: Template, neutral_codes: Sequence[str], seed: int = 0,
                     limit: int = MAX_FACES) -> tuple[np.ndarray, np.ndarray]:
    """Identity offsets (neutral face - template) and expression offsets (face - the same identity's
    neutral face) of the ok samples of synth stores; identities are the sample-id prefix before `_e`."""
    identity: list[np.ndarray] = []
    expression: list[np.ndarray] = []
    for url in urls:
        group = open_group(url, "r")
        ok = np.flatnonzero(read_status(group) == OK)
        ids = [str(s) for s in group["source_path"][:]]
        codes = [str(c) for c in group["expression"][:]]
        faces = np.asarray(group["vertices"][:], dtype=np.float64)
        neutral: dict[str, np.ndarray] = {}
        members: dict[str, list[int]] = defaultdict(list)
        for i in ok.tolist():
            who = ids[i].rsplit("_e", 1)[0]
            if codes[i] in neutral_codes:
                neutral[who] = faces[i]
                identity.append(faces[i] - template.vertices)
            else:
                members[who].append(i)
        expression += [faces[i] - neutral[who] for who, idx in members.items() if who in neutral for i in idx]
    rng = np.random.default_rng(seed)

    def bounded(rows: list[np.ndarray]) -> np.ndarray:
        if not rows:
            return np.zeros((0, len(template.vertices), 3))
        pick = np.sort(rng.choice(len(rows), limit, replace=False)) if len(rows) > limit else np.arange(len(rows))
        return np.stack([rows[i] for i in pick])

    return bounded(identity), bounded(expression)
