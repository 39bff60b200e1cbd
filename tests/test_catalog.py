from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facepipe.pipeline.errors import CatalogError
from facepipe.pipeline.io.catalog import check_dataset, get_entry, iter_scans, load_catalog, resolve_root

REPO_CATALOG = Path(__file__).resolve().parents[1] / "data_catalog.yaml"


def test_repo_catalog_is_valid_and_complete() -> None:
    cat = load_catalog(REPO_CATALOG)
    assert {"example", "bu3dfe", "bu4dfe", "bosphorus", "frgc", "texas3d", "micc", "bjut3d"} <= set(cat.datasets)
    for entry in cat.datasets.values():
        assert entry.licence and entry.obtain


def _catalog(tmp_path: Path, root: Path, siblings: str = "[]") -> Path:
    p = tmp_path / "cat.yaml"
    p.write_text(f"""version: 1
datasets:
  mine:
    format: bu3dfe
    root: {root}
    patterns: ["**/*_F3D.wrl"]
    siblings: {siblings}
    licence: test
    obtain: test
""")
    return p


def test_env_var_overrides_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = load_catalog(_catalog(tmp_path, Path("/nowhere")))
    entry = get_entry(cat, "mine")
    assert resolve_root("mine", entry) == Path("/nowhere")
    monkeypatch.setenv("FACEPIPE_MINE_ROOT", str(tmp_path))
    assert resolve_root("mine", entry) == tmp_path
    monkeypatch.delenv("FACEPIPE_MINE_ROOT")
    monkeypatch.setenv("MY_DATA", "/data")
    assert resolve_root("mine", entry.model_copy(update={"root": "${MY_DATA}/bu"})) == Path("/data/bu")


def test_check_reports_missing_siblings_and_unreadable(tmp_path: Path, example_dir: Path) -> None:
    root = tmp_path / "db"
    shutil.copytree(example_dir / "BU-3DFE", root)
    scans = sorted(root.rglob("*_F3D.wrl"))
    scans[0].with_suffix(".bmp").unlink()
    scans[1].write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 1 2")
    cat = load_catalog(_catalog(tmp_path, root, '["{stem}.bnd", "{stem}.bmp"]'))
    entry = get_entry(cat, "mine")
    assert list(iter_scans("mine", entry)) == scans
    report = check_dataset("mine", entry)
    assert report.files == 4 and report.readable == 3 and not report.ok
    assert report.missing_siblings == {str(scans[0]): [scans[0].with_suffix(".bmp").name]}
    assert list(report.unreadable) == [str(scans[1])] and "unterminated" in report.unreadable[str(scans[1])]
    quick = check_dataset("mine", entry, read=False)
    assert quick.readable is None and not quick.unreadable


def test_empty_and_missing_roots(tmp_path: Path) -> None:
    entry = get_entry(load_catalog(_catalog(tmp_path, tmp_path / "absent")), "mine")
    report = check_dataset("mine", entry)
    assert not report.root_exists and report.files == 0 and not report.ok


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("version: 1\ndatasets:\n  x:\n    format: nope\n    root: r\n    patterns: ['*']\n    licence: l\n    obtain: o\n", "unknown format 'nope'"),
        ("version: 1\ndatasets:\n  x:\n    format: frgc\n    root: r\n    patterns: []\n    licence: l\n    obtain: o\n", "patterns"),
        ("version: 1\ndatasets:\n  x:\n    format: frgc\n    root: r\n    patterns: ['/abs/*']\n    licence: l\n    obtain: o\n", "relative"),
        ("version: 1\ndatasets:\n  x:\n    format: frgc\n    root: r\n    patterns: ['*']\n    obtain: o\n", "licence"),
        ("version: 1\ndatasets: [\n", "unreadable catalog"),
    ],
)
def test_bad_catalogs(tmp_path: Path, text: str, problem: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(CatalogError, match=problem):
        load_catalog(p)
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "none.yaml")
