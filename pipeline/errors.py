"""Exception types: every expected failure is a FacepipeError, so callers can record it and go on."""

from __future__ import annotations

from os import PathLike

from facepipe.schemas.text import printable

__all__ = ["CatalogError", "FacepipeError", "ScanFormatError", "printable"]


class FacepipeError(Exception):
    """Base of all errors facepipe raises on purpose (bad input, bad config).

    `remedy` names what the caller can do about it, in the library's terms ('overwrite', 'resume',
    'model_path', 'checkpoint', 'new_output'); the CLI turns it into the flag to pass."""

    def __init__(self, *args: object, remedy: str | None = None) -> None:
        super().__init__(*args)
        self.remedy = remedy


class ScanFormatError(FacepipeError):
    """A file that cannot be read as the format it claims to be; the message names file and problem."""

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = printable(str(path))
        self.problem = printable(problem)
        super().__init__(f"{self.path}: {problem}")


class CatalogError(FacepipeError):
    """A data catalog that is missing, malformed or names an unknown dataset."""
