"""The one source resolver and the one template resolver that every command uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe.models.train import stores_template
from facepipe.pipeline.errors import FacepipeError
from facepipe.pipeline.faces.procedural import default_template, procedural_model
from facepipe.pipeline.faces.template import template_from_model
from facepipe.pipeline.runtime.sources import SourceError, resolve_source, resolve_template, store_template
from facepipe.pipeline.stages.synth import synth_from_model
from facepipe.schemas.store import RunOptions
from facepipe.schemas.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
FP = [sys.executable, "-m", "facepipe.cli.app"]


@pytest.fixture(scope="module")
def catalog(example_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sources")
    (folder / "data").mkdir()
    (folder / "data" / "example").symlink_to(example_dir)
    (folder / "catalog.yaml").write_text((REPO / "data_catalog.yaml").read_text())
    return folder / "catalog.yaml"


def test_a_dataset_resolves_to_its_scans_in_store_order(catalog: Path) -> None:
    source = resolve_source("example", catalog, limit=3)
    assert source.kind == "dataset" and source.name == "example" and len(source.ids) == 3
    assert all(p.is_file() for p in source.paths()) and source.relatives() == list(source.ids)
    assert resolve_source(["example"], catalog).ids[:3] == source.ids  # one name in a list is the same


def test_files_keep_the_folders_that_tell_them_apart(catalog: Path, tmp_path: Path) -> None:
    one = resolve_source("example", catalog, limit=1).paths()[0]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / one.name).write_bytes(one.read_bytes())
    source = resolve_source([str(tmp_path / "a" / one.name), str(tmp_path / "b" / one.name)], catalog)
    assert source.kind == "files" and len(set(source.relatives())) == 2
    with pytest.raises(SourceError, match="a file, but this command takes a store"):
        resolve_source(str(tmp_path / "a" / one.name), catalog, kinds=("store",))


def test_a_store_resolves_to_its_finished_samples(tmp_path: Path, catalog: Path) -> None:
    url = str(tmp_path / "s.zarr")
    synth_from_model("procedural", None, url, {"identities": 2, "expressions": 1, "n_points": 256},
                     options=RunOptions(processes=False, workers=1))
    source = resolve_source(url, catalog, limit=3)
    assert source.kind == "store" and source.store_kind == "synth" and source.indices == (0, 1, 2)
    assert source.ids == ("id00000_e00", "id00000_e01", "id00001_e00") and source.template_id == default_template().id
    with pytest.raises(SourceError, match="a store, but this command takes scan files"):
        resolve_source(url, catalog, kinds=("files",))
    with pytest.raises(SourceError, match="holds samples, not scan files"):
        source.paths()


def test_what_is_none_of_them_is_named(catalog: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"'nope' is not a store or a dataset of .*catalog\.yaml or scan files"):
        resolve_source("nope", catalog)
    with pytest.raises(SourceError, match=r"not .*: .*missing\.wrl"):
        resolve_source([str(tmp_path / "missing.wrl"), str(tmp_path / "other.wrl")], catalog)
    with pytest.raises(SourceError, match="no input"):
        resolve_source([], catalog)


def test_the_template_resolver(tmp_path: Path, face_model_npz: Path) -> None:
    assert resolve_template().id == default_template().id
    saved = tmp_path / "t.npz"
    template_from_model(procedural_model(), target_vertices=5000).save(saved)
    assert resolve_template(saved).id != default_template().id and len(resolve_template(saved).vertices) >= 5000
    assert resolve_template(ict_model=face_model_npz).name.startswith("ict")
    with pytest.raises(FacepipeError, match="not both"):
        resolve_template(saved, face_model_npz)


@pytest.mark.slow
def test_commands_work_in_the_template_the_store_carries(tmp_path: Path, face_model_npz: Path) -> None:
    """A store made in another template carries it: evaluate (and correspond, and train) work in it
    without being told, a different --template is refused with the flag to pass, and library errors
    carry a remedy that the CLI turns into a flag."""
    ict, procedural = tmp_path / "ict.npz", tmp_path / "procedural.npz"
    store = tmp_path / "s.zarr"
    run = lambda *a: subprocess.run([*FP, *a], capture_output=True, text=True, timeout=600, cwd=tmp_path)  # noqa: E731
    model = ("--model", "ict", "--model-path", str(face_model_npz))
    assert run("template", str(ict), *model).returncode == 0 and run("template", str(procedural)).returncode == 0
    made = run("synth", *model, "--identities", "1", "--expressions", "0", "--points", "2000", "--out", str(store),
               "--threads", "--workers", "1")
    assert made.returncode == 0, made.stderr
    assert store_template(str(store)).id == resolve_template(ict).id  # type: ignore[union-attr]
    assert stores_template(TrainConfig(synth=[str(store)])).id == resolve_template(ict).id  # type: ignore[union-attr]
    refused = run("evaluate", "--method", "nicp", "--in", str(store), "--out", str(tmp_path / "e0"), "--template", str(procedural))
    assert refused.returncode == 2 and "was made in template" in refused.stderr and "--template" in refused.stderr
    ok = run("evaluate", "--method", "nicp", "--in", str(store), "--out", str(tmp_path / "e"), "--threads")
    assert ok.returncode == 0, ok.stderr
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["method"] == "nicp" and report["samples"] == 1 and report["template"] == resolve_template(ict).id
    assert report["vertex_mm"]["mean"] < 6.0
    assert (tmp_path / "e" / "meshes" / "index.csv").is_file()  # evaluate keeps the meshes it measured
    changed = run("synth", *model, "--identities", "1", "--expressions", "0", "--points", "1000", "--out", str(store),
                  "--threads", "--workers", "1")
    assert changed.returncode == 2 and "different plan" in changed.stderr and "--overwrite" in changed.stderr
