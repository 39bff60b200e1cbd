"""Settings files: YAML or JSON mappings that a command's flags are laid over."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import yaml

from facepipe.pipeline.errors import FacepipeError


def read_settings(path: str | PathLike[str]) -> dict[str, object]:
    """The mapping in a YAML/JSON file (JSON is YAML); anything else is an error naming the file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FacepipeError(f"{p}: unreadable config: {exc}") from None
    if not isinstance(raw, dict):
        raise FacepipeError(f"{p}: the config must be a mapping of settings, got {type(raw).__name__}")
    return raw
