"""What a command reads, and which template it works in: one resolver each, for every command.

A source is a store (path or fsspec URL), a dataset named in the catalog, or scan files given one
by one; a command says which kinds it takes, and anything else is a clear error that names the
input. The template is a saved `.npz`, one derived from an ICT-FaceKit model, or the procedural
model's (the default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np

from facepipe.pipeline.errors import CatalogError, FacepipeError
from facepipe.pipeline.faces.procedural import default_template
from facepipe.pipeline.faces.template import Template, load_template, template_from_model, template_from_record
from facepipe.pipeline.io.catalog import get_entry, list_samples, load_catalog
from facepipe.pipeline.io.ict import load_ict_npz
from facepipe.pipeline.runtime.naming import file_relatives
from facepipe.pipeline.runtime.store import OK, open_group, read_plan, read_status, store_state, store_template_record

SourceKind = Literal["store", "dataset", "files"]


class SourceError(FacepipeError):
    """An input that is none of the kinds a command takes."""


@dataclass(frozen=True)
class Source:
    """The samples a command reads, in a stable order.

    store: `location` is its URL, `ids` the ok samples' source paths, `indices` their rows.
    dataset: `location` is the dataset root, `ids` the scans relative to it.
    files: `location` is empty, `ids` the paths as given; `relatives` name their outputs."""

    kind: SourceKind
    name: str  # the store's dataset, the catalog dataset, or 'files'
    location: str
    ids: tuple[str, ...]
    indices: tuple[int, ...]  # store rows; positions otherwise
    fmt: str | None = None  # the reader to use (dataset), None: detect
    store_kind: str | None = None  # 'scans' | 'synth' | 'rgbd' (store)
    template_id: str = ""  # what a store was made in

    def paths(self) -> list[Path]:
        """The scan files of a dataset or a file list."""
        if self.kind == "store":
            raise SourceError(f"{self.location}: a store holds samples, not scan files")
        return [Path(self.location) / i if self.location else Path(i) for i in self.ids]

    def relatives(self) -> list[str]:
        """Each scan's path relative to its dataset root (or the part of it that tells same-named files apart):
        what output names are made from."""
        return list(self.ids) if self.kind != "files" else file_relatives(self.paths())


def store_source(url: str, limit: int | None = None) -> Source:
    group = open_group(url, "r")
    plan = read_plan(group, url)
    ok = np.flatnonzero(read_status(group) == OK)[:limit]
    names = group["source_path"][:]
    return Source("store", plan.dataset, url, tuple(str(names[i]) for i in ok), tuple(int(i) for i in ok),
                  store_kind=plan.kind, template_id=plan.template_id)


def dataset_source(name: str, catalog: str | PathLike[str], limit: int | None = None) -> Source:
    entry = get_entry(load_catalog(catalog), name)
    root, ids = list_samples(name, entry, Path(catalog).parent, limit)
    return Source("dataset", name, str(root), tuple(ids), tuple(range(len(ids))),
                  fmt=None if entry.format == "auto" else entry.format)


def resolve_source(inputs: str | Sequence[str], catalog: str | PathLike[str] = "data_catalog.yaml",
                   limit: int | None = None, kinds: Sequence[SourceKind] = ("store", "dataset", "files")) -> Source:
    """One store, one catalog dataset, or scan files (one or more), tried in that order."""
    specs = [inputs] if isinstance(inputs, str) else list(inputs)
    if not specs:
        raise SourceError("no input given")
    wanted = " or ".join({"store": "a store", "dataset": f"a dataset of {catalog}", "files": "scan files"}[k] for k in kinds)
    if len(specs) == 1 and store_state(specs[0]) == "store":
        if "store" not in kinds:
            raise SourceError(f"{specs[0]}: a store, but this command takes {wanted}")
        return store_source(specs[0], limit)
    if all(Path(s).is_file() for s in specs):
        if "files" not in kinds:
            raise SourceError(f"{specs[0]}: a file, but this command takes {wanted}")
        ids = tuple(specs[:limit] if limit else specs)
        return Source("files", "files", "", ids, tuple(range(len(ids))))
    if len(specs) == 1 and "dataset" in kinds:
        try:
            get_entry(load_catalog(catalog), specs[0])
        except CatalogError as exc:
            raise SourceError(f"{specs[0]!r} is not {wanted} ({exc})") from None
        return dataset_source(specs[0], catalog, limit)
    missing = [s for s in specs if not Path(s).is_file()]
    raise SourceError(f"not {wanted}: {', '.join(missing)}")


def store_template(url: str) -> Template | None:
    """The template a store was made in, as it carries it (None for stores made before they did)."""
    record = store_template_record(url)
    return template_from_record(record, url) if record is not None else None


def resolve_template(template: str | PathLike[str] | None = None, ict_model: str | PathLike[str] | None = None) -> Template:
    """A saved template, one derived from an ICT-FaceKit npz, or (neither given) the procedural model's."""
    if template is not None and ict_model is not None:
        raise FacepipeError("give a template file or an ICT-FaceKit model to derive one from, not both")
    if template is not None:
        return load_template(template)
    return template_from_model(load_ict_npz(ict_model)) if ict_model is not None else default_template()
