"""A torch Dataset over a sample store: lazy per-sample reads that work in DataLoader worker processes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from facepipe.pipeline.runtime.store import OK, open_group, read_plan, read_status


class StoreDataset(Dataset[dict[str, torch.Tensor]]):
    """The ok samples of a `scans.zarr` (or `synth.zarr`), one dict of tensors per sample.

    Only the store URL and the index list are pickled to DataLoader workers; each process opens its
    own handle on first use, so no file handle or event loop crosses a fork.
    """

    def __init__(self, url: str, arrays: Sequence[str] = ("points", "normals", "landmarks", "to_template"),
                 only_ok: bool = True) -> None:
        group = open_group(url, "r")
        read_plan(group, url)
        missing = [a for a in arrays if a not in group]
        if missing:
            raise KeyError(f"{url}: the store has no array {missing[0]!r} (have {sorted(n for n, _ in group.arrays())})")
        self.url = url
        self.arrays = tuple(arrays)
        status = read_status(group)
        self.indices = np.flatnonzero(status == OK) if only_ok else np.arange(len(status))
        self._handles: dict[str, zarr.Array] | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.indices)

    def _open(self) -> dict[str, zarr.Array]:
        if self._handles is None or self._pid != os.getpid():
            group = open_group(self.url, "r")
            self._handles, self._pid = {name: group[name] for name in self.arrays}, os.getpid()  # type: ignore[misc]
        return self._handles

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} of {len(self)}")
        index = int(self.indices[i])
        item = {name: torch.from_numpy(np.ascontiguousarray(arr[index])) for name, arr in self._open().items()}
        item["index"] = torch.tensor(index)
        return item

    def __getstate__(self) -> dict[str, object]:
        return self.__dict__ | {"_handles": None, "_pid": -1}
