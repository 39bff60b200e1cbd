"""Text that is safe to print, serialise as JSON and store as UTF-8, whatever the bytes of a file name."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def printable(text: str) -> str:
    """`text` with undecodable file-name bytes (Python keeps them as surrogates) shown as \\xNN escapes.

    A name that is not UTF-8 is still a file we can open; only printing, JSON and the store's
    UTF-8 strings need this form, and without it they raise instead of reporting the file.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file-name byte produced
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


Printable = Annotated[str, AfterValidator(printable)]
