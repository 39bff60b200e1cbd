"""Everything installs under the one import root `facepipe`; nothing generic lands in site-packages."""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_subpackages_import_under_facepipe(tmp_path: Path) -> None:
    for name in ("facepipe.cli.app", "facepipe.schemas.catalog", "facepipe.pipeline.io.registry", "facepipe.models"):
        importlib.import_module(name)
    # outside the checkout, the installed environment must not offer generic top-level names
    probe = "import importlib.util as u; print([n for n in ('cli', 'pipeline', 'schemas', 'models') if u.find_spec(n)])"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_wheel_holds_only_the_facepipe_root(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("facepipe-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names}
    assert roots == {"facepipe", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    for module in ("facepipe/cli/app.py", "facepipe/pipeline/io/vrml.py", "facepipe/schemas/scan.py", "facepipe/models/__init__.py"):
        assert module in names
    # and it imports from a plain (non-editable) install
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    probe = "import facepipe.pipeline.io.registry as r, facepipe.cli.app; print(r.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith(str(target))
