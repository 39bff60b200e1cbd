"""What every benchmark script shares: the machine description, store sizes, writing the JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "python": platform.python_version()}


def du(path: Path) -> int:
    """Bytes of all files under `path` (a store)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_results(path: Path, result: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
