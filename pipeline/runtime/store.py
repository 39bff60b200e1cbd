"""The sample store (`scans.zarr`): preallocated Zarr v3 arrays, one chunk per sample, zstd.

Each sample's chunks are written by the task that made it and `status` is set to ok last, so a
crash at any point leaves a store whose ok samples are complete and whose others are simply redone.
A chunk equal to the fill value is not written at all (zarr's default), so a failed sample holds no
data and a store's files depend only on its content, not on what was tried before.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import zarr
from pydantic import ValidationError
from zarr.codecs import ZstdCodec

from facepipe.pipeline.errors import FacepipeError, printable
from facepipe.schemas.store import Manifest, StorePlan, VerifyReport

PENDING, OK, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", OK: "ok", FAILED: "failed"}
COMPRESSOR = ZstdCodec(level=3)
MANIFEST_BLOCK = 64  # samples hashed per read: bounded memory for any store size


class StoreError(FacepipeError):
    """A store that cannot be created, opened or resumed; the message names the store."""


@dataclass(frozen=True)
class Column:
    """One per-sample array: its trailing shape, dtype, fill value, dimension names and attributes."""

    name: str
    shape: tuple[int, ...]
    dtype: Any
    fill: Any
    dims: tuple[str, ...]
    attrs: dict[str, Any]


def scan_columns(n_points: int, landmark_names: Sequence[str], extra: Sequence[Column] = ()) -> list[Column]:
    """The arrays of `scans.zarr` in DESIGN.md (plus `extra` ones, e.g. synth's), `status` last."""
    xyz = ("xyz",)
    return [*extra, 
        Column("points", (n_points, 3), "float32", np.nan, ("point",) + xyz,
               {"frame": "template", "description": "sampled surface points, template frame ([-1, 1])"}),
        Column("normals", (n_points, 3), "float32", np.nan, ("point",) + xyz, {"description": "unit surface normals at the points"}),
        Column("landmarks", (len(landmark_names), 3), "float32", np.nan, ("landmark",) + xyz,
               {"names": list(landmark_names), "frame": "template", "description": "NaN where missing"}),
        Column("to_template", (4, 4), "float64", np.nan, ("row", "col"),
               {"description": "similarity from the raw scan frame (mm) into the template frame; its scale converts errors to mm"}),
        Column("source_sha256", (), str, "", (), {"description": "sha256 of the raw scan file"}),
        Column("subject", (), str, "", (), {}),
        Column("expression", (), str, "", (), {"description": "the database's expression code"}),
        Column("intensity", (), "int16", -1, (), {"description": "expression intensity, -1 where the database has none"}),
        Column("quality", (), str, "", (), {"description": "JSON quality record of the preprocessing (no timings)"}),
        *bookkeeping_columns(),
    ]


def bookkeeping_columns() -> list[Column]:
    """Why a sample failed, and its status: every store ends with these (`status` last)."""
    return [
        Column("failure_stage", (), str, "", (), {}),
        Column("failure_reason", (), str, "", (), {}),
        Column("status", (), "uint8", PENDING, (),
               {"flag_values": list(STATUS_NAMES), "flag_meanings": " ".join(STATUS_NAMES.values())}),
    ]


def facepipe_version() -> str:
    try:
        return version("facepipe")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


def samples_digest(sample_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sample_ids).encode("utf-8", "surrogateescape")).hexdigest()


