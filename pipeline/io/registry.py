"""Which reader handles a path: by explicit format name, else by file name and folder layout."""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from pathlib import Path

from facepipe.pipeline.errors import ScanFormatError
from facepipe.pipeline.geometry.scan import Scan, check_scan
from facepipe.pipeline.io import bjut, bosphorus, bu3dfe, bu4dfe, frgc, generic, micc, texas, vrml
from facepipe.pipeline.io.limits import read_limits
from facepipe.pipeline.io.text import check_regular
from facepipe.schemas.scan import ScanMeta

Reader = Callable[..., Scan]


def _read_plain_vrml(path: str | PathLike[str], texture: bool = True) -> Scan:
    return vrml.read_vrml_scan(path, ScanMeta(format="vrml", path=str(path)), texture)


READERS: dict[str, Reader] = {
    "bu3dfe": bu3dfe.read_bu3dfe,
    "bu4dfe": bu4dfe.read_bu4dfe,
    "bosphorus": bosphorus.read_bosphorus,
    "frgc": frgc.read_frgc,
    "texas3d": texas.read_texas,
    "micc": micc.read_micc,
    "bjut3d": bjut.read_bjut,
    "vrml": _read_plain_vrml,
    **{ext.lstrip("."): generic.read_generic for ext in generic.EXTENSIONS},
}
FORMATS = tuple(READERS)


def detect_format(path: str | PathLike[str]) -> str:
    """The reader for a file from its name and folder tree; BJUT-3D text is recognised by content."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".wrl"):
        if bu3dfe.parse_name(p):
            return "bu3dfe"
        if bu4dfe.is_bu4dfe(p):
            return "bu4dfe"
        return "micc" if micc.is_micc(p) else "vrml"
    if name.endswith(".bnt"):
        return "bosphorus"
    if name.endswith((".abs", ".abs.gz")):
        return "frgc"
    if texas.is_texas(p):
        return "texas3d"
    if name.endswith(generic.EXTENSIONS):
        return "micc" if micc.is_micc(p) else p.suffix.lower().lstrip(".")
    if p.is_file() and bjut.is_bjut_text(_head(p)):
        return "bjut3d"
    raise ScanFormatError(p, f"unknown scan format (known: {', '.join(FORMATS)}); name one explicitly")


def _head(path: Path, size: int = 64) -> bytes:
    check_regular(path)
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError as exc:
        raise ScanFormatError(path, f"cannot read: {exc.strerror or exc}") from None


def read_scan(path: str | PathLike[str], fmt: str | None = None, texture: bool = True) -> Scan:
    """Read any supported scan; every failure is a ScanFormatError naming the file."""
    check_regular(path)
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise ScanFormatError(path, f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    return check_scan(READERS[fmt](path, texture=texture), read_limits())
