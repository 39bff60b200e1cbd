"""Lazy re-exports for the packages' `__init__`s: the public names of a package are importable from
it, but a module is imported only when one of its names is first used, so `import
facepipe.pipeline.errors` (what the CLI does first) does not pull in open3d, MediaPipe or Dask."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, which re-exports each name from its module
    (`names`: public name -> module path relative to the package, e.g. '.stages.preprocess', or
    'module:attribute' where the public name differs from the module's own)."""

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = names[name].partition(":")
        value = getattr(importlib.import_module(module, package), attribute or name)
        setattr(sys.modules[package], name, value)  # once resolved, a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(names) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
