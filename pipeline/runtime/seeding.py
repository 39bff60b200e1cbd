"""Per-sample randomness: a generator derived from (global seed, dataset, sample id), never from order.

Any worker can then make any sample and get the same bytes, which keeps stores identical whatever
the number of workers or the order the scheduler runs tasks in.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_seed(seed: int, dataset: str, sample_id: str) -> int:
    # surrogateescape: a file name that is not UTF-8 hashes as its own bytes (UTF-8 names are unchanged)
    key = f"{seed}\x1f{dataset}\x1f{sample_id}".encode("utf-8", "surrogateescape")
    digest = hashlib.blake2b(key, digest_size=16).digest()
    return int.from_bytes(digest, "little")


def sample_rng(seed: int, dataset: str, sample_id: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(sample_seed(seed, dataset, sample_id)))
