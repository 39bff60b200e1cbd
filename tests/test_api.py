"""The public API: every name a package's `__init__` promises resolves, and the README's Python
example runs as written (in a fresh interpreter, from a scratch folder)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("facepipe.schemas", "facepipe.pipeline", "facepipe.pipeline.geometry", "facepipe.pipeline.faces",
            "facepipe.pipeline.io", "facepipe.pipeline.runtime", "facepipe.pipeline.stages", "facepipe.models")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__, f"{package} exports nothing"
    for name in module.__all__:
        value = getattr(module, name)
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module, not the thing it names"
    with pytest.raises(AttributeError, match="no attribute"):
        getattr(module, "no_such_name")


def test_importing_the_error_types_stays_cheap() -> None:
    """The CLI imports facepipe.pipeline.errors first: that must not load open3d, MediaPipe or Dask."""
    probe = ("import sys, facepipe.pipeline.errors, facepipe.pipeline, facepipe.models; "
             "print([m for m in ('open3d', 'mediapipe', 'distributed', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("bu3dfe ") and "83 landmarks" in lines[0]
    assert lines[1].startswith("(4096, 3)")
    assert lines[2].startswith("F0001_NE00WH_F3D.ply") and (tmp_path / "meshes" / "F0001_NE00WH_F3D.ply").is_file()