def _zarr_store(url: str) -> Any:
    """A local path or file:// URL gets zarr's LocalStore (atomic file writes); anything else goes to fsspec."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and url[1:3] in (":\\", ":/")):  # path, file://, C:\
        return zarr.storage.LocalStore(parsed.path if parsed.scheme == "file" else url)
    return url


def is_in_memory(url: str) -> bool:
    return urlparse(url).scheme == "memory"


def open_group(url: str, mode: str = "r") -> zarr.Group:
    """A facepipe store: Zarr v3 only, so a v2 store (whose filters may be pickles) is never decoded."""
    try:
        return zarr.open_group(store=_zarr_store(url), mode=mode, zarr_format=3)  # type: ignore[arg-type]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
        raise StoreError(f"{url}: not a facepipe store ({type(exc).__name__}: {exc})") from None
    except (ValueError, TypeError, KeyError, OSError) as exc:  # a zarr.json that is not valid Zarr v3 metadata
        raise StoreError(f"{url}: not a readable Zarr v3 store ({type(exc).__name__}: {str(exc)[:200]})") from None


def store_state(url: str) -> str:
    """'store' (a Zarr group is there), 'empty' (nothing, or an empty folder) or 'other' (files that are not a store)."""
    store = _zarr_store(url)
    if not isinstance(store, str):
        root = Path(store.root)
        if (root / "zarr.json").exists():
            return "store"
        return "other" if root.exists() and (not root.is_dir() or any(root.iterdir())) else "empty"
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    path = path.rstrip("/")
    if fs.exists(f"{path}/zarr.json"):
        return "store"
    return "other" if fs.exists(path) and (fs.isfile(path) or fs.ls(path)) else "empty"


def read_plan(group: zarr.Group, url: str) -> StorePlan:
    raw = group.attrs.get("plan")
    if raw is None:
        raise StoreError(f"{url}: a Zarr group without a facepipe plan in its attributes (its creation was "
                         "interrupted, or another tool made it); overwriting replaces it", remedy="overwrite")
    try:
        return StorePlan.model_validate(raw)
    except ValidationError as exc:
        raise StoreError(f"{url}: the store's plan does not match this facepipe version:\n{exc}") from None


def create_store(url: str, plan: StorePlan, sample_ids: Sequence[str], columns: Sequence[Column],
                 constants: dict[str, tuple[np.ndarray, tuple[str, ...]]] | None = None,
                 extra_attrs: dict[str, object] | None = None) -> zarr.Group:
    """Preallocate every per-sample array (nothing but metadata is written) and write the `constants`
    (arrays shared by all samples, with their dimension names).

    The group is born with its plan and a `creating` mark, which goes only once every array is
    there: a run killed on the way leaves a store that the next run recognises and makes anew."""
    if len(sample_ids) != plan.n_samples:
        raise ValueError(f"{len(sample_ids)} sample ids for a plan of {plan.n_samples}")
    attrs = {"plan": plan.model_dump(mode="json")} | (extra_attrs or {})
    group = zarr.open_group(store=_zarr_store(url), mode="w", zarr_format=3, attributes=attrs | {"creating": True})  # type: ignore[arg-type]
    n = plan.n_samples
    for col in columns:
        group.create_array(col.name, shape=(n, *col.shape), chunks=(1, *col.shape), dtype=col.dtype, fill_value=col.fill,
                           compressors=COMPRESSOR, dimension_names=("sample", *col.dims), attributes=col.attrs)
    ids = group.create_array("source_path", shape=(n,), chunks=(min(n, 4096),), dtype=str, fill_value="",
                             compressors=COMPRESSOR, dimension_names=("sample",),
                             attributes={"description": "scan file relative to the dataset root: the sample id"})
    ids[:] = np.asarray([printable(i) for i in sample_ids], dtype=object)
    for name, (value, dims) in (constants or {}).items():
        group.create_array(name, data=value, compressors=COMPRESSOR, dimension_names=dims)
    group.attrs.put(attrs)  # created
    return group


def plan_differences(old: StorePlan, new: StorePlan) -> list[str]:
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    diffs = []
    for key in a:
        if isinstance(a[key], dict):
            diffs += [f"{key}.{k}: {a[key].get(k)!r} -> {b[key].get(k)!r}" for k in sorted(set(a[key]) | set(b[key]))
                      if a[key].get(k) != b[key].get(k)]
        elif a[key] != b[key]:
            diffs.append(f"{key}: {a[key]!r} -> {b[key]!r}" if key != "samples_sha256" else "the list of scan files differs")
    return diffs


def prepare_store(url: str, plan: StorePlan, sample_ids: Sequence[str], columns: Sequence[Column], overwrite: bool,
                  constants: dict[str, tuple[np.ndarray, tuple[str, ...]]] | None = None,
                  extra_attrs: dict[str, object] | None = None) -> tuple[list[int], int]:
    """Create the store, or check that the one there has the same plan; return the samples still to do."""
    state = store_state(url)
    if state == "other":
        raise StoreError(f"{url} exists and is not a Zarr store: refusing to write over it", remedy="new_output")
    if state == "store" and not overwrite and not open_group(url, "r").attrs.get("creating"):
        group = open_group(url, "r+")
        old = read_plan(group, url)
        if diffs := plan_differences(old, plan):
            raise StoreError(f"{url} was made with a different plan, so this run cannot resume into it:\n  "
                             + "\n  ".join(diffs), remedy="overwrite")
        status = read_status(group)
        todo = [int(i) for i in np.flatnonzero(status != OK)]
        return todo, len(sample_ids) - len(todo)
    create_store(url, plan, sample_ids, columns, constants, extra_attrs)
    return list(range(len(sample_ids))), 0


def plan_key(plan: StorePlan) -> str:
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()[:16]


class SampleWriter:
    """Writes one sample's chunks; arrays are opened once per process, URL and plan, not once per sample
    (the plan is part of the key because overwriting may recreate the store with other shapes)."""

    _cache: dict[tuple[str, str], tuple[dict[str, zarr.Array], zarr.Array]] = {}
    _lock = threading.Lock()

    def __init__(self, url: str, key: str) -> None:
        with self._lock:
            if (url, key) not in self._cache:
                group = open_group(url, "r+")
                columns = {name: arr for name, arr in group.arrays() if name not in ("status", "source_path")
                           and (arr.metadata.dimension_names or ("",))[0] == "sample"}  # type: ignore[union-attr]
                self._cache[(url, key)] = (columns, group["status"])  # type: ignore[assignment]
            self.columns, self.status = self._cache[(url, key)]

    def write(self, index: int, values: dict[str, Any], status: int) -> None:
        """Every column gets a value (its fill where absent), so a redone sample leaves no stale chunk."""
        for name, arr in self.columns.items():
            value = values.get(name)
            if value is None:
                value = np.full(arr.shape[1:], arr.fill_value, dtype=arr.dtype) if arr.ndim > 1 else arr.fill_value
            elif isinstance(value, str):  # UTF-8 in the store: a file name's undecodable bytes as escapes
                value = printable(value)
            arr[index] = value
        self.status[index] = status  # last: a sample is ok only once its data are on disk


def read_status(group: zarr.Group) -> np.ndarray:
    """The status of every sample; a chunk that cannot be decoded (a torn write on some store) counts as pending."""
    arr = group["status"]
    try:
        return np.asarray(arr[:], dtype=np.uint8)
    except Exception:  # noqa: BLE001 - any decode error means "not known to be done"
        out = np.zeros(arr.shape, np.uint8)
        for i in range(arr.shape[0]):
            try:
                out[i] = arr[i]
            except Exception:  # noqa: BLE001
                out[i] = PENDING
        return out


def _hash_block(h: Any, block: Any) -> None:
    arr = np.asarray(block)
    if arr.dtype.kind in "OTU":  # strings: length-prefixed UTF-8, independent of numpy's string layout
        for s in arr.reshape(-1).tolist():
            b = str(s).encode()
            h.update(len(b).to_bytes(8, "little") + b)
    else:
        h.update(np.ascontiguousarray(arr).tobytes())


def array_hash(arr: zarr.Array) -> str:
    h = hashlib.sha256(f"{arr.dtype}{tuple(arr.shape)}".encode())
    for start in range(0, arr.shape[0], MANIFEST_BLOCK):
        _hash_block(h, arr[start:start + MANIFEST_BLOCK])
    return h.hexdigest()


def compute_manifest(group: zarr.Group) -> Manifest:
    arrays = {name: array_hash(arr) for name, arr in sorted(group.arrays())}
    digest = hashlib.sha256(json.dumps(arrays, sort_keys=True).encode()).hexdigest()
    status = read_status(group)
    return Manifest(arrays=arrays, digest=digest, ok=int((status == OK).sum()), failed=int((status == FAILED).sum()),
                    pending=int((status == PENDING).sum()))


def finalize(group: zarr.Group, url: str) -> Manifest:
    """Hash the content and store the manifest beside the plan (the attributes are rewritten whole:
    plan, what the store carries, manifest)."""
    plan = read_plan(group, url)
    manifest = compute_manifest(group)
    kept = {k: v for k, v in group.attrs.asdict().items() if k not in ("plan", "manifest", "creating")}
    group.attrs.put({"plan": plan.model_dump(mode="json")} | kept | {"manifest": manifest.model_dump(mode="json")})
    return manifest


def verify_store(url: str) -> VerifyReport:
    """Recompute the content hashes and compare them with the manifest the ingest wrote."""
    group = open_group(url, "r")
    read_plan(group, url)
    raw = group.attrs.get("manifest")
    if raw is None:
        return VerifyReport(store=url, ok=False, expected="", actual="",
                            problems=["no manifest: the ingest that wrote this store has not finished (rerun it to resume)"])
    expected = Manifest.model_validate(raw)
    actual = compute_manifest(group)
    mismatched = sorted(k for k in set(expected.arrays) | set(actual.arrays) if expected.arrays.get(k) != actual.arrays.get(k))
    problems = [f"array {k}: content differs from the manifest" if k in actual.arrays and k in expected.arrays
                else f"array {k}: {'missing' if k in expected.arrays else 'not in the manifest'}" for k in mismatched]
    for field in ("ok", "failed", "pending"):
        if getattr(expected, field) != getattr(actual, field):
            problems.append(f"{field} samples: manifest says {getattr(expected, field)}, store has {getattr(actual, field)}")
    return VerifyReport(store=url, ok=not problems, expected=expected.digest, actual=actual.digest,
                        mismatched_arrays=mismatched, problems=problems)


def store_template_record(url: str) -> dict[str, object] | None:
    """The template record a store was made with (stores made before they carried one: None)."""
    record = open_group(url, "r").attrs.get("template")
    return record if isinstance(record, dict) else None
