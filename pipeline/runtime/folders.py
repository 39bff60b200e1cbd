"""Output folders that are resumable results, as stores are: a plan, one file per sample written
atomically, a row per finished sample written after its file, and an index rebuilt from the rows.

A rerun of the same plan does only the samples without a row; another plan is refused unless the
caller overwrites, and then only what this module wrote goes. A crash leaves at most a temporary
file (never a half-written output), so the rerun ends with the same folder as an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from facepipe.pipeline.errors import FacepipeError

PLAN = "plan.json"
ROWS = ".rows"
INDEX = "index.csv"


class FolderError(FacepipeError):
    """An output folder that belongs to another plan, or is not one of ours."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plan_differences(old: dict[str, object], new: dict[str, object]) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def prepare_folder(out: Path, plan: BaseModel, overwrite: bool) -> set[int]:
    """Create the folder with its plan, or check the plan there; return the positions already done."""
    new = json.loads(plan.model_dump_json())
    plan_file = out / PLAN
    if plan_file.exists():
        old = json.loads(plan_file.read_text(encoding="utf-8"))
        if diffs := plan_differences(old, new):
            if not overwrite:
                raise FolderError(f"{out} holds the results of another run, so this one cannot resume into it:\n  "
                                  + "\n  ".join(diffs), remedy="overwrite")
            clear_folder(out)
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FolderError(f"{out} is not empty and is not a facepipe result folder (no {PLAN})", remedy="overwrite")
        clear_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ROWS).mkdir(exist_ok=True)
    for leftover in [*out.glob(".*.tmp"), *out.glob("*/.*.tmp")]:  # a killed run's unfinished writes
        leftover.unlink(missing_ok=True)
    write_atomic(plan_file, (json.dumps(new, indent=2, sort_keys=True) + "\n").encode())
    return {int(p.stem) for p in (out / ROWS).glob("*.json")}


def clear_folder(out: Path) -> None:
    """Remove what a result run wrote: the files its rows and its index name, the rows, index and plan."""
    names = {str(r.get("output")) for r in read_rows(out) if r.get("output")}
    if (out / INDEX).exists():
        with open(out / INDEX, newline="", encoding="utf-8") as f:
            names |= {r["output"] for r in csv.DictReader(f) if r.get("output")}
    for name in names:
        if "/" not in name and name not in ("", ".", ".."):
            (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / ROWS, ignore_errors=True)
    shutil.rmtree(out / ".faces", ignore_errors=True)
    for name in (PLAN, INDEX):
        (out / name).unlink(missing_ok=True)


def write_row(out: Path, position: int, row: dict[str, object]) -> None:
    """The sample's row, after its output file: its presence marks the sample done."""
    write_atomic(out / ROWS / f"{position:08d}.json", (json.dumps(row, sort_keys=True) + "\n").encode())


def read_rows(out: Path) -> list[dict[str, object]]:
    """Every finished sample's row, in position order."""
    folder = out / ROWS
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def write_index(out: Path, fields: Sequence[str]) -> list[dict[str, object]]:
    """Rebuild `index.csv` from the rows (so it always lists exactly what is there); returns the rows."""
    rows = read_rows(out)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r.get(k, "") for k in fields} for r in rows)
    write_atomic(out / INDEX, buffer.getvalue().encode())
    return rows
