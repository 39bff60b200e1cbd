"""One writer per store: a lock file beside the store naming the host and process that hold it.

Two runs into one store would both do all the work and both report success, each with a report
that disagrees with the store it leaves. The lock is a file `<store>.lock` made atomically with
its content (written aside, then hard-linked into place, which fails when one is there). A lock
whose process is gone (same host, and no process with that pid and start time) is taken over,
so a run killed with -9 never blocks the next one; a lock from another host cannot be checked
and is reported with what to do. Object-store URLs have no atomic create: there the lock is
best-effort (checked, then written).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from facepipe.pipeline.errors import FacepipeError, printable


class StoreLockedError(FacepipeError):
    """Another run is writing the same store."""


def _start_time(pid: int) -> float | None:
    """When process `pid` started (None: there is no such process), to tell it from a later one with its pid."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # it exists, we just may not look at it
        return -1.0


def _holder() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": printable(" ".join(sys.argv))[:300]}


def _is_stale(holder: dict[str, object]) -> bool:
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return True
    started = _start_time(pid)
    return started is None or (started != -1.0 and holder.get("started") not in (None, started))


def _describe(holder: dict[str, object]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} ({holder.get('command')})"


def lock_path(url: str) -> str:
    return url.rstrip("/") + ".lock"


def _local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and url[1:3] in (":\\", ":/")):
        return Path(parsed.path if parsed.scheme == "file" else url)
    return None


@contextmanager
def store_lock(url: str) -> Iterator[None]:
    """Hold the store's lock for the body; a second run refuses with the holder's host, pid and command."""
    local = _local_path(url)
    if local is None:
        with _fsspec_lock(lock_path(url)):
            yield
        return
    path = Path(lock_path(str(local)))
    path.parent.mkdir(parents=True, exist_ok=True)
    me = _holder()
    _acquire(path, me)
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("pid") == me["pid"]:
                path.unlink()
        except (OSError, ValueError):
            pass


def _acquire(path: Path, me: dict[str, object]) -> None:
    for _ in range(5):
        aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
        aside.write_text(json.dumps(me), encoding="utf-8")
        try:
            os.link(aside, path)  # atomic, and fails when a lock is there: never a half-written lock
            return
        except FileExistsError:
            pass
        finally:
            aside.unlink(missing_ok=True)
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # released meanwhile: try again
        except (OSError, ValueError):
            holder = {}
        if holder and not _is_stale(holder):
            raise StoreLockedError(f"{path.with_suffix('')} is being written by another run: {_describe(holder)}. "
                                   f"Wait for it to finish; if that process is gone, delete {path}")
        try:  # a lock left by a dead process: move it away (only one contender can) and try again
            path.rename(path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}"))
        except FileNotFoundError:
            continue
        for old in path.parent.glob(f"{path.name}.stale-*"):
            old.unlink(missing_ok=True)
    raise StoreLockedError(f"{path}: could not take the store's lock (other runs keep taking it)")


@contextmanager
def _fsspec_lock(url: str) -> Iterator[None]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        try:
            holder = json.loads(fs.cat_file(path))
        except ValueError:
            holder = {}
        if holder and not _is_stale(holder):
            raise StoreLockedError(f"{url[:-5]} is being written by another run: {_describe(holder)}. "
                                   f"Wait for it to finish; if that process is gone, delete {url}")
    me = _holder()
    fs.pipe_file(path, json.dumps(me).encode())
    try:
        yield
    finally:
        try:
            if json.loads(fs.cat_file(path)).get("pid") == me["pid"]:
                fs.rm_file(path)
        except (OSError, ValueError):
            pass
