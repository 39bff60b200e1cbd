"""Loading the data catalog and enumerating and checking the scans of one dataset."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from os import PathLike
from pathlib import Path

import yaml
from pydantic import ValidationError

from facepipe.pipeline.errors import CatalogError, FacepipeError
from facepipe.pipeline.io.registry import FORMATS, read_scan
from facepipe.schemas.catalog import Catalog, CheckReport, DatasetEntry


def load_catalog(path: str | PathLike[str]) -> Catalog:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{p}: catalog file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{p}: unreadable catalog: {exc}") from None
    try:
        catalog = Catalog.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(f"{p}: invalid catalog:\n{exc}") from None
    for name, entry in catalog.datasets.items():
        if entry.format != "auto" and entry.format not in FORMATS:
            raise CatalogError(f"{p}: dataset {name!r} has unknown format {entry.format!r} (known: auto, {', '.join(FORMATS)})")
    return catalog


def get_entry(catalog: Catalog, name: str) -> DatasetEntry:
    if name not in catalog.datasets:
        raise CatalogError(f"no dataset {name!r} in the catalog (have: {', '.join(sorted(catalog.datasets))})")
    return catalog.datasets[name]


def resolve_root(name: str, entry: DatasetEntry, base: str | PathLike[str] = ".") -> Path:
    """FACEPIPE_<NAME>_ROOT wins; else the entry's root with ${VAR} and ~ expanded, relative to `base`."""
    override = os.environ.get(f"FACEPIPE_{name.upper().replace('-', '_')}_ROOT")
    root = Path(os.path.expanduser(os.path.expandvars(override or entry.root)))
    return root if root.is_absolute() else Path(base) / root


def iter_scans(name: str, entry: DatasetEntry, base: str | PathLike[str] = ".") -> Iterator[Path]:
    """Scan files of a dataset in a stable, sorted order (the order every later stage relies on)."""
    root = resolve_root(name, entry, base)
    found: set[Path] = set()
    for pattern in entry.patterns:
        found.update(p for p in root.glob(pattern) if not p.is_dir())  # a FIFO or broken link becomes a failure record
    for p in sorted(found):
        if not any(fnmatch.fnmatch(p.name, ex) for ex in entry.exclude):
            yield p


def sibling_paths(scan: Path, entry: DatasetEntry) -> list[Path]:
    stem = scan.name.split(".")[0]
    return [scan.with_name(s.format(stem=stem)) for s in entry.siblings]


def check_dataset(name: str, entry: DatasetEntry, base: str | PathLike[str] = ".", read: bool = True) -> CheckReport:
    """Count the scans, list missing siblings and (with `read`) every file that fails to parse."""
    root = resolve_root(name, entry, base)
    scans = list(iter_scans(name, entry, base)) if root.is_dir() else []
    report = CheckReport(dataset=name, root=str(root), root_exists=root.is_dir(), files=len(scans), readable=0 if read else None)
    fmt = None if entry.format == "auto" else entry.format
    for scan in scans:
        missing = [s.name for s in sibling_paths(scan, entry) if not s.exists()]
        if missing:
            report.missing_siblings[str(scan)] = missing
        if read:
            try:
                read_scan(scan, fmt, texture=False)
            except FacepipeError as exc:
                report.unreadable[str(scan)] = str(exc)
            else:
                report.readable = (report.readable or 0) + 1
    return report


def list_samples(name: str, entry: DatasetEntry, base: str | PathLike[str], limit: int | None = None) -> tuple[Path, list[str]]:
    """The dataset root and its scans as ids relative to it, in the stable order the store uses."""
    root = resolve_root(name, entry, base)
    if not root.is_dir():
        raise CatalogError(f"dataset {name!r}: root {root} does not exist (edit data_catalog.yaml or set "
                          f"FACEPIPE_{name.upper().replace('-', '_')}_ROOT)")
    ids = [p.relative_to(root).as_posix() for p in iter_scans(name, entry, base)]
    if not ids:
        raise CatalogError(f"dataset {name!r}: no scan under {root} matches {entry.patterns}")
    return root, ids[:limit] if limit else ids
