"""torchvision, importable beside the CPU build of torch that facepipe pins.

PyPI's torchvision 0.28.0 (the release paired with torch 2.13) is built against CUDA torch: next to
the CPU wheel its compiled detection ops cannot load, and its import then fails declaring fake
kernels for two of them (`operator torchvision::nms does not exist`). The architectures facepipe
uses (ResNets) are plain torch modules, so when that happens the two schemas are declared first;
the detection ops stay unavailable (calling them raises), everything else is torchvision's own.
With a torch that loads its ops (a CUDA build), torchvision is imported as it is.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

_declared: list[torch.library.Library] = []  # kept alive: a dropped Library removes its definitions


def torchvision() -> ModuleType:
    try:
        import torchvision as tv
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]  # the half-imported package
        if not _declared:
            lib = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _declared.append(lib)
        import torchvision as tv
    return tv
