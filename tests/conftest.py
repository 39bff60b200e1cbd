"""Fixtures: small scans written by facepipe's own writers in the real byte layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facepipe.pipeline.sample_data import (FaceParams, bosphorus_files, bu3dfe_files, example_template, frgc_files, write_example_dataset,
                                          write_files)
from facepipe.pipeline.template import Template


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("example")
    write_example_dataset(out, subjects=2, seed=7)
    return out


@pytest.fixture
def bu3dfe_scan(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    write_files(tmp_path, bu3dfe_files(FaceParams(), rng, "F0007_HA03AE_F3D", spacing=3.0))
    return tmp_path / "F0007_HA03AE_F3D.wrl"


@pytest.fixture
def bosphorus_scan(tmp_path: Path) -> Path:
    rng = np.random.default_rng(6)
    write_files(tmp_path, bosphorus_files(FaceParams(), rng, "bs012_E_HAPPY_0", spacing=2.5))
    return tmp_path / "bs012_E_HAPPY_0.bnt"


@pytest.fixture
def frgc_scan(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    write_files(tmp_path, frgc_files(FaceParams(), rng, "02463d452", rows=48, cols=64))
    return tmp_path / "02463d452.abs"


@pytest.fixture(scope="session")
def relief_template() -> Template:
    return example_template()
