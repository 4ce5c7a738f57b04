"""Per-view arrays kept on disk while a job runs, so its RAM does not grow with the number of photos.

A job's largest per-view outputs (mask logits: Q x H/2 x W/2 values; raw pointmaps: H x W x 7) are written
once, as each view leaves the network, and read back one view at a time by the later stages. The files live
in a scratch folder named like the job's bundle staging folder (so a killed job's leftovers are removed by
``remove_stale_staging``), with names built from view indices only, and are deleted when the job ends.
Reads go through ordinary file reads, not memory maps, so the pages read back are not counted in the
process's resident memory.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class ViewStore(Sequence[torch.Tensor]):
    """``count`` per-view tensors, stored in ``dtype`` on disk (``folder``) or in RAM (``folder=None``).

    ``store[i] = t`` writes view i; ``store[i]`` reads it back as float32. A Sequence, so post-processing,
    which takes per-view lists, takes a store unchanged. Storing in float16 halves the bytes; mask logits
    keep about 3 significant digits (relative error <= 2^-11), which moves a post-processing decision only
    for pixels within that margin of a threshold or of a tie.
    """

    def __init__(self, count: int, folder: Path | None = None, dtype: torch.dtype = torch.float32, name: str = "view"):
        self._count = int(count)
        self._dtype = dtype
        self._name = name
        self._folder = Path(folder) if folder is not None else None
        self._created = False
        self._ram: list[torch.Tensor | None] = [None] * self._count
        self._written = [False] * self._count
        if self._folder is not None and not self._folder.exists():
            self._folder.mkdir(parents=True)
            self._created = True

    def __len__(self) -> int:
        return self._count

    def _path(self, index: int) -> Path:
        return self._folder / f"{self._name}-{index:06d}.npy"

    def _check(self, index: int) -> int:
        if not isinstance(index, int) or not 0 <= index < self._count:
            raise IndexError(f"view {index} is outside 0..{self._count - 1}")
        return index

    def __setitem__(self, index: int, value: torch.Tensor) -> None:
        index = self._check(index)
        value = value.detach().to("cpu", self._dtype)
        if self._folder is None:
            self._ram[index] = value.clone()
        else:
            np.save(self._path(index), value.contiguous().numpy(), allow_pickle=False)
        self._written[index] = True

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        index = self._check(index)
        if not self._written[index]:
            raise KeyError(f"view {index} was never stored")
        if self._folder is None:
            return self._ram[index].float()
        return torch.from_numpy(np.load(self._path(index), allow_pickle=False)).float()

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` views (deleting the files of the others)."""
        for index in range(count, self._count):
            if self._folder is not None and self._written[index]:
                self._path(index).unlink(missing_ok=True)
        self._count = count
        self._ram, self._written = self._ram[:count], self._written[:count]

    def close(self) -> None:
        """Delete what this store wrote (and its folder, if it made it)."""
        if self._folder is not None:
            for index in range(self._count):
                if self._written[index]:
                    self._path(index).unlink(missing_ok=True)
            if self._created:
                shutil.rmtree(self._folder, ignore_errors=True)
        self._ram = [None] * self._count
        self._written = [False] * self._count

    def __enter__(self) -> ViewStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
