"""The files of a training run directory, shared by `facepipe train` and `facepipe train-encoder`.

A run directory holds `config.json`, `metrics.jsonl` (one line per finished epoch), TensorBoard
scalars and `checkpoints/last.pt`; a run is never trained over, and resuming needs the same config.
Checkpoints are written aside and renamed, so a kill leaves the last finished epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from facepipe.pipeline.errors import FacepipeError


class RunDirError(FacepipeError):
    """A run directory that cannot be started or resumed."""


def open_run(out: Path, config: BaseModel, resume: bool) -> Path:
    """Checks `out` for a new run or a resume of the same config; returns the last checkpoint's path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    last = out / "checkpoints" / "last.pt"
    saved = out / "config.json"
    if resume:
        if not last.exists():
            raise RunDirError(f"{out}: nothing to resume (no checkpoints/last.pt)")
        if saved.exists() and json.loads(saved.read_text()) != json.loads(config.model_dump_json()):
            raise RunDirError(f"{out} was trained with another config; start a new run directory")
    elif last.exists():
        raise RunDirError(f"{out} already has a run: resume it, or train into another directory", remedy="resume")
    return last


def start_records(out: Path, config: BaseModel, done: int, rank: int) -> tuple[list[dict[str, Any]], Any]:
    """The history so far and, on rank 0, the saved config and a TensorBoard writer (else None)."""
    history = read_history(out, done)
    if rank != 0:
        return history, None
    (out / "config.json").write_text(config.model_dump_json(indent=2) + "\n")
    return history, scalar_writer(out, done)


def restore(state: dict[str, Any], key: str, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """A checkpoint's weights, optimizer state and torch RNG back in place (for an exact resume)."""
    net.load_state_dict(state[key])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])


def read_history(out: Path, done: int) -> list[dict[str, Any]]:
    """The metrics of the epochs up to and including `done` (a resumed run drops what came after)."""
    path = out / "metrics.jsonl"
    if done < 0 or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()][: done + 1]


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    with open(out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)


def scalar_writer(out: Path, done: int) -> Any:
    """TensorBoard scalars; a resumed run's later steps are purged."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"), purge_step=done + 1)


def save_atomic(state: dict[str, object], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def model_file(path: str | Path) -> Path:
    """A run directory's model.pt, or the file given."""
    p = Path(path)
    return p / "model.pt" if p.is_dir() else p


def load_state(path: Path) -> dict[str, Any]:
    """A checkpoint or model file, loaded with weights_only=True: it can never run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one clear error
        raise RunDirError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
