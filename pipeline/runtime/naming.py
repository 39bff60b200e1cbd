"""Output file names for per-scan results: unique and stable whatever the inputs.

A file stem alone is not unique: BU-4DFE names every sequence's frames `000.wrl ... `, one
folder per expression, and two databases can share a file name. A name is therefore the scan's
path relative to its dataset root (for files given one by one: the file name, or, where names
clash, the path from the folder the clashing files share), folders joined by `__`, the scan
extension dropped; names that still clash after making them file-system safe get a short hash of
their full source path, so no result ever overwrites another.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from facepipe.schemas.text import printable

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def output_stem(relative: str) -> str:
    """`F001/Angry/000.wrl` -> `F001__Angry__000`; `nd1/x/04200d100.abs.gz` -> `nd1__x__04200d100`."""
    parts = [p for p in PurePosixPath(relative.replace("\\", "/")).parts if p not in ("", ".", "/")]
    if not parts:
        return "scan"
    last = parts[-1][:-3] if parts[-1].lower().endswith(".gz") else parts[-1]
    stem, dot, _ = last.rpartition(".")
    parts[-1] = stem if dot and stem else last
    return "__".join(_UNSAFE.sub("_", printable(p)).strip("._") or "_" for p in parts)


def output_names(relatives: Sequence[str]) -> list[str]:
    """One stem per source (sources themselves are distinct); a clash gets `-<8 hex of the source>`."""
    stems = [output_stem(r) for r in relatives]
    count = Counter(s.lower() for s in stems)  # case-insensitive file systems clash on case alone
    return [f"{s}-{hashlib.sha256(r.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}" if count[s.lower()] > 1 else s
            for s, r in zip(stems, relatives, strict=True)]


def file_relatives(paths: Sequence[Path]) -> list[str]:
    """What names files given one by one: the file name where it is unique among them, else the path
    relative to the deepest folder that the files sharing that name have in common."""
    absolute = [os.path.abspath(p) for p in paths]
    by_stem: dict[str, list[int]] = {}
    for i, a in enumerate(absolute):
        by_stem.setdefault(output_stem(os.path.basename(a)).lower(), []).append(i)
    out = [os.path.basename(a) for a in absolute]
    for group in by_stem.values():
        if len(group) > 1:
            common = os.path.commonpath([os.path.dirname(absolute[i]) for i in group])
            for i in group:
                out[i] = Path(os.path.relpath(absolute[i], common)).as_posix()
    return out
